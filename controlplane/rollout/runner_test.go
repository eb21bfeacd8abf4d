package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/e2e/invariants"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

const topology = `
environments:
  - name: prod
    type: prod
    invalidate_paths: [/content/site]
    hosts:
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
      - {id: publish2, role: publish, pair: 2}
      - {id: dispatcher2, role: dispatcher, pair: 2}
  - name: stage
    type: stage
    hosts:
      - {id: s-author, role: author}
      - {id: s-publish1, role: publish, pair: 1}
      - {id: s-dispatcher1, role: dispatcher, pair: 1}
      - {id: s-publish2, role: publish, pair: 2}
      - {id: s-dispatcher2, role: dispatcher, pair: 2}
  - name: dev
    type: dev
    skip_lb_changes: true
    hosts:
      - {id: d-author, role: author}
      - {id: d-publish1, role: publish, pair: 1}
      - {id: d-dispatcher1, role: dispatcher, pair: 1}
`

type env struct {
	t   testing.TB
	c   *servertest.Control
	sim *servertest.Sim
}

func start(t *testing.T, hosts ...string) *env { return startWith(t, topology, hosts...) }

func startWith(t testing.TB, topology string, hosts ...string) *env {
	c := servertest.Start(t, servertest.Options{Topology: topology, HeartbeatInterval: 200 * time.Millisecond})
	e := &env{t: t, c: c, sim: servertest.NewSim()}
	c.StartSimAgents(t, e.sim, hosts...)
	return e
}

var prodHosts = []string{"author1", "publish1", "dispatcher1", "publish2", "dispatcher2"}

func (e *env) request(envName string, action rollout.Action) rollout.Request {
	ev, ok := e.c.Config.Environment(envName)
	require.True(e.t, ok)
	r := rollout.Request{Env: *ev, Action: action, SetID: "set-test"}
	if action == rollout.ActionDeploy {
		r.Artifacts = rollout.Artifacts{
			Dispatcher: &task.Artifact{SHA256: strings.Repeat("d", 64), Name: "dispatcher.zip"},
			Packages:   []task.Artifact{{SHA256: strings.Repeat("1", 64), Name: "core.zip"}},
		}
	}
	return r
}

func (e *env) run(req rollout.Request) (*rollout.Deployment, []rollout.StepState, []rollout.Event) {
	m := e.c.Server.Rollouts()
	id, err := m.Start(req, "tester")
	require.NoError(e.t, err)
	return e.wait(id)
}

func (e *env) wait(id string) (*rollout.Deployment, []rollout.StepState, []rollout.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	m := e.c.Server.Rollouts()
	_, err := m.Wait(ctx, id)
	require.NoError(e.t, err)
	d, steps, err := m.Get(id)
	require.NoError(e.t, err)
	evs, err := m.Events(id, 0)
	require.NoError(e.t, err)
	return d, steps, evs
}

// checkInvariants runs the independent checker on the log as JSON.
func (e *env) checkInvariants(evs []rollout.Event, envName string) {
	ev, _ := e.c.Config.Environment(envName)
	hosts := map[string]string{}
	for _, h := range ev.Hosts {
		hosts[h.ID] = string(h.Role)
	}
	var sb strings.Builder
	for _, x := range evs {
		b, _ := json.Marshal(x)
		sb.Write(b)
		sb.WriteByte('\n')
	}
	parsed, err := invariants.Parse(strings.NewReader(sb.String()))
	require.NoError(e.t, err)
	require.NoError(e.t, invariants.Check(parsed, invariants.Options{Production: ev.Type == config.EnvProd, MaxUnavailable: ev.MaxUnavailable, Hosts: hosts}))
}

func (e *env) noTaskRanTwice() {
	for id, n := range e.sim.Runs() {
		require.Equal(e.t, 1, n, "task %s ran %d times", id, n)
	}
}

func statuses(steps []rollout.StepState) map[string]rollout.StepStatus {
	out := map[string]rollout.StepStatus{}
	for _, s := range steps {
		out[s.Key] = s.Status
	}
	return out
}

func TestProductionRollout(t *testing.T) {
	e := start(t, prodHosts...)
	d, steps, evs := e.run(e.request("prod", rollout.ActionDeploy))
	require.Equal(t, rollout.StateSucceeded, d.State, d.Error)
	for _, s := range steps {
		require.Equal(t, rollout.StepSucceeded, s.Status, s.Key)
	}
	order := e.sim.Order()
	require.ElementsMatch(t, []string{"dispatcher_prepare:dispatcher1", "dispatcher_prepare:dispatcher2"}, order[:2], "every dispatcher prepares the artifact before anything changes")
	require.Equal(t, "package_install:author1", order[2], "then the author")
	idx := func(s string) int {
		for i, o := range order {
			if o == s {
				return i
			}
		}
		t.Fatalf("%s never ran; order %v", s, order)
		return -1
	}
	require.Less(t, idx("lb_attach:dispatcher1"), idx("lb_detach:dispatcher2"), "pair 2 waits until pair 1 is back")
	require.Less(t, idx("lb_detach:dispatcher1"), idx("dispatcher_deploy:dispatcher1"))
	require.Less(t, idx("cache_flush:dispatcher1"), idx("lb_attach:dispatcher1"))
	e.checkInvariants(evs, "prod")
	e.noTaskRanTwice()
	require.Equal(t, "install ok", d.Hosts["author1"])
	require.Equal(t, "deploy ok; flush ok; in service", d.Hosts["dispatcher2"])
}

func TestFailedDispatcherDeployStopsAndReattaches(t *testing.T) {
	e := start(t, prodHosts...)
	e.sim.Fail("pair1.deploy.dispatcher1", "AH00526: Syntax error on line 3 of /etc/httpd/conf.d/x.conf:\nInvalid command 'Bogus'")
	d, steps, evs := e.run(e.request("prod", rollout.ActionDeploy))
	require.Equal(t, rollout.StateFailed, d.State)
	require.Contains(t, d.Error, "AH00526: Syntax error on line 3")
	st := statuses(steps)
	require.Equal(t, rollout.StepFailed, st["pair1.deploy.dispatcher1"])
	require.Equal(t, rollout.StepSucceeded, st["cleanup.attach.dispatcher1"], "the restored dispatcher is re-attached")
	require.Equal(t, rollout.StepPending, st["pair2.detach.dispatcher2"], "no further pairs")
	require.Equal(t, "untouched", d.Hosts["dispatcher2"])
	require.Equal(t, "untouched", d.Hosts["publish2"])
	require.Equal(t, "deploy failed (old config restored); in service", d.Hosts["dispatcher1"])
	e.checkInvariants(evs, "prod")
	e.noTaskRanTwice()
}

func TestRejectedArtifactTouchesNoHost(t *testing.T) {
	e := start(t, prodHosts...)
	e.sim.Fail("prepare.dispatcher2", "artifact 5f3a rejected (unsafe path): ../../etc/passwd; nothing on the host was changed")
	d, steps, evs := e.run(e.request("prod", rollout.ActionDeploy))
	require.Equal(t, rollout.StateFailed, d.State)
	require.Contains(t, d.Error, "prepare.dispatcher2 on dispatcher2 failed: artifact 5f3a rejected (unsafe path)")
	for _, s := range steps {
		if s.Kind != "dispatcher_prepare" {
			require.Equal(t, rollout.StepPending, s.Status, "%s must not start after a rejected artifact", s.Key)
		}
	}
	for _, o := range e.sim.Order() {
		require.Contains(t, o, "dispatcher_prepare:", "only prepares ran")
	}
	require.Equal(t, "untouched (artifact rejected in prepare)", d.Hosts["dispatcher2"])
	require.Equal(t, "untouched", d.Hosts["dispatcher1"])
	require.Equal(t, "untouched", d.Hosts["author1"])
	e.checkInvariants(evs, "prod")
}

// TestOlderAgentSkipsPrepare: an agent from before the prepare step
// refuses it; the rollout goes on (its deploy stages the artifact).
func TestOlderAgentSkipsPrepare(t *testing.T) {
	c := servertest.Start(t, servertest.Options{Topology: topology, HeartbeatInterval: 200 * time.Millisecond})
	e := &env{t: t, c: c, sim: servertest.NewSim()}
	c.StartSimAgents(t, e.sim, "author1", "publish1", "dispatcher1", "publish2")
	e.sim.Without("dispatcher_prepare")
	c.StartSimAgents(t, e.sim, "dispatcher2")
	d, steps, evs := e.run(e.request("prod", rollout.ActionDeploy))
	require.Equal(t, rollout.StateSucceeded, d.State, d.Error)
	st := map[string]rollout.StepState{}
	for _, s := range steps {
		st[s.Key] = s
	}
	require.Equal(t, rollout.StepSucceeded, st["prepare.dispatcher1"].Status)
	require.Equal(t, rollout.StepSkipped, st["prepare.dispatcher2"].Status)
	require.Contains(t, st["prepare.dispatcher2"].Summary, "does not run dispatcher_prepare tasks")
	require.Equal(t, rollout.StepSucceeded, st["pair2.deploy.dispatcher2"].Status)
	require.Equal(t, "deploy ok; flush ok; in service", d.Hosts["dispatcher2"])
	e.checkInvariants(evs, "prod")
}

func TestFailedPublishLeavesItsPairDetached(t *testing.T) {
	e := start(t, prodHosts...)
	e.sim.Fail("pair1.install.publish1", "Refusing to install package g:n:1. required dependencies missing: [x]")
	d, steps, evs := e.run(e.request("prod", rollout.ActionDeploy))
	require.Equal(t, rollout.StateFailed, d.State)
	st := statuses(steps)
	_, attached := st["cleanup.attach.dispatcher1"]
	require.False(t, attached, "keep_failed_publish_detached defaults to true")
	require.Equal(t, "deploy ok; left detached", d.Hosts["dispatcher1"])
	require.Contains(t, d.Hosts["publish1"], "install failed")
	e.checkInvariants(evs, "prod")
}

func TestNonProduction(t *testing.T) {
	e := start(t, "s-author", "s-publish1", "s-dispatcher1", "s-publish2", "s-dispatcher2", "d-author", "d-publish1", "d-dispatcher1")
	d, _, evs := e.run(e.request("stage", rollout.ActionDeploy))
	require.Equal(t, rollout.StateSucceeded, d.State, d.Error)
	order := e.sim.Order()
	require.ElementsMatch(t, []string{"dispatcher_prepare:s-dispatcher1", "dispatcher_prepare:s-dispatcher2"}, order[:2], "prepared while still attached")
	require.ElementsMatch(t, []string{"lb_detach:s-dispatcher1", "lb_detach:s-dispatcher2"}, order[2:4], "every dispatcher detached before any change")
	require.ElementsMatch(t, []string{"lb_attach:s-dispatcher1", "lb_attach:s-dispatcher2"}, order[len(order)-2:], "attached last")
	e.checkInvariants(evs, "stage")

	d, steps, evs := e.run(e.request("dev", rollout.ActionDeploy))
	require.Equal(t, rollout.StateSucceeded, d.State, d.Error)
	for _, s := range steps {
		require.NotContains(t, []string{"lb_detach", "lb_attach"}, s.Kind, "skip_lb_changes: no detach or attach")
	}
	e.checkInvariants(evs, "dev")
}

func TestCancelStopsAfterRunningStepsAndReattaches(t *testing.T) {
	e := start(t, prodHosts...)
	gate := e.sim.Gate("pair1.deploy.dispatcher1")
	m := e.c.Server.Rollouts()
	id, err := m.Start(e.request("prod", rollout.ActionDeploy), "tester")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, steps, _ := m.Get(id)
		return statuses(steps)["pair1.deploy.dispatcher1"] == rollout.StepRunning
	}, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, m.Cancel(id, "tester"))
	close(gate)
	d, steps, evs := e.wait(id)
	require.Equal(t, rollout.StateCancelled, d.State)
	st := statuses(steps)
	require.Equal(t, rollout.StepSucceeded, st["pair1.deploy.dispatcher1"], "the running step finished")
	require.Equal(t, rollout.StepSucceeded, st["cleanup.flush.dispatcher1"], "the new config's cache is flushed")
	require.Equal(t, rollout.StepSucceeded, st["cleanup.attach.dispatcher1"], "what it detached is re-attached")
	require.Equal(t, rollout.StepPending, st["pair2.detach.dispatcher2"])
	e.checkInvariants(evs, "prod")
}

func TestResumeAfterControlPlaneRestart(t *testing.T) {
	e := start(t, prodHosts...)
	gate := e.sim.Gate("pair1.deploy.dispatcher1")
	m := e.c.Server.Rollouts()
	id, err := m.Start(e.request("prod", rollout.ActionDeploy), "tester")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, steps, _ := m.Get(id)
		return statuses(steps)["pair1.deploy.dispatcher1"] == rollout.StepRunning
	}, 10*time.Second, 5*time.Millisecond)

	e.c.Restart()
	close(gate)
	d, _, evs := e.wait(id)
	require.Equal(t, rollout.StateSucceeded, d.State, d.Error)
	resumed := false
	for _, ev := range evs {
		if ev.Kind == rollout.EventDeploymentResumed {
			resumed = true
		}
	}
	require.True(t, resumed)
	e.checkInvariants(evs, "prod")
	e.noTaskRanTwice()
}

func TestOneDeploymentPerEnvironment(t *testing.T) {
	e := start(t, prodHosts...)
	gate := e.sim.Gate("author.install.author1")
	m := e.c.Server.Rollouts()
	id, err := m.Start(e.request("prod", rollout.ActionDeploy), "tester")
	require.NoError(t, err)
	_, err = m.Start(e.request("prod", rollout.ActionDeploy), "tester")
	require.ErrorIs(t, err, rollout.ErrBusy)
	require.ErrorContains(t, err, fmt.Sprintf("deployment %s is still running", id))
	close(gate)
	d, _, _ := e.wait(id)
	require.Equal(t, rollout.StateSucceeded, d.State)
}

func TestRollbackPlan(t *testing.T) {
	e := start(t, prodHosts...)
	d, steps, evs := e.run(e.request("prod", rollout.ActionRollback))
	require.Equal(t, rollout.StateSucceeded, d.State, d.Error)
	kinds := map[string]bool{}
	for _, s := range steps {
		kinds[s.Kind] = true
	}
	require.True(t, kinds["dispatcher_restore"])
	require.False(t, kinds["package_install"])
	require.False(t, kinds["dispatcher_deploy"])
	e.checkInvariants(evs, "prod")
}
