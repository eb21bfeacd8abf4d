package api_test

// PipelineService over real gRPC and TLS against an in-process control
// plane whose hosts are sim agents, with a fake clock and gates that
// return what the test says. Names carry a ps prefix: the package's other
// tests (the HTTP API's) have their own fixture.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline/pipelinetest"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/clock"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

var (
	psTopology = pipelinetest.Topology
	psHosts    = pipelinetest.Hosts
)

// psMetric builds a gate metric. The severity is spelled out as constants
// so this file needs no import of package gates, whose name the package's
// other tests use for their own fake.
func psMetric(kpi, severity string, passed bool) pipeline.Metric {
	m := pipeline.Metric{ID: kpi, KPI: kpi, Passed: passed, ActualValue: "30", ExpectedValue: "50", Comparator: "GTE", Severity: "critical"}
	switch severity {
	case "important":
		m.Severity = "important"
	case "informational":
		m.Severity = "informational"
	}
	return m
}

type psFixture struct {
	t       *testing.T
	c       *servertest.Control
	clock   *clock.Fake
	gates   *pipelinetest.Gates
	mu      sync.Mutex
	clients map[string]pb.PipelineServiceClient
}

// psSetup starts a control plane with program wknd, pipeline main (plus
// pipelineExtra), sim hosts, and one operator per role whose token is
// "ps-<role>".
func psSetup(t *testing.T, pipelineExtra string) *psFixture {
	f := &psFixture{t: t, clock: clock.NewFake(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)), gates: pipelinetest.NewGates(),
		clients: map[string]pb.PipelineServiceClient{}}
	f.gates.Set(pipeline.ActionCodeQuality, psMetric("coverage", "important", true))
	f.gates.Set(pipeline.ActionSecurityTest, psMetric("crxde_blocked", "critical", true))
	f.gates.Set(pipeline.ActionLoadTest, psMetric("error_rate", "critical", true))
	extra := pipelinetest.Program(pipelinetest.GitRepo(t), pipelineExtra)
	sim := servertest.NewSim()
	f.c = servertest.Start(t, servertest.Options{Topology: psTopology, Extra: extra, HeartbeatInterval: 200 * time.Millisecond,
		Server: func(o *server.Options) { o.Clock, o.Gates = f.clock, f.gates }})
	for _, r := range []string{"viewer", "deployer", "approver", "cse", "admin"} {
		require.NoError(t, f.c.Server.Store().PutAdmin(store.Admin{Name: "ps-" + r, Roles: []string{r}, CreatedAt: time.Now()}, "ps-"+r))
	}
	f.c.StartSimAgents(t, sim, psHosts...)
	sets := artifacts.NewSets(f.c.Server.Blobs(), f.c.Server.Store().Backend())
	pr, err := sets.PutFile(aempkgtest.WriteFile(t, t.TempDir(), "core.zip", aempkgtest.Package(aempkgtest.Spec{Group: "wknd", Name: "core", Version: "1.0"})))
	require.NoError(t, err)
	sim.Output("build", &task.BuildOutput{Commit: "0123456789abcdef", Artifacts: []task.Artifact{pr.Artifact.Ref()}})
	return f
}

// as is the PipelineService as the operator with role.
func (f *psFixture) as(role string) pb.PipelineServiceClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.clients[role] == nil {
		f.clients[role] = pb.NewPipelineServiceClient(f.c.ConnWithToken("ps-" + role))
	}
	return f.clients[role]
}

func psCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls the execution until its step with action (the last one
// when two share it) has status.
func (f *psFixture) waitFor(id, action, st string) *pb.PipelineExecution {
	var e *pb.PipelineExecution
	require.Eventually(f.t, func() bool {
		var err error
		e, err = f.as("viewer").GetExecution(psCtx(f.t), &pb.GetExecutionRequest{Program: "wknd", Pipeline: "main", Execution: id})
		require.NoError(f.t, err)
		s := psStep(e, action)
		return s != nil && s.Status == st
	}, 30*time.Second, 10*time.Millisecond, "step %s never became %s", action, st)
	return e
}

func (f *psFixture) waitDone(id string) *pb.PipelineExecution {
	var e *pb.PipelineExecution
	require.Eventually(f.t, func() bool {
		var err error
		e, err = f.as("viewer").GetExecution(psCtx(f.t), &pb.GetExecutionRequest{Program: "wknd", Pipeline: "main", Execution: id})
		require.NoError(f.t, err)
		switch e.Status {
		case pipeline.ExecFinished, pipeline.ExecCancelled, pipeline.ExecFailed, pipeline.ExecError:
			return true
		}
		return false
	}, 60*time.Second, 10*time.Millisecond)
	return e
}

func psStep(e *pb.PipelineExecution, action string) *pb.ExecutionStep {
	var found *pb.ExecutionStep
	for _, s := range e.Steps {
		if s.Action == action {
			found = s
		}
	}
	return found
}

func psDenied(t *testing.T, err error, role string) {
	t.Helper()
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), "needs the "+role+" role")
}

func psAdvance(step string, a any) *pb.AdvanceRequest {
	r := &pb.AdvanceRequest{Program: "wknd", Pipeline: "main", Step: step}
	switch v := a.(type) {
	case *pb.AdvanceRequest_Approved:
		r.Answer = v
	case *pb.AdvanceRequest_ScheduleAt:
		r.Answer = v
	case *pb.AdvanceRequest_Immediate:
		r.Answer = v
	case *pb.AdvanceRequest_Start:
		r.Answer = v
	case *pb.AdvanceRequest_Override:
		r.Answer = v
	case *pb.AdvanceRequest_Reject:
		r.Answer = v
	}
	return r
}

// TestPipelineServiceWholeExecution runs an execution through every
// waiting step, answering each as the role it needs after the roles it
// does not need were refused, and follows it on the watch stream.
func TestPipelineServiceWholeExecution(t *testing.T) {
	f := psSetup(t, "        approval: true\n        schedule: true\n        cse_support: true\n")
	f.gates.Set(pipeline.ActionCodeQuality, psMetric("coverage", "important", false), psMetric("reliability_rating", "important", false), psMetric("bugs", "informational", false))
	ctx := psCtx(t)

	list, err := f.as("viewer").ListPipelines(ctx, &pb.ListPipelinesRequest{})
	require.NoError(t, err)
	require.Len(t, list.Pipelines, 1)
	p := list.Pipelines[0]
	require.Equal(t, []any{"wknd", "main", "main", "stage", "prod", true, true, true, false, ""},
		[]any{p.Program, p.Pipeline, p.Branch, p.StageEnvironment, p.ProductionEnvironment, p.Approval, p.Schedule, p.CseSupport, p.EmergencyEnabled, p.CurrentExecution})

	_, err = f.as("viewer").CreateExecution(ctx, &pb.CreateExecutionRequest{Program: "wknd", Pipeline: "main"})
	psDenied(t, err, "deployer")

	// Watch from before the start: the first message is the (idle)
	// snapshot, then every event of the pipeline.
	wctx, stopWatch := context.WithCancel(context.Background())
	stream, err := f.as("viewer").WatchExecutions(wctx, &pb.WatchExecutionsRequest{Program: "wknd", Pipeline: "main", WithExecution: true})
	require.NoError(t, err)
	first, err := stream.Recv()
	require.NoError(t, err)
	require.True(t, first.Snapshot)
	require.Empty(t, first.ExecutionId)
	var evMu sync.Mutex
	var events []*pb.ExecutionEvent
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			evMu.Lock()
			events = append(events, ev)
			evMu.Unlock()
		}
	}()
	t.Cleanup(func() { stopWatch(); <-watchDone })

	e, err := f.as("deployer").CreateExecution(ctx, &pb.CreateExecutionRequest{Program: "wknd", Pipeline: "main"})
	require.NoError(t, err)
	require.Equal(t, "ps-deployer", e.User)
	require.Equal(t, pipeline.ModeNormal, e.Mode)
	_, err = f.as("deployer").CreateExecution(ctx, &pb.CreateExecutionRequest{Program: "wknd", Pipeline: "main"})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "busy")

	// Code Scanning waits on two failing important metrics.
	e = f.waitFor(e.Id, pipeline.ActionCodeQuality, pipeline.StepWaiting)
	cq := psStep(e, pipeline.ActionCodeQuality)
	require.Equal(t, []string{"approver", "deployer"}, cq.RequiredRoles)
	require.Equal(t, cq.WaitingSince.AsTime().Add(7*24*time.Hour), cq.TimeoutAt.AsTime(), "the seed's 7 days")
	gr, err := f.as("viewer").GetQualityGateResults(ctx, &pb.GetQualityGateResultsRequest{Program: "wknd", Pipeline: "main", Action: "codeQuality"})
	require.NoError(t, err)
	require.Len(t, gr.Metrics, 3)
	require.Equal(t, "coverage", gr.Metrics[0].Kpi)
	require.False(t, gr.Metrics[0].Passed)
	_, err = f.as("viewer").GetQualityGateResults(ctx, &pb.GetQualityGateResultsRequest{Program: "wknd", Pipeline: "main", Action: "build"})
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	_, err = f.as("viewer").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Override{Override: &pb.KpiOverrides{Kpis: []string{"coverage", "reliability_rating"}}}))
	psDenied(t, err, "approver or deployer")
	_, err = f.as("deployer").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Approved{Approved: true}))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "step 3 (codeQuality) takes an override")
	_, err = f.as("deployer").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Override{Override: &pb.KpiOverrides{Kpis: []string{"coverage"}}}))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "missing: reliability_rating")
	adv, err := f.as("deployer").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Override{Override: &pb.KpiOverrides{Kpis: []string{"coverage", "reliability_rating"}}}))
	require.NoError(t, err)
	require.Equal(t, "3", adv.Step.Id)
	require.Equal(t, "ps-deployer", adv.Step.Details["overriddenBy"])

	e = f.waitFor(e.Id, pipeline.ActionApproval, pipeline.StepWaiting)
	_, err = f.as("deployer").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Approved{Approved: true}))
	psDenied(t, err, "approver")
	_, err = f.as("approver").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Approved{Approved: true}))
	require.NoError(t, err)

	e = f.waitFor(e.Id, pipeline.ActionSchedule, pipeline.StepWaiting)
	_, err = f.as("approver").Advance(ctx, psAdvance("", &pb.AdvanceRequest_ScheduleAt{ScheduleAt: "2026-12-01 22:00"}))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = f.as("approver").Advance(ctx, psAdvance("", &pb.AdvanceRequest_ScheduleAt{ScheduleAt: "2026-12-01T07:00:00Z"}))
	require.Equal(t, codes.InvalidArgument, status.Code(err), "in the past")
	adv, err = f.as("approver").Advance(ctx, psAdvance("schedule", &pb.AdvanceRequest_ScheduleAt{ScheduleAt: "2026-12-01T22:00:00+01:00"}))
	require.NoError(t, err)
	at := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	require.Equal(t, at, adv.Step.ScheduledAt.AsTime())
	require.Equal(t, pipeline.StepRunning, adv.Step.Status)
	// Nothing waits now: a bare advance says so.
	_, err = f.as("approver").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Approved{Approved: true}))
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "no step of execution "+e.Id+" is waiting")
	require.Eventually(t, func() bool { next, ok := f.clock.Next(); return ok && next.Equal(at) }, 10*time.Second, time.Millisecond)
	f.clock.Set(at)

	e = f.waitFor(e.Id, pipeline.ActionManaged, pipeline.StepWaiting)
	_, err = f.as("approver").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Start{Start: true}))
	psDenied(t, err, "cse")
	_, err = f.as("cse").Advance(ctx, psAdvance("managed", &pb.AdvanceRequest_Start{Start: true}))
	require.NoError(t, err)
	e = f.waitDone(e.Id)
	require.Equal(t, pipeline.ExecFinished, e.Status, e.Reason)

	_, err = f.as("viewer").GetCurrentExecution(ctx, &pb.GetCurrentExecutionRequest{Program: "wknd", Pipeline: "main"})
	require.Equal(t, codes.NotFound, status.Code(err))
	l, err := f.as("viewer").ListExecutions(ctx, &pb.ListExecutionsRequest{Program: "wknd", Pipeline: "main"})
	require.NoError(t, err)
	require.EqualValues(t, 1, l.Total)
	log, err := f.as("viewer").GetStepLog(ctx, &pb.GetStepRequest{Program: "wknd", Pipeline: "main", Execution: e.Id, Step: "build"})
	require.NoError(t, err)
	require.Contains(t, fmt.Sprint(log.Lines), "BUILD SUCCESS (simulated)")
	prod, err := f.as("viewer").GetStep(ctx, &pb.GetStepRequest{Program: "wknd", Pipeline: "main", Execution: e.Id, Step: "deploy"})
	require.NoError(t, err)
	require.Equal(t, "prod", prod.Environment, "plain deploy is the latest that started")
	stage, err := f.as("viewer").GetStep(ctx, &pb.GetStepRequest{Program: "wknd", Pipeline: "main", Execution: e.Id, Step: "deploy:stage"})
	require.NoError(t, err)
	require.Equal(t, "4", stage.Id)
	_, err = f.as("viewer").GetStep(ctx, &pb.GetStepRequest{Program: "wknd", Pipeline: "main", Execution: e.Id, Step: "bogus"})
	require.Equal(t, codes.NotFound, status.Code(err))

	// The stream saw the execution through: each event carries the state
	// after it, the last one FINISHED.
	require.Eventually(t, func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		return len(events) > 0 && events[len(events)-1].Execution.GetStatus() == pipeline.ExecFinished
	}, 10*time.Second, 10*time.Millisecond)
	evMu.Lock()
	defer evMu.Unlock()
	sawWaiting := map[string]bool{}
	for _, ev := range events {
		require.Equal(t, e.Id, ev.ExecutionId)
		require.NotNil(t, ev.Execution)
		if ev.StepId != "" {
			// The attached execution is the state at this event, never
			// ahead of it: the event's step has the event's status.
			st := psStepByID(ev.Execution, ev.StepId)
			require.NotNil(t, st, "step %s in the event's execution", ev.StepId)
			require.Equal(t, ev.Status, st.Status, "event %s %s: execution attached to it", ev.StepId, ev.Status)
		}
		if ev.Status == pipeline.StepWaiting {
			sawWaiting[ev.Action] = true
		}
	}
	require.Equal(t, map[string]bool{"codeQuality": true, "approval": true, "schedule": true, "managed": true}, sawWaiting)
}

// TestPipelineServiceEmergencyRejectCancelAndInput covers the emergency
// switch, rejection of a gate, cancel, and malformed calls.
func TestPipelineServiceEmergencyRejectCancelAndInput(t *testing.T) {
	f := psSetup(t, "        approval: true\n")
	ctx := psCtx(t)

	_, err := f.as("admin").CreateExecution(ctx, &pb.CreateExecutionRequest{Program: "wknd", Pipeline: "main", Emergency: true})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "emergency mode is not enabled for this program")
	_, err = f.as("approver").SetEmergency(ctx, &pb.SetEmergencyRequest{Program: "wknd", Enabled: true})
	psDenied(t, err, "cse")
	_, err = f.as("cse").SetEmergency(ctx, &pb.SetEmergencyRequest{Program: "nope", Enabled: true})
	require.Equal(t, codes.NotFound, status.Code(err))
	on, err := f.as("cse").SetEmergency(ctx, &pb.SetEmergencyRequest{Program: "wknd", Enabled: true})
	require.NoError(t, err)
	require.True(t, on.Enabled)
	list, err := f.as("viewer").ListPipelines(ctx, &pb.ListPipelinesRequest{Program: "wknd"})
	require.NoError(t, err)
	require.True(t, list.Pipelines[0].EmergencyEnabled)

	e, err := f.as("deployer").CreateExecution(ctx, &pb.CreateExecutionRequest{Program: "wknd", Pipeline: "main", Emergency: true})
	require.NoError(t, err)
	require.Equal(t, pipeline.ModeEmergency, e.Mode)
	for _, s := range e.Steps {
		require.NotContains(t, []string{"securityTest", "loadTest"}, s.Action)
	}
	// A viewer cannot cancel; a deployer can, here rejecting the waiting
	// approval.
	e = f.waitFor(e.Id, pipeline.ActionApproval, pipeline.StepWaiting)
	_, err = f.as("viewer").Cancel(ctx, &pb.CancelExecutionRequest{Program: "wknd", Pipeline: "main"})
	psDenied(t, err, "deployer")
	c, err := f.as("deployer").Cancel(ctx, &pb.CancelExecutionRequest{Program: "wknd", Pipeline: "main"})
	require.NoError(t, err)
	require.Equal(t, pipeline.ExecCancelled, c.Status)
	_, err = f.as("deployer").Cancel(ctx, &pb.CancelExecutionRequest{Program: "wknd", Pipeline: "main", Execution: e.Id})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))

	// A gate rejected by a deployer ends the execution CANCELLED.
	f.gates.Set(pipeline.ActionCodeQuality, psMetric("coverage", "important", false))
	e, err = f.as("deployer").CreateExecution(ctx, &pb.CreateExecutionRequest{Program: "wknd", Pipeline: "main"})
	require.NoError(t, err)
	f.waitFor(e.Id, pipeline.ActionCodeQuality, pipeline.StepWaiting)
	_, err = f.as("cse").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Reject{Reject: true}))
	psDenied(t, err, "approver or deployer")
	_, err = f.as("deployer").Advance(ctx, psAdvance("", &pb.AdvanceRequest_Reject{Reject: true}))
	require.NoError(t, err)
	e = f.waitDone(e.Id)
	require.Equal(t, pipeline.ExecCancelled, e.Status)
	require.Contains(t, e.Reason, "codeQuality rejected by ps-deployer")

	// Malformed calls say what is wrong, before any role is checked.
	for _, err := range []error{
		func() error { _, err := f.as("viewer").Advance(ctx, &pb.AdvanceRequest{}); return err }(),
		func() error {
			_, err := f.as("viewer").Advance(ctx, &pb.AdvanceRequest{Program: "wknd", Pipeline: "main"})
			return err
		}(),
		func() error {
			_, err := f.as("viewer").GetExecution(ctx, &pb.GetExecutionRequest{Program: "wknd", Pipeline: "main"})
			return err
		}(),
		func() error {
			_, err := f.as("viewer").ListExecutions(ctx, &pb.ListExecutionsRequest{Program: "wknd", Pipeline: "main", Start: -1})
			return err
		}(),
	} {
		require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	}
	_, err = f.as("viewer").GetExecution(ctx, &pb.GetExecutionRequest{Program: "wknd", Pipeline: "nope", Execution: "1"})
	require.Equal(t, codes.NotFound, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), `pipeline "nope" of program "wknd" is not configured`)
	_, err = f.as("viewer").GetExecution(ctx, &pb.GetExecutionRequest{Program: "wknd", Pipeline: "main", Execution: "99"})
	require.Equal(t, codes.NotFound, status.Code(err))
	ws, err := f.as("viewer").WatchExecutions(ctx, &pb.WatchExecutionsRequest{Program: "wknd", Pipeline: "main", Execution: "99"})
	require.NoError(t, err)
	_, err = ws.Recv()
	require.Equal(t, codes.NotFound, status.Code(err))

	// Watching an ended execution starts with its final state.
	ws, err = f.as("viewer").WatchExecutions(ctx, &pb.WatchExecutionsRequest{Program: "wknd", Pipeline: "main", Execution: e.Id, WithExecution: true})
	require.NoError(t, err)
	snap, err := ws.Recv()
	require.NoError(t, err)
	require.True(t, snap.Snapshot)
	require.Equal(t, pipeline.ExecCancelled, snap.Execution.Status)
}

func psStepByID(e *pb.PipelineExecution, id string) *pb.ExecutionStep {
	for _, s := range e.Steps {
		if s.Id == id {
			return s
		}
	}
	return nil
}
