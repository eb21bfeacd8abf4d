package fleet_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fetch downloads digest from offset with the plain proto codec and
// returns the bytes and the size the first chunk announced.
func fetch(t *testing.T, conn *grpc.ClientConn, digest string, offset int64) ([]byte, int64, error) {
	stream, err := pb.NewAgentServiceClient(conn).FetchArtifact(ctxT(t), &pb.FetchArtifactRequest{Sha256: digest, Offset: offset})
	if err != nil {
		return nil, 0, err
	}
	var data []byte
	size := int64(-1)
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return data, size, nil
		}
		if err != nil {
			return data, size, err
		}
		if size == -1 {
			size = c.GetSize()
		} else if c.GetSize() != 0 {
			t.Errorf("size %d on a chunk after the first", c.GetSize())
		}
		data = append(data, c.GetData()...)
	}
}

func TestFetchArtifactStreamsTheBlob(t *testing.T) {
	c := newUploadCluster(t)
	blob := make([]byte, 3<<20+12345) // several chunks and a partial one
	_, _ = rand.Read(blob)
	digest, n, err := c.Server.Blobs().Put(bytes.NewReader(blob))
	require.NoError(t, err)
	c.openTask("e1", "dispatcher1", task.DispatcherDeploy{Artifact: task.Artifact{SHA256: digest, Size: n}})
	conn := c.HostConn("dispatcher1")

	// Several downloads at once share the server's chunk buffers: none
	// may see another's bytes (run with -race).
	var wg sync.WaitGroup
	for _, off := range []int64{0, 0, 1, 256 << 10, n - 1, n} {
		wg.Go(func() {
			got, size, err := fetch(t, conn, digest, off)
			require.NoError(t, err)
			require.Equal(t, n, size)
			require.True(t, bytes.Equal(blob[off:], got), "offset %d", off)
		})
	}
	wg.Wait()

	_, _, err = fetch(t, conn, digest, n+1)
	require.Equal(t, codes.OutOfRange, status.Code(err), "%v", err)
	_, _, err = fetch(t, c.HostConn("publish1"), digest, 0)
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

func TestFetchArtifactEmptyBlob(t *testing.T) {
	c := newUploadCluster(t)
	digest, n, err := c.Server.Blobs().Put(bytes.NewReader(nil))
	require.NoError(t, err)
	c.openTask("e1", "dispatcher1", task.DispatcherDeploy{Artifact: task.Artifact{SHA256: digest, Size: n}})
	got, size, err := fetch(t, c.HostConn("dispatcher1"), digest, 0)
	require.NoError(t, err)
	require.Zero(t, size)
	require.Empty(t, got)
}
