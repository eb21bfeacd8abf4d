package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// uploadChunk is the size of one UploadArtifact data message, read
	// from disk one at a time: an artifact is never held in memory whole.
	uploadChunk = 256 << 10
	// maxArtifacts bounds how many files one build may upload; a glob that
	// matches more is almost certainly wrong.
	maxArtifacts = 200
	// uploadAttempts is how often one upload is tried when the connection
	// to the server breaks; the server keeps only complete uploads, so a
	// retry starts over.
	uploadAttempts = 4
)

// hostMetadataKey names this host on calls in --dev-insecure mode (see
// controlplane/fleet.HostMetadataKey); with TLS the certificate does.
const hostMetadataKey = "deckhand-host-id"

// found is one file matching the artifacts glob.
type found struct {
	rel  string // slash-separated, relative to the checkout
	name string // base name: the artifact's name on the server
}

// findArtifacts lists the regular files under src matching glob, sorted.
// Symbolic links are skipped, never followed: a build could point one at
// a file of the host (the agent's key) to have it uploaded. .git is not
// searched. Two files with the same base name are refused, because the
// server knows artifacts by that name.
func findArtifacts(src, glob string) ([]found, error) {
	var out []found
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !matchGlob(glob, rel) {
			return nil
		}
		out = append(out, found{rel: rel, name: path.Base(rel)})
		if len(out) > maxArtifacts {
			return fmt.Errorf("more than %d files match artifacts %q; narrow the glob", maxArtifacts, glob)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	seen := map[string]string{}
	for _, f := range out {
		if other, dup := seen[f.name]; dup {
			return nil, fmt.Errorf("two artifacts are named %s (%s and %s); artifact names must be unique", f.name, other, f.rel)
		}
		seen[f.name] = f.rel
	}
	return out, nil
}

// uploadAll uploads each artifact of the build over UploadArtifact and
// returns them with the digests the server computed.
func (b *Builder) uploadAll(ctx context.Context, taskID string, ws workspace, files []found, log *logSink) ([]task.Artifact, error) {
	root, err := os.OpenRoot(ws.src)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var out []task.Artifact
	for _, f := range files {
		var a task.Artifact
		var kind string
		for attempt := 1; ; attempt++ {
			a, kind, err = b.upload(ctx, root, taskID, f)
			if err == nil || ctx.Err() != nil || attempt == uploadAttempts || !transient(err) {
				break
			}
			log.Printf("[deckhand] upload of %s failed (%v); trying again", f.rel, err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * time.Second):
			}
		}
		if err != nil {
			return out, fmt.Errorf("upload %s: %w", f.rel, err)
		}
		log.Printf("[deckhand] uploaded %s: %s, %d bytes, sha256 %s", f.rel, kind, a.Size, a.SHA256)
		out = append(out, a)
	}
	return out, nil
}

// transient reports whether an upload failed for want of a connection
// rather than because the server refused it.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// upload streams one file from disk to the server in uploadChunk pieces,
// hashing as it goes, and checks the server stored the same bytes.
func (b *Builder) upload(ctx context.Context, root *os.Root, taskID string, f found) (task.Artifact, string, error) {
	file, err := root.Open(filepath.FromSlash(f.rel))
	if err != nil {
		return task.Artifact{}, "", err
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return task.Artifact{}, "", err
	}
	if !st.Mode().IsRegular() {
		return task.Artifact{}, "", fmt.Errorf("%s is not a regular file", f.rel)
	}
	conn, err := b.conn(ctx)
	if err != nil {
		return task.Artifact{}, "", status.Error(codes.Unavailable, err.Error())
	}
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, hostMetadataKey, b.hostID))
	defer cancel() // a failed upload is abandoned: the server discards it
	stream, err := pb.NewAgentServiceClient(conn).UploadArtifact(sctx)
	if err != nil {
		return task.Artifact{}, "", err
	}
	size := st.Size()
	if err := stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Header{Header: &pb.UploadHeader{TaskId: taskID, Name: f.name, Size: size}}}); err != nil {
		return task.Artifact{}, "", closeErr(stream, err)
	}
	h := sha256.New()
	var sent int64
	for sent < size {
		// A fresh buffer per message: gRPC does not allow reusing a
		// message's memory after Send (stats handlers may read it later).
		buf := make([]byte, min(uploadChunk, size-sent))
		n, rerr := io.ReadFull(file, buf)
		if rerr != nil {
			return task.Artifact{}, "", fmt.Errorf("read %s at byte %d: %w", f.rel, sent, rerr)
		}
		h.Write(buf[:n])
		if err := stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Chunk{Chunk: buf[:n]}}); err != nil {
			return task.Artifact{}, "", closeErr(stream, err)
		}
		sent += int64(n)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return task.Artifact{}, "", err
	}
	digest := hex.EncodeToString(h.Sum(nil))
	if resp.GetSha256() != digest || resp.GetSize() != size {
		return task.Artifact{}, "", fmt.Errorf("the server stored %d bytes with sha256 %s, we sent %d bytes with sha256 %s", resp.GetSize(), resp.GetSha256(), size, digest)
	}
	return task.Artifact{SHA256: digest, Size: size, Name: f.name}, resp.GetKind(), nil
}

// closeErr returns the server's status when Send failed because the
// server ended the call (Send then only says io.EOF).
func closeErr(stream interface {
	CloseAndRecv() (*pb.UploadArtifactResponse, error)
}, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}
