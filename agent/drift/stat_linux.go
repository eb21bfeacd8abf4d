package drift

import (
	"io/fs"
	"syscall"
)

// fileStatOf extracts a fileStat from an lstat or fstat result.
func fileStatOf(fi fs.FileInfo) (fileStat, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, false
	}
	return fileStat{
		dev:   uint64(st.Dev), //nolint:unconvert // not uint64 on every GOARCH
		ino:   st.Ino,
		mode:  st.Mode,
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctime: st.Ctim.Nano(),
	}, true
}

// dirIDOf identifies the directory at abs (not following a symlink).
func dirIDOf(abs string) (dirID, bool) {
	var st syscall.Stat_t
	if err := syscall.Lstat(abs, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return dirID{}, false
	}
	return dirID{dev: uint64(st.Dev), ino: st.Ino}, true //nolint:unconvert // not uint64 on every GOARCH
}
