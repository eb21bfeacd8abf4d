package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline/pipelinetest"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/clock"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

var (
	topology = pipelinetest.Topology
	allHosts = pipelinetest.Hosts
	pass     = pipelinetest.Pass
	gitRepo  = pipelinetest.GitRepo
)

type fixture struct {
	t     *testing.T
	c     *servertest.Control
	sim   *servertest.Sim
	clock *clock.Fake
	gates *pipelinetest.Gates
	repo  string
}

func setup(t *testing.T, pipelineExtra string) *fixture {
	f := &fixture{t: t, sim: servertest.NewSim(), clock: clock.NewFake(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)), gates: pipelinetest.NewGates(), repo: gitRepo(t)}
	f.gates.Set(pipeline.ActionCodeQuality, pass("coverage"))
	f.gates.Set(pipeline.ActionSecurityTest, pass("crxde_blocked"))
	f.gates.Set(pipeline.ActionLoadTest, pass("error_rate"))
	programs := pipelinetest.Program(f.repo, pipelineExtra)
	f.c = servertest.Start(t, servertest.Options{Topology: topology, Extra: programs, HeartbeatInterval: 200 * time.Millisecond,
		Server: func(o *server.Options) { o.Clock, o.Gates = f.clock, f.gates }})
	f.c.StartSimAgents(t, f.sim, allHosts...)
	// The simulated build "uploads" a dispatcher config and a package.
	sets := artifacts.NewSets(f.c.Server.Blobs(), f.c.Server.Store().Backend())
	dir := t.TempDir()
	pkgPath := aempkgtest.WriteFile(t, dir, "core.zip", aempkgtest.Package(aempkgtest.Spec{Group: "wknd", Name: "core", Version: "1.0"}))
	pr, err := sets.PutFile(pkgPath)
	require.NoError(t, err)
	f.sim.Output("build", &task.BuildOutput{Commit: "0123456789abcdef", Artifacts: []task.Artifact{pr.Artifact.Ref()}})
	return f
}

func (f *fixture) m() *pipeline.Manager { return f.c.Server.Pipelines() }

func (f *fixture) start(o pipeline.StartOptions) *pipeline.Execution {
	if o.User == "" {
		o.User = "alice"
	}
	e, err := f.m().Start("wknd", "main", o)
	require.NoError(f.t, err)
	return e
}

// waitStep waits until the execution's step with action (the last one
// when two share it) has status.
func (f *fixture) waitStep(id, action, status string) *pipeline.Execution {
	var e *pipeline.Execution
	require.Eventually(f.t, func() bool {
		var err error
		e, err = f.m().Get("wknd", "main", id)
		require.NoError(f.t, err)
		s := step(e, action)
		return s != nil && s.Status == status
	}, 30*time.Second, 10*time.Millisecond, "step %s never became %s", action, status)
	return e
}

func step(e *pipeline.Execution, action string) *pipeline.Step {
	var found *pipeline.Step
	for i := range e.Steps {
		if e.Steps[i].Action == action {
			found = &e.Steps[i]
		}
	}
	return found
}

func (f *fixture) done(id string) *pipeline.Execution {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e, err := f.m().WaitDone(ctx, "wknd", "main", id)
	require.NoError(f.t, err)
	return e
}

func actions(e *pipeline.Execution) []string {
	var out []string
	for _, s := range e.Steps {
		out = append(out, s.Action)
	}
	return out
}

func (f *fixture) advance(e *pipeline.Execution, action string, in pipeline.AdvanceInput) {
	require.NoError(f.t, f.m().Advance("wknd", "main", e.ID, step(e, action).ID, in, "bob"))
}

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

func TestHappyPathWithEveryWaitingStep(t *testing.T) {
	f := setup(t, "        approval: true\n        schedule: true\n        cse_support: true\n")
	e := f.start(pipeline.StartOptions{})
	require.Equal(t, []string{"validate", "build", "codeQuality", "deploy", "securityTest", "loadTest", "approval", "schedule", "managed", "deploy"}, actions(e))
	e = f.waitStep(e.ID, pipeline.ActionApproval, pipeline.StepWaiting)
	require.NotEmpty(t, e.ArtifactSet, "the build's artifacts became the execution's set")
	require.Equal(t, pipeline.StepFinished, e.Steps[3].Status, "stage deployed")
	f.advance(e, pipeline.ActionApproval, pipeline.AdvanceInput{Approved: yes()})
	e = f.waitStep(e.ID, pipeline.ActionSchedule, pipeline.StepWaiting)
	f.advance(e, pipeline.ActionSchedule, pipeline.AdvanceInput{Immediate: true})
	e = f.waitStep(e.ID, pipeline.ActionManaged, pipeline.StepWaiting)
	f.advance(e, pipeline.ActionManaged, pipeline.AdvanceInput{Start: true})
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)
	for _, s := range e.Steps {
		require.Equal(t, pipeline.StepFinished, s.Status, s.Action)
	}
	logs, err := f.m().Logs("wknd", "main", e.ID, step(e, pipeline.ActionBuild).ID)
	require.NoError(t, err)
	require.Contains(t, strings.Join(logs, "\n"), "BUILD SUCCESS (simulated)", "the build log is kept with the step")
	prodDeploy := e.Steps[len(e.Steps)-1]
	require.Equal(t, "prod", prodDeploy.Environment)
	require.NotEmpty(t, prodDeploy.Details["deploymentId"])
}

func TestValidationFailures(t *testing.T) {
	f := setup(t, "")
	_, pl, _ := f.c.Config.Pipeline("wknd", "main")
	pl.Branch = "does-not-exist"
	e := f.done(f.start(pipeline.StartOptions{}).ID)
	require.Equal(t, pipeline.ExecFailed, e.Status)
	require.Contains(t, e.Reason, `branch "does-not-exist" does not exist`)
	require.Equal(t, pipeline.StepNotStarted, step(e, pipeline.ActionBuild).Status)
}

func TestValidationFailsOnOfflineHost(t *testing.T) {
	f := setup(t, "")
	require.True(t, f.c.Server.Fleet().Disconnect("publish1", "test"))
	// The agent reconnects quickly; revoke it so it stays away.
	_, err := f.c.Server.PKI().Revoke("publish1", "test", "offline for the test")
	require.NoError(t, err)
	e := f.done(f.start(pipeline.StartOptions{}).ID)
	require.Equal(t, pipeline.ExecFailed, e.Status)
	require.Contains(t, e.Reason, "host publish1: its agent is not online")
}

func TestBuildFailureKeepsItsLog(t *testing.T) {
	f := setup(t, "")
	f.sim.Fail("build", "build failed with exit code 1: [ERROR] COMPILATION ERROR")
	e := f.done(f.start(pipeline.StartOptions{}).ID)
	require.Equal(t, pipeline.ExecFailed, e.Status)
	require.Contains(t, e.Reason, "COMPILATION ERROR")
	logs, err := f.m().Logs("wknd", "main", e.ID, step(e, pipeline.ActionBuild).ID)
	require.NoError(t, err)
	require.Contains(t, strings.Join(logs, "\n"), "COMPILATION ERROR")
}

func TestCriticalGateFailureFails(t *testing.T) {
	f := setup(t, "")
	f.gates.Set(pipeline.ActionCodeQuality, pipeline.Metric{ID: "security_rating", KPI: "security_rating", Severity: "critical", ActualValue: "D", ExpectedValue: "B", Comparator: "GTE"})
	e := f.done(f.start(pipeline.StartOptions{}).ID)
	require.Equal(t, pipeline.ExecFailed, e.Status)
	require.Contains(t, e.Reason, "critical gate failure: security_rating")
	require.Equal(t, pipeline.StepNotStarted, e.Steps[3].Status, "nothing deployed")
}

func TestImportantGateFailureOverriddenOrRejected(t *testing.T) {
	f := setup(t, "")
	cov := pipeline.Metric{ID: "coverage", KPI: "coverage", Severity: "important", ActualValue: "30", ExpectedValue: "50", Comparator: "GTE"}
	rel := pipeline.Metric{ID: "reliability_rating", KPI: "reliability_rating", Severity: "important", ActualValue: "D", ExpectedValue: "C", Comparator: "GTE"}
	f.gates.Set(pipeline.ActionCodeQuality, cov, rel)

	e := f.start(pipeline.StartOptions{})
	e = f.waitStep(e.ID, pipeline.ActionCodeQuality, pipeline.StepWaiting)
	err := f.m().Advance("wknd", "main", e.ID, step(e, pipeline.ActionCodeQuality).ID, pipeline.AdvanceInput{Overrides: []string{"coverage"}}, "bob")
	require.ErrorIs(t, err, pipeline.ErrBadInput)
	require.ErrorContains(t, err, "every failing important metric must be listed; missing: reliability_rating")
	f.advance(e, pipeline.ActionCodeQuality, pipeline.AdvanceInput{Overrides: []string{"coverage", "reliability_rating"}})
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)
	cq := step(e, pipeline.ActionCodeQuality)
	require.Equal(t, "bob", cq.Details["overriddenBy"])
	for _, m := range cq.Metrics {
		require.True(t, m.Override)
	}

	e = f.start(pipeline.StartOptions{})
	e = f.waitStep(e.ID, pipeline.ActionCodeQuality, pipeline.StepWaiting)
	require.NoError(t, f.m().Cancel("wknd", "main", e.ID, step(e, pipeline.ActionCodeQuality).ID, "bob"))
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecCancelled, e.Status)
	require.Contains(t, e.Reason, "codeQuality rejected by bob")
}

func TestApprovalRejected(t *testing.T) {
	f := setup(t, "        approval: true\n")
	e := f.waitStep(f.start(pipeline.StartOptions{}).ID, pipeline.ActionApproval, pipeline.StepWaiting)
	f.advance(e, pipeline.ActionApproval, pipeline.AdvanceInput{Approved: no()})
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecCancelled, e.Status)
	require.Contains(t, e.Reason, "approval rejected by bob")
	require.Equal(t, pipeline.StepNotStarted, e.Steps[len(e.Steps)-1].Status, "production untouched")
}

func TestScheduleInAnotherTimeZoneFiresAtTheInstant(t *testing.T) {
	f := setup(t, "        schedule: true\n")
	e := f.waitStep(f.start(pipeline.StartOptions{}).ID, pipeline.ActionSchedule, pipeline.StepWaiting)
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	at := time.Date(2026, 12, 1, 22, 0, 0, 0, berlin) // 21:00 UTC
	f.advance(e, pipeline.ActionSchedule, pipeline.AdvanceInput{At: at})
	e, err = f.m().Get("wknd", "main", e.ID)
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC), step(e, pipeline.ActionSchedule).ScheduledAt)

	// Just before the instant nothing happens.
	require.Eventually(t, func() bool { next, ok := f.clock.Next(); return ok && next.Equal(at) }, 5*time.Second, time.Millisecond)
	f.clock.Set(at.Add(-time.Second))
	time.Sleep(100 * time.Millisecond)
	e, _ = f.m().Get("wknd", "main", e.ID)
	require.Equal(t, pipeline.StepNotStarted, e.Steps[len(e.Steps)-1].Status)
	f.clock.Set(at)
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)
	require.Equal(t, at.UTC(), e.Steps[len(e.Steps)-1].StartedAt, "production deploy started at the scheduled instant")
}

func TestWaitingStepTimesOutAfterSevenDays(t *testing.T) {
	f := setup(t, "        approval: true\n")
	e := f.waitStep(f.start(pipeline.StartOptions{}).ID, pipeline.ActionApproval, pipeline.StepWaiting)
	since := step(e, pipeline.ActionApproval).WaitingSince
	require.Eventually(t, func() bool { next, ok := f.clock.Next(); return ok && next.Equal(since.Add(7*24*time.Hour)) }, 5*time.Second, time.Millisecond)
	f.clock.Advance(7*24*time.Hour - time.Minute)
	time.Sleep(50 * time.Millisecond)
	e, _ = f.m().Get("wknd", "main", e.ID)
	require.Equal(t, pipeline.ExecRunning, e.Status)
	f.clock.Advance(time.Minute)
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecCancelled, e.Status)
	require.Contains(t, e.Reason, "timed out: the approval step waited 168h0m0s without an answer")
}

func TestEmergencyMode(t *testing.T) {
	f := setup(t, "        approval: true\n")
	_, err := f.m().Start("wknd", "main", pipeline.StartOptions{Emergency: true, User: "alice"})
	require.ErrorIs(t, err, pipeline.ErrEmergencyDisabled)
	require.ErrorContains(t, err, "deckctl program set-emergency wknd on")

	normal := f.start(pipeline.StartOptions{})
	f.waitStep(normal.ID, pipeline.ActionApproval, pipeline.StepWaiting)
	require.NoError(t, f.m().Cancel("wknd", "main", normal.ID, step(normal, pipeline.ActionApproval).ID, "bob"))
	f.done(normal.ID)

	require.NoError(t, f.m().SetEmergency("wknd", true, "carol-cse"))
	e := f.start(pipeline.StartOptions{Emergency: true})
	require.Equal(t, pipeline.ModeEmergency, e.Mode)
	var skipped []string
	have := map[string]bool{}
	for _, a := range actions(e) {
		have[a] = true
	}
	for _, a := range actions(normal) {
		if !have[a] {
			skipped = append(skipped, a)
		}
	}
	require.Equal(t, []string{"securityTest", "loadTest"}, skipped, "emergency skips exactly the two testing steps")
	require.True(t, have["approval"], "approval still runs")
	e = f.waitStep(e.ID, pipeline.ActionApproval, pipeline.StepWaiting)
	f.advance(e, pipeline.ActionApproval, pipeline.AdvanceInput{Approved: yes()})
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)
}

func TestSecondExecutionIsBusy(t *testing.T) {
	f := setup(t, "        approval: true\n")
	e := f.start(pipeline.StartOptions{})
	_, err := f.m().Start("wknd", "main", pipeline.StartOptions{User: "x"})
	require.ErrorIs(t, err, pipeline.ErrBusy)
	require.ErrorContains(t, err, "execution "+e.ID)
	cur, err := f.m().Current("wknd", "main")
	require.NoError(t, err)
	require.Equal(t, e.ID, cur.ID)
}

func TestRestartWhileWaitingAndWhileScheduled(t *testing.T) {
	f := setup(t, "        approval: true\n        schedule: true\n")
	e := f.waitStep(f.start(pipeline.StartOptions{}).ID, pipeline.ActionApproval, pipeline.StepWaiting)
	f.c.Restart()
	e = f.waitStep(e.ID, pipeline.ActionApproval, pipeline.StepWaiting)
	f.advance(e, pipeline.ActionApproval, pipeline.AdvanceInput{Approved: yes()})
	e = f.waitStep(e.ID, pipeline.ActionSchedule, pipeline.StepWaiting)
	at := f.clock.Now().Add(48 * time.Hour)
	f.advance(e, pipeline.ActionSchedule, pipeline.AdvanceInput{At: at})
	f.c.Restart()
	// After the restart the schedule is still armed.
	require.Eventually(t, func() bool { next, ok := f.clock.Next(); return ok && next.Equal(at) }, 10*time.Second, time.Millisecond)
	e, err := f.m().Get("wknd", "main", e.ID)
	require.NoError(t, err)
	require.Equal(t, pipeline.ExecRunning, e.Status)
	require.Equal(t, at.UTC(), step(e, pipeline.ActionSchedule).ScheduledAt)
	f.clock.Set(at)
	e = f.done(e.ID)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)
}

func TestManualArtifactsSkipTheBuild(t *testing.T) {
	f := setup(t, "")
	sets := artifacts.NewSets(f.c.Server.Blobs(), f.c.Server.Store().Backend())
	arts, err := sets.Artifacts()
	require.NoError(t, err)
	set, _, err := sets.Create("manual-1", []string{arts[0].SHA256}, "alice")
	require.NoError(t, err)
	e := f.done(f.start(pipeline.StartOptions{ArtifactSet: set.ID}).ID)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)
	require.Equal(t, "artifacts pushed by hand", step(e, pipeline.ActionBuild).Details["skipped"])
	for _, o := range f.sim.Order() {
		require.NotEqual(t, "build:builder1", o, "no build ran")
	}
}
