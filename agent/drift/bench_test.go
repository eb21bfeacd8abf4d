package drift

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchTree writes a dispatcher-like tree of n files (2-3 KB each) below
// root, spread over managed dirs and subdirectories; version changes every
// file's content, so two versions are two different deployments.
func benchTree(b *testing.B, root string, n, version int) {
	b.Helper()
	dirs := []string{"conf.d", "conf.dispatcher.d", "conf.modules.d"}
	for i := 0; i < n; i++ {
		d := filepath.Join(root, dirs[i%len(dirs)], fmt.Sprintf("sub%02d", i%40))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		body := strings.Repeat(fmt.Sprintf("# v%d file %d: RewriteRule ^/x$ /y [PT]\n", version, i), 50+i%30)
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d.conf", i)), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeployDriftHandling is what a dispatcher deployment of a
// 2,000-file tree spends in drift handling on its own path: Suppress
// before its first write plus the release after its last (what the
// agent's quiet wrapper does around the task handler, before the result
// is journaled). The deployment itself, swapping every managed dir for a
// staged tree with other content, and the configtest/reload time after it
// are not timed. baseline-ms/op is how long after release the baseline
// was complete (0 when release builds it itself).
func BenchmarkDeployDriftHandling(b *testing.B) {
	const files = 2000
	managed := []string{"conf.d", "conf.dispatcher.d", "conf.modules.d"}
	dir := b.TempDir()
	benchTree(b, dir, files, 0)
	// Two staged trees to swap in turn, in the ignored work dir, as the
	// dispatcher does.
	stage := func(i int) string { return filepath.Join(dir, ".deckhand", fmt.Sprintf("stage%d", i)) }
	benchTree(b, stage(0), files, 1)
	benchTree(b, stage(1), files, 2)
	aside := filepath.Join(dir, ".deckhand", "aside")
	if err := os.MkdirAll(aside, 0o755); err != nil {
		b.Fatal(err)
	}

	var mu sync.Mutex
	var reported []Event
	w, err := New(Config{Dir: dir, Debounce: 20 * time.Millisecond}, func(evs []Event) {
		mu.Lock()
		reported = append(reported, evs...)
		mu.Unlock()
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-w.ready

	var baseline time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		release := w.Suppress()
		b.StopTimer()
		// The deployment: stage(i%2) goes live, the live tree goes to
		// stage(i%2) for the next round.
		s := stage(i % 2)
		for _, m := range managed {
			live := filepath.Join(dir, m)
			if err := os.Rename(live, filepath.Join(aside, m)); err != nil {
				b.Fatal(err)
			}
			if err := os.Rename(filepath.Join(s, m), live); err != nil {
				b.Fatal(err)
			}
			if err := os.Rename(filepath.Join(aside, m), filepath.Join(s, m)); err != nil {
				b.Fatal(err)
			}
		}
		// configtest and reload: the watcher sees the swap meanwhile.
		time.Sleep(150 * time.Millisecond)
		b.StartTimer()
		t0 := time.Now()
		release()
		b.StopTimer()
		baseline += benchAwaitBaseline(w, t0)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(baseline.Microseconds())/1000/float64(b.N), "baseline-ms/op")
	// Let the last swap's events settle: none of it is drift.
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(reported) > 0 {
		b.Fatalf("a deployment was reported as drift: %d events, first %+v", len(reported), reported[0])
	}
}

// benchAwaitBaseline waits until the baseline of the last release is
// complete (hashed off the deployment's path) and returns how long after
// released that was. (To measure code that built the baseline inside
// release, replace it with one returning 0.)
func benchAwaitBaseline(w *Watcher, released time.Time) time.Duration {
	w.mu.Lock()
	rb := w.rebuild
	w.mu.Unlock()
	if rb != nil {
		<-rb.done
	}
	return time.Since(released)
}
