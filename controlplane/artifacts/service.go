package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/pkg/classify"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

// Service implements pb.ArtifactServiceServer on Sets. It only converts
// between wire and domain types and maps errors to status codes; the rules
// live in Sets. Roles are checked by the auth interceptors before a method
// runs (auth.Methods).
type Service struct {
	pb.UnimplementedArtifactServiceServer
	Sets *Sets
	// Audit, when set, records each push in the audit log (auth's
	// interceptors audit unary actions only; a push is a stream).
	Audit func(who, action, target, result, detail string)
}

// NewService serves sets; audit may be nil.
func NewService(sets *Sets, audit func(who, action, target, result, detail string)) *Service {
	return &Service{Sets: sets, Audit: audit}
}

// PushArtifact implements ArtifactService. The upload is read message by
// message straight into the blob store's temp file (uploadReader), so the
// server holds at most one chunk of it in memory, and gRPC flow control
// slows the client down to the speed of the disk.
func (s *Service) PushArtifact(stream grpc.ClientStreamingServer[pb.PushArtifactRequest, pb.PushArtifactResponse]) error {
	first, err := stream.Recv()
	if err == io.EOF {
		return status.Error(codes.InvalidArgument, "empty upload: the first message must be the header (name, size)")
	}
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message of an upload must be the header (name, size), not data")
	}
	if h.GetSize() < 0 {
		return status.Errorf(codes.InvalidArgument, "artifact %s: size %d is negative", h.GetName(), h.GetSize())
	}
	who := callerName(stream.Context())
	res, err := s.Sets.Push(NewUploadReader(func() ([]byte, bool, error) {
		m, err := stream.Recv()
		return m.GetChunk(), m.GetHeader() != nil, err
	}, h.GetName(), h.GetSize()), h.GetName())
	if s.Audit != nil {
		result, detail := "ok", ""
		if err != nil {
			result = "error: " + err.Error()
		} else {
			detail = fmt.Sprintf("%s %s", res.Artifact.Kind, res.Artifact.SHA256)
		}
		s.Audit(who, "PushArtifact", h.GetName(), result, detail)
	}
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.PushArtifactResponse{Artifact: ArtifactToProto(res.Artifact), AlreadyStored: res.AlreadyStored})
}

// CreateSet implements ArtifactService.
func (s *Service) CreateSet(ctx context.Context, req *pb.CreateSetRequest) (*pb.CreateSetResponse, error) {
	set, created, err := s.Sets.Create(req.GetVersion(), req.GetDigests(), callerName(ctx))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.CreateSetResponse{Set: SetToProto(set), Created: created}, nil
}

// ListSets implements ArtifactService.
func (s *Service) ListSets(ctx context.Context, _ *pb.ListSetsRequest) (*pb.ListSetsResponse, error) {
	sets, err := s.Sets.List()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListSetsResponse{}
	for _, set := range sets {
		resp.Sets = append(resp.Sets, SetToProto(set))
	}
	return resp, nil
}

// GetSet implements ArtifactService.
func (s *Service) GetSet(ctx context.Context, req *pb.GetSetRequest) (*pb.GetSetResponse, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "a set id is required")
	}
	set, err := s.Sets.Get(req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetSetResponse{Set: SetToProto(set)}, nil
}

// ListArtifacts implements ArtifactService.
func (s *Service) ListArtifacts(ctx context.Context, _ *pb.ListArtifactsRequest) (*pb.ListArtifactsResponse, error) {
	arts, err := s.Sets.Artifacts()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &pb.ListArtifactsResponse{}
	for _, a := range arts {
		resp.Artifacts = append(resp.Artifacts, ArtifactToProto(a))
	}
	return resp, nil
}

func callerName(ctx context.Context) string {
	if c, ok := auth.CallerFrom(ctx); ok {
		return c.Name
	}
	return ""
}

// toStatus maps domain errors to gRPC codes; errors that already are a
// status (a cancelled upload, a size mismatch) pass through.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrRefused):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrSetNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// KindToProto converts a classification to its wire enum.
func KindToProto(k classify.Kind) pb.ArtifactKind {
	switch k {
	case classify.AEMPackage:
		return pb.ArtifactKind_ARTIFACT_KIND_AEM_PACKAGE
	case classify.DispatcherConfig:
		return pb.ArtifactKind_ARTIFACT_KIND_DISPATCHER_CONFIG
	}
	return pb.ArtifactKind_ARTIFACT_KIND_UNSPECIFIED
}

// ArtifactToProto converts an artifact to its wire form.
func ArtifactToProto(a Artifact) *pb.ArtifactInfo {
	out := &pb.ArtifactInfo{Sha256: a.SHA256, Size: a.Size, Name: a.Name, Kind: KindToProto(a.Kind)}
	if a.Kind == classify.AEMPackage {
		out.PackageId = a.PackageID.String()
		for _, d := range a.Dependencies {
			out.Dependencies = append(out.Dependencies, d.String())
		}
	}
	if !a.PushedAt.IsZero() {
		out.PushedAt = timestamppb.New(a.PushedAt)
	}
	return out
}

// SetToProto converts a set to its wire form.
func SetToProto(s Set) *pb.ArtifactSet {
	out := &pb.ArtifactSet{Id: s.ID, Version: s.Version, CreatedBy: s.CreatedBy}
	if !s.CreatedAt.IsZero() {
		out.CreatedAt = timestamppb.New(s.CreatedAt)
	}
	for _, p := range s.Packages {
		out.Packages = append(out.Packages, ArtifactToProto(p))
	}
	if s.Dispatcher != nil {
		out.Dispatcher = ArtifactToProto(*s.Dispatcher)
	}
	for _, e := range s.External {
		out.ExternalDependencies = append(out.ExternalDependencies, &pb.ExternalDependency{PackageId: e.Package.String(), Dependency: e.Dependency.String()})
	}
	return out
}
