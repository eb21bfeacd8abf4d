package artifacts

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// DialOptions returns the settings the agent's connection to the control
// plane needs for artifact downloads, which share it with the session
// stream.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		// HTTP/2 frames are read into buffers from framePool, which does
		// not clear them first: the framer overwrites every byte.
		experimental.WithBufferPool(framePool{}),
		// No read buffer: TLS decrypts into its own buffer anyway, and
		// the framer then copies straight from there into the frame's
		// buffer instead of through a second one.
		grpc.WithReadBufferSize(0),
		// A fixed window instead of gRPC's estimate of the bandwidth-delay
		// product, which may grow to 16 MiB: it bounds what gRPC buffers
		// for a download the disk cannot keep up with, and 4 MiB keeps
		// loopback at full speed (1 MiB does not). The price is a
		// ceiling of 4 MiB per round trip on a long-distance link
		// (80 MiB/s at 50 ms). gRPC replenishes the connection window as
		// data arrives, so a stalled download does not hold up the
		// session stream.
		grpc.WithInitialWindowSize(windowSize),
		grpc.WithInitialConnWindowSize(windowSize),
	}
}

// windowSize is the HTTP/2 flow-control window of the agent's connection
// and of each of its streams.
const windowSize = 4 << 20

// frameSize is the size of the HTTP/2 frames gRPC sends (http2MaxFrameLen).
const frameSize = 16 << 10

// framePool is gRPC's default buffer pool except that the buffers of up
// to frameSize bytes it hands out are not cleared between uses (gRPC
// clears every buffer it takes from its own pools: for 1 GiB of artifact
// that is 1 GiB of memory written for nothing). Every use gRPC makes of
// such a buffer (reading a frame into it, encoding or joining a message
// in it) overwrites all of it before reading it; the pools gRPC uses for
// its own read and write buffers are not cleared either.
type framePool struct{}

var frameBufs = sync.Pool{New: func() any { b := make([]byte, frameSize); return &b }}

// Get implements mem.BufferPool.
func (framePool) Get(n int) *[]byte {
	if n > frameSize || mem.IsBelowBufferPoolingThreshold(n) {
		return mem.DefaultBufferPool().Get(n)
	}
	b := frameBufs.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

// Put implements mem.BufferPool.
func (framePool) Put(b *[]byte) {
	if cap(*b) != frameSize {
		mem.DefaultBufferPool().Put(b)
		return
	}
	frameBufs.Put(b)
}
