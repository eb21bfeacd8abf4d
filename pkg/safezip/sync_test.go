package safezip

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// syncTestZip is a small tree: nested directories, files and a symlink.
func syncTestZip(tb testing.TB) (data []byte, files, dirs int) {
	var ents []zent
	for d := 0; d < 3; d++ {
		for i := 0; i < 4; i++ {
			ents = append(ents, file(fmt.Sprintf("conf.d/sub%d/f%d.conf", d, i), "x\n"))
		}
	}
	ents = append(ents, link("conf.d/enabled.conf", "sub0/f0.conf"))
	return buildZip(tb, ents...), 12, 4 // conf.d and three subdirectories
}

// TestPerFileSyncFallback runs the portable durability path (no syncfs):
// every file and directory is fsynced, the destination itself included,
// and the tree comes out the same.
func TestPerFileSyncFallback(t *testing.T) {
	// Not parallel: it swaps package variables.
	defer func(p bool, f func(*os.File) error) { perFileSync, fsync = p, f }(perFileSync, fsync)
	perFileSync = true
	n := 0
	fsync = func(f *os.File) error { n++; return f.Sync() }
	data, files, dirs := syncTestZip(t)
	_, dest, res, err := extractBytes(t, data, Options{})
	require.NoError(t, err)
	require.Equal(t, files, res.Files)
	require.Equal(t, files+dirs+1, n, "one fsync per file and directory, and the destination")
	b, err := os.ReadFile(filepath.Join(dest, "conf.d/enabled.conf"))
	require.NoError(t, err)
	require.Equal(t, "x\n", string(b))
}

// TestSyncFailureLeavesNothing: when the tree cannot be made durable,
// nothing is renamed into place and the temporary directory is gone.
func TestSyncFailureLeavesNothing(t *testing.T) {
	defer func(p bool, f func(*os.File) error) { perFileSync, fsync = p, f }(perFileSync, fsync)
	for _, per := range []bool{true, false} {
		if !per && perFileSync {
			continue // no syncfs on this platform
		}
		perFileSync = per
		fsync = func(*os.File) error { return os.ErrDeadlineExceeded } // stands for EIO
		restore := failSyncfs(t)
		data, _, _ := syncTestZip(t)
		sandbox, dest, _, err := extractBytes(t, data, Options{})
		restore()
		require.Error(t, err, "perFileSync=%v", per)
		require.NoDirExists(t, dest)
		left, rerr := os.ReadDir(sandbox)
		require.NoError(t, rerr)
		require.Empty(t, left, "perFileSync=%v: temporary directory left behind", per)
	}
}

// BenchmarkExtractSync compares the two durability paths on the
// 2,000-file dispatcher-like tree.
func BenchmarkExtractSync(b *testing.B) {
	defer func(p bool) { perFileSync = p }(perFileSync)
	data := dispatcherLikeZip(b)
	for _, per := range []bool{false, true} {
		if !per && perFileSync {
			continue
		}
		name := "syncfs"
		if per {
			name = "fsync-per-file"
		}
		b.Run(name, func(b *testing.B) {
			perFileSync = per
			parent := b.TempDir()
			i := 0
			for b.Loop() {
				dest := filepath.Join(parent, fmt.Sprint(i))
				i++
				if _, err := ExtractReader(bytes.NewReader(data), int64(len(data)), dest, Options{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
