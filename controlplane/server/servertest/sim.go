package servertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/stretchr/testify/require"
)

// Sim plays hosts for orchestration tests: real agents over real gRPC and
// mutual TLS whose executors return at once, record what ran, and fail or
// block on demand. The real executors have their own tests.
type Sim struct {
	mu    sync.Mutex
	runs  map[string]int           // task id -> times the work started
	order []string                 // "kind:host" in start order
	fail  map[string]string        // step key -> error message
	gate  map[string]chan struct{} // step key -> wait until closed
	// Outputs overrides a kind's output (e.g. a build's artifacts).
	outputs map[string]any
	// without are kinds the agents started next have no handler for (an
	// older agent version).
	without map[string]bool
}

// NewSim returns an empty Sim.
func NewSim() *Sim {
	return &Sim{runs: map[string]int{}, fail: map[string]string{}, gate: map[string]chan struct{}{}, outputs: map[string]any{}}
}

// Fail makes the task of step fail with msg.
func (s *Sim) Fail(step, msg string) { s.mu.Lock(); s.fail[step] = msg; s.mu.Unlock() }

// Gate makes the task of step wait until the returned channel is closed.
func (s *Sim) Gate(step string) chan struct{} {
	ch := make(chan struct{})
	s.mu.Lock()
	s.gate[step] = ch
	s.mu.Unlock()
	return ch
}

// Without makes the agents started after it lack handlers for kinds, as
// an agent from before those kinds existed.
func (s *Sim) Without(kinds ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.without = map[string]bool{}
	for _, k := range kinds {
		s.without[k] = true
	}
}

// Output sets what tasks of kind return.
func (s *Sim) Output(kind string, out any) { s.mu.Lock(); s.outputs[kind] = out; s.mu.Unlock() }

// Order is "kind:host" per task start, in order.
func (s *Sim) Order() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

// Runs is how many times each task's work started.
func (s *Sim) Runs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.runs {
		out[k] = v
	}
	return out
}

// Kinds the sim answers.
var simKinds = []string{"dispatcher_prepare", "dispatcher_deploy", "dispatcher_restore", "package_install", "cache_flush", "lb_detach", "lb_attach", "build", "code_scan"}

func (s *Sim) handler(kind string) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) (any, error) {
		s.mu.Lock()
		s.runs[t.Spec.ID]++
		s.order = append(s.order, kind+":"+t.Spec.HostID)
		msg := s.fail[t.Spec.Step]
		g := s.gate[t.Spec.Step]
		out := s.outputs[kind]
		s.mu.Unlock()
		if g != nil {
			select {
			case <-g:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if out == nil {
			switch kind {
			case "dispatcher_deploy", "dispatcher_restore":
				o := &task.DispatcherOutput{BackupID: "b-" + t.Spec.ID, Files: 3, ConfigTest: "Syntax OK"}
				if msg != "" {
					o.ConfigTest, o.Restored = msg, true
				}
				out = o
			case "dispatcher_prepare":
				out = &task.DispatcherOutput{Files: 3}
			case "package_install":
				out = &task.PackageInstallOutput{Packages: []task.PackageOutcome{{ID: "g:n:1", Status: "installed"}}}
			case "cache_flush":
				out = &task.CacheFlushOutput{Paths: []task.FlushedPath{{Path: "/content", Action: "invalidate"}}}
			case "lb_detach":
				out = &task.LBOutput{State: "detached", Drained: true}
			case "lb_attach":
				out = &task.LBOutput{State: "in-service", Drained: true}
			case "code_scan":
				out = &task.CodeScanOutput{Metrics: []byte(`{}`)}
			}
		}
		if kind == "build" {
			t.Logf("[INFO] BUILD SUCCESS (simulated)")
		}
		if msg != "" {
			return out, errors.New(msg)
		}
		return out, nil
	})
}

// StartSimAgents runs one sim-backed agent per host until the test ends
// and waits until they are online.
func (c *Control) StartSimAgents(t testing.TB, s *Sim, hosts ...string) {
	t.Helper()
	handlers := map[string]worker.Handler{}
	s.mu.Lock()
	for _, k := range simKinds {
		if !s.without[k] {
			handlers[k] = s.handler(k)
		}
	}
	s.mu.Unlock()
	for _, h := range hosts {
		acfg, err := agentconfig.Parse("a.yaml", []byte(c.AgentConfig(h, t.TempDir(), "")))
		require.NoError(t, err)
		a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, h), ExtraHandlers: handlers})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	require.Eventually(t, func() bool {
		for _, h := range hosts {
			if !c.Server.Fleet().Online(h) {
				return false
			}
		}
		return true
	}, 60*time.Second, 10*time.Millisecond, "sim agents did not come online")
}
