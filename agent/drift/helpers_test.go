package drift

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

const waitFor = 10 * time.Second // generous bound for slow -race runners

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// syncBuf is a log sink the test can read while the watcher writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	t      *testing.T
	dir    string
	w      *Watcher
	logs   *syncBuf
	cancel context.CancelFunc
	done   chan error
	// unblock, when set, opens a gate a hook is held at, so stop does
	// not wait for it forever after a failed assertion.
	unblock func()

	mu      sync.Mutex
	events  []Event
	batches int
	seen    int // events returned by settle so far
	barrier int
}

// tree writes files (slash path -> content) below dir.
func tree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		abs := filepath.Join(dir, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(abs), 0o755))
		require.NoError(t, os.WriteFile(abs, []byte(c), 0o644))
	}
}

// newHarness creates the tree and a Watcher on it; start runs it.
func newHarness(t *testing.T, cfg Config, files map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), logs: &syncBuf{}}
	tree(t, h.dir, files)
	cfg.Dir = h.dir
	if cfg.Debounce == 0 {
		cfg.Debounce = 50 * time.Millisecond
	}
	log := hclog.New(&hclog.LoggerOptions{Output: h.logs, Level: hclog.Debug})
	w, err := New(cfg, h.sink, log)
	require.NoError(t, err)
	h.w = w
	return h
}

func (h *harness) start() *harness {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.w.Run(ctx) }()
	h.t.Cleanup(h.stop)
	select {
	case <-h.w.ready:
	case <-time.After(waitFor):
		h.t.Fatal("watcher not ready")
	}
	return h
}

func (h *harness) stop() {
	if h.unblock != nil {
		h.unblock()
	}
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		require.NoError(h.t, err)
	case <-time.After(waitFor):
		h.t.Fatal("Run did not return after cancel")
	}
}

func (h *harness) sink(b []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batches++
	h.events = append(h.events, b...)
}

func (h *harness) path(rel string) string { return filepath.Join(h.dir, filepath.FromSlash(rel)) }

func (h *harness) write(rel, content string) {
	h.t.Helper()
	require.NoError(h.t, os.MkdirAll(filepath.Dir(h.path(rel)), 0o755))
	require.NoError(h.t, os.WriteFile(h.path(rel), []byte(content), 0o644))
}

func (h *harness) remove(rel string) {
	h.t.Helper()
	require.NoError(h.t, os.RemoveAll(h.path(rel)))
}

func (h *harness) rename(from, to string) {
	h.t.Helper()
	require.NoError(h.t, os.Rename(h.path(from), h.path(to)))
}

// settle creates a barrier file and waits for its event. Events are
// reported in the order their paths went quiet, so once the barrier
// (touched last) is reported, everything done before it has been
// reported too, or will never be: that is how the tests assert "no
// event" without sleeping. It returns the events since the last settle,
// barriers excluded, sorted by path.
func (h *harness) settle() []Event {
	h.t.Helper()
	h.barrier++
	name := fmt.Sprintf("zz-barrier-%d", h.barrier)
	// Unique content: a barrier must never pair with a rename.
	h.write(name, fmt.Sprintf("barrier %d %d", h.barrier, time.Now().UnixNano()))
	var got []Event
	require.Eventually(h.t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for i := h.seen; i < len(h.events); i++ {
			if h.events[i].Path == name {
				got = nil
				for _, e := range h.events[h.seen:] {
					if !strings.HasPrefix(e.Path, "zz-barrier-") {
						got = append(got, e)
					}
				}
				h.seen = len(h.events)
				return true
			}
		}
		return false
	}, waitFor, 5*time.Millisecond, "barrier %s not reported", name)
	sortEvents(got)
	return got
}

func sortEvents(evs []Event) {
	for i := 1; i < len(evs); i++ {
		for j := i; j > 0 && evs[j].Path < evs[j-1].Path; j-- {
			evs[j], evs[j-1] = evs[j-1], evs[j]
		}
	}
}

// one asserts exactly one event and returns it.
func one(t *testing.T, evs []Event) Event {
	t.Helper()
	require.Len(t, evs, 1, "events: %+v", evs)
	return evs[0]
}

// shape drops At for comparisons.
func shape(evs []Event) []Event {
	out := make([]Event, len(evs))
	for i, e := range evs {
		e.At = time.Time{}
		out[i] = e
	}
	return out
}

func (h *harness) isPending(rel string) bool {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	_, ok := h.w.pending[rel]
	return ok
}
