package artifacts

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// blobServer serves one blob over FetchArtifact the way the control plane
// does (256 KiB chunks, the size on the first), encoded by the proto codec,
// and can misbehave once: end the stream with an error after breakAfter
// bytes, or flip a byte.
type blobServer struct {
	pb.UnimplementedAgentServiceServer
	blob []byte

	mu         sync.Mutex
	calls      []int64 // the offset of every call
	breakAfter int     // > 0: fail the next call after sending this many bytes
	corrupt    bool    // flip the first byte sent by every call
	stayDown   bool    // after the break, answer every call Unavailable
	down       bool
	notFound   bool // answer NotFound, as for a blob the server does not have
}

func (s *blobServer) FetchArtifact(req *pb.FetchArtifactRequest, stream pb.AgentService_FetchArtifactServer) error {
	s.mu.Lock()
	s.calls = append(s.calls, req.GetOffset())
	breakAfter, corrupt, down, notFound := s.breakAfter, s.corrupt, s.down, s.notFound
	s.breakAfter = 0
	if breakAfter > 0 && s.stayDown {
		s.down = true
	}
	s.mu.Unlock()
	if down {
		return status.Error(codes.Unavailable, "connection refused")
	}
	if notFound {
		return status.Error(codes.NotFound, "no such blob")
	}
	if md, _ := metadata.FromIncomingContext(stream.Context()); len(md.Get("deckhand-host-id")) != 1 {
		return status.Error(codes.Unauthenticated, "no host id")
	}
	if h := sha256.Sum256(s.blob); req.GetSha256() != hex.EncodeToString(h[:]) {
		return status.Error(codes.NotFound, "no such blob")
	}
	rest := s.blob[req.GetOffset():]
	sent := 0
	for first := true; first || len(rest) > 0; first = false {
		n := min(len(rest), 256<<10)
		if breakAfter > 0 && sent+n > breakAfter {
			return status.Error(codes.Unavailable, "connection reset")
		}
		msg := &pb.ArtifactChunk{Data: bytes.Clone(rest[:n])}
		if corrupt && first && n > 0 {
			msg.Data[0] ^= 1
		}
		if first {
			msg.Size = int64(len(s.blob))
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		rest, sent = rest[n:], sent+n
	}
	return nil
}

func (s *blobServer) offsets() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.calls...)
}

// serve starts a gRPC server for s on loopback and returns a fetcher
// that downloads from it into a fresh directory.
func serve(t *testing.T, s *blobServer) *GRPCFetcher {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	gs := grpc.NewServer()
	pb.RegisterAgentServiceServer(gs, s)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, DialOptions()...)...)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return &GRPCFetcher{
		Dir:    t.TempDir(),
		Conn:   func(context.Context) (*grpc.ClientConn, error) { return conn, nil },
		HostID: "dispatcher1",
	}
}

func randomBlob(t *testing.T, n int) ([]byte, task.Artifact) {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	sum := sha256.Sum256(b)
	return b, task.Artifact{SHA256: hex.EncodeToString(sum[:]), Size: int64(n), Name: "site.zip"}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func requireFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "%s: %d bytes, want %d (sha256 differs)", path, len(got), len(want))
}

func TestFetchVerifiesAndReuses(t *testing.T) {
	for _, n := range []int{0, 1, 256 << 10, 5<<20 + 12345} {
		blob, art := randomBlob(t, n)
		s := &blobServer{blob: blob}
		f := serve(t, s)
		path, err := f.Fetch(ctxT(t), art)
		require.NoError(t, err)
		require.Equal(t, filepath.Join(f.Dir, art.SHA256), path)
		requireFile(t, path, blob)
		_, err = os.Stat(path + ".partial")
		require.ErrorIs(t, err, os.ErrNotExist)

		// A verified copy is reused without asking the server.
		again, err := f.Fetch(ctxT(t), art)
		require.NoError(t, err)
		require.Equal(t, path, again)
		require.Equal(t, []int64{0}, s.offsets())
	}
}

func TestFetchRejectsCorruptedStream(t *testing.T) {
	blob, art := randomBlob(t, 3<<20+7)
	s := &blobServer{blob: blob, corrupt: true}
	f := serve(t, s)
	_, err := f.Fetch(ctxT(t), art)
	require.ErrorIs(t, err, ErrDigestMismatch)
	entries, err := os.ReadDir(f.Dir)
	require.NoError(t, err)
	require.Empty(t, entries, "neither the bad download nor a verified copy may be left")

	// The next attempt starts from scratch and succeeds.
	s.mu.Lock()
	s.corrupt = false
	s.mu.Unlock()
	path, err := f.Fetch(ctxT(t), art)
	require.NoError(t, err)
	requireFile(t, path, blob)
	require.Equal(t, []int64{0, 0}, s.offsets())
}

// A connection that drops mid-way (a control plane restart) does not fail
// the download: it resumes from every byte received.
func TestFetchResumesAfterInterruption(t *testing.T) {
	blob, art := randomBlob(t, 4<<20+99)
	const sent = 5 * 256 << 10 // whole chunks before the break
	s := &blobServer{blob: blob, breakAfter: sent + 1}
	f := serve(t, s)
	path, err := f.Fetch(ctxT(t), art)
	require.NoError(t, err)
	requireFile(t, path, blob)
	require.Equal(t, []int64{0, sent}, s.offsets())
}

// While the control plane stays away the download keeps what it received
// and waits, as long as the task may run; then it says why it gave up,
// and the next attempt resumes.
func TestFetchWaitsForTheServerWithinTheTasksTime(t *testing.T) {
	blob, art := randomBlob(t, 4<<20+99)
	const sent = 5 * 256 << 10
	s := &blobServer{blob: blob, breakAfter: sent + 1, stayDown: true}
	f := serve(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	_, err := f.Fetch(ctx, art)
	// Usually the time runs out while waiting to retry; it may also run
	// out inside an attempt.
	require.Error(t, err)
	if !strings.Contains(err.Error(), "gave up waiting for the control plane") {
		require.ErrorContains(t, err, "deadline exceeded")
	}
	require.GreaterOrEqual(t, len(s.offsets()), 3, "retried while the server was away: %v", s.offsets())
	partial := filepath.Join(f.Dir, art.SHA256+".partial")
	requireFile(t, partial, blob[:sent]) // every byte received is kept

	s.mu.Lock()
	s.down = false
	s.mu.Unlock()
	path, err := f.Fetch(ctxT(t), art)
	require.NoError(t, err)
	requireFile(t, path, blob)
	offs := s.offsets()
	require.Equal(t, int64(sent), offs[len(offs)-1])
}

// Only the server or connection going away is waited out: an answer that
// will not change fails the task at once.
func TestFetchDoesNotRetryAnAnswer(t *testing.T) {
	blob, art := randomBlob(t, 1<<20)
	s := &blobServer{blob: blob, notFound: true}
	f := serve(t, s)
	_, err := f.Fetch(ctxT(t), art)
	require.Equal(t, codes.NotFound, status.Code(errors.Unwrap(err)), "%v", err)
	require.Len(t, s.offsets(), 1)
}

func TestFetchVerifiesResumedBytes(t *testing.T) {
	blob, art := randomBlob(t, 2<<20)
	s := &blobServer{blob: blob}
	f := serve(t, s)
	// A partial download whose bytes went bad on disk.
	bad := bytes.Clone(blob[:1<<20])
	bad[12345] ^= 0x80
	partial := filepath.Join(f.Dir, art.SHA256+".partial")
	require.NoError(t, os.WriteFile(partial, bad, 0o600))
	_, err := f.Fetch(ctxT(t), art)
	require.ErrorIs(t, err, ErrDigestMismatch)
	_, err = os.Stat(partial)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, []int64{1 << 20}, s.offsets())

	path, err := f.Fetch(ctxT(t), art)
	require.NoError(t, err)
	requireFile(t, path, blob)
}

func TestFetchRefusesMoreThanTheTaskNamed(t *testing.T) {
	blob, art := randomBlob(t, 1<<20)
	f := serve(t, &blobServer{blob: blob})
	art.Size = 1<<20 - 1
	_, err := f.Fetch(ctxT(t), art)
	require.ErrorContains(t, err, "more than the 1048575 bytes")
	_, err = os.Stat(filepath.Join(f.Dir, art.SHA256))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// chunkStream is a grpc.ClientStream that yields n chunks of size bytes
// (byte i of the stream is byte(i)), then err; once ctx is done it
// returns ctx's error. It counts the chunks it handed out.
type chunkStream struct {
	grpc.ClientStream
	ctx     context.Context
	n, size int
	err     error
	got     int
}

func (s *chunkStream) RecvMsg(m any) error {
	if s.ctx.Err() != nil {
		return status.FromContextError(s.ctx.Err()).Err()
	}
	if s.got == s.n {
		return s.err
	}
	data := make([]byte, s.size)
	for i := range data {
		data[i] = byte(s.got*s.size + i)
	}
	s.got++
	return chunkCodec{}.Unmarshal(frames(wire(&pb.ArtifactChunk{Data: data}), 300), m)
}

func (s *chunkStream) bytes() []byte {
	b := make([]byte, s.got*s.size)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

type failingWriter struct {
	bytes.Buffer
	left int // bytes it still accepts
}

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n, _ := w.Buffer.Write(p[:w.left])
		w.left = 0
		return n, errDiskFull
	}
	w.left -= len(p)
	return w.Buffer.Write(p)
}

func TestReceiveStopsAtAWriteError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &chunkStream{ctx: ctx, n: 1 << 20, size: 1000, err: io.EOF}
	w := &failingWriter{left: 10500}
	h := sha256.New()
	err := receive(s, cancel, task.Artifact{SHA256: "x"}, w, h, 0)
	require.ErrorIs(t, err, errDiskFull)
	require.Less(t, s.got, 11+2*pipelineDepth+3, "the receiver kept going after the write failed")
	require.Equal(t, s.bytes()[:10500], w.Bytes(), "what was written is a prefix of the stream")
}

func TestReceiveKeepsWhatArrivedBeforeAnError(t *testing.T) {
	for _, n := range []int{0, 1, 3 * pipelineDepth} {
		broken := status.Error(codes.Unavailable, "connection reset")
		s := &chunkStream{ctx: context.Background(), n: n, size: 777, err: broken}
		var out bytes.Buffer
		h := sha256.New()
		err := receive(s, func() {}, task.Artifact{SHA256: "x"}, &out, h, 100)
		require.ErrorIs(t, err, broken)
		require.ErrorContains(t, err, fmt.Sprintf("at byte %d", 100+n*777))
		require.True(t, bytes.Equal(s.bytes(), out.Bytes()))
		want := sha256.Sum256(s.bytes())
		require.Equal(t, want[:], h.Sum(nil), "the hash covers exactly the bytes written")
	}
}
