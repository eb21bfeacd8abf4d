//go:build !unix

package sysd

// JournalStream reports whether stderr is connected to the systemd journal;
// never outside Unix.
func JournalStream() bool { return false }
