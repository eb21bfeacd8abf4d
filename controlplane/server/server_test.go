package server_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const hb = 100 * time.Millisecond

// cluster is a control plane plus agents in this process, on loopback,
// speaking mutual TLS with enrolled agents.
type cluster struct {
	t *testing.T
	*servertest.Control
	// runs counts HostFacts executions per host, across agent restarts.
	runs sync.Map // host -> *atomic.Int32
	// gate, when set, blocks HostFacts until closed.
	gate atomic.Pointer[chan struct{}]
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return &cluster{t: t, Control: servertest.Start(t, servertest.Options{HeartbeatInterval: hb})}
}

func (c *cluster) stopServer()    { c.Stop() }
func (c *cluster) startServer()   { c.Start() }
func (c *cluster) restartServer() { c.Restart() }

func (c *cluster) runCounter(host string) *atomic.Int32 {
	v, _ := c.runs.LoadOrStore(host, new(atomic.Int32))
	return v.(*atomic.Int32)
}

type runningAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error
}

func (r *runningAgent) stop() error {
	r.cancel()
	<-r.done
	return r.err
}

// startAgent runs an agent for host with data in dataDir.
func (c *cluster) startAgent(host, dataDir string, hooks session.Hooks) *runningAgent {
	c.t.Helper()
	return c.startAgentWith(host, dataDir, hooks, nil)
}

func (c *cluster) startAgentWith(host, dataDir string, hooks session.Hooks, extra map[string]worker.Handler) *runningAgent {
	c.t.Helper()
	acfg, err := agentconfig.Parse("agent.yaml", []byte(c.AgentConfig(host, dataDir, "")))
	require.NoError(c.t, err)
	counter := c.runCounter(host)
	a, err := agent.New(acfg, agent.Options{
		Logger:        testlog.New(c.t, "agent-"+host),
		Hooks:         hooks,
		ExtraHandlers: extra,
		WrapHandler: func(kind string, h worker.Handler) worker.Handler {
			if kind != (task.HostFacts{}).Name() {
				return h
			}
			return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) (any, error) {
				counter.Add(1)
				if g := c.gate.Load(); g != nil {
					select {
					case <-*g:
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				}
				return h.Run(ctx, t)
			})
		},
	})
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{a: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	c.t.Cleanup(func() { r.stop() })
	return r
}

func (c *cluster) waitOnline(hosts ...string) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, h := range hosts {
			if !c.Server.Fleet().Online(h) {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "agents %v never came online", hosts)
}

func (c *cluster) state(host string) string {
	all, err := c.Server.Fleet().Agents()
	require.NoError(c.t, err)
	for _, a := range all {
		if a.ID == host {
			return a.State
		}
	}
	return "missing"
}

func factsSpec(t *testing.T, exec, host string) task.Spec {
	id, err := task.ID(exec, "facts", host)
	require.NoError(t, err)
	return task.Spec{ID: id, ExecutionID: exec, Step: "facts", HostID: host, Kind: task.HostFacts{}}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAgentsListedOnlineAndHostFactsRun(t *testing.T) {
	c := newCluster(t)
	hosts := []string{"author1", "publish1", "dispatcher1"}
	for _, h := range hosts {
		c.startAgent(h, t.TempDir(), session.Hooks{})
	}
	c.waitOnline(hosts...)
	for _, h := range hosts {
		require.Equal(t, "online", c.state(h))
	}

	// Through the admin API, as deckctl does.
	admin := pb.NewAdminServiceClient(c.AdminConn())
	list, err := admin.ListAgents(ctxT(t), &pb.ListAgentsRequest{})
	require.NoError(t, err)
	require.Len(t, list.Agents, 3)
	for _, a := range list.Agents {
		require.True(t, a.Online, a.HostId)
		require.Equal(t, "dev", a.Version)
		require.NotNil(t, a.LastHeartbeat)
	}
	facts, err := admin.GetHostFacts(ctxT(t), &pb.GetHostFactsRequest{HostId: "publish1"})
	require.NoError(t, err)
	require.NotEmpty(t, facts.Facts.Hostname)
	require.Greater(t, facts.Facts.DataDirTotalBytes, uint64(0))
	require.Equal(t, int32(1), c.runCounter("publish1").Load())

	_, err = admin.GetHostFacts(ctxT(t), &pb.GetHostFactsRequest{HostId: "ghost"})
	require.ErrorContains(t, err, `host "ghost" is not declared`)
	_, err = admin.ListAgents(ctxT(t), &pb.ListAgentsRequest{Environment: "nope"})
	require.ErrorContains(t, err, `environment "nope" is not declared`)
}

func TestKilledAgentGoesOffline(t *testing.T) {
	c := newCluster(t)
	a := c.startAgent("author1", t.TempDir(), session.Hooks{})
	c.waitOnline("author1")
	require.NoError(t, a.stop())
	require.Eventually(t, func() bool { return c.state("author1") == "offline" }, 5*time.Second, 10*time.Millisecond)
}

// A hung agent keeps its TCP connection but stops talking: the server
// must notice from the missing heartbeats alone.
func TestSilentAgentGoesOfflineAfterThreeMissedHeartbeats(t *testing.T) {
	c := newCluster(t)
	stream, err := pb.NewAgentServiceClient(c.HostConn("dispatcher1")).Connect(ctxT(t))
	require.NoError(t, err)
	connectedAt := time.Now()
	require.NoError(t, stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{HostId: "dispatcher1", Version: "hung"}}}))
	first, err := stream.Recv()
	require.NoError(t, err)
	require.NotNil(t, first.GetWelcome())
	require.Equal(t, "online", c.state("dispatcher1"))

	// No heartbeats from here on.
	require.Eventually(t, func() bool { return c.state("dispatcher1") == "offline" }, 5*time.Second, 5*time.Millisecond)
	require.GreaterOrEqual(t, time.Since(connectedAt), 3*hb, "went offline before three intervals passed")
	// And the server cut the half-open stream.
	_, err = stream.Recv()
	require.Error(t, err)
}

func TestUndeclaredHostIsRefused(t *testing.T) {
	c := newCluster(t)
	acfg, err := agentconfig.Parse("agent.yaml", []byte(fmt.Sprintf("host_id: ghost\nserver: %s\ndata_dir: %s\napachectl: [\"true\"]\njoin_token: dhj_x\nca_fingerprint: %s\n", c.Addr, t.TempDir(), c.Server.PKI().Fingerprint())))
	require.NoError(t, err)
	a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, "ghost")})
	require.NoError(t, err)
	ctx := ctxT(t)
	err = a.Run(ctx)
	var fatal *session.FatalError
	require.ErrorAs(t, err, &fatal)
	require.Contains(t, err.Error(), `host "ghost" is not declared in the server config`)
	require.Equal(t, "missing", c.state("ghost"))
}

func TestServerRestartWhileTaskInFlight(t *testing.T) {
	for _, finishWhileDown := range []bool{true, false} {
		t.Run(fmt.Sprintf("finish_while_server_down=%v", finishWhileDown), func(t *testing.T) {
			c := newCluster(t)
			gate := make(chan struct{})
			c.gate.Store(&gate)
			c.startAgent("publish1", t.TempDir(), session.Hooks{})
			c.waitOnline("publish1")

			spec := factsSpec(t, "exec-1", "publish1")
			require.NoError(t, c.Server.Fleet().Assign(ctxT(t), spec))
			require.Eventually(t, func() bool { return c.runCounter("publish1").Load() == 1 }, 5*time.Second, 5*time.Millisecond)

			oldEpoch := c.Server.Epoch()
			c.stopServer()
			if finishWhileDown {
				close(gate) // the agent finishes while nobody listens
				c.startServer()
			} else {
				c.startServer()
				c.waitOnline("publish1")
				close(gate)
			}
			require.Greater(t, c.Server.Epoch(), oldEpoch)

			res, err := c.Server.Fleet().Await(ctxT(t), spec.ID)
			require.NoError(t, err)
			require.NoError(t, res.Err())
			require.IsType(t, &task.Facts{}, res.Output)
			require.Equal(t, 1, res.Attempts)
			require.Equal(t, int32(1), c.runCounter("publish1").Load(), "the agent ran the task twice")

			// Assigning the same task again returns the stored result,
			// it is not run again.
			res2, err := c.Server.Fleet().Run(ctxT(t), spec)
			require.NoError(t, err)
			require.Equal(t, res.FinishedAt, res2.FinishedAt)
			require.Equal(t, int32(1), c.runCounter("publish1").Load())

			stored, err := c.Server.Store().Task(spec.ID)
			require.NoError(t, err)
			require.Equal(t, 0, stored.Duplicates, "the result was delivered more than once")
		})
	}
}

func TestAgentRestartAfterFinishBeforeAck(t *testing.T) {
	cases := []struct {
		name           string
		hooks          func(drop *atomic.Bool) session.Hooks
		wantDuplicates int
	}{
		// The agent journaled the result and died before sending it.
		{"result_not_sent", func(drop *atomic.Bool) session.Hooks {
			return session.Hooks{DropResult: func(string) bool { return drop.Load() }}
		}, 0},
		// The result reached the server, the agent died before the ack.
		{"ack_lost", func(drop *atomic.Bool) session.Hooks {
			return session.Hooks{DropAck: func(string) bool { return drop.Load() }}
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			dir := t.TempDir()
			var drop atomic.Bool
			drop.Store(true)
			a := c.startAgent("author1", dir, tc.hooks(&drop))
			c.waitOnline("author1")
			spec := factsSpec(t, "exec-2", "author1")
			require.NoError(t, c.Server.Fleet().Assign(ctxT(t), spec))
			require.Eventually(t, func() bool {
				e, err := a.a.Journal().Get(spec.ID)
				return err == nil && e.State == journal.Finished
			}, 5*time.Second, 5*time.Millisecond)
			if tc.wantDuplicates > 0 {
				// The result must have reached the server before the
				// "crash" for the resend to be a duplicate.
				require.Eventually(t, func() bool {
					st, err := c.Server.Store().Task(spec.ID)
					return err == nil && st.Done
				}, 5*time.Second, 5*time.Millisecond)
			}
			require.NoError(t, a.stop())

			reopened := c.startAgent("author1", dir, session.Hooks{})
			res, err := c.Server.Fleet().Await(ctxT(t), spec.ID)
			require.NoError(t, err)
			require.NoError(t, res.Err())
			require.Equal(t, int32(1), c.runCounter("author1").Load(), "the agent ran the task again after its restart")
			require.Eventually(t, func() bool {
				e, err := reopened.a.Journal().Get(spec.ID)
				return err == nil && e.State == journal.Acked
			}, 5*time.Second, 5*time.Millisecond)
			stored, err := c.Server.Store().Task(spec.ID)
			require.NoError(t, err)
			require.Equal(t, tc.wantDuplicates, stored.Duplicates)
		})
	}
}

func TestStreamCutMidTaskReconnectsAndDelivers(t *testing.T) {
	c := newCluster(t)
	gate := make(chan struct{})
	c.gate.Store(&gate)
	a := c.startAgent("dispatcher1", t.TempDir(), session.Hooks{})
	c.waitOnline("dispatcher1")
	spec := factsSpec(t, "exec-3", "dispatcher1")
	require.NoError(t, c.Server.Fleet().Assign(ctxT(t), spec))
	require.Eventually(t, func() bool { return c.runCounter("dispatcher1").Load() == 1 }, 5*time.Second, 5*time.Millisecond)

	sessions := a.a.Client().Sessions()
	require.True(t, c.Server.Fleet().Disconnect("dispatcher1", "test cut"))
	close(gate)
	res, err := c.Server.Fleet().Await(ctxT(t), spec.ID)
	require.NoError(t, err)
	require.NoError(t, res.Err())
	require.Greater(t, a.a.Client().Sessions(), sessions, "the agent did not reconnect")
	require.Equal(t, int32(1), c.runCounter("dispatcher1").Load())
}

func TestTaskForOfflineHostIsSentWhenItConnects(t *testing.T) {
	c := newCluster(t)
	spec := factsSpec(t, "exec-4", "publish1")
	require.NoError(t, c.Server.Fleet().Assign(ctxT(t), spec))
	c.startAgent("publish1", t.TempDir(), session.Hooks{})
	res, err := c.Server.Fleet().Await(ctxT(t), spec.ID)
	require.NoError(t, err)
	require.NoError(t, res.Err())
}

func TestAssignToUndeclaredHostFails(t *testing.T) {
	c := newCluster(t)
	err := c.Server.Fleet().Assign(ctxT(t), factsSpec(t, "e", "ghost"))
	require.ErrorContains(t, err, `host is not declared in the server config: "ghost"`)
}

func TestHelloClaimingNothingIsRefused(t *testing.T) {
	c := newCluster(t)
	stream, err := pb.NewAgentServiceClient(c.HostConn("dispatcher1")).Connect(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}))
	_, err = stream.Recv()
	require.Error(t, err)
	require.Contains(t, status.Convert(err).Message(), "first message on the stream must be Hello")
}

func TestServerRefusesSecondInstanceOnSameDataDir(t *testing.T) {
	c := newCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	_, err = server.New(c.Config, server.Options{Listener: ln})
	require.ErrorContains(t, err, "is another deckhand process using "+filepath.Clean(c.Config.DataDir))
}
