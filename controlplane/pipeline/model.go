// Package pipeline runs pipeline executions as the seed describes them:
// Stage Deployment (Validation, Build & Unit Testing, Code Scanning, Deploy
// to Stage), Stage Testing (Security Testing, Performance Testing) and
// Production Deployment (Approval, Schedule, CSE Support — each if enabled —
// and Deploy to Production), with waiting steps that time out after 7 days
// and an emergency mode that skips the two testing steps. Executions are
// persisted and resume after a control-plane restart; the shapes and names
// follow the Cloud Manager execution API.
package pipeline

import (
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/gates"
)

// Execution statuses (Cloud Manager's).
const (
	ExecNotStarted = "NOT_STARTED"
	ExecRunning    = "RUNNING"
	ExecCancelling = "CANCELLING"
	ExecCancelled  = "CANCELLED"
	ExecFinished   = "FINISHED"
	ExecError      = "ERROR"
	ExecFailed     = "FAILED"
)

// Step statuses (Cloud Manager's).
const (
	StepNotStarted  = "NOT_STARTED"
	StepRunning     = "RUNNING"
	StepFinished    = "FINISHED"
	StepError       = "ERROR"
	StepRollingBack = "ROLLING_BACK"
	StepRolledBack  = "ROLLED_BACK"
	StepWaiting     = "WAITING"
	StepCancelled   = "CANCELLED"
	StepFailed      = "FAILED"
)

// Actions, in execution order. Both deploy steps share the action name
// "deploy"; their environment tells them apart.
const (
	ActionValidate     = "validate"
	ActionBuild        = "build"
	ActionCodeQuality  = "codeQuality"
	ActionDeploy       = "deploy"
	ActionSecurityTest = "securityTest"
	ActionLoadTest     = "loadTest"
	ActionApproval     = "approval"
	ActionSchedule     = "schedule"
	ActionManaged      = "managed"
)

// Phases.
const (
	PhaseStageDeployment = "STAGE_DEPLOYMENT"
	PhaseStageTesting    = "STAGE_TESTING"
	PhaseProduction      = "PRODUCTION_DEPLOYMENT"
)

// Modes.
const (
	ModeNormal    = "NORMAL"
	ModeEmergency = "EMERGENCY"
)

// Step is one step of an execution.
type Step struct {
	ID              string            `json:"id"`
	PhaseID         string            `json:"phaseId"`
	Phase           string            `json:"phase"`
	Action          string            `json:"action"`
	Environment     string            `json:"environment,omitempty"`
	EnvironmentType string            `json:"environmentType,omitempty"`
	Status          string            `json:"status"`
	StartedAt       time.Time         `json:"startedAt,omitzero"`
	FinishedAt      time.Time         `json:"finishedAt,omitzero"`
	Details         map[string]string `json:"details,omitempty"`
	Metrics         []Metric          `json:"metrics,omitempty"`
	// WaitingSince is when the step began waiting for a person; the
	// waiting timeout counts from here.
	WaitingSince time.Time `json:"waitingSince,omitzero"`
	// ScheduledAt is when a scheduled production deployment starts.
	ScheduledAt time.Time `json:"scheduledAt,omitzero"`
}

// Waiting reports whether the step waits for a person.
func (s *Step) Waiting() bool { return s.Status == StepWaiting }

// Execution is one run of a pipeline.
type Execution struct {
	V                int    `json:"v"`
	ID               string `json:"id"`
	ProgramID        string `json:"programId"`
	PipelineID       string `json:"pipelineId"`
	ArtifactsVersion string `json:"artifactsVersion,omitempty"`
	ArtifactSet      string `json:"artifactSet,omitempty"`
	// ManualArtifacts is true when the artifacts were pushed by hand and
	// the build was skipped.
	ManualArtifacts bool      `json:"manualArtifacts,omitempty"`
	User            string    `json:"user"`
	Status          string    `json:"status"`
	Trigger         string    `json:"trigger"`
	Mode            string    `json:"pipelineExecutionMode"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
	FinishedAt      time.Time `json:"finishedAt,omitzero"`
	Steps           []Step    `json:"steps"`
	// Reason says why an execution ended other than FINISHED.
	Reason string `json:"reason,omitempty"`
}

// Step finds a step by id.
func (e *Execution) Step(id string) *Step {
	for i := range e.Steps {
		if e.Steps[i].ID == id {
			return &e.Steps[i]
		}
	}
	return nil
}

// Current is the first step that is not finished, or nil.
func (e *Execution) Current() *Step {
	for i := range e.Steps {
		switch e.Steps[i].Status {
		case StepFinished:
			continue
		}
		return &e.Steps[i]
	}
	return nil
}

// Done reports whether the execution ended.
func (e *Execution) Done() bool {
	switch e.Status {
	case ExecFinished, ExecCancelled, ExecFailed, ExecError:
		return true
	}
	return false
}

// Event is something that happened to an execution (for the SSE stream
// and deckctl execution watch).
type Event struct {
	At          time.Time `json:"at"`
	ExecutionID string    `json:"executionId"`
	ProgramID   string    `json:"programId"`
	PipelineID  string    `json:"pipelineId"`
	StepID      string    `json:"stepId,omitempty"`
	Action      string    `json:"action,omitempty"`
	Status      string    `json:"status"`
	Message     string    `json:"message,omitempty"`
	// Execution is the execution as it was when the event happened (a
	// copy subscribers may keep); nil only for events of no execution.
	Execution *Execution `json:"-"`
}

// Metric is one gate measurement in the Cloud Manager shape.
type Metric = gates.Metric
