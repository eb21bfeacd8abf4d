package artifacts

import (
	"bytes"
	"testing"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// wire is the protobuf encoding of m.
func wire(m *pb.ArtifactChunk) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// frames cuts b into buffers of at most n bytes, as HTTP/2 frames
// arrive. Buffers above gRPC's pooling threshold count their references
// and go back to pool, if not nil, when the last one is dropped.
func frames(b []byte, n int, pool ...mem.BufferPool) mem.BufferSlice {
	p := mem.DefaultBufferPool()
	if len(pool) > 0 {
		p = pool[0]
	}
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.Copy(b[:k], p))
		b = b[k:]
	}
	return s
}

// poisonPool overwrites the buffers given back to it and counts them.
type poisonPool struct{ gets, puts int }

func (p *poisonPool) Get(n int) *[]byte {
	p.gets++
	b := make([]byte, n)
	return &b
}

func (p *poisonPool) Put(b *[]byte) {
	p.puts++
	for i := range *b {
		(*b)[i] = 0xee
	}
}

// cut cuts b at the given offsets (any order, out of range ones ignored).
func cut(b []byte, at []byte) mem.BufferSlice {
	var s mem.BufferSlice
	prev := 0
	for _, a := range at {
		if i := int(a) * len(b) / 256; i > prev && i < len(b) {
			s = append(s, mem.SliceBuffer(b[prev:i]))
			prev = i
		}
	}
	return append(s, mem.SliceBuffer(b[prev:]))
}

func joined(c *chunk) []byte {
	var b []byte
	for _, d := range c.data {
		b = append(b, d...)
	}
	return b
}

func TestChunkDecode(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	for _, tc := range []struct {
		name     string
		msg      []byte
		data     []byte
		size     int64
		inPlace  bool
		malforms bool
	}{
		{name: "empty", msg: nil, inPlace: true},
		{name: "size only", msg: wire(&pb.ArtifactChunk{Size: 1 << 40}), size: 1 << 40, inPlace: true},
		{name: "data and size", msg: wire(&pb.ArtifactChunk{Data: data, Size: 7}), data: data, size: 7, inPlace: true},
		{name: "size first", msg: append(wire(&pb.ArtifactChunk{Size: 7}), wire(&pb.ArtifactChunk{Data: data})...), data: data, size: 7, inPlace: true},
		{name: "the last data wins", msg: append(wire(&pb.ArtifactChunk{Data: data[:10]}), wire(&pb.ArtifactChunk{Data: data[5:9]})...), data: data[5:9], inPlace: true},
		{name: "the last size wins", msg: append(wire(&pb.ArtifactChunk{Size: 5}), wire(&pb.ArtifactChunk{Size: 6})...), size: 6, inPlace: true},
		{name: "negative size", msg: wire(&pb.ArtifactChunk{Size: -1}), size: -1, inPlace: true},
		{name: "unknown field", msg: append(wire(&pb.ArtifactChunk{Data: data[:3]}), protowire.AppendVarint(tag(9, protowire.VarintType), 1)...), data: data[:3]},
		{name: "data with the wrong wire type", msg: protowire.AppendVarint(tag(1, protowire.VarintType), 1)},
		{name: "truncated data", msg: wire(&pb.ArtifactChunk{Data: data})[:1000], malforms: true},
		{name: "truncated varint", msg: []byte{0x10, 0x80}, malforms: true},
		{name: "varint overflow", msg: append([]byte{0x10}, bytes.Repeat([]byte{0xff}, 10)...), malforms: true},
		{name: "field zero", msg: []byte{0x00, 0x00}, malforms: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{1, 2, 7, 16 << 10, 1 << 30} {
				var pool poisonPool
				msg := frames(tc.msg, n, &pool)
				c := newChunk()
				err := chunkCodec{}.Unmarshal(msg, c)
				if tc.malforms {
					require.Error(t, err)
					msg.Free()
					c.release()
					require.Equal(t, pool.gets, pool.puts, "every buffer goes back to the pool")
					continue
				}
				require.NoError(t, err)
				msg.Free() // as gRPC does once Unmarshal returns: the chunk holds its own reference
				require.Equal(t, tc.data, joined(c))
				require.Equal(t, len(tc.data), c.n)
				require.Equal(t, tc.size, c.size)
				require.Equal(t, tc.inPlace && len(tc.data) > 0, len(c.bufs) > 0, "decoded in place")
				c.release()
				require.Equal(t, pool.gets, pool.puts, "every buffer goes back to the pool")
			}
		})
	}
}

func TestChunkCodecPassesOtherMessagesToProto(t *testing.T) {
	req := &pb.FetchArtifactRequest{Sha256: "ab", Offset: 3}
	b, err := chunkCodec{}.Marshal(req)
	require.NoError(t, err)
	var got pb.FetchArtifactRequest
	require.NoError(t, chunkCodec{}.Unmarshal(b, &got))
	require.True(t, proto.Equal(req, &got))
	require.Equal(t, "proto", chunkCodec{}.Name(), "the server must see an ordinary call")
}

// FuzzChunkDecode checks that chunk.decode agrees with proto.Unmarshal on
// any bytes, cut into buffers anywhere.
func FuzzChunkDecode(f *testing.F) {
	f.Add(wire(&pb.ArtifactChunk{Data: []byte("hello"), Size: 5}), []byte{1, 100})
	f.Add(wire(&pb.ArtifactChunk{Data: bytes.Repeat([]byte{7}, 300)}), []byte{3})
	f.Add([]byte{0x0a, 0x80}, []byte{})
	f.Add([]byte{0x12, 0x01, 0x00, 0x0a, 0x00}, []byte{50, 200})
	f.Fuzz(func(t *testing.T, b []byte, at []byte) {
		var want pb.ArtifactChunk
		werr := proto.Unmarshal(b, &want)
		c := newChunk()
		defer c.release()
		err := c.decode(cut(b, at))
		if werr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, len(want.Data), c.n)
		require.True(t, bytes.Equal(want.Data, joined(c)))
		require.Equal(t, want.Size, c.size)
	})
}
