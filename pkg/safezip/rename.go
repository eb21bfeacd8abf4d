package safezip

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// renameCheckThenReplace fails if newpath exists, then renames: the portable, racy form of
// renameNoReplace.
func renameCheckThenReplace(oldpath, newpath string) error {
	if _, err := os.Lstat(newpath); err == nil {
		return fmt.Errorf("%s: %w", newpath, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Rename(oldpath, newpath)
}
