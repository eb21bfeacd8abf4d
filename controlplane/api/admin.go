// Package api serves the operator-facing APIs: the gRPC AdminService that
// deckctl calls (and, in later work, the HTTP/JSON API). It converts wire
// types to domain calls on the fleet and store and back; no logic of its
// own beyond input checks.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/fleet"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/deckhand-dev/deckhand/controlplane/pki"
	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Admin implements pb.AdminServiceServer.
type Admin struct {
	pb.UnimplementedAdminServiceServer
	Fleet *fleet.Fleet
	Store *store.Store
	Hosts fleet.Directory
	// PKI is nil in --dev-insecure mode.
	PKI *pki.PKI
	// ServerAddress is told to enrolling agents.
	ServerAddress string
	// Config declares the environments.
	Config *config.Config
	// Rollouts runs deployments; Sets resolves artifact sets for them.
	Rollouts *rollout.Manager
	Sets     SetResolver
	// Pipelines runs pipeline executions.
	Pipelines *pipeline.Manager
	// FactsTimeout bounds GetHostFacts when the caller set no deadline.
	FactsTimeout time.Duration
}

// ListAgents implements AdminService.
func (a *Admin) ListAgents(ctx context.Context, req *pb.ListAgentsRequest) (*pb.ListAgentsResponse, error) {
	all, err := a.Fleet.Agents()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read agents: %v", err)
	}
	resp := &pb.ListAgentsResponse{}
	found := req.GetEnvironment() == ""
	for _, s := range all {
		if req.GetEnvironment() != "" && s.Env != req.GetEnvironment() {
			continue
		}
		found = true
		info := &pb.AgentInfo{
			HostId: s.ID, Environment: s.Env, EnvironmentType: string(s.EnvType), Role: string(s.Role),
			Pair: uint32(s.Pair), Online: s.Online, Version: s.Version, Address: s.Address, State: s.State,
		}
		if !s.LastHeartbeat.IsZero() {
			info.LastHeartbeat = timestamppb.New(s.LastHeartbeat)
		}
		if !s.ConnectedAt.IsZero() {
			info.ConnectedAt = timestamppb.New(s.ConnectedAt)
		}
		resp.Agents = append(resp.Agents, info)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "environment %q is not declared", req.GetEnvironment())
	}
	return resp, nil
}

// GetHostFacts implements AdminService: it runs a HostFacts task on the
// host now and returns the answer.
func (a *Admin) GetHostFacts(ctx context.Context, req *pb.GetHostFactsRequest) (*pb.GetHostFactsResponse, error) {
	host := req.GetHostId()
	if host == "" {
		return nil, status.Error(codes.InvalidArgument, "host_id is required")
	}
	if !a.Fleet.Online(host) {
		all, _ := a.Fleet.Agents()
		for _, s := range all {
			if s.ID == host {
				if s.State == "never" {
					return nil, status.Errorf(codes.FailedPrecondition, "host %q: its agent has never connected (is deckhand-agent running there with host_id %q?)", host, host)
				}
				return nil, status.Errorf(codes.FailedPrecondition, "host %q is offline: its agent is not connected (last heartbeat %s)", host, s.LastHeartbeat.UTC().Format(time.RFC3339))
			}
		}
		return nil, status.Errorf(codes.NotFound, "host %q is not declared in the server config", host)
	}
	if _, ok := ctx.Deadline(); !ok {
		d := a.FactsTimeout
		if d <= 0 {
			d = 30 * time.Second
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	id, err := task.ID(adhocExecution("facts"), "host-facts", host)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	res, err := a.Fleet.Run(ctx, task.Spec{ID: id, ExecutionID: "adhoc", Step: "host-facts", HostID: host, Timeout: time.Minute, Kind: task.HostFacts{}})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, status.Errorf(codes.DeadlineExceeded, "host %q did not answer in time (task %s stays open and its result is kept)", host, id)
		}
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if err := res.Err(); err != nil {
		return nil, status.Errorf(codes.Aborted, "%v", err)
	}
	f, ok := res.Output.(*task.Facts)
	if !ok {
		return nil, status.Errorf(codes.Internal, "task %s returned no facts", id)
	}
	return &pb.GetHostFactsResponse{TaskId: id, Facts: task.FactsToProto(f)}, nil
}

// adhocExecution names a one-off execution for operator commands.
func adhocExecution(what string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s-%s", what, time.Now().UTC().Format("20060102T150405"), hex.EncodeToString(b))
}
