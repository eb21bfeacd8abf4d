package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
)

// Wire shapes. Field names follow Cloud Manager's execution API; the few
// Deckhand additions (artifactSet, reason, phase, waitingSince,
// scheduledAt) are marked.

// StepState is one step of an execution.
type StepState struct {
	ID     string `json:"id"`
	StepID string `json:"stepId"`
	// PhaseID is the phase number ("1" stage deployment, "2" stage
	// testing, "3" production deployment); Phase its name (Deckhand).
	PhaseID         string            `json:"phaseId"`
	Phase           string            `json:"phase"`
	Action          string            `json:"action"`
	Environment     string            `json:"environment,omitempty"`
	EnvironmentType string            `json:"environmentType,omitempty"`
	StartedAt       string            `json:"startedAt,omitempty"`
	FinishedAt      string            `json:"finishedAt,omitempty"`
	Status          string            `json:"status"`
	Details         map[string]string `json:"details,omitempty"`
	// WaitingSince and ScheduledAt (Deckhand): when a person was first
	// asked, and when a scheduled production deployment starts.
	WaitingSince string `json:"waitingSince,omitempty"`
	ScheduledAt  string `json:"scheduledAt,omitempty"`
	// Links: self, logs, metrics; advance and cancel only when possible.
	Links links `json:"_links"`
}

// ExecutionJSON is an execution.
type ExecutionJSON struct {
	ID               string `json:"id"`
	ProgramID        string `json:"programId"`
	PipelineID       string `json:"pipelineId"`
	ArtifactsVersion string `json:"artifactsVersion,omitempty"`
	// ArtifactSet (Deckhand) is the artifact set deployed.
	ArtifactSet string `json:"artifactSet,omitempty"`
	User        string `json:"user"`
	Status      string `json:"status"`
	Trigger     string `json:"trigger"`
	Mode        string `json:"pipelineExecutionMode"`
	CreatedAt   string `json:"createdAt"`
	UpdatedAt   string `json:"updatedAt"`
	FinishedAt  string `json:"finishedAt,omitempty"`
	// Reason (Deckhand) says why an execution ended other than FINISHED.
	Reason   string `json:"reason,omitempty"`
	Embedded struct {
		StepStates []StepState `json:"stepStates"`
	} `json:"_embedded"`
	// Links: self, pipeline, steps of the current step; advance and
	// cancel of the current step only when possible.
	Links links `json:"_links"`
}

// canAdvance reports whether step s of e takes an advance now.
func canAdvance(e *pipeline.Execution, s *pipeline.Step) bool {
	return e.Status == pipeline.ExecRunning && s.Status == pipeline.StepWaiting
}

// canCancel reports whether step s of e can be cancelled now: a waiting
// step is rejected, a running one (a deployment, a scheduled production
// deployment, a build...) is stopped. Not while a cancel is under way.
func canCancel(e *pipeline.Execution, s *pipeline.Step) bool {
	return e.Status == pipeline.ExecRunning && (s.Status == pipeline.StepWaiting || s.Status == pipeline.StepRunning)
}

func isGate(action string) bool {
	switch action {
	case pipeline.ActionCodeQuality, pipeline.ActionSecurityTest, pipeline.ActionLoadTest:
		return true
	}
	return false
}

func stepJSON(e *pipeline.Execution, s *pipeline.Step) StepState {
	self := stepPath(e, s)
	out := StepState{
		ID: s.ID, StepID: s.ID, PhaseID: s.PhaseID, Phase: s.Phase, Action: s.Action,
		Environment: s.Environment, EnvironmentType: s.EnvironmentType, Status: s.Status,
		StartedAt: stamp(s.StartedAt), FinishedAt: stamp(s.FinishedAt), Details: s.Details,
		WaitingSince: stamp(s.WaitingSince), ScheduledAt: stamp(s.ScheduledAt),
		Links: links{"self": {self}, "logs": {self + "/logs"}, "execution": {executionPath(e.ProgramID, e.PipelineID, e.ID)}},
	}
	if isGate(s.Action) {
		out.Links["metrics"] = link{self + "/metrics"}
	}
	if canAdvance(e, s) {
		out.Links["advance"] = link{self + "/advance"}
	}
	if canCancel(e, s) {
		out.Links["cancel"] = link{self + "/cancel"}
	}
	return out
}

func executionJSON(e *pipeline.Execution) ExecutionJSON {
	out := ExecutionJSON{
		ID: e.ID, ProgramID: e.ProgramID, PipelineID: e.PipelineID, ArtifactsVersion: e.ArtifactsVersion,
		ArtifactSet: e.ArtifactSet, User: e.User, Status: e.Status, Trigger: e.Trigger, Mode: e.Mode,
		CreatedAt: stamp(e.CreatedAt), UpdatedAt: stamp(e.UpdatedAt), FinishedAt: stamp(e.FinishedAt), Reason: e.Reason,
		Links: links{"self": {executionPath(e.ProgramID, e.PipelineID, e.ID)}, "pipeline": {pipelinePath(e.ProgramID, e.PipelineID)}},
	}
	out.Embedded.StepStates = make([]StepState, 0, len(e.Steps))
	for i := range e.Steps {
		out.Embedded.StepStates = append(out.Embedded.StepStates, stepJSON(e, &e.Steps[i]))
	}
	if cur := e.Current(); cur != nil && !e.Done() {
		st := stepJSON(e, cur)
		out.Links["currentStep"] = st.Links["self"]
		for _, rel := range []string{"advance", "cancel"} {
			if l, ok := st.Links[rel]; ok {
				out.Links[rel] = l
			}
		}
	}
	return out
}

func execTarget(program, pl, exec string) string {
	return program + "/" + pl + "/execution/" + exec
}

// startBody is the optional body of PUT .../execution.
type startBody struct {
	// ArtifactSet skips the build and deploys a set pushed by hand.
	ArtifactSet string `json:"artifactSet"`
}

// startExecution is PUT .../execution?pipelineExecutionMode=NORMAL|EMERGENCY.
func (h *HTTP) startExecution(w http.ResponseWriter, r *http.Request) {
	program, pl := r.PathValue("programId"), r.PathValue("pipelineId")
	q, ok := h.begin(w, r, "StartExecution", program+"/"+pl)
	if !ok || !q.need(auth.Deployer) {
		return
	}
	var body startBody
	if _, err := decodeBody(w, r, &body, true); err != nil {
		q.fail(err)
		return
	}
	set := r.URL.Query().Get("artifactSet")
	if set != "" && body.ArtifactSet != "" && set != body.ArtifactSet {
		q.fail(badRequest("artifactSet is %q in the query and %q in the body", set, body.ArtifactSet))
		return
	}
	if set == "" {
		set = body.ArtifactSet
	}
	mode := r.URL.Query().Get("pipelineExecutionMode")
	switch mode {
	case "", pipeline.ModeNormal, pipeline.ModeEmergency:
	default:
		q.fail(badRequest("pipelineExecutionMode %q: use NORMAL or EMERGENCY", mode))
		return
	}
	e, err := h.Pipelines.Start(program, pl, pipeline.StartOptions{Emergency: mode == pipeline.ModeEmergency, ArtifactSet: set, User: q.c.Name})
	if err != nil {
		q.fail(err)
		return
	}
	q.target = execTarget(program, pl, e.ID)
	detail := "mode " + e.Mode
	if set != "" {
		detail += ", artifact set " + set
	}
	q.done(detail)
	loc := executionPath(program, pl, e.ID)
	w.Header().Set("Location", loc)
	reply(w, http.StatusCreated, halJSON, executionJSON(e))
}

// pipelineKnown answers 404 for an undeclared program or pipeline.
func (q *request) pipelineKnown(program, pl string) bool {
	prog, _, ok := q.h.Config.Pipeline(program, pl)
	if ok {
		return true
	}
	if prog == nil {
		q.fail(fmt.Errorf("%w: program %q is not declared", pipeline.ErrNotFound, program))
	} else {
		q.fail(fmt.Errorf("%w: program %q has no pipeline %q", pipeline.ErrNotFound, program, pl))
	}
	return false
}

// currentExecution is GET .../execution.
func (h *HTTP) currentExecution(w http.ResponseWriter, r *http.Request) {
	program, pl := r.PathValue("programId"), r.PathValue("pipelineId")
	q, ok := h.begin(w, r, "", "")
	if !ok || !q.pipelineKnown(program, pl) {
		return
	}
	e, err := h.Pipelines.Current(program, pl)
	if err != nil {
		q.fail(fmt.Errorf("%w: pipeline %s/%s has no execution running", err, program, pl))
		return
	}
	reply(w, http.StatusOK, halJSON, executionJSON(e))
}

// getExecution is GET .../execution/{executionId}.
func (h *HTTP) getExecution(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	e, ok := q.execution()
	if !ok {
		return
	}
	reply(w, http.StatusOK, halJSON, executionJSON(e))
}

// execution loads the execution the path names, answering 404 when there
// is none.
func (q *request) execution() (*pipeline.Execution, bool) {
	program, pl, id := q.r.PathValue("programId"), q.r.PathValue("pipelineId"), q.r.PathValue("executionId")
	if !q.pipelineKnown(program, pl) {
		return nil, false
	}
	e, err := q.h.Pipelines.Get(program, pl, id)
	if err != nil {
		q.fail(fmt.Errorf("execution %q of %s/%s: %w", id, program, pl, err))
		return nil, false
	}
	return e, true
}

// step loads the execution and the step the path names; the phase must
// match too.
func (q *request) step() (*pipeline.Execution, *pipeline.Step, bool) {
	e, ok := q.execution()
	if !ok {
		return nil, nil, false
	}
	phase, id := q.r.PathValue("phaseId"), q.r.PathValue("stepId")
	s := e.Step(id)
	if s == nil || s.PhaseID != phase {
		q.fail(fmt.Errorf("%w: execution %s has no step %q in phase %q", pipeline.ErrNotFound, e.ID, id, phase))
		return nil, nil, false
	}
	return e, s, true
}

// executionsPage is the HAL list of GET .../executions.
type executionsPage struct {
	Total int `json:"_totalNumberOfItems"`
	Page  struct {
		Start int `json:"start"`
		Limit int `json:"limit"`
	} `json:"_page"`
	Embedded struct {
		Executions []ExecutionJSON `json:"executions"`
	} `json:"_embedded"`
	Links links `json:"_links"`
}

// Paging defaults of GET .../executions.
const (
	defaultPageLimit = 20
	maxPageLimit     = 100
)

// listExecutions is GET .../executions?start=&limit=, newest first.
func (h *HTTP) listExecutions(w http.ResponseWriter, r *http.Request) {
	program, pl := r.PathValue("programId"), r.PathValue("pipelineId")
	q, ok := h.begin(w, r, "", "")
	if !ok || !q.pipelineKnown(program, pl) {
		return
	}
	num := func(name string, def, max int) (int, error) {
		v := r.URL.Query().Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || (max > 0 && n > max) {
			if max > 0 {
				return 0, badRequest("%s=%q: want a whole number from 0 to %d", name, v, max)
			}
			return 0, badRequest("%s=%q: want a whole number, 0 or more", name, v)
		}
		return n, nil
	}
	start, err := num("start", 0, 0)
	if err != nil {
		q.fail(err)
		return
	}
	limit, err := num("limit", defaultPageLimit, maxPageLimit)
	if err != nil {
		q.fail(err)
		return
	}
	if limit == 0 {
		limit = defaultPageLimit
	}
	list, total, err := h.Pipelines.List(program, pl, start, limit)
	if err != nil {
		q.fail(err)
		return
	}
	var page executionsPage
	page.Total, page.Page.Start, page.Page.Limit = total, start, limit
	page.Embedded.Executions = make([]ExecutionJSON, 0, len(list))
	for _, e := range list {
		page.Embedded.Executions = append(page.Embedded.Executions, executionJSON(e))
	}
	base := pipelinePath(program, pl) + "/executions"
	at := func(s int) link { return link{fmt.Sprintf("%s?start=%d&limit=%d", base, s, limit)} }
	page.Links = links{"self": at(start), "pipeline": {pipelinePath(program, pl)}}
	if start+limit < total {
		page.Links["next"] = at(start + limit)
	}
	if start > 0 {
		page.Links["prev"] = at(max(0, start-limit))
	}
	reply(w, http.StatusOK, halJSON, page)
}

// getStep is GET .../phase/{phaseId}/step/{stepId}.
func (h *HTTP) getStep(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	e, s, ok := q.step()
	if !ok {
		return
	}
	reply(w, http.StatusOK, halJSON, stepJSON(e, s))
}

// advanceRoles is who may answer a waiting step of action: approval and
// schedule need an approver, CSE support a cse, a gate override an
// approver or a deployer (pipeline.RequiredRole). Admin may do all.
func advanceRoles(action string) []auth.Role {
	if isGate(action) {
		return []auth.Role{auth.Approver, auth.Deployer}
	}
	return []auth.Role{auth.Role(pipeline.RequiredRole(action))}
}

// cancelRoles is who may cancel step s: a deployer may cancel any
// execution (docs/security.md: "start and cancel executions"), and so may
// whoever may answer the step, since Cloud Manager rejects through the
// cancel link (an approver rejecting an approval or a gate, or unscheduling
// a deployment; a cse declining CSE support).
func cancelRoles(s *pipeline.Step) []auth.Role {
	roles := []auth.Role{auth.Deployer}
	switch {
	case isGate(s.Action), s.Action == pipeline.ActionApproval, s.Action == pipeline.ActionSchedule, s.Action == pipeline.ActionManaged:
		for _, r := range advanceRoles(s.Action) {
			if r != auth.Deployer {
				roles = append(roles, r)
			}
		}
	}
	return roles
}

// advanceBody is every field an advance may carry; which ones count
// depends on the step (AEM-APIS.md section 4):
//
//	gate      {"metrics":[{"kpi":"coverage","override":true}]}
//	approval  {"approved":true|false}
//	schedule  {"type":"SCHEDULED","schedule":"2026-12-01T21:00:00.000Z"} | {"type":"IMMEDIATE"}
//	managed   {"start":true}
type advanceBody struct {
	Metrics  []overrideMetric `json:"metrics"`
	Approved *bool            `json:"approved"`
	Type     string           `json:"type"`
	Schedule string           `json:"schedule"`
	Start    *bool            `json:"start"`
}

// overrideMetric is a metric in a gate override. Clients (like Cloud
// Manager's CLI) send back the whole metric they read with override set,
// so every metric field is accepted; only kpi and override count.
type overrideMetric struct {
	KPI           string `json:"kpi"`
	Override      bool   `json:"override"`
	ID            string `json:"id"`
	Severity      string `json:"severity"`
	Passed        bool   `json:"passed"`
	ActualValue   string `json:"actualValue"`
	ExpectedValue string `json:"expectedValue"`
	Comparator    string `json:"comparator"`
}

// advanceInput turns a body into the manager's input for a step of
// action, refusing fields that belong to another kind of step.
func advanceInput(action string, b advanceBody) (pipeline.AdvanceInput, string, error) {
	var in pipeline.AdvanceInput
	wrong := func(field string) error {
		return badRequest("%q does not apply to the %s step", field, action)
	}
	if !isGate(action) && b.Metrics != nil {
		return in, "", wrong("metrics")
	}
	if action != pipeline.ActionApproval && b.Approved != nil {
		return in, "", wrong("approved")
	}
	if action != pipeline.ActionSchedule && (b.Type != "" || b.Schedule != "") {
		return in, "", wrong("type/schedule")
	}
	if action != pipeline.ActionManaged && b.Start != nil {
		return in, "", wrong("start")
	}
	switch {
	case isGate(action):
		for _, m := range b.Metrics {
			if m.Override {
				in.Overrides = append(in.Overrides, m.KPI)
			}
		}
		if len(in.Overrides) == 0 {
			return in, "", badRequest(`a gate override lists the failing important metrics: {"metrics":[{"kpi":"coverage","override":true}]}`)
		}
		return in, "override " + strings.Join(in.Overrides, ", "), nil
	case action == pipeline.ActionApproval:
		if b.Approved == nil {
			return in, "", badRequest(`an approval needs {"approved": true} or {"approved": false}`)
		}
		in.Approved = b.Approved
		return in, fmt.Sprintf("approved=%t", *b.Approved), nil
	case action == pipeline.ActionSchedule:
		switch b.Type {
		case "IMMEDIATE":
			if b.Schedule != "" {
				return in, "", badRequest("an IMMEDIATE schedule takes no schedule time")
			}
			in.Immediate = true
			return in, "schedule IMMEDIATE", nil
		case "SCHEDULED":
			at, err := time.Parse(time.RFC3339, b.Schedule)
			if err != nil {
				return in, "", badRequest("schedule %q is not an RFC 3339 time (like 2026-12-01T21:00:00.000Z): %v", b.Schedule, err)
			}
			in.At = at
			return in, "schedule " + at.UTC().Format(time.RFC3339), nil
		}
		return in, "", badRequest(`a schedule needs {"type":"IMMEDIATE"} or {"type":"SCHEDULED","schedule":"2026-12-01T21:00:00.000Z"}`)
	case action == pipeline.ActionManaged:
		if b.Start == nil || !*b.Start {
			return in, "", badRequest(`CSE support needs {"start": true}`)
		}
		in.Start = true
		return in, "CSE support given", nil
	}
	return in, "", fmt.Errorf("%w: a %s step never waits for an answer", pipeline.ErrNotWaiting, action)
}

// advanceStep is PUT .../step/{stepId}/advance. It answers 202: the
// execution goes on in the background.
func (h *HTTP) advanceStep(w http.ResponseWriter, r *http.Request) {
	program, pl, exec := r.PathValue("programId"), r.PathValue("pipelineId"), r.PathValue("executionId")
	q, ok := h.begin(w, r, "AdvanceStep", execTarget(program, pl, exec)+"/step/"+r.PathValue("stepId"))
	if !ok {
		return
	}
	e, s, ok := q.step()
	if !ok {
		return
	}
	q.action = "AdvanceStep (" + s.Action + ")"
	if !q.need(advanceRoles(s.Action)...) {
		return
	}
	var body advanceBody
	if _, err := decodeBody(w, r, &body, false); err != nil {
		q.fail(err)
		return
	}
	in, detail, err := advanceInput(s.Action, body)
	if err != nil {
		q.fail(err)
		return
	}
	if err := h.Pipelines.Advance(program, pl, e.ID, s.ID, in, q.c.Name); err != nil {
		q.fail(err)
		return
	}
	q.done(detail)
	h.replyStep(w, q, program, pl, e.ID, s.ID)
}

// cancelBody is the optional body of a cancel. Cloud Manager's clients
// send {"cancel":true}, {"approved":false} or {"override":false}; all mean
// the same here.
type cancelBody struct {
	Cancel   *bool `json:"cancel"`
	Approved *bool `json:"approved"`
	Override *bool `json:"override"`
}

// cancelStep is PUT .../step/{stepId}/cancel: a waiting step is rejected,
// a running one stopped; the execution ends CANCELLED.
func (h *HTTP) cancelStep(w http.ResponseWriter, r *http.Request) {
	program, pl, exec := r.PathValue("programId"), r.PathValue("pipelineId"), r.PathValue("executionId")
	q, ok := h.begin(w, r, "CancelStep", execTarget(program, pl, exec)+"/step/"+r.PathValue("stepId"))
	if !ok {
		return
	}
	e, s, ok := q.step()
	if !ok {
		return
	}
	q.action = "CancelStep (" + s.Action + ")"
	if !q.need(cancelRoles(s)...) {
		return
	}
	var body cancelBody
	if _, err := decodeBody(w, r, &body, true); err != nil {
		q.fail(err)
		return
	}
	if (body.Cancel != nil && !*body.Cancel) || (body.Approved != nil && *body.Approved) || (body.Override != nil && *body.Override) {
		q.fail(badRequest("this body does not ask for a cancel; use the advance link to go on"))
		return
	}
	if err := h.Pipelines.Cancel(program, pl, e.ID, s.ID, q.c.Name); err != nil {
		q.fail(err)
		return
	}
	q.done("was " + s.Status)
	h.replyStep(w, q, program, pl, e.ID, s.ID)
}

// replyStep answers 202 with the step as it is now.
func (h *HTTP) replyStep(w http.ResponseWriter, q *request, program, pl, execID, stepID string) {
	e, err := h.Pipelines.Get(program, pl, execID)
	if err != nil {
		q.h.log().Warn("re-reading an execution after a step change", "execution", execID, "error", err)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	reply(w, http.StatusAccepted, halJSON, stepJSON(e, e.Step(stepID)))
}

// stepLogs is GET .../step/{stepId}/logs, as text/plain.
func (h *HTTP) stepLogs(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	e, s, ok := q.step()
	if !ok {
		return
	}
	lines, err := h.Pipelines.Logs(e.ProgramID, e.PipelineID, e.ID, s.ID)
	if err != nil {
		q.fail(err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	for _, l := range lines {
		_, _ = fmt.Fprintln(w, l)
	}
}

// stepMetrics is GET .../step/{stepId}/metrics: the gate's metrics, an
// empty list for steps without any (yet).
func (h *HTTP) stepMetrics(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	_, s, ok := q.step()
	if !ok {
		return
	}
	ms := s.Metrics
	if ms == nil {
		ms = []pipeline.Metric{}
	}
	reply(w, http.StatusOK, "application/json", struct {
		Metrics []pipeline.Metric `json:"metrics"`
	}{ms})
}

// ProgramJSON is a program.
type ProgramJSON struct {
	ID                   string `json:"id"`
	Name                 string `json:"name"`
	EmergencyModeEnabled bool   `json:"emergencyModeEnabled"`
	Pipelines            int    `json:"pipelineCount"`
	Links                links  `json:"_links"`
}

func (h *HTTP) programJSON(p *config.Program) (ProgramJSON, error) {
	on, err := h.Pipelines.Emergency(p.Name)
	if err != nil {
		return ProgramJSON{}, err
	}
	return ProgramJSON{ID: p.Name, Name: p.Name, EmergencyModeEnabled: on, Pipelines: len(p.Pipelines),
		Links: links{"self": {programPath(p.Name)}, "pipelines": {programPath(p.Name) + "/pipelines"}, "emergency": {programPath(p.Name) + "/emergency"}}}, nil
}

func (h *HTTP) program(name string) (*config.Program, error) {
	for i := range h.Config.Programs {
		if h.Config.Programs[i].Name == name {
			return &h.Config.Programs[i], nil
		}
	}
	return nil, fmt.Errorf("%w: program %q is not declared", pipeline.ErrNotFound, name)
}

// listPrograms is GET /api/programs.
func (h *HTTP) listPrograms(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	var out struct {
		Total    int `json:"_totalNumberOfItems"`
		Embedded struct {
			Programs []ProgramJSON `json:"programs"`
		} `json:"_embedded"`
		Links links `json:"_links"`
	}
	out.Embedded.Programs = []ProgramJSON{}
	for i := range h.Config.Programs {
		p, err := h.programJSON(&h.Config.Programs[i])
		if err != nil {
			q.fail(err)
			return
		}
		out.Embedded.Programs = append(out.Embedded.Programs, p)
	}
	out.Total = len(out.Embedded.Programs)
	out.Links = links{"self": {"/api/programs"}}
	reply(w, http.StatusOK, halJSON, out)
}

// getProgram is GET /api/program/{programId}.
func (h *HTTP) getProgram(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	p, err := h.program(r.PathValue("programId"))
	if err != nil {
		q.fail(err)
		return
	}
	out, err := h.programJSON(p)
	if err != nil {
		q.fail(err)
		return
	}
	reply(w, http.StatusOK, halJSON, out)
}

// PipelineJSON is a pipeline with its flags.
type PipelineJSON struct {
	ID        string `json:"id"`
	ProgramID string `json:"programId"`
	Name      string `json:"name"`
	// Status is IDLE, BUSY (an execution runs) or WAITING (it waits for
	// a person), as in Cloud Manager.
	Status                string `json:"status"`
	CurrentExecutionID    string `json:"currentExecutionId,omitempty"`
	Repository            string `json:"repository,omitempty"`
	Branch                string `json:"branch,omitempty"`
	StageEnvironment      string `json:"stageEnvironment"`
	ProductionEnvironment string `json:"productionEnvironment"`
	Approval              bool   `json:"approval"`
	Schedule              bool   `json:"schedule"`
	CSESupport            bool   `json:"cseSupport"`
	// CodeQuality, SecurityTesting and PerformanceTesting say whether the
	// gate runs; the engine skips one that is not configured (enabled).
	CodeQuality        bool `json:"codeQuality"`
	SecurityTesting    bool `json:"securityTesting"`
	PerformanceTesting bool `json:"performanceTesting"`
	// WaitingTimeout is how long a step waits for a person (Go duration).
	WaitingTimeout string `json:"waitingTimeout"`
	Links          links  `json:"_links"`
}

func (h *HTTP) pipelineJSON(program string, pl *config.Pipeline) PipelineJSON {
	self := pipelinePath(program, pl.Name)
	out := PipelineJSON{
		ID: pl.Name, ProgramID: program, Name: pl.Name, Status: "IDLE", Repository: pl.Repository, Branch: pl.Branch,
		StageEnvironment: pl.StageEnvironment, ProductionEnvironment: pl.ProductionEnvironment,
		Approval: pl.Approval, Schedule: pl.Schedule, CSESupport: pl.CSESupport,
		CodeQuality: pl.CodeQuality != nil && pl.CodeQuality.Profile != "", SecurityTesting: pl.Security != nil && pl.Security.Enabled,
		PerformanceTesting: pl.Performance != nil && pl.Performance.Enabled, WaitingTimeout: pl.WaitingTimeout.D().String(),
		Links: links{"self": {self}, "program": {programPath(program)}, "execution": {self + "/execution"},
			"executions": {self + "/executions"}, "events": {self + "/events"}},
	}
	if e, err := h.Pipelines.Current(program, pl.Name); err == nil {
		out.Status, out.CurrentExecutionID = "BUSY", e.ID
		if cur := e.Current(); cur != nil && cur.Status == pipeline.StepWaiting {
			out.Status = "WAITING"
		}
	}
	return out
}

// listPipelines is GET /api/program/{programId}/pipelines.
func (h *HTTP) listPipelines(w http.ResponseWriter, r *http.Request) {
	q, ok := h.begin(w, r, "", "")
	if !ok {
		return
	}
	p, err := h.program(r.PathValue("programId"))
	if err != nil {
		q.fail(err)
		return
	}
	on, err := h.Pipelines.Emergency(p.Name)
	if err != nil {
		q.fail(err)
		return
	}
	var out struct {
		ProgramID            string `json:"programId"`
		EmergencyModeEnabled bool   `json:"emergencyModeEnabled"`
		Total                int    `json:"_totalNumberOfItems"`
		Embedded             struct {
			Pipelines []PipelineJSON `json:"pipelines"`
		} `json:"_embedded"`
		Links links `json:"_links"`
	}
	out.ProgramID, out.EmergencyModeEnabled, out.Total = p.Name, on, len(p.Pipelines)
	out.Embedded.Pipelines = make([]PipelineJSON, 0, len(p.Pipelines))
	for i := range p.Pipelines {
		out.Embedded.Pipelines = append(out.Embedded.Pipelines, h.pipelineJSON(p.Name, &p.Pipelines[i]))
	}
	out.Links = links{"self": {programPath(p.Name) + "/pipelines"}, "program": {programPath(p.Name)}}
	reply(w, http.StatusOK, halJSON, out)
}

// getPipeline is GET /api/program/{programId}/pipeline/{pipelineId}.
func (h *HTTP) getPipeline(w http.ResponseWriter, r *http.Request) {
	program, name := r.PathValue("programId"), r.PathValue("pipelineId")
	q, ok := h.begin(w, r, "", "")
	if !ok || !q.pipelineKnown(program, name) {
		return
	}
	_, pl, _ := h.Config.Pipeline(program, name)
	reply(w, http.StatusOK, halJSON, h.pipelineJSON(program, pl))
}

// emergencyBody is the body of PUT /api/program/{programId}/emergency.
type emergencyBody struct {
	Enabled *bool `json:"enabled"`
}

// setEmergency is PUT /api/program/{programId}/emergency: a Customer
// Success Engineer (role cse, or admin) switches the program's emergency
// mode.
func (h *HTTP) setEmergency(w http.ResponseWriter, r *http.Request) {
	program := r.PathValue("programId")
	q, ok := h.begin(w, r, "SetEmergency", program)
	if !ok || !q.need(auth.CSE) {
		return
	}
	p, err := h.program(program)
	if err != nil {
		q.fail(err)
		return
	}
	var body emergencyBody
	if _, err := decodeBody(w, r, &body, false); err != nil {
		q.fail(err)
		return
	}
	if body.Enabled == nil {
		q.fail(badRequest(`the body is {"enabled": true} or {"enabled": false}`))
		return
	}
	if err := h.Pipelines.SetEmergency(program, *body.Enabled, q.c.Name); err != nil {
		q.fail(err)
		return
	}
	q.done(fmt.Sprintf("enabled=%t", *body.Enabled))
	out, err := h.programJSON(p)
	if err != nil {
		q.fail(err)
		return
	}
	reply(w, http.StatusOK, halJSON, out)
}
