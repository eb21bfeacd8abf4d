package fleet_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/classify"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const builderTopology = `
environments:
  - name: prod
    type: prod
    hosts:
      - {id: builder1, role: builder}
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
`

type uploadCluster struct {
	*servertest.Control
	t    *testing.T
	sets *artifacts.Sets
}

func newUploadCluster(t *testing.T) *uploadCluster {
	c := servertest.Start(t, servertest.Options{Topology: builderTopology})
	return &uploadCluster{Control: c, t: t, sets: artifacts.NewSets(c.Server.Blobs(), c.Server.Store().Backend())}
}

// openTask assigns a task to host; no agent is connected, so it stays open.
func (c *uploadCluster) openTask(exec, host string, kind task.Kind) string {
	id, err := task.ID(exec, kind.Name(), host)
	require.NoError(c.t, err)
	require.NoError(c.t, c.Server.Fleet().Assign(ctxT(c.t), task.Spec{ID: id, HostID: host, Kind: kind}))
	return id
}

// assertNothingStored checks the store has no record and no blob of data,
// and no upload's temp file is left behind.
func (c *uploadCluster) assertNothingStored(data []byte) {
	c.t.Helper()
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	require.False(c.t, c.Server.Blobs().Has(digest), "blob stored")
	_, err := c.sets.Artifact(digest)
	require.ErrorIs(c.t, err, artifacts.ErrNotFound)
	tmp := filepath.Join(c.Config.DataDir, "artifacts", "tmp")
	require.Eventually(c.t, func() bool {
		entries, err := os.ReadDir(tmp)
		return err == nil && len(entries) == 0
	}, 5*time.Second, 10*time.Millisecond, "an upload left a temp file")
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// upload sends a header and then chunks, and returns the server's answer.
func upload(ctx context.Context, conn *grpc.ClientConn, taskID, name string, size int64, chunks ...[]byte) (*pb.UploadArtifactResponse, error) {
	stream, err := pb.NewAgentServiceClient(conn).UploadArtifact(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Header{Header: &pb.UploadHeader{TaskId: taskID, Name: name, Size: size}}}); err != nil {
		return stream.CloseAndRecv()
	}
	for _, c := range chunks {
		if err := stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Chunk{Chunk: c}}); err != nil {
			return stream.CloseAndRecv()
		}
	}
	return stream.CloseAndRecv()
}

func pkgZip(name string) []byte {
	return aempkgtest.Package(aempkgtest.Spec{Group: "site", Name: name, Version: "1.0"})
}

func TestUploadStoresAndClassifies(t *testing.T) {
	c := newUploadCluster(t)
	id := c.openTask("e1", "builder1", task.Build{Repository: "https://git.example.com/site.git", Branch: "main", Profile: "maven"})
	conn := c.HostConn("builder1")

	pkg := pkgZip("site.ui.apps")
	half := len(pkg) / 2
	resp, err := upload(ctxT(t), conn, id, "site.ui.apps-1.0.zip", int64(len(pkg)), pkg[:half], pkg[half:])
	require.NoError(t, err)
	sum := sha256.Sum256(pkg)
	require.Equal(t, hex.EncodeToString(sum[:]), resp.GetSha256())
	require.Equal(t, int64(len(pkg)), resp.GetSize())
	require.Equal(t, "aem-package", resp.GetKind())
	require.False(t, resp.GetAlreadyStored())
	a, err := c.sets.Artifact(resp.GetSha256())
	require.NoError(t, err)
	require.Equal(t, classify.AEMPackage, a.Kind)
	require.Equal(t, "site.ui.apps-1.0.zip", a.Name)
	require.Equal(t, "site:site.ui.apps:1.0", a.PackageID.String())

	disp := aempkgtest.Zip(map[string]string{"conf/httpd.conf": "Listen 80\n", "conf.d/site.conf": "# site\n"})
	resp, err = upload(ctxT(t), conn, id, "dispatcher-1.0.zip", int64(len(disp)), disp)
	require.NoError(t, err)
	require.Equal(t, "dispatcher-config", resp.GetKind())

	// The same bytes again (a re-run build) are stored once.
	resp, err = upload(ctxT(t), conn, id, "site.ui.apps-1.0.zip", int64(len(pkg)), pkg)
	require.NoError(t, err)
	require.True(t, resp.GetAlreadyStored())
}

func TestUploadRefusals(t *testing.T) {
	c := newUploadCluster(t)
	build := task.Build{Repository: "https://git.example.com/site.git", Branch: "main", Profile: "maven"}
	id := c.openTask("e1", "builder1", build)
	builder := c.HostConn("builder1")
	pkg := pkgZip("site.core")
	n := int64(len(pkg))

	for _, tc := range []struct {
		name    string
		conn    *grpc.ClientConn
		task    string
		file    string
		size    int64
		chunks  [][]byte
		code    codes.Code
		message string
	}{
		{"another host for the builder's task", c.HostConn("publish1"), id, "a.zip", n, [][]byte{pkg}, codes.PermissionDenied, `host "publish1" has no open build task`},
		{"an unknown task id", builder, "e9/build/builder1", "a.zip", n, [][]byte{pkg}, codes.PermissionDenied, `host "builder1" has no open build task "e9/build/builder1"`},
		{"no task id", builder, "", "a.zip", n, [][]byte{pkg}, codes.PermissionDenied, "has no open build task"},
		{"a name with a directory", builder, id, "target/a.zip", n, [][]byte{pkg}, codes.InvalidArgument, "must be a file name without directories"},
		{"a name with a backslash", builder, id, `..\a.zip`, n, [][]byte{pkg}, codes.InvalidArgument, "must be a file name without directories"},
		{"dot-dot", builder, id, "..", n, [][]byte{pkg}, codes.InvalidArgument, "must be a file name without directories"},
		{"fewer bytes than announced", builder, id, "a.zip", n + 10, [][]byte{pkg}, codes.InvalidArgument, "ended after"},
		{"more bytes than announced", builder, id, "a.zip", n - 10, [][]byte{pkg}, codes.InvalidArgument, "longer than the"},
		{"a negative size", builder, id, "a.zip", -1, [][]byte{pkg}, codes.InvalidArgument, "outside"},
		{"neither kind of artifact", builder, id, "a.zip", int64(len("not a zip")), [][]byte{[]byte("not a zip")}, codes.InvalidArgument, "a.zip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := upload(ctxT(t), tc.conn, tc.task, tc.file, tc.size, tc.chunks...)
			require.Error(t, err)
			require.Equal(t, tc.code, status.Code(err), err.Error())
			require.Contains(t, err.Error(), tc.message)
			for _, ch := range tc.chunks {
				c.assertNothingStored(ch)
			}
		})
	}

	t.Run("a task of another kind", func(t *testing.T) {
		other := c.openTask("e2", "builder1", task.HostFacts{})
		_, err := upload(ctxT(t), builder, other, "a.zip", n, pkg)
		require.Equal(t, codes.PermissionDenied, status.Code(err), err)
		c.assertNothingStored(pkg)
	})

	t.Run("a finished build task", func(t *testing.T) {
		done := c.openTask("e3", "builder1", build)
		res := &task.Result{TaskID: done, Status: task.StatusSucceeded, FinishedAt: time.Now().UTC(), Output: &task.BuildOutput{Commit: "x"}}
		raw, err := task.MarshalResult(res)
		require.NoError(t, err)
		_, _, err = c.Server.Store().FinishTask(done, "builder1", "succeeded", raw, time.Now())
		require.NoError(t, err)
		_, err = upload(ctxT(t), builder, done, "a.zip", n, pkg)
		require.Equal(t, codes.PermissionDenied, status.Code(err), err)
		c.assertNothingStored(pkg)
	})

	t.Run("an upload cut short", func(t *testing.T) {
		// The builder dies mid-upload: the server keeps nothing of it.
		ctx, cancel := context.WithCancel(ctxT(t))
		stream, err := pb.NewAgentServiceClient(builder).UploadArtifact(ctx)
		require.NoError(t, err)
		require.NoError(t, stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Header{Header: &pb.UploadHeader{TaskId: id, Name: "a.zip", Size: n}}}))
		require.NoError(t, stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Chunk{Chunk: pkg[:n/2]}}))
		cancel()
		c.assertNothingStored(pkg)
	})

	t.Run("data before the header", func(t *testing.T) {
		stream, err := pb.NewAgentServiceClient(builder).UploadArtifact(ctxT(t))
		require.NoError(t, err)
		require.NoError(t, stream.Send(&pb.UploadArtifactRequest{Msg: &pb.UploadArtifactRequest_Chunk{Chunk: pkg}}))
		_, err = stream.CloseAndRecv()
		require.Equal(t, codes.InvalidArgument, status.Code(err), err)
		c.assertNothingStored(pkg)
	})

	arts, err := c.sets.Artifacts()
	require.NoError(t, err)
	require.Empty(t, arts)
}
