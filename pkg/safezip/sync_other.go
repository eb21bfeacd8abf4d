//go:build !linux

package safezip

import (
	"errors"
	"os"
)

// perFileSync is true where there is no syncfs(2): every extracted file and directory is
// fsynced as it is finished.
var perFileSync = true

// syncTree is never called while perFileSync is true; tests that clear perFileSync on such
// platforms get this error.
func syncTree(dir string) error {
	return &os.PathError{Op: "syncfs", Path: dir, Err: errors.ErrUnsupported}
}
