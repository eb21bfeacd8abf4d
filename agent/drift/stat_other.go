//go:build !linux

package drift

import "io/fs"

// fileStatOf is not implemented here: without a ctime to rely on, a
// rebase hashes every file while it takes its snapshot.
func fileStatOf(fs.FileInfo) (fileStat, bool) { return fileStat{}, false }

// dirIDOf is not implemented here: stale directory events are not
// recognized.
func dirIDOf(string) (dirID, bool) { return dirID{}, false }
