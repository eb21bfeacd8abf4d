package fleet

import (
	"errors"
	"io"
	"strings"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	res, err := f.cfg.Sets.Push(&uploadReader{stream: stream, name: name, want: h.GetSize()}, name)
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

// uploadReader turns the data messages of an upload into an io.Reader
// for the blob store. It enforces the size announced in the header: an
// upload that ends early or runs over fails the read, so the store
// discards its temp file instead of keeping a truncated zip.
type uploadReader struct {
	stream grpc.ClientStreamingServer[pb.UploadArtifactRequest, pb.UploadArtifactResponse]
	name   string
	want   int64
	got    int64
	buf    []byte
	eof    bool
}

func (u *uploadReader) Read(p []byte) (int, error) {
	for len(u.buf) == 0 {
		if u.eof {
			return 0, io.EOF
		}
		m, err := u.stream.Recv()
		if errors.Is(err, io.EOF) {
			if u.got != u.want {
				return 0, status.Errorf(codes.InvalidArgument, "upload of %s ended after %d of the %d bytes announced; nothing was stored", u.name, u.got, u.want)
			}
			u.eof = true
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		if m.GetHeader() != nil {
			return 0, status.Errorf(codes.InvalidArgument, "upload of %s: a second header; one upload carries one file", u.name)
		}
		u.buf = m.GetChunk()
		u.got += int64(len(u.buf))
		if u.got > u.want {
			return 0, status.Errorf(codes.InvalidArgument, "upload of %s is longer than the %d bytes announced; nothing was stored", u.name, u.want)
		}
	}
	n := copy(p, u.buf)
	u.buf = u.buf[n:]
	return n, nil
}
