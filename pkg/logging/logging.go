// Package logging builds the hclog loggers every Deckhand binary uses, so
// that flags, levels and output format mean the same thing everywhere.
package logging

import (
	"io"
	"os"

	"github.com/deckhand-dev/deckhand/pkg/sysd"
	"github.com/hashicorp/go-hclog"
)

// Options are the logging flags shared by all binaries.
type Options struct {
	Name  string
	Level string // trace, debug, info, warn, error; empty means info
	JSON  bool
	// Output defaults to stderr.
	Output io.Writer
}

// New returns a logger for opts. When the process runs under systemd with
// its stderr connected to the journal (JOURNAL_STREAM names stderr),
// timestamps are left out: journald adds its own.
func New(opts Options) hclog.Logger {
	out := opts.Output
	if out == nil {
		out = os.Stderr
	}
	level := hclog.LevelFromString(opts.Level)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            opts.Name,
		Level:           level,
		Output:          out,
		JSONFormat:      opts.JSON,
		DisableTime:     sysd.JournalStream() && !opts.JSON,
		IncludeLocation: false,
	})
}

// ValidLevel reports whether s names an hclog level.
func ValidLevel(s string) bool {
	return s == "" || hclog.LevelFromString(s) != hclog.NoLevel
}
