package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Pipelines implements pb.PipelineServiceServer: Cloud Manager's execution
// API over the pipeline manager. The role table (auth.Methods) lets any
// operator reach Advance because who may answer a step depends on the
// step's action, which only the execution knows; this service makes that
// check before anything changes.
type Pipelines struct {
	pb.UnimplementedPipelineServiceServer
	M *pipeline.Manager
	// Config declares the programs and pipelines (listing, timeouts).
	Config *config.Config
}

// NewPipelines serves m's executions of the pipelines cfg declares.
func NewPipelines(m *pipeline.Manager, cfg *config.Config) *Pipelines {
	return &Pipelines{M: m, Config: cfg}
}

// pipelinesCancelSettle bounds how long Cancel waits for the runner to start the
// next step when the call lands between two steps.
const pipelinesCancelSettle = 2 * time.Second

// ListPipelines implements PipelineService.
func (p *Pipelines) ListPipelines(ctx context.Context, req *pb.ListPipelinesRequest) (*pb.ListPipelinesResponse, error) {
	out := &pb.ListPipelinesResponse{}
	found := false
	for i := range p.Config.Programs {
		prog := &p.Config.Programs[i]
		if req.GetProgram() != "" && prog.Name != req.GetProgram() {
			continue
		}
		found = true
		on, err := p.M.Emergency(prog.Name)
		if err != nil {
			return nil, p.status(err)
		}
		for j := range prog.Pipelines {
			pl := &prog.Pipelines[j]
			info := &pb.PipelineInfo{Program: prog.Name, Pipeline: pl.Name, Repository: pl.Repository, Branch: pl.Branch,
				StageEnvironment: pl.StageEnvironment, ProductionEnvironment: pl.ProductionEnvironment,
				Approval: pl.Approval, Schedule: pl.Schedule, CseSupport: pl.CSESupport, EmergencyEnabled: on}
			if cur, err := p.M.Current(prog.Name, pl.Name); err == nil {
				info.CurrentExecution = cur.ID
			}
			out.Pipelines = append(out.Pipelines, info)
		}
	}
	if !found && req.GetProgram() != "" {
		return nil, status.Errorf(codes.NotFound, "program %q is not configured", req.GetProgram())
	}
	return out, nil
}

// pipelineRef checks that a request names a configured pipeline. Input is
// checked before any role: a malformed call says what is wrong with it.
func (p *Pipelines) pipelineRef(program, pl string) error {
	if program == "" || pl == "" {
		return status.Error(codes.InvalidArgument, "program and pipeline are required")
	}
	prog, _, ok := p.Config.Pipeline(program, pl)
	if !ok {
		if prog == nil {
			return status.Errorf(codes.NotFound, "program %q is not configured", program)
		}
		return status.Errorf(codes.NotFound, "pipeline %q of program %q is not configured", pl, program)
	}
	return nil
}

// status maps the manager's errors to gRPC codes, keeping its
// messages: they already say what to do.
func (*Pipelines) status(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pipeline.ErrBusy), errors.Is(err, pipeline.ErrEmergencyDisabled), errors.Is(err, pipeline.ErrNotWaiting):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, pipeline.ErrBadInput):
		// InvalidArgument already says "bad input"; the rest is the news.
		return status.Error(codes.InvalidArgument, strings.TrimPrefix(err.Error(), pipeline.ErrBadInput.Error()+": "))
	case errors.Is(err, pipeline.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// CreateExecution implements PipelineService.
func (p *Pipelines) CreateExecution(ctx context.Context, req *pb.CreateExecutionRequest) (*pb.PipelineExecution, error) {
	if err := p.pipelineRef(req.GetProgram(), req.GetPipeline()); err != nil {
		return nil, err
	}
	e, err := p.M.Start(req.GetProgram(), req.GetPipeline(), pipeline.StartOptions{Emergency: req.GetEmergency(), ArtifactSet: req.GetArtifactSet(), User: callerName(ctx)})
	if err != nil {
		return nil, p.status(err)
	}
	return p.execToProto(e), nil
}

// execution returns the execution id names, or the running one when id is
// empty.
func (p *Pipelines) execution(program, pl, id string) (*pipeline.Execution, error) {
	if id == "" {
		e, err := p.M.Current(program, pl)
		if errors.Is(err, pipeline.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "no execution of %s/%s is running; name one (deckctl execution list)", program, pl)
		}
		return e, p.status(err)
	}
	e, err := p.M.Get(program, pl, id)
	if errors.Is(err, pipeline.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "execution %s of %s/%s not found", id, program, pl)
	}
	return e, p.status(err)
}

// GetCurrentExecution implements PipelineService.
func (p *Pipelines) GetCurrentExecution(ctx context.Context, req *pb.GetCurrentExecutionRequest) (*pb.PipelineExecution, error) {
	if err := p.pipelineRef(req.GetProgram(), req.GetPipeline()); err != nil {
		return nil, err
	}
	e, err := p.execution(req.GetProgram(), req.GetPipeline(), "")
	if err != nil {
		return nil, err
	}
	return p.execToProto(e), nil
}

// GetExecution implements PipelineService.
func (p *Pipelines) GetExecution(ctx context.Context, req *pb.GetExecutionRequest) (*pb.PipelineExecution, error) {
	if err := p.pipelineRef(req.GetProgram(), req.GetPipeline()); err != nil {
		return nil, err
	}
	if req.GetExecution() == "" {
		return nil, status.Error(codes.InvalidArgument, "execution is required (GetCurrentExecution returns the running one)")
	}
	e, err := p.execution(req.GetProgram(), req.GetPipeline(), req.GetExecution())
	if err != nil {
		return nil, err
	}
	return p.execToProto(e), nil
}

// ListExecutions implements PipelineService.
func (p *Pipelines) ListExecutions(ctx context.Context, req *pb.ListExecutionsRequest) (*pb.ListExecutionsResponse, error) {
	if err := p.pipelineRef(req.GetProgram(), req.GetPipeline()); err != nil {
		return nil, err
	}
	if req.GetStart() < 0 || req.GetLimit() < 0 {
		return nil, status.Error(codes.InvalidArgument, "start and limit must not be negative")
	}
	all, total, err := p.M.List(req.GetProgram(), req.GetPipeline(), int(req.GetStart()), int(req.GetLimit()))
	if err != nil {
		return nil, p.status(err)
	}
	out := &pb.ListExecutionsResponse{Total: int32(total)}
	for _, e := range all {
		out.Executions = append(out.Executions, p.execToProto(e))
	}
	return out, nil
}

// findStep resolves a step selector: a step id, an action, or an action
// qualified with an environment name or type ("deploy:prod"). Both deploy
// steps share their action, so an unqualified one means the latest that
// started: the one a person asking for "the deploy log" is looking at.
func (p *Pipelines) findStep(e *pipeline.Execution, sel string) (*pipeline.Step, error) {
	if sel == "" {
		return nil, status.Error(codes.InvalidArgument, "step is required: a step id or an action (validate, build, codeQuality, deploy, securityTest, loadTest, approval, schedule, managed)")
	}
	if s := e.Step(sel); s != nil {
		return s, nil
	}
	action, env, _ := strings.Cut(sel, ":")
	var cands []*pipeline.Step
	for i := range e.Steps {
		s := &e.Steps[i]
		if strings.EqualFold(s.Action, action) && (env == "" || s.Environment == env || s.EnvironmentType == env) {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		var have []string
		for _, s := range e.Steps {
			have = append(have, s.ID+" "+s.Action)
		}
		return nil, status.Errorf(codes.NotFound, "execution %s has no step %q (its steps: %s)", e.ID, sel, strings.Join(have, ", "))
	}
	for i := len(cands) - 1; i >= 0; i-- {
		if cands[i].Status != pipeline.StepNotStarted {
			return cands[i], nil
		}
	}
	return cands[0], nil
}

func (p *Pipelines) step(program, pl, execID, sel string) (*pipeline.Execution, *pipeline.Step, error) {
	if err := p.pipelineRef(program, pl); err != nil {
		return nil, nil, err
	}
	e, err := p.execution(program, pl, execID)
	if err != nil {
		return nil, nil, err
	}
	s, err := p.findStep(e, sel)
	if err != nil {
		return nil, nil, err
	}
	return e, s, nil
}

// GetStep implements PipelineService.
func (p *Pipelines) GetStep(ctx context.Context, req *pb.GetStepRequest) (*pb.ExecutionStep, error) {
	e, s, err := p.step(req.GetProgram(), req.GetPipeline(), req.GetExecution(), req.GetStep())
	if err != nil {
		return nil, err
	}
	return p.stepToProto(e, s), nil
}

// GetStepLog implements PipelineService.
func (p *Pipelines) GetStepLog(ctx context.Context, req *pb.GetStepRequest) (*pb.GetStepLogResponse, error) {
	e, s, err := p.step(req.GetProgram(), req.GetPipeline(), req.GetExecution(), req.GetStep())
	if err != nil {
		return nil, err
	}
	lines, err := p.M.Logs(e.ProgramID, e.PipelineID, e.ID, s.ID)
	if err != nil {
		return nil, p.status(err)
	}
	return &pb.GetStepLogResponse{Step: p.stepToProto(e, s), Lines: lines}, nil
}

// GetQualityGateResults implements PipelineService.
func (p *Pipelines) GetQualityGateResults(ctx context.Context, req *pb.GetQualityGateResultsRequest) (*pb.GetQualityGateResultsResponse, error) {
	e, s, err := p.step(req.GetProgram(), req.GetPipeline(), req.GetExecution(), req.GetAction())
	if err != nil {
		return nil, err
	}
	if !isGate(s.Action) {
		return nil, status.Errorf(codes.InvalidArgument, "step %s (%s) is not a gate; gates are codeQuality, securityTest and loadTest", s.ID, s.Action)
	}
	ps := p.stepToProto(e, s)
	return &pb.GetQualityGateResultsResponse{Step: ps, Metrics: ps.Metrics}, nil
}

// require refuses the caller unless they hold one of roles, naming
// them the way the interceptor does.
func (*Pipelines) require(ctx context.Context, what string, roles []auth.Role) error {
	c, ok := auth.CallerFrom(ctx)
	if ok {
		for _, r := range roles {
			if c.Has(r) {
				return nil
			}
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	has := "no roles"
	if len(c.Roles) > 0 {
		hr := make([]string, len(c.Roles))
		for i, r := range c.Roles {
			hr[i] = string(r)
		}
		has = strings.Join(hr, ", ")
	}
	who := c.Name
	if who == "" {
		who = "the caller"
	}
	return status.Errorf(codes.PermissionDenied, "%s needs the %s role; %s has %s", what, strings.Join(names, " or "), who, has)
}

// fits checks the answer suits the step, so a mistaken verb gets a
// message about the step rather than the manager's about the body.
func (p *Pipelines) fits(s *pipeline.Step, req *pb.AdvanceRequest) error {
	want := map[string]string{
		pipeline.ActionApproval:     "an approval (approved true or false; deckctl execution advance approve|reject)",
		pipeline.ActionSchedule:     "a schedule (schedule_at or immediate; deckctl execution advance schedule --at TIME --tz ZONE | --now)",
		pipeline.ActionManaged:      "CSE support (start; deckctl execution advance cse-start)",
		pipeline.ActionCodeQuality:  "an override of its failing important metrics (deckctl execution advance override --kpi KPI...)",
		pipeline.ActionSecurityTest: "an override of its failing important metrics (deckctl execution advance override --kpi KPI...)",
		pipeline.ActionLoadTest:     "an override of its failing important metrics (deckctl execution advance override --kpi KPI...)",
	}
	ok := false
	switch req.GetAnswer().(type) {
	case *pb.AdvanceRequest_Reject:
		ok = true
	case *pb.AdvanceRequest_Approved:
		ok = s.Action == pipeline.ActionApproval
	case *pb.AdvanceRequest_ScheduleAt, *pb.AdvanceRequest_Immediate:
		ok = s.Action == pipeline.ActionSchedule
	case *pb.AdvanceRequest_Start:
		ok = s.Action == pipeline.ActionManaged
	case *pb.AdvanceRequest_Override:
		ok = isGate(s.Action)
	}
	if ok {
		return nil
	}
	w := want[s.Action]
	if w == "" {
		return status.Errorf(codes.FailedPrecondition, "step %s (%s) cannot be advanced", s.ID, s.Action)
	}
	return status.Errorf(codes.InvalidArgument, "step %s (%s) takes %s", s.ID, s.Action, w)
}

// Advance implements PipelineService.
func (p *Pipelines) Advance(ctx context.Context, req *pb.AdvanceRequest) (*pb.AdvanceResponse, error) {
	if err := p.pipelineRef(req.GetProgram(), req.GetPipeline()); err != nil {
		return nil, err
	}
	if req.GetAnswer() == nil {
		return nil, status.Error(codes.InvalidArgument, "an answer is required: approved, schedule_at, immediate, start, override or reject")
	}
	var in pipeline.AdvanceInput
	switch a := req.GetAnswer().(type) {
	case *pb.AdvanceRequest_Approved:
		in.Approved = &a.Approved
	case *pb.AdvanceRequest_ScheduleAt:
		at, err := time.Parse(time.RFC3339, a.ScheduleAt)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "schedule_at %q: want RFC 3339 with an offset, e.g. 2026-12-01T21:00:00Z", a.ScheduleAt)
		}
		in.At = at
	case *pb.AdvanceRequest_Immediate:
		if !a.Immediate {
			return nil, status.Error(codes.InvalidArgument, "immediate must be true (give schedule_at for a later time)")
		}
		in.Immediate = true
	case *pb.AdvanceRequest_Start:
		if !a.Start {
			return nil, status.Error(codes.InvalidArgument, "start must be true (reject refuses CSE support)")
		}
		in.Start = true
	case *pb.AdvanceRequest_Override:
		if len(a.Override.GetKpis()) == 0 {
			return nil, status.Error(codes.InvalidArgument, "override needs the KPIs of every failing important metric")
		}
		in.Overrides = a.Override.GetKpis()
	}
	e, err := p.execution(req.GetProgram(), req.GetPipeline(), req.GetExecution())
	if err != nil {
		return nil, err
	}
	var s *pipeline.Step
	if req.GetStep() != "" {
		if s, err = p.findStep(e, req.GetStep()); err != nil {
			return nil, err
		}
	} else {
		for i := range e.Steps {
			if e.Steps[i].Waiting() {
				s = &e.Steps[i]
				break
			}
		}
		if s == nil {
			return nil, status.Errorf(codes.FailedPrecondition, "no step of execution %s is waiting (%s)", e.ID, p.where(e))
		}
	}
	if err := p.fits(s, req); err != nil {
		return nil, err
	}
	// The same rule as the HTTP API's (advanceRoles): approval and
	// schedule need approver, CSE support cse, a gate approver or deployer.
	if err := p.require(ctx, fmt.Sprintf("answering step %s (%s)", s.ID, s.Action), advanceRoles(s.Action)); err != nil {
		return nil, err
	}
	by := callerName(ctx)
	_, reject := req.GetAnswer().(*pb.AdvanceRequest_Reject)
	if reject && s.Action == pipeline.ActionApproval {
		no := false
		in = pipeline.AdvanceInput{Approved: &no}
		reject = false
	}
	if reject {
		// Cloud Manager rejects a waiting step through its cancel link; the
		// manager's Cancel of a WAITING step is exactly that.
		if s.Status != pipeline.StepWaiting {
			return nil, status.Errorf(codes.FailedPrecondition, "step %s (%s) is %s, not waiting", s.ID, s.Action, s.Status)
		}
		err = p.M.Cancel(e.ProgramID, e.PipelineID, e.ID, s.ID, by)
	} else {
		err = p.M.Advance(e.ProgramID, e.PipelineID, e.ID, s.ID, in, by)
	}
	if err != nil {
		return nil, p.status(err)
	}
	after, err := p.execution(e.ProgramID, e.PipelineID, e.ID)
	if err != nil {
		return nil, err
	}
	return &pb.AdvanceResponse{Execution: p.execToProto(after), Step: p.stepToProto(after, after.Step(s.ID))}, nil
}

// where says what an execution is doing, for messages.
func (*Pipelines) where(e *pipeline.Execution) string {
	if e.Done() {
		return "it ended " + e.Status
	}
	if s := e.Current(); s != nil {
		return fmt.Sprintf("current step: %s %s %s", s.ID, s.Action, s.Status)
	}
	return "status " + e.Status
}

// Cancel implements PipelineService.
func (p *Pipelines) Cancel(ctx context.Context, req *pb.CancelExecutionRequest) (*pb.PipelineExecution, error) {
	if err := p.pipelineRef(req.GetProgram(), req.GetPipeline()); err != nil {
		return nil, err
	}
	e, err := p.execution(req.GetProgram(), req.GetPipeline(), req.GetExecution())
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(pipelinesCancelSettle)
	for {
		if e.Done() {
			return nil, status.Errorf(codes.FailedPrecondition, "execution %s already ended %s", e.ID, e.Status)
		}
		var s *pipeline.Step
		if req.GetStep() != "" {
			if s, err = p.findStep(e, req.GetStep()); err != nil {
				return nil, err
			}
		} else {
			s = e.Current()
		}
		// Between two steps the next one is NOT_STARTED for a moment;
		// wait for the runner to pick it up rather than fail the call.
		if s != nil && (s.Status == pipeline.StepWaiting || s.Status == pipeline.StepRunning) {
			if err := p.M.Cancel(e.ProgramID, e.PipelineID, e.ID, s.ID, callerName(ctx)); err != nil {
				return nil, p.status(err)
			}
			break
		}
		if req.GetStep() != "" || time.Now().After(deadline) {
			return nil, status.Errorf(codes.FailedPrecondition, "nothing of execution %s can be cancelled now (%s)", e.ID, p.where(e))
		}
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(20 * time.Millisecond):
		}
		if e, err = p.execution(e.ProgramID, e.PipelineID, e.ID); err != nil {
			return nil, err
		}
	}
	after, err := p.execution(e.ProgramID, e.PipelineID, e.ID)
	if err != nil {
		return nil, err
	}
	return p.execToProto(after), nil
}

// WatchExecutions implements PipelineService.
func (p *Pipelines) WatchExecutions(req *pb.WatchExecutionsRequest, stream grpc.ServerStreamingServer[pb.ExecutionEvent]) error {
	program, pl, only := req.GetProgram(), req.GetPipeline(), req.GetExecution()
	if err := p.pipelineRef(program, pl); err != nil {
		return err
	}
	if only != "" {
		if _, err := p.execution(program, pl, only); err != nil {
			return err
		}
	}
	// Subscribe before reading the snapshot: whatever happens after the
	// snapshot is read arrives as an event.
	events, stop := p.M.Subscribe()
	defer stop()
	// Stamped when the watch began: it reports state, not an event.
	snap := &pb.ExecutionEvent{At: timestamppb.Now(), Program: program, Pipeline: pl, Snapshot: true}
	var e *pipeline.Execution
	if only != "" {
		e, _ = p.M.Get(program, pl, only)
	} else {
		e, _ = p.M.Current(program, pl)
	}
	if e != nil {
		snap.ExecutionId, snap.Status, snap.Message = e.ID, e.Status, "watching "+p.where(e)
		if s := e.Current(); s != nil && !e.Done() {
			snap.StepId, snap.Action = s.ID, s.Action
		}
		if req.GetWithExecution() {
			snap.Execution = p.execToProto(e)
		}
	} else {
		snap.Message = "idle: no execution is running"
	}
	if err := stream.Send(snap); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			if ev.ProgramID != program || ev.PipelineID != pl || (only != "" && ev.ExecutionID != only) {
				continue
			}
			out := &pb.ExecutionEvent{At: timestamppb.New(ev.At), ExecutionId: ev.ExecutionID, Program: ev.ProgramID, Pipeline: ev.PipelineID,
				StepId: ev.StepID, Action: ev.Action, Status: ev.Status, Message: ev.Message}
			if req.GetWithExecution() {
				// The execution as it was at this event, so a watcher never
				// sees a state ahead of the event it is drawing.
				if ev.Execution != nil {
					out.Execution = p.execToProto(ev.Execution)
				} else if cur, err := p.M.Get(program, pl, ev.ExecutionID); err == nil {
					out.Execution = p.execToProto(cur)
				}
			}
			if err := stream.Send(out); err != nil {
				return err
			}
		}
	}
}

// SetEmergency implements PipelineService (role cse, from the table).
func (p *Pipelines) SetEmergency(ctx context.Context, req *pb.SetEmergencyRequest) (*pb.SetEmergencyResponse, error) {
	if req.GetProgram() == "" {
		return nil, status.Error(codes.InvalidArgument, "program is required")
	}
	if err := p.M.SetEmergency(req.GetProgram(), req.GetEnabled(), callerName(ctx)); err != nil {
		if errors.Is(err, pipeline.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "program %q is not configured", req.GetProgram())
		}
		return nil, p.status(err)
	}
	on, err := p.M.Emergency(req.GetProgram())
	if err != nil {
		return nil, p.status(err)
	}
	return &pb.SetEmergencyResponse{Program: req.GetProgram(), Enabled: on}, nil
}

// pbTime leaves a zero time unset rather than sending 1970.
func (*Pipelines) pbTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func (p *Pipelines) execToProto(e *pipeline.Execution) *pb.PipelineExecution {
	out := &pb.PipelineExecution{Id: e.ID, Program: e.ProgramID, Pipeline: e.PipelineID, Status: e.Status, Mode: e.Mode, Trigger: e.Trigger,
		User: e.User, ArtifactSet: e.ArtifactSet, ArtifactsVersion: e.ArtifactsVersion, ManualArtifacts: e.ManualArtifacts,
		CreatedAt: p.pbTime(e.CreatedAt), UpdatedAt: p.pbTime(e.UpdatedAt), FinishedAt: p.pbTime(e.FinishedAt), Reason: e.Reason}
	for i := range e.Steps {
		out.Steps = append(out.Steps, p.stepToProto(e, &e.Steps[i]))
	}
	return out
}

func (p *Pipelines) stepToProto(e *pipeline.Execution, s *pipeline.Step) *pb.ExecutionStep {
	out := &pb.ExecutionStep{Id: s.ID, PhaseId: s.PhaseID, Phase: s.Phase, Action: s.Action, Environment: s.Environment,
		EnvironmentType: s.EnvironmentType, Status: s.Status, StartedAt: p.pbTime(s.StartedAt), FinishedAt: p.pbTime(s.FinishedAt),
		Details: s.Details, ScheduledAt: p.pbTime(s.ScheduledAt)}
	for _, m := range s.Metrics {
		out.Metrics = append(out.Metrics, &pb.GateMetric{Id: m.ID, Kpi: m.KPI, Severity: string(m.Severity), Passed: m.Passed, Override: m.Override,
			ActualValue: m.ActualValue, ExpectedValue: m.ExpectedValue, Comparator: string(m.Comparator)})
	}
	if s.Waiting() && !e.Done() {
		out.WaitingSince = p.pbTime(s.WaitingSince)
		if _, pl, ok := p.Config.Pipeline(e.ProgramID, e.PipelineID); ok && !s.WaitingSince.IsZero() {
			out.TimeoutAt = p.pbTime(s.WaitingSince.Add(pl.WaitingTimeout.D()))
		}
		for _, r := range advanceRoles(s.Action) {
			out.RequiredRoles = append(out.RequiredRoles, string(r))
		}
	}
	return out
}
