package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fetchHandler stands in for a dispatcher deploy: it only downloads.
func fetchHandler(f func() artifacts.Fetcher) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, t *worker.Task) (any, error) {
		p, err := f().Fetch(ctx, t.Spec.Kind.(task.DispatcherDeploy).Artifact)
		if err != nil {
			return nil, err
		}
		return &task.DispatcherOutput{BackupID: p}, nil
	})
}

func TestArtifactFetchVerifiedAndReused(t *testing.T) {
	c := newCluster(t)
	data := make([]byte, 3<<20+12345) // several chunks and a partial one
	_, _ = rand.Read(data)
	digest, size, err := c.Server.Blobs().Put(bytes.NewReader(data))
	require.NoError(t, err)

	var ra *runningAgent
	ra = c.startAgentWith("dispatcher1", t.TempDir(), session.Hooks{}, map[string]worker.Handler{
		task.DispatcherDeploy{}.Name(): fetchHandler(func() artifacts.Fetcher { return ra.a.Fetcher() }),
	})
	c.waitOnline("dispatcher1")
	art := task.Artifact{SHA256: digest, Size: size, Name: "dispatcher.zip"}

	run := func(exec string) *task.DispatcherOutput {
		id, _ := task.ID(exec, "deploy", "dispatcher1")
		res, err := c.Server.Fleet().Run(ctxT(t), task.Spec{ID: id, HostID: "dispatcher1", Kind: task.DispatcherDeploy{Artifact: art}})
		require.NoError(t, err)
		require.NoError(t, res.Err())
		return res.Output.(*task.DispatcherOutput)
	}
	path := run("e1").BackupID
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(got)
	require.Equal(t, digest, hex.EncodeToString(sum[:]))

	// A second task reuses the verified copy: remove the blob on the
	// server; the fetch must still succeed.
	blob, err := c.Server.Blobs().Path(digest)
	require.NoError(t, err)
	require.NoError(t, os.Remove(blob))
	require.Equal(t, path, run("e2").BackupID)
}

func TestArtifactFetchResumesAndRejectsCorruption(t *testing.T) {
	c := newCluster(t)
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	digest, size, err := c.Server.Blobs().Put(bytes.NewReader(data))
	require.NoError(t, err)
	dir := t.TempDir()
	var ra *runningAgent
	ra = c.startAgentWith("dispatcher1", dir, session.Hooks{}, map[string]worker.Handler{
		task.DispatcherDeploy{}.Name(): fetchHandler(func() artifacts.Fetcher { return ra.a.Fetcher() }),
	})
	c.waitOnline("dispatcher1")
	art := task.Artifact{SHA256: digest, Size: size}

	// A partial download from an earlier attempt is resumed, not restarted.
	adir := filepath.Join(dir, "artifacts")
	require.NoError(t, os.MkdirAll(adir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(adir, digest+".partial"), data[:400000], 0o600))
	id, _ := task.ID("e1", "deploy", "dispatcher1")
	res, err := c.Server.Fleet().Run(ctxT(t), task.Spec{ID: id, HostID: "dispatcher1", Kind: task.DispatcherDeploy{Artifact: art}})
	require.NoError(t, err)
	require.NoError(t, res.Err())

	// A partial file with wrong bytes makes the end result mismatch: the
	// download is refused and deleted, never used.
	data2 := make([]byte, 500000)
	_, _ = rand.Read(data2)
	d2, s2, err := c.Server.Blobs().Put(bytes.NewReader(data2))
	require.NoError(t, err)
	bad := append([]byte{}, data2[:1000]...)
	bad[10] ^= 0xff
	require.NoError(t, os.WriteFile(filepath.Join(adir, d2+".partial"), bad, 0o600))
	id2, _ := task.ID("e2", "deploy", "dispatcher1")
	res, err = c.Server.Fleet().Run(ctxT(t), task.Spec{ID: id2, HostID: "dispatcher1", Kind: task.DispatcherDeploy{Artifact: task.Artifact{SHA256: d2, Size: s2}}})
	require.NoError(t, err)
	require.ErrorContains(t, res.Err(), "sha256 mismatch")
	require.NoFileExists(t, filepath.Join(adir, d2+".partial"))
	require.NoFileExists(t, filepath.Join(adir, d2))
}

func TestArtifactFetchRefusedWithoutTask(t *testing.T) {
	c := newCluster(t)
	digest, size, err := c.Server.Blobs().Put(bytes.NewReader([]byte("secret config")))
	require.NoError(t, err)
	ra := c.startAgent("publish1", t.TempDir(), session.Hooks{})
	c.waitOnline("publish1")
	_, err = ra.a.Fetcher().Fetch(ctxT(t), task.Artifact{SHA256: digest, Size: size})
	require.Error(t, err)
	require.Equal(t, codes.PermissionDenied, status.Code(unwrapStatus(err)))
	require.Contains(t, err.Error(), `host "publish1" has no open task that uses artifact`)
}

func unwrapStatus(err error) error {
	for e := err; e != nil; {
		if _, ok := status.FromError(e); ok {
			return e
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return err
}
