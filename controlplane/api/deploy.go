package api

import (
	"context"
	"errors"

	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// SetResolver turns an artifact set id into what a rollout ships.
type SetResolver func(id string) (rollout.Artifacts, error)

func (a *Admin) request(req *pb.DeploymentRequest) (rollout.Request, error) {
	if a.Rollouts == nil {
		return rollout.Request{}, status.Error(codes.Unavailable, "rollouts are not enabled on this server")
	}
	env, ok := a.Config.Environment(req.GetEnvironment())
	if !ok {
		return rollout.Request{}, status.Errorf(codes.NotFound, "environment %q is not declared", req.GetEnvironment())
	}
	r := rollout.Request{Env: *env, Action: rollout.Action(req.GetAction()), BackupID: req.GetBackupId(), SetID: req.GetArtifactSet(), PlanVersion: rollout.CurrentPlanVersion}
	if r.Action == "" {
		r.Action = rollout.ActionDeploy
	}
	switch r.Action {
	case rollout.ActionDeploy:
		if req.GetArtifactSet() == "" {
			return r, status.Error(codes.InvalidArgument, "an artifact set is required (deckctl artifact push prints its id)")
		}
		if a.Sets == nil {
			return r, status.Error(codes.Unavailable, "this server has no artifact sets")
		}
		arts, err := a.Sets(req.GetArtifactSet())
		if err != nil {
			return r, status.Errorf(codes.NotFound, "artifact set %q: %v", req.GetArtifactSet(), err)
		}
		r.Artifacts = arts
	case rollout.ActionRollback:
		if req.GetArtifactSet() != "" {
			return r, status.Error(codes.InvalidArgument, "a rollback restores config backups; it takes no artifact set")
		}
	default:
		return r, status.Errorf(codes.InvalidArgument, "action %q: use deploy or rollback", r.Action)
	}
	return r, nil
}

// PlanDeployment implements AdminService.
func (a *Admin) PlanDeployment(ctx context.Context, req *pb.DeploymentRequest) (*pb.PlanResponse, error) {
	r, err := a.request(req)
	if err != nil {
		return nil, err
	}
	p, err := rollout.NewPlan(r)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	out := &pb.PlanResponse{Environment: p.Env, EnvironmentType: string(p.EnvType), Production: p.Production, MaxUnavailable: int32(p.MaxUnavailable), Text: p.String()}
	for _, s := range p.Steps {
		out.Steps = append(out.Steps, &pb.PlanStep{N: int32(s.N), Group: int32(s.Group + 1), Key: s.Key, Host: s.Host, Role: string(s.Role), Pair: int32(s.Pair), Kind: s.Kind(), Description: rollout.Describe(s)})
	}
	return out, nil
}

// StartDeployment implements AdminService.
func (a *Admin) StartDeployment(ctx context.Context, req *pb.DeploymentRequest) (*pb.DeploymentInfo, error) {
	r, err := a.request(req)
	if err != nil {
		return nil, err
	}
	id, err := a.Rollouts.Start(r, callerName(ctx))
	if errors.Is(err, rollout.ErrBusy) {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return a.deploymentInfo(id, false)
}

func (a *Admin) deploymentInfo(id string, steps bool) (*pb.DeploymentInfo, error) {
	d, sts, err := a.Rollouts.Get(id)
	if errors.Is(err, rollout.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "deployment %q not found", id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out := deploymentToProto(d)
	if steps {
		for _, s := range sts {
			si := &pb.StepInfo{Key: s.Key, Host: s.Host, Kind: s.Kind, Pair: int32(s.Pair), Group: int32(s.Group + 1), Status: string(s.Status), TaskId: s.TaskID, Error: s.Error, Summary: s.Summary}
			if !s.StartedAt.IsZero() {
				si.StartedAt = timestamppb.New(s.StartedAt)
			}
			if !s.FinishedAt.IsZero() {
				si.FinishedAt = timestamppb.New(s.FinishedAt)
			}
			out.Steps = append(out.Steps, si)
		}
	}
	return out, nil
}

func deploymentToProto(d *rollout.Deployment) *pb.DeploymentInfo {
	out := &pb.DeploymentInfo{Id: d.ID, Environment: d.Request.Env.Name, Action: string(d.Request.Action), ArtifactSet: d.Request.SetID,
		State: string(d.State), Error: d.Error, By: d.By, CreatedAt: timestamppb.New(d.CreatedAt), Hosts: d.Hosts}
	if !d.FinishedAt.IsZero() {
		out.FinishedAt = timestamppb.New(d.FinishedAt)
	}
	return out
}

// ListDeployments implements AdminService.
func (a *Admin) ListDeployments(ctx context.Context, req *pb.ListDeploymentsRequest) (*pb.ListDeploymentsResponse, error) {
	if a.Rollouts == nil {
		return &pb.ListDeploymentsResponse{}, nil
	}
	all, err := a.Rollouts.List()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out := &pb.ListDeploymentsResponse{}
	for _, d := range all {
		if req.GetEnvironment() != "" && d.Request.Env.Name != req.GetEnvironment() {
			continue
		}
		out.Deployments = append(out.Deployments, deploymentToProto(d))
		if req.GetLimit() > 0 && len(out.Deployments) >= int(req.GetLimit()) {
			break
		}
	}
	return out, nil
}

// GetDeployment implements AdminService.
func (a *Admin) GetDeployment(ctx context.Context, req *pb.GetDeploymentRequest) (*pb.DeploymentInfo, error) {
	if a.Rollouts == nil {
		return nil, status.Error(codes.NotFound, "no deployments")
	}
	return a.deploymentInfo(req.GetId(), true)
}

// CancelDeployment implements AdminService.
func (a *Admin) CancelDeployment(ctx context.Context, req *pb.GetDeploymentRequest) (*pb.DeploymentInfo, error) {
	if a.Rollouts == nil {
		return nil, status.Error(codes.NotFound, "no deployments")
	}
	if err := a.Rollouts.Cancel(req.GetId(), callerName(ctx)); err != nil {
		if errors.Is(err, rollout.ErrNotFound) {
			return nil, status.Errorf(codes.NotFound, "deployment %q not found", req.GetId())
		}
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return a.deploymentInfo(req.GetId(), false)
}

func eventToProto(e rollout.Event) *pb.DeploymentEvent {
	return &pb.DeploymentEvent{Seq: e.Seq, At: timestamppb.New(e.At), Kind: string(e.Kind), Step: e.Step, Task: e.Task, Host: e.Host,
		Pair: int32(e.Pair), Status: string(e.Status), Attempts: int32(e.Attempts), Message: e.Message, State: string(e.State)}
}

// DeploymentEvents implements AdminService.
func (a *Admin) DeploymentEvents(ctx context.Context, req *pb.WatchDeploymentRequest) (*pb.DeploymentEventsResponse, error) {
	if a.Rollouts == nil {
		return nil, status.Error(codes.NotFound, "no deployments")
	}
	evs, err := a.Rollouts.Events(req.GetId(), req.GetAfterSeq())
	if errors.Is(err, rollout.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "deployment %q not found", req.GetId())
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out := &pb.DeploymentEventsResponse{}
	for _, e := range evs {
		out.Events = append(out.Events, eventToProto(e))
	}
	return out, nil
}

// WatchDeployment implements AdminService.
func (a *Admin) WatchDeployment(req *pb.WatchDeploymentRequest, stream grpc.ServerStreamingServer[pb.DeploymentEvent]) error {
	if a.Rollouts == nil {
		return status.Error(codes.NotFound, "no deployments")
	}
	ch, err := a.Rollouts.Watch(stream.Context(), req.GetId(), req.GetAfterSeq())
	if errors.Is(err, rollout.ErrNotFound) {
		return status.Errorf(codes.NotFound, "deployment %q not found", req.GetId())
	}
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	for e := range ch {
		if err := stream.Send(eventToProto(e)); err != nil {
			return err
		}
	}
	return nil
}
