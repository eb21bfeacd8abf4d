package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPutOpenDedup(t *testing.T) {
	b, err := OpenBlobs(t.TempDir())
	require.NoError(t, err)
	d, n, err := b.Put(strings.NewReader("hello"))
	require.NoError(t, err)
	sum := sha256.Sum256([]byte("hello"))
	require.Equal(t, hex.EncodeToString(sum[:]), d)
	require.Equal(t, int64(5), n)
	require.True(t, b.Has(d))

	d2, _, err := b.Put(strings.NewReader("hello"))
	require.NoError(t, err)
	require.Equal(t, d, d2)
	files := 0
	filepath.Walk(b.dir, func(p string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			files++
		}
		return nil
	})
	require.Equal(t, 1, files, "same bytes stored twice, or a temp file left behind")

	f, size, err := b.Open(d)
	require.NoError(t, err)
	defer f.Close()
	data, _ := io.ReadAll(f)
	require.Equal(t, "hello", string(data))
	require.Equal(t, int64(5), size)

	_, _, err = b.Open(strings.Repeat("0", 64))
	require.ErrorIs(t, err, ErrNotFound)
	_, _, err = b.Open("../../etc/passwd")
	require.ErrorContains(t, err, "is not a sha256 digest")
	require.False(t, b.Has("zz"))
}

// failingReader returns some data, then an error: an upload cut short.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 0 {
		n := min(len(p), f.n)
		f.n -= n
		return n, nil
	}
	return 0, errors.New("client went away")
}

func TestPutReportRemoveAndSourceErrors(t *testing.T) {
	b, err := OpenBlobs(t.TempDir())
	require.NoError(t, err)
	d, _, existed, err := b.PutReport(strings.NewReader("x"))
	require.NoError(t, err)
	require.False(t, existed)
	_, _, existed, err = b.PutReport(strings.NewReader("x"))
	require.NoError(t, err)
	require.True(t, existed, "the second put of the same bytes finds them stored")

	require.NoError(t, b.Remove(d))
	require.False(t, b.Has(d))
	require.NoError(t, b.Remove(d), "removing an absent blob is not an error")
	require.ErrorContains(t, b.Remove("../x"), "is not a sha256 digest")

	// The source's error comes back unwrapped and nothing is kept.
	_, _, _, err = b.PutReport(&failingReader{n: 100 << 10})
	require.EqualError(t, err, "client went away")
	left, err := os.ReadDir(filepath.Join(b.dir, "tmp"))
	require.NoError(t, err)
	require.Empty(t, left, "a failed upload leaves no temp file")
}
