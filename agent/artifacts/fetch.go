// Package artifacts downloads artifacts from the control plane into the
// agent's data dir: streamed to a partial file (never whole in memory),
// resumed after an interruption, verified against the sha256 the task named
// before anyone opens it, and reused when a verified copy is already there.
package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Fetcher returns a local path to a verified copy of an artifact. Task
// handlers depend on this interface.
type Fetcher interface {
	Fetch(ctx context.Context, a task.Artifact) (path string, err error)
}

// ErrDigestMismatch means the downloaded bytes do not hash to the digest
// the task named; the download is deleted.
var ErrDigestMismatch = errors.New("sha256 mismatch")

var digestPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// GRPCFetcher downloads over AgentService.FetchArtifact.
type GRPCFetcher struct {
	// Dir holds verified artifacts (<sha256>) and partial downloads.
	Dir string
	// Conn returns the current connection to the server, waiting for one.
	Conn func(ctx context.Context) (*grpc.ClientConn, error)
	// HostID is sent as metadata; the server uses it only in
	// --dev-insecure mode (otherwise the certificate says who we are).
	HostID string
	Logger hclog.Logger

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per digest: one download at a time
}

func (f *GRPCFetcher) lock(d string) *sync.Mutex {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.locks == nil {
		f.locks = map[string]*sync.Mutex{}
	}
	l := f.locks[d]
	if l == nil {
		l = &sync.Mutex{}
		f.locks[d] = l
	}
	return l
}

// Fetch implements Fetcher.
func (f *GRPCFetcher) Fetch(ctx context.Context, a task.Artifact) (string, error) {
	if !digestPattern.MatchString(a.SHA256) {
		return "", fmt.Errorf("artifact %q: %q is not a sha256 digest", a.Name, a.SHA256)
	}
	l := f.lock(a.SHA256)
	l.Lock()
	defer l.Unlock()
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return "", err
	}
	final := filepath.Join(f.Dir, a.SHA256)
	if st, err := os.Stat(final); err == nil && (a.Size == 0 || st.Size() == a.Size) {
		return final, nil // verified when it was renamed into place
	}
	partial := final + ".partial"
	h := sha256.New()
	out, offset, err := openPartial(partial, h)
	if err != nil {
		return "", err
	}
	defer func() { out.Close() }()
	log := f.logger()
	log.Debug("fetching artifact", "sha256", a.SHA256, "name", a.Name, "resume_at", offset)
	// A control plane that restarts or a connection that drops mid-way
	// must not fail the task: the download resumes from what is on disk
	// once the server answers again, for as long as the task may run.
	wait := retryFirst
	for {
		err := f.download(ctx, a, out, h, offset)
		if err == nil {
			break
		}
		if !transient(err) || ctx.Err() != nil {
			return "", err
		}
		log.Warn("artifact download interrupted; resuming when the control plane answers", "sha256", a.SHA256, "name", a.Name, "retry_in", wait, "error", err)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (gave up waiting for the control plane: %v)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, retryMax)
		// Start again from the file: every byte on disk is hashed again,
		// so the resumed download is verified end to end.
		out.Close()
		h = sha256.New()
		if out, offset, err = openPartial(partial, h); err != nil {
			return "", err
		}
		log.Debug("resuming artifact download", "sha256", a.SHA256, "resume_at", offset)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != a.SHA256 {
		out.Close()
		os.Remove(partial)
		return "", fmt.Errorf("artifact %s (%s): %w: got %s", a.SHA256, a.Name, ErrDigestMismatch, got)
	}
	if err := out.Sync(); err != nil {
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(partial, final); err != nil {
		return "", err
	}
	return final, nil
}

// Waits between attempts of a download interrupted by the server or the
// connection going away: doubling from retryFirst up to retryMax.
var (
	retryFirst = 250 * time.Millisecond
	retryMax   = 5 * time.Second
)

// transient reports whether a download error is the server or the
// connection going away (gRPC Unavailable: a restart, a reset, a
// shutdown), worth resuming rather than failing the task.
func transient(err error) bool {
	var se interface{ GRPCStatus() *status.Status }
	return errors.As(err, &se) && se.GRPCStatus().Code() == codes.Unavailable
}

func (f *GRPCFetcher) logger() hclog.Logger {
	if f.Logger == nil {
		return hclog.NewNullLogger()
	}
	return f.Logger
}

// openPartial opens (or creates) the partial file and feeds what it
// already holds into h, so a resumed download is verified end to end.
func openPartial(path string, h hash.Hash) (*os.File, int64, error) {
	out, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, err
	}
	n, err := io.Copy(h, out)
	if err != nil {
		out.Close()
		return nil, 0, err
	}
	return out, n, nil
}

func (f *GRPCFetcher) download(ctx context.Context, a task.Artifact, out *os.File, h hash.Hash, offset int64) error {
	conn, err := f.Conn(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "deckhand-host-id", f.HostID)
	stream, err := pb.NewAgentServiceClient(conn).FetchArtifact(ctx, &pb.FetchArtifactRequest{Sha256: a.SHA256, Offset: offset}, grpc.ForceCodecV2(chunkCodec{}))
	if err != nil {
		return fmt.Errorf("fetch artifact %s: %w", a.SHA256, err)
	}
	return receive(stream, cancel, a, out, h, offset)
}

// pipelineDepth is how many received chunks may wait for the disk, and as
// many for the hash: enough to ride out a slow write, few enough to bound
// memory (the server sends 256 KiB chunks).
const pipelineDepth = 4

// writebackEvery is how many bytes the writer lets pile up in the page
// cache before it asks the kernel to start writing them to disk
// (startWriteback): the fsync before the rename then finds little left.
const writebackEvery = 8 << 20

// receive streams the chunks of stream into out (positioned at offset)
// and h, in three stages that overlap: this goroutine receives (TLS, gRPC
// framing, decoding), one goroutine writes to out, one hashes. Every chunk
// reaches out and h in the order it arrived, written before it is hashed.
// receive returns when the stream has ended and every received byte is
// written and hashed, or on the first error; cancel ends the call (the
// writer calls it when a write fails, so the receiver stops at once).
// Either way the goroutines it started have ended and every chunk is
// released. After a receive error out and h hold every byte received
// before it; after a write error out holds a prefix of them.
func receive(stream grpc.ClientStream, cancel context.CancelFunc, a task.Artifact, out io.Writer, h hash.Hash, offset int64) error {
	toWrite := make(chan *chunk, pipelineDepth)
	toHash := make(chan *chunk, pipelineDepth)
	var werr error // the writer's; read once wrote is closed
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		defer close(toHash)
		file, _ := out.(*os.File)
		pos, started := offset, offset
		for c := range toWrite {
			if werr != nil {
				c.release() // drain until the receiver notices
				continue
			}
			if werr = writeData(out, c.data); werr != nil {
				cancel()
				c.release()
				continue
			}
			pos += int64(c.n)
			if file != nil && pos-started >= writebackEvery {
				startWriteback(file, started, pos-started)
				started = pos
			}
			toHash <- c
		}
	}()
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for c := range toHash {
			for _, b := range c.data {
				h.Write(b)
			}
			c.release()
		}
	}()
	err := recvInto(stream, a, toWrite, offset)
	close(toWrite)
	<-wrote
	<-hashed
	if werr != nil {
		return fmt.Errorf("write artifact %s: %w", a.SHA256, werr)
	}
	return err
}

// recvInto receives chunks into toWrite until the stream ends or fails.
func recvInto(stream grpc.ClientStream, a task.Artifact, toWrite chan<- *chunk, offset int64) error {
	total := offset
	for {
		c := newChunk()
		err := stream.RecvMsg(c)
		if errors.Is(err, io.EOF) {
			c.release()
			return nil
		}
		if err != nil {
			c.release()
			return fmt.Errorf("fetch artifact %s at byte %d: %w", a.SHA256, total, err)
		}
		total += int64(c.n)
		if a.Size > 0 && total > a.Size {
			c.release()
			return fmt.Errorf("fetch artifact %s: server sent more than the %d bytes the task named", a.SHA256, a.Size)
		}
		toWrite <- c
	}
}

// writeEach writes data to w piece by piece.
func writeEach(w io.Writer, data [][]byte) error {
	for _, b := range data {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
