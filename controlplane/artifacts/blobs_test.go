package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
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
