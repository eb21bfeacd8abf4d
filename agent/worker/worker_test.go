package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type sink struct {
	mu      sync.Mutex
	results []*task.Result
	marks   []string
}

func (s *sink) Progress(id, mark, line string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if mark != "" {
		s.marks = append(s.marks, mark)
	}
}

func (s *sink) Result(r *task.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, r)
}

func (s *sink) get() []*task.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*task.Result(nil), s.results...)
}

func newJournal(t *testing.T) *journal.Journal {
	j, err := journal.New(kv.NewMemory())
	require.NoError(t, err)
	return j
}

func submit(w *Worker, id string, k task.Kind) {
	spec := task.Spec{ID: id, Kind: k}
	raw, _ := task.MarshalSpec(spec)
	w.Submit(spec, raw, 1, nil)
}

func waitResults(t *testing.T, s *sink, n int) []*task.Result {
	require.Eventually(t, func() bool { return len(s.get()) >= n }, 5*time.Second, time.Millisecond)
	return s.get()
}

func TestResentTaskIsAnsweredFromJournal(t *testing.T) {
	var runs atomic.Int32
	j := newJournal(t)
	w := New(Config{Journal: j, Handlers: map[string]Handler{"host_facts": HandlerFunc(func(ctx context.Context, tk *Task) (any, error) {
		runs.Add(1)
		if err := tk.Mark("step", nil); err != nil {
			return nil, err
		}
		return &task.Facts{Hostname: "h"}, nil
	})}})
	defer w.Shutdown(context.Background())
	s := &sink{}
	w.SetSink(s)
	submit(w, "a", task.HostFacts{})
	r := waitResults(t, s, 1)[0]
	require.Equal(t, task.StatusSucceeded, r.Status)
	require.Equal(t, 1, r.Attempts)

	submit(w, "a", task.HostFacts{}) // re-sent before the ack
	w.Ack("a")
	submit(w, "a", task.HostFacts{}) // re-sent after the ack
	rs := waitResults(t, s, 3)
	require.Equal(t, int32(1), runs.Load())
	require.Equal(t, rs[0].FinishedAt, rs[2].FinishedAt)
	require.Equal(t, []string{"step"}, s.marks)
}

func TestUnknownKindIsRefused(t *testing.T) {
	w := New(Config{Journal: newJournal(t), Handlers: map[string]Handler{}})
	defer w.Shutdown(context.Background())
	s := &sink{}
	w.SetSink(s)
	submit(w, "d", task.DispatcherDeploy{Artifact: task.Artifact{SHA256: "x"}})
	r := waitResults(t, s, 1)[0]
	require.Equal(t, task.StatusRefused, r.Status)
	require.Contains(t, r.Error, "does not run dispatcher_deploy tasks")

	spec := task.Spec{ID: "bad"}
	w.Submit(spec, nil, 1, errors.New("task bad has no kind"))
	r = waitResults(t, s, 2)[1]
	require.Equal(t, task.StatusRefused, r.Status)
	require.Equal(t, "task bad has no kind", r.Error)
}

func blocking(started chan<- struct{}) Handler {
	return HandlerFunc(func(ctx context.Context, t *Task) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

func TestCancelEndsTaskCancelled(t *testing.T) {
	started := make(chan struct{}, 1)
	w := New(Config{Journal: newJournal(t), Handlers: map[string]Handler{"host_facts": blocking(started)}})
	defer w.Shutdown(context.Background())
	s := &sink{}
	w.SetSink(s)
	submit(w, "c", task.HostFacts{})
	<-started
	w.Cancel("c", "operator")
	r := waitResults(t, s, 1)[0]
	require.Equal(t, task.StatusCancelled, r.Status)
}

func TestTimeoutFailsTask(t *testing.T) {
	started := make(chan struct{}, 1)
	w := New(Config{Journal: newJournal(t), Handlers: map[string]Handler{"host_facts": blocking(started)}})
	defer w.Shutdown(context.Background())
	s := &sink{}
	w.SetSink(s)
	spec := task.Spec{ID: "t", Kind: task.HostFacts{}, Timeout: 50 * time.Millisecond}
	raw, _ := task.MarshalSpec(spec)
	w.Submit(spec, raw, 1, nil)
	r := waitResults(t, s, 1)[0]
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "timed out")
}

func TestShutdownLeavesTaskRunningAndRecoverResumesIt(t *testing.T) {
	j := newJournal(t)
	started := make(chan struct{}, 1)
	w := New(Config{Journal: j, Handlers: map[string]Handler{"host_facts": blocking(started)}})
	s := &sink{}
	w.SetSink(s)
	submit(w, "r", task.HostFacts{})
	<-started
	require.NoError(t, w.Shutdown(context.Background()))
	require.Empty(t, s.get(), "an interrupted task must not report a result")
	e, err := j.Get("r")
	require.NoError(t, err)
	require.Equal(t, journal.Running, e.State)

	// Next start: the plain handler runs again, as attempt 2.
	var attempt int
	w2 := New(Config{Journal: j, Handlers: map[string]Handler{"host_facts": HandlerFunc(func(ctx context.Context, t *Task) (any, error) {
		attempt = t.Attempt()
		return &task.Facts{}, nil
	})}})
	defer w2.Shutdown(context.Background())
	s2 := &sink{}
	w2.SetSink(s2)
	require.NoError(t, w2.Recover(context.Background()))
	r := waitResults(t, s2, 1)[0]
	require.Equal(t, task.StatusSucceeded, r.Status)
	require.Equal(t, 2, attempt)
	require.Equal(t, 2, r.Attempts)
}

type recoverer struct {
	HandlerFunc
	called bool
}

func (r *recoverer) Recover(ctx context.Context, t *Task) (any, error, bool) {
	r.called = true
	return &task.DispatcherOutput{Recovery: "restored the old tree", Restored: true}, errors.New("interrupted; old config restored"), false
}

func TestRecovererRepairsBeforeAnythingElse(t *testing.T) {
	j := newJournal(t)
	spec := task.Spec{ID: "d", Kind: task.DispatcherDeploy{Artifact: task.Artifact{SHA256: "x"}}}
	raw, _ := task.MarshalSpec(spec)
	_, _, err := j.Begin("d", "dispatcher_deploy", raw, 1)
	require.NoError(t, err)
	_, err = j.StartAttempt("d")
	require.NoError(t, err)

	rc := &recoverer{HandlerFunc: func(context.Context, *Task) (any, error) {
		t.Fatal("Run must not be called when Recover finishes the task")
		return nil, nil
	}}
	w := New(Config{Journal: j, Handlers: map[string]Handler{"dispatcher_deploy": rc}})
	defer w.Shutdown(context.Background())
	require.NoError(t, w.Recover(context.Background()))
	require.True(t, rc.called)
	e, err := j.Get("d")
	require.NoError(t, err)
	require.Equal(t, journal.Finished, e.State)
	res, err := task.UnmarshalResult(e.Result)
	require.NoError(t, err)
	require.Equal(t, task.StatusFailed, res.Status)
	require.True(t, res.Output.(*task.DispatcherOutput).Restored)
	require.Equal(t, 2, res.Attempts)

	// The result waits in the journal and goes out when a session attaches.
	s := &sink{}
	w.SetSink(s)
	require.Len(t, s.get(), 1)
}

type progressSink struct {
	sink
	mu    sync.Mutex
	lines []string
}

func (p *progressSink) Progress(id, mark, line string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, id+":"+mark+line)
}

func TestProgressBeforeASessionIsKept(t *testing.T) {
	w := New(Config{Journal: newJournal(t), Handlers: map[string]Handler{"host_facts": HandlerFunc(func(ctx context.Context, tk *Task) (any, error) {
		tk.Logf("resuming, attempt %d", tk.Attempt())
		return &task.Facts{}, nil
	})}})
	defer w.Shutdown(context.Background())
	submit(w, "p", task.HostFacts{}) // no sink yet: the agent has not reconnected
	require.Eventually(t, func() bool { e, _ := w.cfg.Journal.Get("p"); return e.State == journal.Finished }, 5*time.Second, time.Millisecond)
	ps := &progressSink{}
	w.SetSink(ps)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	require.Equal(t, []string{"p:resuming, attempt 1"}, ps.lines)
}

// A task that ends just as a session attaches is sent to it once: either
// in the journal's list of unacked results that attaching sends, or by the
// finishing task itself, never both (the server would count a duplicate).
// OnFinish runs between journaling the result and sending it; the session
// attaches right there.
func TestResultEndingAsSessionAttachesIsSentOnce(t *testing.T) {
	journaled, attached := make(chan struct{}), make(chan struct{})
	w := New(Config{
		Journal: newJournal(t),
		Handlers: map[string]Handler{"host_facts": HandlerFunc(func(ctx context.Context, tk *Task) (any, error) {
			return &task.Facts{Hostname: "h"}, nil
		})},
		OnFinish: func(kind string, r *task.Result) {
			close(journaled)
			<-attached
		},
	})
	defer w.Shutdown(context.Background())
	submit(w, "a", task.HostFacts{})
	<-journaled
	s := &sink{}
	w.SetSink(s)
	close(attached)
	require.Eventually(t, func() bool { return w.Running() == 0 }, 5*time.Second, time.Millisecond)
	rs := s.get()
	require.Len(t, rs, 1, "the result goes to the new session exactly once")
	require.Equal(t, "a", rs[0].TaskID)
}
