// Package testlog gives tests an hclog logger that writes through t.Log at
// trace level, one name per node, so a multi-agent failure reads like a
// story in the test output.
package testlog

import (
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// New returns a logger named name that writes to t.Log until the test ends.
// Lines logged after the end (a goroutine that outlives its test) are
// dropped instead of panicking.
func New(t testing.TB, name string) hclog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Trace, Output: w, TimeFormat: "15:04:05.000"})
}

type writer struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

var _ io.Writer = (*writer)(nil)

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
