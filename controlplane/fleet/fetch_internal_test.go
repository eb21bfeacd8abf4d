package fleet

import (
	"bytes"
	"testing"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// countingPool hands out buffers of one size and counts them back.
type countingPool struct{ gets, puts int }

func (p *countingPool) Get(n int) *[]byte {
	p.gets++
	b := make([]byte, n)
	return &b
}

func (p *countingPool) Put(*[]byte) { p.puts++ }

func TestRawChunkEncodesAsArtifactChunk(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 2000, chunkSize} {
		for _, size := range []int64{0, 1, 300, 1 << 40} {
			data := bytes.Repeat([]byte{0xa5}, n)
			var pool countingPool
			buf := pool.Get(n)
			copy(*buf, data)
			c := &rawChunk{data: mem.NewBuffer(buf, &pool), size: size}
			got, err := Codec{}.Marshal(c)
			require.NoError(t, err)
			c.data.Free() // as FetchArtifact does once SendMsg returns
			want, err := proto.Marshal(&pb.ArtifactChunk{Data: data, Size: size})
			require.NoError(t, err)
			require.True(t, bytes.Equal(want, got.Materialize()), "data %d bytes, size %d", n, size)
			var back pb.ArtifactChunk
			require.NoError(t, Codec{}.Unmarshal(got, &back))
			require.True(t, bytes.Equal(data, back.Data))
			require.Equal(t, size, back.Size)
			if mem.IsBelowBufferPoolingThreshold(n) {
				continue // not pooled at all
			}
			require.Zero(t, pool.puts, "the buffer went back while gRPC still held it")
			got.Free() // as gRPC does once the bytes are written
			require.Equal(t, 1, pool.puts)
		}
	}
}

func TestCodecPassesOtherMessagesToProto(t *testing.T) {
	req := &pb.FetchArtifactRequest{Sha256: "ab", Offset: 3}
	b, err := Codec{}.Marshal(req)
	require.NoError(t, err)
	var got pb.FetchArtifactRequest
	require.NoError(t, Codec{}.Unmarshal(b, &got))
	require.True(t, proto.Equal(req, &got))
	require.Equal(t, "proto", Codec{}.Name())
}

func TestBufPool(t *testing.T) {
	p := &bufPool{size: 64}
	b := p.Get(10)
	require.Len(t, *b, 10)
	require.Equal(t, 64, cap(*b))
	p.Put(b)
	other := make([]byte, 10, 100)
	p.Put(&other) // not one of the pool's: dropped
	require.Equal(t, 64, cap(*p.Get(64)))
}
