package artifacts

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
)

func TestWriteData(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sizes := range [][]int{
		nil,
		{0},
		{5, 0, 7},
		{64 << 10},
		{64<<10 + 1, 3}, // over maxWrite on Linux
		{16<<10 - 9, 16 << 10, 16 << 10, 16 << 10, 16 << 10, 9}, // a chunk as it arrives in frames
		{1 << 20},
		repeat(40, 100),    // more pieces than one writev takes
		repeat(17, 16<<10), // more bytes than one write
	} {
		var data [][]byte
		var want []byte
		for _, n := range sizes {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			data = append(data, b)
			want = append(want, b...)
		}
		f, err := os.Create(filepath.Join(t.TempDir(), "out"))
		require.NoError(t, err)
		_, err = f.Write([]byte("head"))
		require.NoError(t, err)
		require.NoError(t, writeData(f, data))
		require.NoError(t, f.Close())
		got, err := os.ReadFile(f.Name())
		require.NoError(t, err)
		require.True(t, bytes.Equal(append([]byte("head"), want...), got), "sizes %v", sizes)

		var buf bytes.Buffer
		require.NoError(t, writeData(&buf, data))
		require.True(t, bytes.Equal(want, buf.Bytes()))
	}
}

func TestWriteDataReportsErrors(t *testing.T) {
	f, err := os.Open("fetch.go") // read-only: every write fails
	require.NoError(t, err)
	defer f.Close()
	require.Error(t, writeData(f, [][]byte{[]byte("x")}))
	w := &failingWriter{left: 3}
	require.ErrorIs(t, writeData(w, [][]byte{[]byte("ab"), []byte("cd")}), errDiskFull)
	require.Equal(t, "abc", w.String())
}

func repeat(n, size int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = size
	}
	return s
}

func TestFramePool(t *testing.T) {
	var p framePool
	for _, n := range []int{1, 1 << 10, 1<<10 + 1, 9000, frameSize, frameSize + 1, 1 << 20} {
		b := p.Get(n)
		require.Len(t, *b, n)
		p.Put(b)
	}
	// Frame-sized buffers come from the pool's own, uncleared supply.
	b := p.Get(frameSize - 100)
	require.Equal(t, frameSize, cap(*b))
	p.Put(b)
	var _ mem.BufferPool = p
}
