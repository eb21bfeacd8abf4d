package deckctl_test

// deckctl's pipeline verbs through Execute with --credentials, against an
// in-process control plane whose hosts are sim agents, with a fake clock
// and gates that return what the test says (the pattern of
// controlplane/pipeline's tests). Names carry a pl prefix to stay out of
// the way of the package's other tests.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
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
	plTopology = pipelinetest.Topology
	plHosts    = pipelinetest.Hosts
)

// plMetric builds a gate metric; severity is one of the three constants.
func plMetric(kpi, severity string, passed bool, actual, expected string) pipeline.Metric {
	m := pipeline.Metric{ID: kpi, KPI: kpi, Passed: passed, ActualValue: actual, ExpectedValue: expected, Comparator: "GTE", Severity: "critical"}
	switch severity {
	case "important":
		m.Severity = "important"
	case "informational":
		m.Severity = "informational"
	}
	return m
}

type plFixture struct {
	t     *testing.T
	c     *servertest.Control
	clock *clock.Fake
	gates *pipelinetest.Gates
	// creds are credentials files by role ("admin" is the first admin).
	creds map[string]string
}

// plSetup starts the control plane with program wknd, pipeline main (plus
// pipelineExtra) and sim hosts, and creates one operator per role with
// deckctl admins create --write, as a person would.
func plSetup(t *testing.T, pipelineExtra string) *plFixture {
	f := &plFixture{t: t, clock: clock.NewFake(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)), gates: pipelinetest.NewGates(), creds: map[string]string{}}
	f.gates.Set(pipeline.ActionCodeQuality, plMetric("coverage", "important", true, "80", "50"))
	f.gates.Set(pipeline.ActionSecurityTest, plMetric("crxde_blocked", "critical", true, "true", "true"))
	f.gates.Set(pipeline.ActionLoadTest, plMetric("error_rate", "critical", true, "0", "2"))
	extra := pipelinetest.Program(pipelinetest.GitRepo(t), pipelineExtra)
	sim := servertest.NewSim()
	f.c = servertest.Start(t, servertest.Options{Topology: plTopology, Extra: extra, HeartbeatInterval: 200 * time.Millisecond,
		Server: func(o *server.Options) { o.Clock, o.Gates = f.clock, f.gates }})
	f.creds["admin"] = f.c.CredentialsPath()
	dir := t.TempDir()
	for _, r := range []string{"viewer", "deployer", "approver", "cse"} {
		path := filepath.Join(dir, r+".yaml")
		_, stderr, code := ctl("--credentials", f.creds["admin"], "admins", "create", "pl-"+r, "--role", r, "--write", path)
		require.Equal(t, 0, code, stderr)
		f.creds[r] = path
	}
	f.c.StartSimAgents(t, sim, plHosts...)
	sets := artifacts.NewSets(f.c.Server.Blobs(), f.c.Server.Store().Backend())
	pr, err := sets.PutFile(aempkgtest.WriteFile(t, t.TempDir(), "core.zip", aempkgtest.Package(aempkgtest.Spec{Group: "wknd", Name: "core", Version: "1.0"})))
	require.NoError(t, err)
	sim.Output("build", &task.BuildOutput{Commit: "0123456789abcdef", Artifacts: []task.Artifact{pr.Artifact.Ref()}})
	return f
}

// as runs deckctl as the operator with role and expects success.
func (f *plFixture) as(role string, args ...string) string {
	f.t.Helper()
	out, stderr, code := ctl(append([]string{"--credentials", f.creds[role]}, args...)...)
	require.Equal(f.t, 0, code, "deckctl %v: %s", args, stderr)
	require.Empty(f.t, stderr)
	return out
}

// fails runs deckctl as role and expects a one-line error containing want.
func (f *plFixture) fails(want, role string, args ...string) string {
	f.t.Helper()
	out, stderr, code := ctl(append([]string{"--credentials", f.creds[role]}, args...)...)
	require.Equal(f.t, 1, code, "deckctl %v should fail; out: %s", args, out)
	require.True(f.t, strings.HasPrefix(stderr, "deckctl: "), stderr)
	require.Equal(f.t, 1, strings.Count(stderr, "\n"), "error must be one line: %q", stderr)
	require.Contains(f.t, stderr, want)
	return stderr
}

func (f *plFixture) execution(id string) *pipeline.Execution {
	e, err := f.c.Server.Pipelines().Get("wknd", "main", id)
	require.NoError(f.t, err)
	return e
}

func plStepOf(e *pipeline.Execution, action string) *pipeline.Step {
	var found *pipeline.Step
	for i := range e.Steps {
		if e.Steps[i].Action == action {
			found = &e.Steps[i]
		}
	}
	return found
}

// waitUntilWaiting is `execution watch --until-waiting` and checks it
// stopped at action.
func (f *plFixture) waitUntilWaiting(action string) string {
	f.t.Helper()
	out := f.as("viewer", "execution", "watch", "-p", "wknd/main", "--until-waiting")
	require.NotContains(f.t, out, "\x1b[", "no screen redraws when stdout is not a terminal")
	last := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	require.Regexp(f.t, `^step \d+ \(.*\) is waiting for `, last)
	e, err := f.c.Server.Pipelines().Current("wknd", "main")
	require.NoError(f.t, err)
	require.Equal(f.t, pipeline.StepWaiting, plStepOf(e, action).Status, out)
	return out
}

func TestDeckctlPipelineExecutionEveryWaitingStep(t *testing.T) {
	f := plSetup(t, "        approval: true\n        schedule: true\n        cse_support: true\n")
	f.gates.Set(pipeline.ActionCodeQuality,
		plMetric("coverage", "important", false, "30", "50"),
		plMetric("reliability_rating", "important", false, "D", "C"),
		plMetric("security_rating", "critical", true, "A", "B"),
		plMetric("bugs", "informational", false, "3", "0"))

	out := f.as("viewer", "pipeline", "list")
	require.Regexp(t, `(?m)^PIPELINE\s+REPOSITORY\s+STAGE → PROD\s+WAITING STEPS\s+EMERGENCY\s+RUNNING$`, out)
	require.Regexp(t, `(?m)^wknd/main\s+\S+@main\s+stage → prod\s+approval,schedule,cse\s+disabled\s+-$`, out)

	f.fails("CreateExecution needs the deployer role; pl-viewer has viewer", "viewer", "pipeline", "create-execution", "wknd/main")
	out = f.as("deployer", "pipeline", "create-execution", "wknd/main")
	require.True(t, strings.HasPrefix(out, "wknd › main › Execution 1 (NORMAL)\nstarted by pl-deployer\n"), out)
	f.fails("busy: execution 1 of wknd/main is still running", "deployer", "pipeline", "create-execution", "wknd/main")
	f.fails(`pipeline "wknd": want PROGRAM/PIPELINE`, "deployer", "pipeline", "create-execution", "wknd")

	out = f.as("viewer", "execution", "get", "-p", "wknd/main")
	require.True(t, strings.HasPrefix(out, "wknd › main › Execution 1 (NORMAL)\nRUNNING · started by pl-deployer 2026-12-01 "), out)
	for _, want := range []string{"\nStage Deployment\n", "\nStage Testing\n", "\nProduction Deployment\n",
		"Validation", "Build & Unit Testing", "Code Scanning", "Deploy to Stage", "Security Testing", "Performance Testing",
		"Application for Approval", "Schedule Production Deployment", "CSE Support", "Deploy to Production"} {
		require.Contains(t, out, want)
	}
	require.Less(t, strings.Index(out, "Stage Testing"), strings.Index(out, "Application for Approval"), "phases in order")

	// Code Scanning waits: two failing important metrics.
	out = f.waitUntilWaiting(pipeline.ActionCodeQuality)
	require.True(t, strings.HasPrefix(out, "wknd › main › Execution 1 (NORMAL)\n"), out)
	require.Contains(t, out, "step 3 (Code Scanning) is waiting for approver or deployer: deckctl execution advance override --kpi coverage --kpi reliability_rating -p wknd/main")
	out = f.as("viewer", "execution", "gate-results", "codeQuality", "-p", "wknd/main")
	require.Contains(t, out, "wknd › main › Execution 1 (NORMAL) › step 3 Code Scanning (WAITING)\n")
	require.Regexp(t, `(?m)^coverage\s+important\s+30\s+≥ 50\s+FAILED$`, out)
	require.Regexp(t, `(?m)^reliability_rating\s+important\s+D\s+≥ C\s+FAILED$`, out)
	require.Regexp(t, `(?m)^security_rating\s+critical\s+A\s+≥ B\s+passed$`, out)
	require.Contains(t, out, "override --kpi coverage --kpi reliability_rating")
	var gates struct {
		Step    map[string]any   `json:"step"`
		Metrics []map[string]any `json:"metrics"`
	}
	require.NoError(t, json.Unmarshal([]byte(f.as("viewer", "execution", "gate-results", "codeQuality", "-p", "wknd/main", "-o", "json")), &gates))
	require.Len(t, gates.Metrics, 4)
	require.Equal(t, "coverage", gates.Metrics[0]["kpi"])
	require.Equal(t, false, gates.Metrics[0]["passed"])
	require.Equal(t, "WAITING", gates.Step["status"])

	// An override must list every failing important metric.
	f.fails("answering step 3 (codeQuality) needs the approver or deployer role; pl-viewer has viewer", "viewer", "execution", "advance", "override", "--kpi", "coverage,reliability_rating", "-p", "wknd/main")
	f.fails("every failing important metric must be listed; missing: reliability_rating", "deployer", "execution", "advance", "override", "--kpi", "coverage", "-p", "wknd/main")
	f.fails("step 3 (codeQuality) takes an override", "approver", "execution", "advance", "approve", "-p", "wknd/main")
	out = f.as("deployer", "execution", "advance", "override", "--kpi", "coverage", "--kpi", "reliability_rating", "-p", "wknd/main")
	require.Contains(t, out, "step 3 Code Scanning: overrode coverage, reliability_rating; it is FINISHED, the execution RUNNING\n")

	// Approval: a deployer may not, an approver may.
	f.waitUntilWaiting(pipeline.ActionApproval)
	out = f.fails("step 7 (Application for Approval) is waiting for approver; answer with deckctl execution advance approve|reject -p wknd/main", "viewer", "execution", "advance", "-p", "wknd/main")
	f.fails("answering step 7 (approval) needs the approver role; pl-deployer has deployer", "deployer", "execution", "advance", "approve", "-p", "wknd/main")
	var adv struct {
		Execution map[string]any `json:"execution"`
		Step      map[string]any `json:"step"`
	}
	require.NoError(t, json.Unmarshal([]byte(f.as("approver", "execution", "advance", "approve", "-p", "wknd/main", "-o", "json")), &adv))
	require.Equal(t, "approval", adv.Step["action"])
	require.Equal(t, "pl-approver", adv.Step["details"].(map[string]any)["approvedBy"])
	require.Equal(t, "NORMAL", adv.Execution["mode"])

	// Schedule in Berlin's time: 22:00 CET is 21:00 UTC, stored as such.
	f.waitUntilWaiting(pipeline.ActionSchedule)
	f.fails(`--at "2027-03-28 02:30" does not exist in Europe/Berlin`, "approver", "execution", "advance", "schedule", "--at", "2027-03-28 02:30", "--tz", "Europe/Berlin", "-p", "wknd/main")
	f.fails(`--at "2027-10-31 02:30" happens twice in Europe/Berlin`, "approver", "execution", "advance", "schedule", "--at", "2027-10-31 02:30", "--tz", "Europe/Berlin", "-p", "wknd/main")
	f.fails(`--tz "Mars/Olympus": not a known time zone`, "approver", "execution", "advance", "schedule", "--at", "2026-12-01 22:00", "--tz", "Mars/Olympus", "-p", "wknd/main")
	out = f.as("approver", "execution", "advance", "schedule", "--at", "2026-12-01 22:00", "--tz", "Europe/Berlin", "-p", "wknd/main")
	require.Contains(t, out, "step 8 Schedule Production Deployment: scheduled the production deployment for 2026-12-01 22:00 CET (Europe/Berlin) = 2026-12-01T21:00:00Z; it is RUNNING")
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	require.Equal(t, at, plStepOf(f.execution("1"), pipeline.ActionSchedule).ScheduledAt)
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(f.as("viewer", "execution", "get", "1", "-p", "wknd/main", "-o", "json")), &got))
	require.Equal(t, "2026-12-01T21:00:00Z", got["steps"].([]any)[7].(map[string]any)["scheduled_at"])
	require.Contains(t, f.as("viewer", "execution", "get", "-p", "wknd/main"), "scheduled for 2026-12-01T21:00:00Z")
	require.Eventually(t, func() bool { next, ok := f.clock.Next(); return ok && next.Equal(at) }, 10*time.Second, time.Millisecond)
	f.clock.Set(at)

	// CSE support: an approver may not, a cse may.
	f.waitUntilWaiting(pipeline.ActionManaged)
	f.fails("answering step 9 (managed) needs the cse role; pl-approver has approver", "approver", "execution", "advance", "cse-start", "-p", "wknd/main")
	f.as("cse", "execution", "advance", "cse-start", "-p", "wknd/main")

	// Watching to the end succeeds once the execution FINISHED.
	out = f.as("viewer", "execution", "watch", "1", "-p", "wknd/main")
	require.Contains(t, out, "wknd › main › Execution 1 (NORMAL)\nFINISHED · ")
	require.Regexp(t, `(?m)^  10\s+Deploy to Production\s+FINISHED\s+`, out)
	require.Equal(t, pipeline.ExecFinished, f.execution("1").Status)

	out = f.as("viewer", "execution", "step-log", "build", "-p", "wknd/main")
	require.True(t, strings.HasPrefix(out, "wknd › main › Execution 1 (NORMAL) › step 2 Build & Unit Testing (FINISHED)\n"), out)
	require.Contains(t, out, "BUILD SUCCESS (simulated)")
	var log struct {
		Step  map[string]any `json:"step"`
		Lines []string       `json:"lines"`
	}
	require.NoError(t, json.Unmarshal([]byte(f.as("viewer", "execution", "step-log", "deploy:prod", "-e", "1", "-p", "wknd/main", "-o", "json")), &log))
	require.Equal(t, "prod", log.Step["environment"])
	require.NotEmpty(t, log.Lines)

	out = f.as("viewer", "execution", "list", "-p", "wknd/main")
	require.Regexp(t, `(?m)^EXECUTION\s+MODE\s+STATUS\s+USER\s+STARTED\s+TOOK\s+NOW / REASON$`, out)
	require.Regexp(t, `(?m)^1\s+NORMAL\s+FINISHED\s+pl-deployer\s+2026-12-01 `, out)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(f.as("viewer", "execution", "list", "-p", "wknd/main", "-o", "json")), &list))
	require.Len(t, list, 1)
	require.Equal(t, "FINISHED", list[0]["status"])
	var pls []map[string]any
	require.NoError(t, json.Unmarshal([]byte(f.as("viewer", "pipeline", "list", "-o", "json")), &pls))
	require.Equal(t, []any{"wknd", "main", true, false, ""}, []any{pls[0]["program"], pls[0]["pipeline"], pls[0]["cse_support"], pls[0]["emergency_enabled"], pls[0]["current_execution"]})
}

func TestDeckctlEmergencyRejectCancel(t *testing.T) {
	f := plSetup(t, "        approval: true\n        schedule: true\n")

	f.fails(`artifact set "set-nope"`, "deployer", "pipeline", "create-execution", "wknd/main", "--artifacts", "set-nope")
	f.fails("emergency mode is not enabled for this program: program \"wknd\"; a Customer Success Engineer (role cse) can enable it with `deckctl program set-emergency wknd on`",
		"deployer", "pipeline", "create-execution", "wknd/main", "--emergency")
	f.fails("SetEmergency needs the cse role; pl-approver has approver", "approver", "program", "set-emergency", "wknd", "on")
	f.fails(`"maybe": say on or off`, "cse", "program", "set-emergency", "wknd", "maybe")
	require.Equal(t, "emergency mode of program wknd is on: executions may skip Security and Performance Testing (create-execution --emergency)\n",
		f.as("cse", "program", "set-emergency", "wknd", "on"))
	var sw map[string]any
	require.NoError(t, json.Unmarshal([]byte(f.as("cse", "program", "set-emergency", "wknd", "on", "-o", "json")), &sw))
	require.Equal(t, map[string]any{"program": "wknd", "enabled": true}, sw)

	var created map[string]any
	require.NoError(t, json.Unmarshal([]byte(f.as("deployer", "pipeline", "create-execution", "wknd/main", "--emergency", "-o", "json")), &created))
	require.Equal(t, "EMERGENCY", created["mode"])
	require.Equal(t, "1", created["id"])
	out := f.as("viewer", "execution", "get", "-p", "wknd/main")
	require.True(t, strings.HasPrefix(out, "wknd › main › Execution 1 (EMERGENCY)\n"), out)
	require.Contains(t, out, "\nStage Testing\n  skipped: emergency mode\n")
	require.NotContains(t, out, "Security Testing")

	// Rejected approval: the execution ends CANCELLED and a watch fails.
	out = f.waitUntilWaiting(pipeline.ActionApproval)
	require.True(t, strings.HasPrefix(out, "wknd › main › Execution 1 (EMERGENCY)\n"), out)
	f.fails("answering step 5 (approval) needs the approver role; pl-cse has cse", "cse", "execution", "advance", "reject", "-p", "wknd/main")
	out = f.as("approver", "execution", "advance", "reject", "-p", "wknd/main")
	require.Contains(t, out, "wknd › main › Execution 1 (EMERGENCY)\nstep 5 Application for Approval: rejected; it is CANCELLED, the execution CANCELLED\n")
	f.fails("execution 1 CANCELLED: approval rejected by pl-approver", "viewer", "execution", "watch", "1", "-p", "wknd/main")
	require.Contains(t, f.as("viewer", "execution", "get", "1", "-p", "wknd/main"), "reason: approval rejected by pl-approver")
	f.fails("no execution of wknd/main is running", "approver", "execution", "advance", "approve", "-p", "wknd/main")

	// Cancel: a viewer may not, a deployer may.
	require.Contains(t, f.as("deployer", "pipeline", "create-execution", "wknd/main"), "wknd › main › Execution 2 (NORMAL)\n")
	f.waitUntilWaiting(pipeline.ActionApproval)
	f.fails("Cancel needs the deployer role; pl-viewer has viewer", "viewer", "execution", "cancel", "-p", "wknd/main")
	out = f.as("deployer", "execution", "cancel", "-p", "wknd/main")
	require.Equal(t, "wknd › main › Execution 2 (NORMAL)\nCANCELLED: approval rejected by pl-deployer\n", out)

	// --watch follows a new execution to its end: approve, deploy now.
	// -o json is one event per line.
	require.NoError(t, f.c.Server.Pipelines().SetEmergency("wknd", false, "test"))
	done := make(chan string, 1)
	go func() {
		out, stderr, code := ctl("--credentials", f.creds["deployer"], "pipeline", "create-execution", "wknd/main", "--watch", "-o", "json")
		done <- fmt.Sprintf("%d|%s|%s", code, stderr, out)
	}()
	require.Eventually(t, func() bool {
		e, err := f.c.Server.Pipelines().Current("wknd", "main")
		return err == nil && plStepOf(e, pipeline.ActionApproval).Status == pipeline.StepWaiting
	}, 30*time.Second, 10*time.Millisecond)
	f.as("approver", "execution", "advance", "approve", "-p", "wknd/main")
	require.Eventually(t, func() bool {
		e, err := f.c.Server.Pipelines().Current("wknd", "main")
		return err == nil && plStepOf(e, pipeline.ActionSchedule).Status == pipeline.StepWaiting
	}, 30*time.Second, 10*time.Millisecond)
	f.fails("give --at or --now, not both", "approver", "execution", "advance", "schedule", "--now", "--at", "2026-12-01 22:00", "-p", "wknd/main")
	require.Contains(t, f.as("approver", "execution", "advance", "schedule", "--now", "-p", "wknd/main"), "step 8 Schedule Production Deployment: production deployment starts now; it is FINISHED")
	var res string
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("create-execution --watch did not return")
	}
	parts := strings.SplitN(res, "|", 3)
	require.Equal(t, "0", parts[0], parts[1])
	lines := strings.Split(strings.TrimSpace(parts[2]), "\n")
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.Equal(t, "3", first["id"])
	var last map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last))
	require.Equal(t, "FINISHED", last["execution"].(map[string]any)["status"])
	for _, l := range lines[1:] {
		var ev map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &ev), l)
		require.Equal(t, "3", ev["execution_id"])
	}

	f.fails("name the pipeline: --pipeline PROGRAM/PIPELINE", "viewer", "execution", "get")
	f.fails(`pipeline "nope" of program "wknd" is not configured`, "viewer", "execution", "get", "-p", "wknd/nope")
	f.fails(`execution 99 of wknd/main not found`, "viewer", "execution", "get", "99", "-p", "wknd/main")
	f.fails(`give --at "YYYY-MM-DD HH:MM" (with --tz ZONE) or --now`, "approver", "execution", "advance", "schedule", "-p", "wknd/main")
}
