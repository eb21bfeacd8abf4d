package fleet

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
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
		// Not Unavailable: agents resume downloads on that code, and this
		// does not pass.
		return status.Error(codes.FailedPrecondition, "this server has no artifact store")
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
	first := true
	for {
		buf := chunkBufs.Get(chunkSize)
		n, rerr := io.ReadFull(blob, *buf)
		if n > 0 || first {
			*buf = (*buf)[:n]
			msg := &rawChunk{data: mem.NewBuffer(buf, chunkBufs)}
			if first {
				msg.size = size
				first = false
			}
			err := stream.SendMsg(msg)
			msg.data.Free() // gRPC holds its own reference until the bytes are on the wire
			if err != nil {
				return err
			}
		} else {
			chunkBufs.Put(buf)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return nil
		}
		if rerr != nil {
			return status.Errorf(codes.Internal, "read artifact: %v", rerr)
		}
	}
}

// rawChunk is an ArtifactChunk whose data Codec sends without copying it.
type rawChunk struct {
	data mem.Buffer
	size int64
}

// chunkBufs holds the buffers FetchArtifact reads blobs into. Their
// contents are never read before being overwritten, so they are not
// cleared between uses.
var chunkBufs = &bufPool{size: chunkSize}

// bufPool is a mem.BufferPool of buffers of one size.
type bufPool struct {
	size int
	pool sync.Pool
}

// Get returns a buffer of length n ≤ p.size.
func (p *bufPool) Get(n int) *[]byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, p.size)
	return &b
}

// Put returns b to the pool, unless it is not one of the pool's.
func (p *bufPool) Put(b *[]byte) {
	if cap(*b) != p.size {
		return
	}
	*b = (*b)[:0]
	p.pool.Put(b)
}

// Codec is the server's gRPC codec (grpc.ForceServerCodecV2): the proto
// codec, except that it sends the chunks of FetchArtifact (*rawChunk)
// straight from the buffer the blob was read into, where the proto codec
// would zero a buffer and copy every chunk into it. The bytes on the wire
// are the protobuf encoding of an ArtifactChunk either way.
type Codec struct{}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return proto.Name }

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if c, ok := v.(*rawChunk); ok {
		return c.marshal(), nil
	}
	return encoding.GetCodecV2(proto.Name).Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2(proto.Name).Unmarshal(data, v)
}

// marshal encodes c as proto.Marshal encodes the equivalent ArtifactChunk:
// field 1 (data, bytes) unless empty, then field 2 (size, varint) unless 0.
// The result holds its own reference on c.data.
func (c *rawChunk) marshal() mem.BufferSlice {
	var out mem.BufferSlice
	if n := c.data.Len(); n > 0 {
		hdr := protowire.AppendVarint(protowire.AppendTag(make([]byte, 0, 8), 1, protowire.BytesType), uint64(n))
		c.data.Ref()
		out = append(out, mem.SliceBuffer(hdr), c.data)
	}
	if c.size != 0 {
		out = append(out, mem.SliceBuffer(protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), uint64(c.size))))
	}
	return out
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
