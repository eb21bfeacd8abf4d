package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/fleet"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/metrics"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/hashicorp/go-hclog"
)

// ErrBusy is returned when the environment already has a deployment running.
var ErrBusy = errors.New("environment busy")

// ErrNotFound is returned for an unknown deployment.
var ErrNotFound = kv.ErrNotFound

// Fleet is what the runner needs from the fleet.
type Fleet interface {
	// AssignWith persists the tasks and extra's writes in one commit.
	AssignWith(ctx context.Context, extra func(kv.Tx) error, specs ...task.Spec) error
	Await(ctx context.Context, id string) (*task.Result, error)
}

var _ Fleet = (*fleet.Fleet)(nil)

// Manager starts, resumes, cancels and reports deployments.
type Manager struct {
	// Metrics records step durations and ended deployments (nil: none).
	Metrics *metrics.Server

	rec   records
	fleet Fleet
	log   hclog.Logger
	now   func() time.Time

	base   context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	runs   map[string]*run          // running deployments; mu
	byEnv  map[string]string        // env -> running deployment id; mu
	watch  map[string][]chan Event  // deployment id -> watchers; mu
	notify map[string]chan struct{} // closed when the deployment ends; mu
}

// NewManager builds a Manager on a store backend.
func NewManager(b kv.Backend, f Fleet, log hclog.Logger) *Manager {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	base, stop := context.WithCancel(context.Background())
	return &Manager{rec: records{b: b}, fleet: f, log: log.Named("rollout"), now: time.Now, base: base, stop: stop,
		runs: map[string]*run{}, byEnv: map[string]string{}, watch: map[string][]chan Event{}, notify: map[string]chan struct{}{}}
}

// Resume restarts every deployment a previous server process left running.
func (m *Manager) Resume() error {
	all, err := m.rec.list()
	if err != nil {
		return err
	}
	for _, d := range all {
		if d.State.Done() {
			continue
		}
		m.log.Info("resuming deployment after a restart", "deployment", d.ID, "env", d.Request.Env.Name, "state", d.State)
		if err := m.launch(d, &Event{Kind: EventDeploymentResumed, Message: "control plane restarted; resuming from the persisted state"}); err != nil {
			return err
		}
	}
	return nil
}

// Shutdown stops runners without changing their persisted state (they
// resume at the next start) and waits for them.
func (m *Manager) Shutdown() {
	m.stop()
	m.wg.Wait()
}

// Start persists a new deployment and runs it.
func (m *Manager) Start(req Request, by string) (string, error) {
	if req.PlanVersion == 0 {
		req.PlanVersion = CurrentPlanVersion
	}
	if _, err := NewPlan(req); err != nil {
		return "", err
	}
	m.mu.Lock()
	if other, busy := m.byEnv[req.Env.Name]; busy {
		m.mu.Unlock()
		return "", fmt.Errorf("%w: deployment %s is still running in environment %q", ErrBusy, other, req.Env.Name)
	}
	m.byEnv[req.Env.Name] = "starting"
	m.mu.Unlock()
	id, err := m.rec.nextID()
	if err != nil {
		m.release(req.Env.Name, "starting")
		return "", err
	}
	d := &Deployment{ID: id, Request: req, By: by, CreatedAt: m.now().UTC(), State: StateRunning}
	if err := m.launch(d, nil); err != nil {
		m.release(req.Env.Name, "starting")
		return "", err
	}
	return id, nil
}

func (m *Manager) release(env, id string) {
	m.mu.Lock()
	if m.byEnv[env] == id {
		delete(m.byEnv, env)
	}
	m.mu.Unlock()
}

// launch persists a fresh deployment (first == nil) or resumes one, and
// starts its runner goroutine.
func (m *Manager) launch(d *Deployment, resumed *Event) error {
	plan, err := NewPlan(d.Request)
	if err != nil {
		return fmt.Errorf("deployment %s: %w", d.ID, err)
	}
	r := &run{m: m, d: d, plan: plan, log: m.log.With("deployment", d.ID, "env", plan.Env)}
	if resumed == nil {
		steps := make([]StepState, 0, len(plan.Steps))
		for _, s := range plan.Steps {
			steps = append(steps, StepState{Key: s.Key, Host: s.Host, Kind: s.Kind(), Pair: s.Pair, Group: s.Group, Status: StepPending})
		}
		ev := Event{Kind: EventDeploymentStarted, Message: fmt.Sprintf("%s of set %s to %s by %s: %d steps", d.Request.Action, d.Request.SetID, plan.Env, d.By, len(plan.Steps))}
		if err := m.rec.create(d, steps, ev); err != nil {
			return err
		}
		m.publish(d.ID, m.lastEvents(d.ID))
	}
	states, err := m.rec.steps(d.ID)
	if err != nil {
		return err
	}
	r.states = states
	m.mu.Lock()
	m.runs[d.ID] = r
	m.byEnv[plan.Env] = d.ID
	if m.notify[d.ID] == nil {
		m.notify[d.ID] = make(chan struct{})
	}
	m.mu.Unlock()
	if resumed != nil {
		r.event(*resumed)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		r.run(m.base)
	}()
	return nil
}

func (m *Manager) lastEvents(id string) []Event {
	evs, _ := m.rec.events(id, 0)
	return evs
}

// Cancel asks a running deployment to stop after its running steps and
// re-attach what it detached.
func (m *Manager) Cancel(id, by string) error {
	m.mu.Lock()
	r := m.runs[id]
	m.mu.Unlock()
	if r == nil {
		d, err := m.rec.get(id)
		if err != nil {
			return err
		}
		return fmt.Errorf("deployment %s already ended: %s", id, d.State)
	}
	r.cancel(by)
	return nil
}

// Get returns a deployment and its steps in plan order (cleanup last).
func (m *Manager) Get(id string) (*Deployment, []StepState, error) {
	m.mu.Lock()
	r := m.runs[id]
	m.mu.Unlock()
	var d *Deployment
	if r != nil {
		r.mu.Lock()
		cp := *r.d
		r.mu.Unlock()
		d = &cp
	} else {
		var err error
		if d, err = m.rec.get(id); err != nil {
			return nil, nil, err
		}
	}
	states, err := m.rec.steps(id)
	if err != nil {
		return nil, nil, err
	}
	plan, err := NewPlan(d.Request)
	if err != nil {
		return nil, nil, err
	}
	order := map[string]int{}
	for i, s := range plan.Steps {
		order[s.Key] = i
	}
	for i, c := range d.Cleanup {
		order[c.Key] = len(plan.Steps) + i
	}
	out := make([]StepState, 0, len(states))
	for _, s := range states {
		out = append(out, s)
	}
	sort.Slice(out, func(a, b int) bool { return order[out[a].Key] < order[out[b].Key] })
	return d, out, nil
}

// List returns every deployment, newest first.
func (m *Manager) List() ([]*Deployment, error) {
	all, err := m.rec.list()
	if err != nil {
		return nil, err
	}
	sort.Slice(all, func(a, b int) bool { return all[a].CreatedAt.After(all[b].CreatedAt) })
	return all, nil
}

// Events returns a deployment's events after seq.
func (m *Manager) Events(id string, after uint64) ([]Event, error) {
	if _, err := m.rec.get(id); err != nil {
		return nil, err
	}
	return m.rec.events(id, after)
}

// Watch streams a deployment's events after seq until it ends or ctx
// does; the channel closes then.
func (m *Manager) Watch(ctx context.Context, id string, after uint64) (<-chan Event, error) {
	if _, err := m.rec.get(id); err != nil {
		return nil, err
	}
	ch := make(chan Event, 1024)
	live := make(chan Event, 1024)
	m.mu.Lock()
	m.watch[id] = append(m.watch[id], live)
	done := m.notify[id]
	m.mu.Unlock()
	go func() {
		defer close(ch)
		defer m.unwatch(id, live)
		past, _ := m.rec.events(id, after)
		last := after
		for _, e := range past {
			select {
			case ch <- e:
				last = e.Seq
			case <-ctx.Done():
				return
			}
		}
		for {
			select {
			case e := <-live:
				if e.Seq <= last {
					continue
				}
				last = e.Seq
				select {
				case ch <- e:
				case <-ctx.Done():
					return
				}
				if e.Kind == EventDeploymentFinished {
					return
				}
			case <-ctx.Done():
				return
			case <-doneOrNil(done):
				// Drain what was published before the end.
				rest, _ := m.rec.events(id, last)
				for _, e := range rest {
					select {
					case ch <- e:
					case <-ctx.Done():
						return
					}
				}
				return
			}
		}
	}()
	return ch, nil
}

func doneOrNil(c chan struct{}) <-chan struct{} {
	if c == nil {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	return c
}

func (m *Manager) unwatch(id string, ch chan Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ws := m.watch[id]
	for i, w := range ws {
		if w == ch {
			m.watch[id] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
}

func (m *Manager) publish(id string, evs []Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ch := range m.watch[id] {
		for _, e := range evs {
			select {
			case ch <- e:
			default: // a watcher that falls behind re-reads the log at the end
			}
		}
	}
}

// Wait blocks until the deployment ends or ctx does. A deployment that a
// restart has not resumed yet is polled until it is.
func (m *Manager) Wait(ctx context.Context, id string) (*Deployment, error) {
	for {
		d, err := m.rec.get(id)
		if err != nil {
			return nil, err
		}
		if d.State.Done() {
			return d, nil
		}
		m.mu.Lock()
		done := m.notify[id]
		m.mu.Unlock()
		wait := time.After(50 * time.Millisecond)
		if done != nil {
			wait = nil
		}
		select {
		case <-done:
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// run is one deployment being executed.
type run struct {
	m    *Manager
	plan *Plan
	log  hclog.Logger

	mu     sync.Mutex
	d      *Deployment          // mu
	states map[string]StepState // mu
}

func (r *run) cancel(by string) {
	r.mu.Lock()
	if r.d.State == StateRunning {
		r.d.State = StateCancelling
		r.mu.Unlock()
		r.event(Event{Kind: EventNote, Message: "cancel requested by " + by + ": stopping after the running steps"})
		return
	}
	r.mu.Unlock()
}

func (r *run) cancelling() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.d.State == StateCancelling
}

// event appends an event (and the deployment record) and tells watchers.
func (r *run) event(e Event) {
	r.mu.Lock()
	err := r.m.rec.saveDeployment(r.d, &e)
	e.Seq = r.d.EventSeq
	r.mu.Unlock()
	if err != nil {
		r.log.Error("cannot persist a deployment event", "error", err)
		return
	}
	r.m.publish(r.d.ID, []Event{e})
}

func (r *run) state(key string) StepState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.states[key]
}

// setStep persists a step's new state with an event, before the caller
// acts on it.
func (r *run) setStep(s StepState, e *Event) error {
	r.mu.Lock()
	err := r.m.rec.saveStep(r.d, s, e)
	if err == nil {
		r.states[s.Key] = s
		if e != nil {
			e.Seq = r.d.EventSeq
		}
	}
	r.mu.Unlock()
	if err == nil && e != nil {
		r.m.publish(r.d.ID, []Event{*e})
	}
	return err
}

// errShutdown means the control plane is stopping: leave state as is.
var errShutdown = errors.New("control plane shutting down")

// run walks the plan, then any cleanup, then records the end.
func (r *run) run(ctx context.Context) {
	defer func() {
		r.m.mu.Lock()
		delete(r.m.runs, r.d.ID)
		r.m.mu.Unlock()
		r.m.release(r.plan.Env, r.d.ID)
	}()
	failed := false
	r.mu.Lock()
	inCleanup := len(r.d.Cleanup) > 0
	r.mu.Unlock()
	if !inCleanup {
		for g := 0; g < r.plan.Groups; g++ {
			if r.cancelling() {
				break
			}
			err := r.runGroup(ctx, r.plan.Group(g))
			if errors.Is(err, errShutdown) {
				return
			}
			if err != nil {
				failed = true
				break
			}
		}
		if failed || r.cancelling() {
			if err := r.decideCleanup(); err != nil {
				r.log.Error("cannot persist the cleanup plan", "error", err)
				return
			}
		}
	}
	if err := r.runCleanup(ctx); errors.Is(err, errShutdown) {
		return
	}
	r.finish()
}

// runGroup runs the steps of a group in parallel; any failure fails the
// group after every step of it has ended. The group's steps start in one
// commit together with their tasks.
func (r *run) runGroup(ctx context.Context, steps []Step) error {
	if err := r.startGroup(ctx, steps); err != nil {
		if ctx.Err() != nil {
			return errShutdown
		}
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(steps))
	for i, s := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.awaitStep(ctx, s.Key, s.Task)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if errors.Is(err, errShutdown) {
			return errShutdown
		}
	}
	return errors.Join(errs...)
}

func (r *run) taskSpec(key, host string, k task.Kind) (task.Spec, error) {
	id, err := task.ID(r.d.ID, key, host)
	if err != nil {
		return task.Spec{}, err
	}
	return task.Spec{ID: id, ExecutionID: r.d.ID, Step: key, HostID: host, Timeout: r.plan.stepTimeout(r.d.Request.Env), Kind: k}, nil
}

// startGroup marks the group's pending steps running and (re)assigns the
// tasks of every unfinished step, all in one commit. A step that was
// running before a restart keeps its task id, which the fleet and the agent
// answer from their records instead of running it again.
func (r *run) startGroup(ctx context.Context, steps []Step) error {
	var specs []task.Spec
	var started []StepState
	var events []Event
	now := r.m.now().UTC()
	for _, s := range steps {
		st := r.state(s.Key)
		if st.Status == StepSucceeded || st.Status == StepSkipped || st.Status == StepFailed {
			continue
		}
		spec, err := r.taskSpec(s.Key, s.Host, s.Task)
		if err != nil {
			return err
		}
		specs = append(specs, spec)
		if st.Status == StepPending || st.Status == "" {
			started = append(started, StepState{V: 1, Key: s.Key, Host: s.Host, Kind: s.Kind(), Pair: s.Pair, Group: st.Group, Status: StepRunning, TaskID: spec.ID, StartedAt: now})
			events = append(events, Event{Kind: EventStepStarted, Step: s.Key, Task: s.Kind(), Host: s.Host, Pair: s.Pair, At: now})
		}
	}
	if len(specs) == 0 {
		return nil
	}
	r.mu.Lock()
	seq := r.d.EventSeq
	err := r.m.fleet.AssignWith(ctx, func(tx kv.Tx) error {
		r.d.EventSeq = seq // the function may run again after a failed commit
		for _, st := range started {
			if err := put(tx, bucketSteps, stepKey(r.d.ID, st.Key), st); err != nil {
				return err
			}
		}
		for i := range events {
			if err := r.m.rec.appendEvent(tx, r.d, events[i]); err != nil {
				return err
			}
			events[i].Seq = r.d.EventSeq
		}
		return nil
	}, specs...)
	if err != nil {
		r.d.EventSeq = seq
		r.mu.Unlock()
		return fmt.Errorf("start steps: %w", err)
	}
	for _, st := range started {
		r.states[st.Key] = st
	}
	r.mu.Unlock()
	r.m.publish(r.d.ID, events)
	return nil
}

// awaitStep waits for a started step's task and records how it ended.
func (r *run) awaitStep(ctx context.Context, key string, k task.Kind) error {
	st := r.state(key)
	switch st.Status {
	case StepSucceeded, StepSkipped:
		return nil
	case StepFailed:
		return fmt.Errorf("%s failed: %s", key, st.Error)
	}
	timeout := r.plan.stepTimeout(r.d.Request.Env)
	deadline := st.StartedAt.Add(timeout + time.Minute) // the agent's own bound, plus transfer slack
	sctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	res, err := r.m.fleet.Await(sctx, st.TaskID)
	if err != nil {
		if ctx.Err() != nil {
			return errShutdown
		}
		return r.failStep(st, k, fmt.Sprintf("no result from %s by %s (is its agent online?): %v", st.Host, deadline.Format(time.RFC3339), err), nil)
	}
	status := StepSucceeded
	switch {
	case res.Status == task.StatusRefused && k.Name() == kindPrepare:
		// An agent older than the prepare step refuses it: nothing was
		// done, and its deploy stages the artifact itself as before.
		status = StepSkipped
	case res.Status != task.StatusSucceeded:
		return r.failStep(st, k, res.Error, res)
	}
	st.Status, st.FinishedAt, st.Summary = status, r.m.now().UTC(), summarize(res)
	if status == StepSkipped {
		st.Summary = "skipped: the agent cannot prepare (" + res.Error + "); its deploy stages the artifact"
	}
	r.m.Metrics.Step(k.Name(), string(status), st.FinishedAt.Sub(st.StartedAt))
	ev := Event{Kind: EventStepFinished, Step: key, Task: k.Name(), Host: st.Host, Pair: st.Pair, Status: status, Attempts: res.Attempts, Message: st.Summary}
	if err := r.setStep(st, &ev); err != nil {
		return fmt.Errorf("persist step %s: %w", key, err)
	}
	r.log.Debug("step finished", "step", key, "host", st.Host, "took", st.FinishedAt.Sub(st.StartedAt).Round(time.Millisecond))
	return nil
}

func (r *run) failStep(st StepState, k task.Kind, msg string, res *task.Result) error {
	if msg == "" {
		msg = "failed without a message"
	}
	st.Status, st.FinishedAt, st.Error = StepFailed, r.m.now().UTC(), msg
	r.m.Metrics.Step(k.Name(), string(StepFailed), st.FinishedAt.Sub(st.StartedAt))
	if res != nil {
		st.Summary = summarize(res)
	}
	ev := Event{Kind: EventStepFinished, Step: st.Key, Task: k.Name(), Host: st.Host, Pair: st.Pair, Status: StepFailed, Message: msg}
	if res != nil {
		ev.Attempts = res.Attempts
	}
	if err := r.setStep(st, &ev); err != nil {
		return fmt.Errorf("persist step %s: %w", st.Key, err)
	}
	r.log.Warn("step failed", "step", st.Key, "host", st.Host, "error", msg)
	return fmt.Errorf("%s on %s: %s", st.Key, st.Host, msg)
}

func (p *Plan) stepTimeout(env config.Environment) time.Duration {
	if d := env.StepTimeout.D(); d > 0 {
		return d
	}
	return 30 * time.Minute
}

// summarize turns a task result into one line for tables and logs.
func summarize(res *task.Result) string {
	switch o := res.Output.(type) {
	case *task.PackageInstallOutput:
		var parts []string
		for _, p := range o.Packages {
			parts = append(parts, p.ID+" "+p.Status)
		}
		return strings.Join(parts, ", ")
	case *task.DispatcherOutput:
		s := fmt.Sprintf("%d files", o.Files)
		if o.BackupID != "" {
			s += ", backup " + o.BackupID
		}
		if len(o.Ignored) > 0 {
			s += fmt.Sprintf(", %d immutable entries ignored", len(o.Ignored))
		}
		if o.Restored {
			s += ", old config restored"
		}
		return s
	case *task.CacheFlushOutput:
		n := 0
		for _, p := range o.Paths {
			n += p.Removed
		}
		return fmt.Sprintf("%d path(s), %d cached file(s) removed", len(o.Paths), n)
	case *task.LBOutput:
		s := o.State
		if !o.Drained {
			s += fmt.Sprintf(" (drain timeout, %d sessions left)", o.RemainingSessions)
		}
		return s + fmt.Sprintf(" after %s", o.Waited.Round(time.Millisecond))
	}
	return ""
}
