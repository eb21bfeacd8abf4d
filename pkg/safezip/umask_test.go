//go:build unix

package safezip

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestModesIgnoreUmask checks that the archive's modes are applied exactly, not filtered by
// the process umask.
func TestModesIgnoreUmask(t *testing.T) {
	// Not parallel: the umask is process-wide.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	_, dest, _, err := extractBytes(t, buildZip(t, fileMode("d/f", "x", 0o755), dirMode("d/", 0o755)), Options{})
	require.NoError(t, err)
	for name, mode := range map[string]fs.FileMode{"d/f": 0o755, "d": fs.ModeDir | 0o755, ".": fs.ModeDir | 0o755} {
		fi, err := os.Lstat(filepath.Join(dest, name))
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode(), name)
	}
}
