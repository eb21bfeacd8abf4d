//go:build linux

package safezip

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// failSyncfs makes syncfs fail until the returned func restores it.
func failSyncfs(t *testing.T) func() {
	old := syncfs
	syncfs = func(*os.File) error { return errors.New("injected syncfs failure") }
	return func() { syncfs = old }
}

// TestSyncfsBeforeRename checks how an extraction becomes durable on
// Linux: one syncfs(2), on the temporary directory, when every file,
// symlink and directory of the tree is written with its final mode and
// before the tree is renamed into place; no fsync per file.
func TestSyncfsBeforeRename(t *testing.T) {
	// Not parallel: it swaps package variables.
	require.False(t, perFileSync, "Linux uses syncfs")
	defer func(s, f func(*os.File) error) { syncfs, fsync = s, f }(syncfs, fsync)
	fsyncs := 0
	fsync = func(f *os.File) error { fsyncs++; return f.Sync() }
	data, files, dirs := syncTestZip(t)
	sandbox := t.TempDir()
	dest := filepath.Join(sandbox, "out")
	var calls []string
	renamed := dest // the path that must not exist yet at the sync
	real := syncfs
	syncfs = func(f *os.File) error {
		calls = append(calls, f.Name())
		// At this moment: nothing is in place yet, and the tree is complete.
		_, err := os.Lstat(renamed)
		require.ErrorIs(t, err, fs.ErrNotExist, "renamed into place before it was durable")
		var nf, nd, nl int
		require.NoError(t, filepath.WalkDir(f.Name(), func(p string, de fs.DirEntry, err error) error {
			require.NoError(t, err)
			switch {
			case p == f.Name():
			case de.IsDir():
				nd++
			case de.Type()&fs.ModeSymlink != 0:
				nl++
			default:
				nf++
			}
			return nil
		}))
		require.Equal(t, []int{files, dirs, 1}, []int{nf, nd, nl}, "syncfs before the tree was complete")
		fi, err := os.Stat(f.Name())
		require.NoError(t, err)
		require.Equal(t, fs.ModeDir|0o755, fi.Mode(), "final modes are set before the sync")
		return real(f)
	}
	_, err := ExtractReader(bytes.NewReader(data), int64(len(data)), dest, Options{})
	require.NoError(t, err)
	require.Len(t, calls, 1, "one syncfs per extraction")
	require.Equal(t, sandbox, filepath.Dir(calls[0]), "synced the temporary sibling of the destination")
	require.Zero(t, fsyncs, "no fsync per file or directory on Linux")
	require.DirExists(t, dest)

	// ExtractToTemp hands back a tree already synced.
	calls = nil
	parent := t.TempDir()
	renamed = filepath.Join(parent, "not-used")
	p := filepath.Join(parent, "a.zip")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	dir, _, err := ExtractToTemp(p, parent, Options{})
	require.NoError(t, err)
	require.Equal(t, []string{dir}, calls)
}
