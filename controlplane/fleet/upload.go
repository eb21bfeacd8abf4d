package fleet

import (
	"errors"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

// MaxUploadSize bounds one artifact a builder uploads. AEM content
// packages with assets reach a few GiB; a larger announcement is a runaway
// build, refused before a byte is written.
const MaxUploadSize int64 = 16 << 30

// UploadArtifact implements AgentService.UploadArtifact: a builder sends a
// file its Build task produced. Only the host the task is assigned to may
// upload for it, and only while the task is open. The data is streamed
// into the artifact store (one chunk in memory at a time), classified and
// recorded by artifacts.Sets.Push; an upload that is cut short, runs over
// or under its announced size, or is not an AEM package or dispatcher
// configuration stores nothing.
func (f *Fleet) UploadArtifact(stream grpc.ClientStreamingServer[pb.UploadArtifactRequest, pb.UploadArtifactResponse]) error {
	ctx := stream.Context()
	host, err := f.callerHost(ctx)
	if err != nil {
		return err
	}
	if f.cfg.Sets == nil {
		return status.Error(codes.Unavailable, "this server does not accept artifact uploads")
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return status.Error(codes.InvalidArgument, "empty upload: the first message must be the header (task id, name, size)")
	}
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return status.Error(codes.InvalidArgument, "the first message of an upload must be the header (task id, name, size), not data")
	}
	name := h.GetName()
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`):
		return status.Errorf(codes.InvalidArgument, "artifact name %q must be a file name without directories", name)
	case h.GetSize() < 0 || h.GetSize() > MaxUploadSize:
		return status.Errorf(codes.InvalidArgument, "artifact %s: size %d is outside 0..%d bytes", name, h.GetSize(), MaxUploadSize)
	}
	ok, err := f.hostBuilds(host, h.GetTaskId())
	if err != nil {
		return status.Errorf(codes.Internal, "read tasks: %v", err)
	}
	if !ok {
		f.log.Warn("upload refused: no open build task of this host has that id", "host", host, "task", h.GetTaskId(), "name", name)
		return status.Errorf(codes.PermissionDenied, "host %q has no open build task %q", host, h.GetTaskId())
	}
	res, err := f.cfg.Sets.Push(artifacts.NewUploadReader(func() ([]byte, bool, error) {
		m, err := stream.Recv()
		return m.GetChunk(), m.GetHeader() != nil, err
	}, name, h.GetSize()), name)
	if err != nil {
		f.log.Warn("upload not stored", "host", host, "task", h.GetTaskId(), "name", name, "error", err)
		if _, isStatus := status.FromError(err); isStatus {
			return err
		}
		if errors.Is(err, artifacts.ErrRefused) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Internal, "store artifact %s: %v", name, err)
	}
	a := res.Artifact
	f.log.Info("artifact uploaded by a builder", "host", host, "task", h.GetTaskId(), "name", name,
		"sha256", a.SHA256, "size", a.Size, "kind", a.Kind.String(), "already_stored", res.AlreadyStored)
	return stream.SendAndClose(&pb.UploadArtifactResponse{Sha256: a.SHA256, Size: a.Size, Kind: a.Kind.String(), AlreadyStored: res.AlreadyStored})
}

// hostBuilds reports whether id is an open build task assigned to host.
func (f *Fleet) hostBuilds(host, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	open, err := f.cfg.Store.OpenTasks(host)
	if err != nil {
		return false, err
	}
	for _, t := range open {
		if t.ID == id && t.Kind == (task.Build{}).Name() {
			return true, nil
		}
	}
	return false, nil
}
