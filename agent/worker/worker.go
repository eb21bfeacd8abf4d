// Package worker runs tasks on the agent. It owns the exactly-once rule on
// this side of the wire: a task is journaled before any work starts, a task
// id seen before is answered from the journal instead of being run again,
// and a result is journaled before it is sent and kept until the server
// acks it.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/hashicorp/go-hclog"
)

// Handler does one kind of task.
type Handler interface {
	// Run does the task and returns its output (task.Result.Output). It is
	// called again with t.Attempt() > 1 when an earlier run was interrupted
	// by an agent crash or shutdown; t.Entry().Marks says how far that run
	// got, and Run must finish or undo what it left.
	Run(ctx context.Context, t *Task) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, t *Task) (any, error)

// Run implements Handler.
func (f HandlerFunc) Run(ctx context.Context, t *Task) (any, error) { return f(ctx, t) }

// Recoverer is implemented by handlers whose interrupted work must be
// repaired before the agent talks to the server again (a half-swapped
// config tree). Recover runs synchronously at start-up; it returns the
// task's final output and error, or resume=true to run the task again.
type Recoverer interface {
	Recover(ctx context.Context, t *Task) (output any, err error, resume bool)
}

// Sink receives what the worker has to tell the server. The session sets
// one while a stream is up; with none, results wait in the journal.
type Sink interface {
	Progress(taskID, mark, line string, at time.Time)
	Result(r *task.Result)
}

// Config wires a Worker.
type Config struct {
	Journal  *journal.Journal
	Handlers map[string]Handler // by task.Kind.Name()
	Logger   hclog.Logger
	// DefaultTimeout bounds a task whose spec has none. Default 1h.
	DefaultTimeout time.Duration
	// OnFinish is told every result the worker journals (metrics).
	OnFinish func(kind string, r *task.Result)
}

// Worker executes tasks. Safe for concurrent use.
type Worker struct {
	cfg Config
	log hclog.Logger

	base     context.Context
	stop     context.CancelFunc
	stopping bool // mu

	// attach orders attaching a sink against results being journaled:
	// finish holds it shared from journaling a result until it has read
	// the sink, SetSink exclusively while it swaps the sink and lists the
	// journal's unacked results. A result is thus either in SetSink's list
	// or sent by finish to the new sink, never both: a task that ends as
	// the agent reconnects is sent once, not twice.
	attach sync.RWMutex

	mu      sync.Mutex
	running map[string]*runState          // mu
	sink    Sink                          // mu
	pending map[string][]bufferedProgress // mu; progress made while no sink was attached
	wg      sync.WaitGroup
}

type runState struct {
	cancel    context.CancelFunc
	cancelled bool // by the server, not by shutdown; guarded by Worker.mu
}

// New builds a Worker.
func New(cfg Config) *Worker {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = time.Hour
	}
	base, stop := context.WithCancel(context.Background())
	return &Worker{cfg: cfg, log: cfg.Logger.Named("worker"), base: base, stop: stop, running: map[string]*runState{}}
}

// Task is what a handler sees of its task.
type Task struct {
	Spec  task.Spec
	entry journal.Entry
	w     *Worker
}

// Attempt is 1 for a fresh run, more when an interrupted run is resumed.
func (t *Task) Attempt() int { return t.entry.Attempts }

// Entry is the journal entry as of the start of this attempt, including
// the marks of earlier attempts.
func (t *Task) Entry() journal.Entry { return t.entry }

// Mark journals a progress mark (durable when it returns) and reports it.
func (t *Task) Mark(name string, data []byte) error {
	e, err := t.w.cfg.Journal.AddMark(t.Spec.ID, name, data)
	if err != nil {
		return fmt.Errorf("journal mark %s: %w", name, err)
	}
	t.entry.Marks = e.Marks
	t.w.progress(t.Spec.ID, name, "")
	return nil
}

// Logf sends a log line to the server (not journaled).
func (t *Task) Logf(format string, args ...any) {
	t.w.progress(t.Spec.ID, "", fmt.Sprintf(format, args...))
}

// maxBufferedProgress bounds the progress kept per task while no session
// is attached (a task resumed before the agent reconnects).
const maxBufferedProgress = 200

type bufferedProgress struct {
	id, mark, line string
	at             time.Time
}

func (w *Worker) progress(id, mark, line string) {
	w.mu.Lock()
	s := w.sink
	if s == nil {
		// Keep it for the next session: a resumed task's first lines
		// ("resuming, attempt 2") are the ones an operator needs most.
		if w.pending == nil {
			w.pending = map[string][]bufferedProgress{}
		}
		if len(w.pending[id]) < maxBufferedProgress {
			w.pending[id] = append(w.pending[id], bufferedProgress{id, mark, line, time.Now()})
		}
	}
	w.mu.Unlock()
	if s != nil {
		s.Progress(id, mark, line, time.Now())
	}
}

// SetSink attaches the current session (nil detaches it). Attaching sends
// every journaled result the server has not acked yet.
func (w *Worker) SetSink(s Sink) {
	w.attach.Lock()
	w.mu.Lock()
	w.sink = s
	pending := w.pending
	if s != nil {
		w.pending = nil
	}
	w.mu.Unlock()
	if s == nil {
		w.attach.Unlock()
		return
	}
	done, err := w.cfg.Journal.List(journal.Finished)
	w.attach.Unlock()
	for _, ps := range pending {
		for _, p := range ps {
			s.Progress(p.id, p.mark, p.line, p.at)
		}
	}
	if err != nil {
		w.log.Error("cannot list unacked results", "error", err)
		return
	}
	for _, e := range done {
		w.sendStored(s, e)
	}
}

func (w *Worker) sendStored(s Sink, e journal.Entry) {
	r, err := task.UnmarshalResult(e.Result)
	if err != nil {
		w.log.Error("journaled result is unreadable", "task", e.ID, "error", err)
		return
	}
	s.Result(r)
}

// Held lists journaled tasks the server may not know the end of, for Hello.
func (w *Worker) Held() ([]journal.Entry, error) {
	return w.cfg.Journal.List(journal.Running, journal.Finished)
}

// Running is the number of tasks executing now.
func (w *Worker) Running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

// Submit takes an assignment: spec is the decoded task (or decodeErr why it
// could not be decoded) and raw its wire form, journaled verbatim.
func (w *Worker) Submit(spec task.Spec, raw []byte, epoch uint64, decodeErr error) {
	kind := ""
	if spec.Kind != nil {
		kind = spec.Kind.Name()
	}
	h := w.cfg.Handlers[kind]
	begin := w.cfg.Journal.Begin
	if decodeErr == nil && h != nil {
		begin = w.cfg.Journal.BeginAttempt
	}
	e, created, err := begin(spec.ID, kind, raw, epoch)
	if err != nil {
		// Not journaled, so not started: the server still has it open and
		// sends it again on the next session.
		w.log.Error("cannot journal task; not starting it", "task", spec.ID, "error", err)
		return
	}
	if !created {
		switch e.State {
		case journal.Finished, journal.Acked:
			w.log.Info("task re-sent; answering from the journal", "task", spec.ID, "state", e.State)
			w.mu.Lock()
			s := w.sink
			w.mu.Unlock()
			if s != nil {
				w.sendStored(s, e)
			}
			return
		case journal.Running:
			w.mu.Lock()
			_, busy := w.running[spec.ID]
			w.mu.Unlock()
			if busy {
				w.log.Debug("task re-sent while running; ignoring", "task", spec.ID)
				return
			}
			// Journaled but not running: an earlier Submit failed between
			// Begin and start. Start it now.
		}
	}
	if decodeErr != nil {
		w.finish(spec.ID, &task.Result{TaskID: spec.ID, Status: task.StatusRefused, Error: decodeErr.Error(), FinishedAt: time.Now().UTC()})
		return
	}
	if h == nil {
		w.finish(spec.ID, &task.Result{TaskID: spec.ID, Status: task.StatusRefused,
			Error: fmt.Sprintf("this agent does not run %s tasks (its role or version does not support them)", kind), FinishedAt: time.Now().UTC()})
		return
	}
	if created {
		w.startJournaled(spec, h, &e)
		return
	}
	w.start(spec, h)
}

// Recover runs at start-up, before the first Hello: every task journaled
// as running was interrupted. Handlers that implement Recoverer repair the
// host now; the others run again.
func (w *Worker) Recover(ctx context.Context) error {
	open, err := w.cfg.Journal.List(journal.Running)
	if err != nil {
		return fmt.Errorf("list interrupted tasks: %w", err)
	}
	for _, e := range open {
		spec, err := task.UnmarshalSpec(e.Spec)
		if err != nil {
			w.finish(e.ID, &task.Result{TaskID: e.ID, Status: task.StatusRefused, Error: err.Error(), FinishedAt: time.Now().UTC()})
			continue
		}
		h := w.cfg.Handlers[spec.Kind.Name()]
		if h == nil {
			w.finish(e.ID, &task.Result{TaskID: e.ID, Status: task.StatusRefused, Error: "no handler for " + spec.Kind.Name(), FinishedAt: time.Now().UTC()})
			continue
		}
		w.log.Warn("found an interrupted task", "task", e.ID, "kind", spec.Kind.Name(), "attempts", e.Attempts, "last_mark", lastMark(e))
		if rc, ok := h.(Recoverer); ok {
			entry, err := w.cfg.Journal.StartAttempt(e.ID)
			if err != nil {
				return err
			}
			started := time.Now().UTC()
			out, rerr, resume := rc.Recover(ctx, &Task{Spec: spec, entry: entry, w: w})
			if !resume {
				w.finish(e.ID, w.result(spec.ID, started, entry.Attempts, out, rerr, false))
				continue
			}
		}
		w.start(spec, h)
	}
	return nil
}

func lastMark(e journal.Entry) string {
	if len(e.Marks) == 0 {
		return ""
	}
	return e.Marks[len(e.Marks)-1].Name
}

func (w *Worker) start(spec task.Spec, h Handler) { w.startJournaled(spec, h, nil) }

// startJournaled runs the task; entry is the journal entry when its
// attempt was already counted (BeginAttempt), nil to count it now.
func (w *Worker) startJournaled(spec task.Spec, h Handler, entry *journal.Entry) {
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = w.cfg.DefaultTimeout
	}
	w.mu.Lock()
	if w.stopping {
		w.mu.Unlock()
		return // journaled as running; the next start recovers it
	}
	ctx, cancel := context.WithTimeout(w.base, timeout)
	rs := &runState{cancel: cancel}
	w.running[spec.ID] = rs
	w.wg.Add(1)
	w.mu.Unlock()

	go func() {
		defer w.wg.Done()
		defer cancel()
		if entry == nil {
			e, err := w.cfg.Journal.StartAttempt(spec.ID)
			if err != nil {
				w.log.Error("cannot journal the start of a task", "task", spec.ID, "error", err)
				w.forget(spec.ID)
				return
			}
			entry = &e
		}
		started := time.Now().UTC()
		w.log.Debug("task started", "task", spec.ID, "kind", spec.Kind.Name(), "attempt", entry.Attempts)
		out, runErr := h.Run(ctx, &Task{Spec: spec, entry: *entry, w: w})

		w.mu.Lock()
		shuttingDown := w.stopping && !rs.cancelled
		cancelled := rs.cancelled
		w.mu.Unlock()
		if shuttingDown && runErr != nil && ctx.Err() != nil {
			// Interrupted by our own shutdown, not finished: leave it
			// running in the journal so the next start recovers it.
			w.log.Info("task interrupted by shutdown; it resumes at the next start", "task", spec.ID)
			w.forget(spec.ID)
			return
		}
		w.finish(spec.ID, w.result(spec.ID, started, entry.Attempts, out, runErr, cancelled))
		w.forget(spec.ID)
	}()
}

func (w *Worker) result(id string, started time.Time, attempts int, out any, err error, cancelled bool) *task.Result {
	r := &task.Result{TaskID: id, StartedAt: started, FinishedAt: time.Now().UTC(), Attempts: attempts, Output: out, Status: task.StatusSucceeded}
	switch {
	case err == nil:
	case cancelled:
		r.Status, r.Error = task.StatusCancelled, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		r.Status, r.Error = task.StatusFailed, "timed out: "+err.Error()
	default:
		r.Status, r.Error = task.StatusFailed, err.Error()
	}
	return r
}

func (w *Worker) forget(id string) {
	w.mu.Lock()
	delete(w.running, id)
	w.mu.Unlock()
}

// finish journals the result, then sends it if a session is up.
func (w *Worker) finish(id string, r *task.Result) {
	raw, err := task.MarshalResult(r)
	if err != nil {
		w.log.Error("cannot encode result", "task", id, "error", err)
		r = &task.Result{TaskID: id, Status: task.StatusFailed, Error: "agent could not encode the result: " + err.Error(), StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Attempts: r.Attempts}
		raw, _ = task.MarshalResult(r)
	}
	w.attach.RLock()
	e, err := w.cfg.Journal.Finish(id, r.Status.String(), raw)
	w.mu.Lock()
	s := w.sink
	w.mu.Unlock()
	w.attach.RUnlock()
	if err != nil {
		w.log.Error("cannot journal result; the task will be recovered at the next start", "task", id, "error", err)
		return
	}
	if w.cfg.OnFinish != nil {
		w.cfg.OnFinish(e.Kind, r)
	}
	if r.Error != "" {
		w.log.Info("task finished", "task", id, "status", e.Status, "error", r.Error)
	} else {
		w.log.Info("task finished", "task", id, "status", e.Status)
	}
	if s != nil {
		w.sendStored(s, e)
	}
}

// Cancel stops a running task at the server's request.
func (w *Worker) Cancel(id, reason string) {
	w.mu.Lock()
	rs := w.running[id]
	if rs != nil {
		rs.cancelled = true
	}
	w.mu.Unlock()
	if rs == nil {
		w.log.Debug("cancel for a task that is not running", "task", id)
		return
	}
	w.log.Info("cancelling task", "task", id, "reason", reason)
	rs.cancel()
}

// Ack records the server's acknowledgement of a result.
func (w *Worker) Ack(id string) {
	if err := w.cfg.Journal.Ack(id); err != nil {
		w.log.Warn("ack not recorded", "task", id, "error", err)
	}
}

// Shutdown stops starting tasks, cancels the running ones and waits for
// them (bounded by ctx). Interrupted tasks stay journaled as running.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
	w.stop()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tasks still running at shutdown: %w", ctx.Err())
	}
}
