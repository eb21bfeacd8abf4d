package fleet

import (
	"context"
	"errors"
	"io"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// HostMetadataKey carries the host id on FetchArtifact calls in
// --dev-insecure mode, where there is no certificate to take it from.
const HostMetadataKey = "deckhand-host-id"

// chunkSize balances per-message overhead against memory per download.
const chunkSize = 256 << 10

// FetchArtifact implements AgentService.FetchArtifact: it streams a blob to
// an agent that has an open task naming it, and to nobody else.
func (f *Fleet) FetchArtifact(req *pb.FetchArtifactRequest, stream pb.AgentService_FetchArtifactServer) error {
	ctx := stream.Context()
	host, err := f.callerHost(ctx)
	if err != nil {
		return err
	}
	if f.cfg.Blobs == nil {
		return status.Error(codes.Unavailable, "this server has no artifact store")
	}
	if !artifacts.ValidDigest(req.GetSha256()) {
		return status.Errorf(codes.InvalidArgument, "%q is not a sha256 digest", req.GetSha256())
	}
	if ok, err := f.hostNeeds(host, req.GetSha256()); err != nil {
		return status.Errorf(codes.Internal, "read tasks: %v", err)
	} else if !ok {
		f.log.Warn("artifact refused: no open task of this host names it", "host", host, "sha256", req.GetSha256())
		return status.Errorf(codes.PermissionDenied, "host %q has no open task that uses artifact %s", host, req.GetSha256())
	}
	blob, size, err := f.cfg.Blobs.Open(req.GetSha256())
	if errors.Is(err, artifacts.ErrNotFound) {
		return status.Errorf(codes.NotFound, "artifact %s is not in the store", req.GetSha256())
	}
	if err != nil {
		return status.Errorf(codes.Internal, "open artifact: %v", err)
	}
	defer blob.Close()
	if req.GetOffset() < 0 || req.GetOffset() > size {
		return status.Errorf(codes.OutOfRange, "offset %d is outside the artifact's %d bytes", req.GetOffset(), size)
	}
	if _, err := blob.Seek(req.GetOffset(), io.SeekStart); err != nil {
		return status.Errorf(codes.Internal, "seek: %v", err)
	}
	buf := make([]byte, chunkSize)
	first := true
	for {
		n, rerr := io.ReadFull(blob, buf)
		if n > 0 || first {
			msg := &pb.ArtifactChunk{Data: buf[:n]}
			if first {
				msg.Size = size
				first = false
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return status.Errorf(codes.Internal, "read artifact: %v", rerr)
		}
	}
}

// callerHost identifies the agent on a call other than Connect: from its
// certificate, or in --dev-insecure mode from the host metadata.
func (f *Fleet) callerHost(ctx context.Context) (string, error) {
	var host string
	if f.cfg.Authenticate != nil {
		h, err := f.cfg.Authenticate(ctx)
		if err != nil {
			return "", status.Errorf(codes.Unauthenticated, "%v", err)
		}
		host = h
	} else if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(HostMetadataKey)) == 1 {
		host = md.Get(HostMetadataKey)[0]
	}
	if host == "" {
		return "", status.Error(codes.Unauthenticated, "the caller's host is unknown")
	}
	if _, ok := f.cfg.Hosts.Lookup(host); !ok {
		return "", status.Errorf(codes.PermissionDenied, "host %q is not declared", host)
	}
	return host, nil
}

// hostNeeds reports whether one of host's open tasks references digest.
func (f *Fleet) hostNeeds(host, digest string) (bool, error) {
	open, err := f.cfg.Store.OpenTasks(host)
	if err != nil {
		return false, err
	}
	for _, t := range open {
		spec, err := task.UnmarshalSpec(t.Spec)
		if err != nil {
			continue
		}
		for _, a := range task.Artifacts(spec.Kind) {
			if a.SHA256 == digest {
				return true, nil
			}
		}
	}
	return false, nil
}
