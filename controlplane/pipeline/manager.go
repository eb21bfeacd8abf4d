package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/fleet"
	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	"github.com/deckhand-dev/deckhand/pkg/clock"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/metrics"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/hashicorp/go-hclog"
)

// Errors callers map to API answers.
var (
	ErrNotFound          = kv.ErrNotFound
	ErrBusy              = errors.New("pipeline busy")
	ErrEmergencyDisabled = errors.New("emergency mode is not enabled for this program")
	ErrNotWaiting        = errors.New("step is not waiting")
	ErrBadInput          = errors.New("bad input")
)

// Fleet is what steps need from the fleet.
type Fleet interface {
	Run(ctx context.Context, spec task.Spec) (*task.Result, error)
	Online(host string) bool
	Progress(taskID string) []fleet.Progress
}

// Rollouts is what the deploy steps need.
type Rollouts interface {
	Start(req rollout.Request, by string) (string, error)
	Wait(ctx context.Context, id string) (*rollout.Deployment, error)
	Cancel(id, by string) error
}

// Artifacts resolves and creates artifact sets.
type Artifacts interface {
	Resolve(setID string) (rollout.Artifacts, error)
	// CreateSet records the build's artifacts as a set and returns its id.
	CreateSet(version string, digests []string, by string) (string, error)
}

// Gates evaluates the three testing gates.
type Gates interface {
	CodeQuality(ctx context.Context, pl *config.Pipeline, metricsJSON []byte) ([]Metric, error)
	Security(ctx context.Context, pl *config.Pipeline, stage *config.Environment) ([]Metric, error)
	Performance(ctx context.Context, pl *config.Pipeline, stage *config.Environment) ([]Metric, error)
}

// Deps wires a Manager.
type Deps struct {
	Backend   kv.Backend
	Config    *config.Config
	Fleet     Fleet
	Rollouts  Rollouts
	Artifacts Artifacts
	Gates     Gates
	Clock     clock.Clock
	// Metrics records ended executions and step durations (nil: none).
	Metrics *metrics.Server
	// Drift lists a host's unresolved configuration drift (nil: none).
	Drift func(host string) ([]DriftNote, error)
	// GitCheck reports whether branch exists in repo (default: git
	// ls-remote).
	GitCheck func(ctx context.Context, repo, branch string) error
	Logger   hclog.Logger
}

// DriftNote is one hand-made change on a host, for Validation's warnings.
type DriftNote struct {
	Path, Kind, Severity string
	At                   time.Time
}

// Manager runs executions. Safe for concurrent use.
type Manager struct {
	d   Deps
	rec records
	log hclog.Logger

	base context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu   sync.Mutex
	runs map[string]*run // running executions by id; mu

	smu  sync.Mutex
	subs map[int]chan Event // smu
	nsub int                // smu
}

// New builds a Manager.
func New(d Deps) *Manager {
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = hclog.NewNullLogger()
	}
	if d.GitCheck == nil {
		d.GitCheck = GitLsRemote
	}
	if d.Gates == nil {
		d.Gates = BuiltinGates{}
	}
	base, stop := context.WithCancel(context.Background())
	return &Manager{d: d, rec: records{b: d.Backend}, log: d.Logger.Named("pipeline"), base: base, stop: stop, runs: map[string]*run{}, subs: map[int]chan Event{}}
}

// StartOptions are how an execution starts.
type StartOptions struct {
	// Emergency skips Security and Performance Testing (only where the
	// program has emergency mode enabled).
	Emergency bool
	// ArtifactSet skips the build: the artifacts were pushed by hand.
	ArtifactSet string
	User        string
}

// Start creates and runs an execution.
func (m *Manager) Start(program, pipeline string, o StartOptions) (*Execution, error) {
	prog, pl, ok := m.d.Config.Pipeline(program, pipeline)
	if !ok {
		if prog == nil {
			return nil, fmt.Errorf("%w: program %q", ErrNotFound, program)
		}
		return nil, fmt.Errorf("%w: pipeline %q of program %q", ErrNotFound, pipeline, program)
	}
	if o.Emergency {
		on, err := m.Emergency(program)
		if err != nil {
			return nil, err
		}
		if !on {
			return nil, fmt.Errorf("%w: program %q; a Customer Success Engineer (role cse) can enable it with `deckctl program set-emergency %s on`", ErrEmergencyDisabled, program, program)
		}
	}
	if o.ArtifactSet != "" {
		if _, err := m.d.Artifacts.Resolve(o.ArtifactSet); err != nil {
			return nil, fmt.Errorf("%w: artifact set %q: %v", ErrBadInput, o.ArtifactSet, err)
		}
	}
	if pl.Repository == "" && o.ArtifactSet == "" {
		return nil, fmt.Errorf("%w: pipeline %q has no repository to build; start it with an artifact set (--artifacts SET)", ErrBadInput, pipeline)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.runs {
		if r.program == program && r.pipeline == pipeline {
			r.mu.Lock()
			ended := r.e.Done() // its goroutine is on its way out
			r.mu.Unlock()
			if !ended {
				return nil, fmt.Errorf("%w: execution %s of %s/%s is still running", ErrBusy, r.id, program, pipeline)
			}
		}
	}
	id, err := m.rec.nextID()
	if err != nil {
		return nil, err
	}
	now := m.d.Clock.Now().UTC()
	e := &Execution{ID: id, ProgramID: program, PipelineID: pipeline, User: o.User, Status: ExecRunning, Trigger: "MANUAL",
		Mode: ModeNormal, CreatedAt: now, UpdatedAt: now, ArtifactSet: o.ArtifactSet, ManualArtifacts: o.ArtifactSet != ""}
	if o.Emergency {
		e.Mode = ModeEmergency
	}
	e.Steps = plannedSteps(m.d.Config, pl, o.Emergency)
	if err := m.rec.save(e); err != nil {
		return nil, err
	}
	cp := m.copyOf(e) // e belongs to its runner from here on
	m.launchLocked(e)
	m.publish(Event{At: now, ExecutionID: id, ProgramID: program, PipelineID: pipeline, Status: ExecRunning, Message: fmt.Sprintf("started by %s (%s)", o.User, cp.Mode),
		Execution: m.copyOf(cp)})
	return cp, nil
}

// plannedSteps lists the steps of an execution, leaving out the ones the
// pipeline does not enable and, in emergency mode, the two testing steps.
func plannedSteps(cfg *config.Config, pl *config.Pipeline, emergency bool) []Step {
	stage, _ := cfg.Environment(pl.StageEnvironment)
	prod, _ := cfg.Environment(pl.ProductionEnvironment)
	var out []Step
	add := func(phaseID, phase, action string, env *config.Environment) {
		s := Step{ID: fmt.Sprint(len(out) + 1), PhaseID: phaseID, Phase: phase, Action: action, Status: StepNotStarted}
		if env != nil {
			s.Environment, s.EnvironmentType = env.Name, string(env.Type)
		}
		out = append(out, s)
	}
	add("1", PhaseStageDeployment, ActionValidate, nil)
	add("1", PhaseStageDeployment, ActionBuild, nil)
	add("1", PhaseStageDeployment, ActionCodeQuality, nil)
	add("1", PhaseStageDeployment, ActionDeploy, stage)
	if !emergency {
		add("2", PhaseStageTesting, ActionSecurityTest, stage)
		add("2", PhaseStageTesting, ActionLoadTest, stage)
	}
	if pl.Approval {
		add("3", PhaseProduction, ActionApproval, prod)
	}
	if pl.Schedule {
		add("3", PhaseProduction, ActionSchedule, prod)
	}
	if pl.CSESupport {
		add("3", PhaseProduction, ActionManaged, prod)
	}
	add("3", PhaseProduction, ActionDeploy, prod)
	return out
}

// Resume restarts every execution a previous process left running.
func (m *Manager) Resume() error {
	all, err := m.rec.all()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range all {
		if e.Done() {
			continue
		}
		m.log.Info("resuming execution after a restart", "execution", e.ID, "program", e.ProgramID, "pipeline", e.PipelineID)
		m.launchLocked(e)
	}
	return nil
}

// Shutdown stops runners without changing persisted state.
func (m *Manager) Shutdown() {
	m.stop()
	m.wg.Wait()
}

func (m *Manager) launchLocked(e *Execution) {
	r := &run{m: m, id: e.ID, program: e.ProgramID, pipeline: e.PipelineID, e: e, signal: make(chan struct{}, 1), log: m.log.With("execution", e.ID)}
	m.runs[e.ID] = r
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		r.loop(m.base)
		m.mu.Lock()
		delete(m.runs, e.ID)
		m.mu.Unlock()
	}()
}

func (m *Manager) copyOf(e *Execution) *Execution {
	cp := *e
	cp.Steps = append([]Step(nil), e.Steps...)
	for i := range cp.Steps {
		if e.Steps[i].Details != nil {
			d := map[string]string{}
			for k, v := range e.Steps[i].Details {
				d[k] = v
			}
			cp.Steps[i].Details = d
		}
		cp.Steps[i].Metrics = append([]Metric(nil), e.Steps[i].Metrics...)
	}
	return &cp
}

// Get returns an execution of a pipeline.
func (m *Manager) Get(program, pipeline, id string) (*Execution, error) {
	m.mu.Lock()
	r := m.runs[id]
	m.mu.Unlock()
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.e.ProgramID != program || r.e.PipelineID != pipeline {
			return nil, ErrNotFound
		}
		return m.copyOf(r.e), nil
	}
	e, err := m.rec.get(id)
	if err != nil {
		return nil, err
	}
	if e.ProgramID != program || e.PipelineID != pipeline {
		return nil, ErrNotFound
	}
	return e, nil
}

// Current returns the pipeline's running execution, or ErrNotFound.
func (m *Manager) Current(program, pipeline string) (*Execution, error) {
	m.mu.Lock()
	var r *run
	for _, x := range m.runs {
		if x.program == program && x.pipeline == pipeline {
			r = x
		}
	}
	m.mu.Unlock()
	if r == nil {
		return nil, ErrNotFound
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return m.copyOf(r.e), nil
}

// List returns a page of a pipeline's executions, newest first, and the
// total count.
func (m *Manager) List(program, pipeline string, start, limit int) ([]*Execution, int, error) {
	if _, _, ok := m.d.Config.Pipeline(program, pipeline); !ok {
		return nil, 0, ErrNotFound
	}
	all, err := m.rec.list(program, pipeline)
	if err != nil {
		return nil, 0, err
	}
	total := len(all)
	if start > total {
		start = total
	}
	end := total
	if limit > 0 && start+limit < total {
		end = start + limit
	}
	out := all[start:end]
	for i, e := range out {
		if cur, err := m.Get(program, pipeline, e.ID); err == nil {
			out[i] = cur
		}
	}
	return out, total, nil
}

// Logs returns a step's log lines.
func (m *Manager) Logs(program, pipeline, execID, stepID string) ([]string, error) {
	e, err := m.Get(program, pipeline, execID)
	if err != nil {
		return nil, err
	}
	if e.Step(stepID) == nil {
		return nil, ErrNotFound
	}
	return m.rec.logs(execID, stepID)
}

// Emergency reports whether the program has emergency mode enabled.
func (m *Manager) Emergency(program string) (bool, error) {
	var prog *config.Program
	for i := range m.d.Config.Programs {
		if m.d.Config.Programs[i].Name == program {
			prog = &m.d.Config.Programs[i]
		}
	}
	if prog == nil {
		return false, fmt.Errorf("%w: program %q", ErrNotFound, program)
	}
	f, found, err := m.rec.flags(program)
	if err != nil {
		return false, err
	}
	if !found {
		return prog.EmergencyModeEnabled, nil
	}
	return f.Emergency, nil
}

// SetEmergency switches a program's emergency mode (role cse or admin,
// checked by the API).
func (m *Manager) SetEmergency(program string, on bool, by string) error {
	if _, err := m.Emergency(program); err != nil {
		return err
	}
	return m.rec.setFlags(program, programFlags{Emergency: on, By: by, At: m.d.Clock.Now().UTC()})
}

// Subscribe streams events of every execution; cancel stops it. A slow
// subscriber loses events rather than slowing executions.
func (m *Manager) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 256)
	m.smu.Lock()
	id := m.nsub
	m.nsub++
	m.subs[id] = ch
	m.smu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			m.smu.Lock()
			delete(m.subs, id)
			close(ch)
			m.smu.Unlock()
		})
	}
}

// publish sends e to subscribers under smu (never m.mu, which Start holds
// while publishing).
func (m *Manager) publish(e Event) {
	m.smu.Lock()
	defer m.smu.Unlock()
	for _, ch := range m.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// RequiredRole is the operator role that may advance or cancel a waiting
// step of the given action.
func RequiredRole(action string) string {
	switch action {
	case ActionManaged:
		return "cse"
	case ActionApproval, ActionSchedule:
		return "approver"
	case ActionCodeQuality, ActionSecurityTest, ActionLoadTest:
		return "approver" // deployer may override too (see CanOverride)
	}
	return "deployer"
}

// AdvanceInput is the body of an advance.
type AdvanceInput struct {
	// Approved answers an approval step.
	Approved *bool
	// Immediate or At answers a schedule step.
	Immediate bool
	At        time.Time
	// Start answers a CSE support step.
	Start bool
	// Overrides lists the KPIs of the failing important metrics to
	// override (all of them must be listed).
	Overrides []string
}

func (m *Manager) runOf(program, pipeline, execID string) (*run, error) {
	// Right after a start, Resume may not have relaunched an execution
	// yet: wait a moment for it rather than call a live one ended.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m.mu.Lock()
		r := m.runs[execID]
		m.mu.Unlock()
		if r != nil && r.program == program && r.pipeline == pipeline {
			return r, nil
		}
		e, err := m.Get(program, pipeline, execID)
		if err != nil {
			return nil, err
		}
		if e.Done() || time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: execution %s has ended (%s)", ErrNotWaiting, execID, e.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Advance answers the waiting step stepID.
func (m *Manager) Advance(program, pipeline, execID, stepID string, in AdvanceInput, by string) error {
	r, err := m.runOf(program, pipeline, execID)
	if err != nil {
		return err
	}
	return r.advance(stepID, in, by)
}

// Cancel cancels step stepID: a waiting step is rejected, a running one
// (deploy) is cancelled; either ends the execution CANCELLED.
func (m *Manager) Cancel(program, pipeline, execID, stepID, by string) error {
	r, err := m.runOf(program, pipeline, execID)
	if err != nil {
		return err
	}
	return r.cancel(stepID, by)
}

// Running is the number of executions running now.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.runs)
}

// WaitDone blocks until the execution ends (tests, deckctl --wait).
func (m *Manager) WaitDone(ctx context.Context, program, pipeline, id string) (*Execution, error) {
	for {
		e, err := m.Get(program, pipeline, id)
		if err != nil {
			return nil, err
		}
		if e.Done() {
			return e, nil
		}
		select {
		case <-ctx.Done():
			return e, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
