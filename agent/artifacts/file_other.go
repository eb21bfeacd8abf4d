//go:build !linux

package artifacts

import (
	"io"
	"os"
)

// writeData writes data to w in order.
func writeData(w io.Writer, data [][]byte) error { return writeEach(w, data) }

// startWriteback does nothing here: only Linux has sync_file_range.
func startWriteback(*os.File, int64, int64) {}
