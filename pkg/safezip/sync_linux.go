//go:build linux

package safezip

import (
	"os"

	"golang.org/x/sys/unix"
)

// perFileSync is false on Linux: the extracted tree is made durable by one syncfs(2) of its
// filesystem once every file, symlink and directory is written (see syncTree). An fsync per
// file costs a journal commit each, seconds for a few thousand small configuration files.
var perFileSync = false

// syncTree makes everything written on the filesystem that holds dir durable: file data,
// inodes and directory entries, with one syncfs(2) on a descriptor of dir. Since Linux 5.8
// syncfs reports write-back errors of the filesystem (errseq), as fsync does for one file.
// It also flushes other processes' dirty data on that filesystem, which is what it costs.
func syncTree(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syncfs(f); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return f.Close()
}

// syncfs is unix.Syncfs on f; tests replace it to observe when the tree is synced.
var syncfs = func(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
