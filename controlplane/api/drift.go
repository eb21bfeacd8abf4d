package api

import (
	"context"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ListDrift implements AdminService.
func (a *Admin) ListDrift(ctx context.Context, req *pb.ListDriftRequest) (*pb.ListDriftResponse, error) {
	hosts := map[string]bool{}
	if req.GetEnvironment() != "" {
		env, ok := a.Config.Environment(req.GetEnvironment())
		if !ok {
			return nil, status.Errorf(codes.NotFound, "environment %q is not declared", req.GetEnvironment())
		}
		for _, h := range env.Hosts {
			hosts[h.ID] = true
		}
	}
	if req.GetHostId() != "" {
		if _, ok := a.Hosts.Lookup(req.GetHostId()); !ok {
			return nil, status.Errorf(codes.NotFound, "host %q is not declared", req.GetHostId())
		}
	}
	recs, err := a.Store.Drift(req.GetHostId(), req.GetAll())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	out := &pb.ListDriftResponse{}
	for _, r := range recs {
		if len(hosts) > 0 && !hosts[r.Host] {
			continue
		}
		out.Records = append(out.Records, &pb.DriftRecord{HostId: r.Host, Path: r.Path, Kind: r.Kind, From: r.From, BeforeSha256: r.Before, AfterSha256: r.After,
			Severity: r.Severity, At: timestamppb.New(r.At), ReceivedAt: timestamppb.New(r.ReceivedAt), ResolvedBy: r.ResolvedBy})
	}
	return out, nil
}
