package artifacts

import (
	"sync"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// chunkCodec is the codec of FetchArtifact calls. It decodes the
// ArtifactChunk messages of the stream into a *chunk that points into the
// gRPC receive buffers instead of copying the data out of them (the proto
// codec copies each 256 KiB chunk twice: into one contiguous buffer, then
// into the message's Data). Everything else, the request included, goes
// through the proto codec. The wire format is plain protobuf: its Name is
// "proto", so the server sees an ordinary call.
type chunkCodec struct{}

// Name implements encoding.CodecV2.
func (chunkCodec) Name() string { return proto.Name }

// Marshal implements encoding.CodecV2.
func (chunkCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2(proto.Name).Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (chunkCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if c, ok := v.(*chunk); ok {
		return c.decode(data)
	}
	return encoding.GetCodecV2(proto.Name).Unmarshal(data, v)
}

// chunk is one ArtifactChunk as chunkCodec decodes it. data is the
// message's data field in pieces, usually views into bufs, the gRPC
// buffers the message arrived in, on which the chunk holds a reference
// until release.
type chunk struct {
	bufs mem.BufferSlice // empty when the chunk holds no reference
	data [][]byte
	segs []segment // decode's scratch space
	n    int       // bytes in data
	size int64     // the size field: the blob's size, on the first chunk
}

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// newChunk returns an empty chunk; release gives it back.
func newChunk() *chunk { return chunkPool.Get().(*chunk) }

// release drops the chunk's reference on its buffers (they go back to
// gRPC's pool) and puts the chunk back in chunkPool. The chunk's data
// must not be used afterwards.
func (c *chunk) release() {
	c.reset()
	chunkPool.Put(c)
}

func (c *chunk) reset() {
	c.bufs.Free()
	clear(c.bufs)
	clear(c.data)
	c.bufs, c.data, c.n, c.size = c.bufs[:0], c.data[:0], 0, 0
}

// decode sets c to the ArtifactChunk encoded in msg. The usual encoding
// (the data field, the size field, each at most once, in either order and
// also repeated, the last one winning as in proto.Unmarshal) is read in
// place, taking a reference on msg's buffers; anything else (unknown
// fields, malformed bytes) goes to proto.Unmarshal, which decides and
// whose Data then becomes c's only piece.
func (c *chunk) decode(msg mem.BufferSlice) error {
	c.reset()
	if c.decodeInPlace(msg) {
		return nil
	}
	c.reset()
	var m pb.ArtifactChunk
	if err := encoding.GetCodecV2(proto.Name).Unmarshal(msg, &m); err != nil {
		return err
	}
	if len(m.Data) > 0 {
		c.data = append(c.data, m.Data)
	}
	c.n, c.size = len(m.Data), m.Size
	return nil
}

// decodeInPlace is decode's fast path; false means msg is not in the
// usual encoding (c is then to be reset).
func (c *chunk) decodeInPlace(msg mem.BufferSlice) bool {
	r := sliceReader{s: msg}
	data := c.segs[:0]
	defer func() { c.segs = data[:0] }()
	for !r.done() {
		tag, ok := r.varint()
		if !ok {
			return false
		}
		switch tag {
		case protowire.EncodeTag(1, protowire.BytesType): // data
			n, ok := r.varint()
			if !ok || n > uint64(r.remaining()) {
				return false
			}
			data = r.take(int(n), data[:0])
		case protowire.EncodeTag(2, protowire.VarintType): // size
			v, ok := r.varint()
			if !ok {
				return false
			}
			c.size = int64(v)
		default:
			return false
		}
	}
	for _, s := range data {
		b := msg[s.buf].ReadOnlyData()[s.from:s.to]
		c.data = append(c.data, b)
		c.n += len(b)
	}
	if c.n > 0 {
		msg.Ref()
		c.bufs = append(c.bufs, msg...) // gRPC's slice is gRPC's
	}
	return true
}

// segment is part of a field's bytes: msg[buf].ReadOnlyData()[from:to].
type segment struct{ buf, from, to int }

// sliceReader reads protobuf wire format from a BufferSlice without
// copying it. Its position is byte off of buffer buf.
type sliceReader struct {
	s        mem.BufferSlice
	buf, off int
}

func (r *sliceReader) done() bool {
	for r.buf < len(r.s) && r.off == r.s[r.buf].Len() {
		r.buf, r.off = r.buf+1, 0
	}
	return r.buf == len(r.s)
}

func (r *sliceReader) remaining() int {
	n := -r.off
	for _, b := range r.s[min(r.buf, len(r.s)):] {
		n += b.Len()
	}
	return n
}

// varint reads a varint as protowire.ConsumeVarint does; false if it is
// truncated or overflows 64 bits.
func (r *sliceReader) varint() (uint64, bool) {
	var v uint64
	for i := 0; i < 10 && !r.done(); i++ {
		b := r.s[r.buf].ReadOnlyData()[r.off]
		r.off++
		if i == 9 && b > 1 {
			return 0, false
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, true
		}
	}
	return 0, false
}

// take appends to segs the segments of the next n bytes, which must be
// there, and moves past them.
func (r *sliceReader) take(n int, segs []segment) []segment {
	for n > 0 {
		r.done() // skips to the next buffer at the end of one
		k := min(n, r.s[r.buf].Len()-r.off)
		segs = append(segs, segment{buf: r.buf, from: r.off, to: r.off + k})
		r.off += k
		n -= k
	}
	return segs
}
