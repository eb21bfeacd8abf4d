//go:build unix

package sysd

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// JournalStream reports whether stderr is connected to the systemd journal:
// systemd sets JOURNAL_STREAM=<device>:<inode> of the stream it connected
// to stdout/stderr, and the variable only counts when stderr is still that
// stream (a child that redirected its stderr inherits the variable but not
// the journal). When true, loggers should leave out timestamps (journald
// adds its own) and may rely on one record per line.
func JournalStream() bool {
	v := os.Getenv("JOURNAL_STREAM")
	if v == "" {
		return false
	}
	ds, is, ok := strings.Cut(v, ":")
	if !ok {
		return false
	}
	dev, err := strconv.ParseUint(ds, 10, 64)
	if err != nil {
		return false
	}
	ino, err := strconv.ParseUint(is, 10, 64)
	if err != nil {
		return false
	}
	fi, err := os.Stderr.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	// The conversions look redundant on linux/amd64, where both fields
	// are uint64, but the field types differ between platforms.
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
