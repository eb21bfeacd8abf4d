package drift

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/require"
)

// notRacy makes every file old enough for the rebase snapshot to vouch
// for it, so all of them are hashed after release (and hashHook can hold
// that back).
func notRacy() time.Time { return time.Now().Add(time.Minute) }

// gateHashing holds rebuilds back until open is called (or the harness
// stops).
func (h *harness) gateHashing() (open func()) {
	gate := make(chan struct{})
	h.w.hashHook = func() { <-gate }
	var once sync.Once
	h.unblock = func() { once.Do(func() { close(gate) }) }
	return h.unblock
}

// TestChangesRightAfterReleaseAreReported edits the tree the moment a
// deployment hands it back, before the baseline it left is hashed: every
// change is reported (the content Deckhand left was not seen, so Before is
// empty), nothing the deployment wrote is, and the untouched files keep
// the deployed content as their baseline.
func TestChangesRightAfterReleaseAreReported(t *testing.T) {
	for _, mode := range []string{ModeFsnotify, ModeScan} {
		t.Run(mode, func(t *testing.T) {
			cfg := Config{}
			if mode == ModeScan {
				cfg.ScanInterval = 50 * time.Millisecond
			}
			h := newHarness(t, cfg, baseTree())
			if mode == ModeScan {
				h.w.addHook = limitHook(syscall.ENOSPC, func(string) bool { return true })
			}
			open := h.gateHashing()
			h.w.now = notRacy
			h.start()
			require.Equal(t, mode, h.w.Mode())

			release := h.w.Suppress()
			deploy(t, h)
			release()
			// The deployment is over; the hashing has not started.
			h.write("conf.d/a.conf", "hand edit\n")
			h.remove("conf.d/b.conf")
			h.write("conf.d/generated/.siteb.conf.tmp", "saved by an editor\n")
			h.rename("conf.d/generated/.siteb.conf.tmp", "conf.d/generated/siteb.conf")
			require.NoError(t, os.Chmod(h.path("conf/httpd.conf"), 0o600))
			h.write("conf.d/new.conf", "new\n")
			open()
			require.Equal(t, []Event{
				{Path: "conf.d/a.conf", Kind: KindModified, After: sha("hand edit\n"), Severity: SeverityNormal},
				{Path: "conf.d/b.conf", Kind: KindRemoved, Severity: SeverityNormal},
				{Path: "conf.d/generated/siteb.conf", Kind: KindModified, After: sha("saved by an editor\n"), Severity: SeverityNormal},
				{Path: "conf.d/new.conf", Kind: KindCreated, After: sha("new\n"), Severity: SeverityNormal},
				{Path: "conf/httpd.conf", Kind: KindModified, After: sha("deployed conf/httpd.conf\n"), Severity: SeverityNormal},
			}, shape(h.settle()))

			// The rest is measured against what the deployment wrote.
			h.write("conf.d/generated/sitea.conf", "hand\n")
			require.Equal(t, []Event{{Path: "conf.d/generated/sitea.conf", Kind: KindModified, Before: sha("gen\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))
			h.write("conf.dispatcher.d/available_farms/farm.any", "hand\n")
			require.Equal(t, []Event{{Path: "conf.dispatcher.d/available_farms/farm.any", Kind: KindModified, Before: sha("/farm { deployed }\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))
			h.write("conf.d/a.conf", "hand edit 2\n")
			require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("hand edit\n"), After: sha("hand edit 2\n"), Severity: SeverityNormal}}, shape(h.settle()))
		})
	}
}

// TestEditWhileBaselineIsHashedIsReported edits files while the hasher
// works on them: whichever comes first, the hash or the edit, the edit is
// reported and never becomes the baseline unseen.
func TestEditWhileBaselineIsHashedIsReported(t *testing.T) {
	files := baseTree()
	for i := 0; i < 200; i++ {
		files[filepath.ToSlash(filepath.Join("conf.d/many", string(rune('a'+i%26))+string(rune('a'+i/26))+".conf"))] = "many\n"
	}
	h := newHarness(t, Config{}, files)
	h.w.now = notRacy
	h.start()
	release := h.w.Suppress()
	release()
	for p := range files {
		if filepath.Dir(p) == "conf.d/many" {
			h.write(p, "edited\n")
		}
	}
	evs := h.settle()
	require.Equal(t, 200, len(evs), "one event per edited file")
	for _, e := range evs {
		require.Equal(t, KindModified, e.Kind, "%+v", e)
		require.Equal(t, sha("edited\n"), e.After)
		require.Contains(t, []string{"", sha("many\n")}, e.Before, "the content before the edit, or unknown")
	}
}

// TestRacyFilesAreHashedAtRelease: a file the deployment changed just
// before release could be changed again without its stat changing, so the
// snapshot hashes it right away; an edit right after release is measured
// against what the deployment wrote.
func TestRacyFilesAreHashedAtRelease(t *testing.T) {
	h := newHarness(t, Config{}, baseTree())
	open := h.gateHashing()
	h.start()
	release := h.w.Suppress()
	deploy(t, h)
	h.write("conf.d/a.conf", "deployed last\n")
	fi, err := os.Lstat(h.path("conf.d/a.conf"))
	require.NoError(t, err)
	st, ok := fileStatOf(fi)
	require.True(t, ok)
	// The snapshot comes within the timestamp granularity of that write.
	h.w.now = func() time.Time { return time.Unix(0, st.ctime) }
	release()
	h.w.mu.Lock()
	if rb := h.w.rebuild; rb != nil {
		_, later := rb.todo["conf.d/a.conf"]
		require.False(t, later, "a racy file is hashed by the snapshot")
	}
	h.w.mu.Unlock()
	h.write("conf.d/a.conf", "hand edit\n")
	open()
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("deployed last\n"), After: sha("hand edit\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

// TestEditBetweenBackToBackDeploymentsIsReported: the next deployment's
// Suppress finishes the previous baseline first, so an edit made between
// the two is reported, not absorbed by the second.
func TestEditBetweenBackToBackDeploymentsIsReported(t *testing.T) {
	h := newHarness(t, Config{}, baseTree())
	open := h.gateHashing()
	h.w.now = notRacy
	h.start()
	r1 := h.w.Suppress()
	deploy(t, h)
	r1()
	h.write("conf.d/a.conf", "hand edit between deployments\n")
	require.Eventually(t, func() bool { return h.isPending("conf.d/a.conf") }, waitFor, 5*time.Millisecond)

	got := make(chan func())
	go func() { got <- h.w.Suppress() }()
	open()
	r2 := <-got
	h.write("conf.d/b.conf", "second deployment\n")
	r2()
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, After: sha("hand edit between deployments\n"), Severity: SeverityNormal}}, shape(h.settle()))
	h.write("conf.d/b.conf", "hand\n")
	require.Equal(t, sha("second deployment\n"), one(t, h.settle()).Before)
}

// TestReleaseBeforeRun: with nobody to hash it, the next Suppress, or
// Run, completes the baseline.
func TestReleaseBeforeRun(t *testing.T) {
	h := newHarness(t, Config{}, baseTree())
	h.w.now = notRacy
	r := h.w.Suppress()
	deploy(t, h)
	r()
	h.w.mu.Lock()
	require.NotNil(t, h.w.rebuild)
	h.w.mu.Unlock()
	r = h.w.Suppress()
	h.write("conf.d/b.conf", "second\n")
	r()
	h.start()
	require.Empty(t, h.settle())
	h.write("conf.d/a.conf", "hand\n")
	h.write("conf.d/b.conf", "hand\n")
	require.Equal(t, []Event{
		{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("deployed conf.d/a.conf\n"), After: sha("hand\n"), Severity: SeverityNormal},
		{Path: "conf.d/b.conf", Kind: KindModified, Before: sha("second\n"), After: sha("hand\n"), Severity: SeverityNormal},
	}, shape(h.settle()))
}

// TestFallbackDuringReleaseDoesNotReportTheDeployment: reaching the watch
// limit while release renews the watches switches to scan mode, and the
// scan waits for the new baseline instead of comparing the new tree with
// the old one.
func TestFallbackDuringReleaseDoesNotReportTheDeployment(t *testing.T) {
	h := newHarness(t, Config{ScanInterval: 50 * time.Millisecond}, baseTree())
	var full atomic.Bool
	h.w.addHook = func(string) error {
		if full.Load() {
			return syscall.ENOSPC
		}
		return nil
	}
	h.w.now = notRacy
	h.start()
	r := h.w.Suppress()
	deploy(t, h)
	full.Store(true)
	r()
	require.Equal(t, ModeScan, h.w.Mode())
	require.Empty(t, h.settle())
	h.write("conf.d/a.conf", "hand\n")
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("deployed conf.d/a.conf\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

// TestWatchesSurviveLateAndRoundTripDirEvents: an event about a directory
// the deployment swapped away can be handled after release watched its
// successor, and a directory can be moved away and back; neither leaves a
// directory unwatched.
func TestWatchesSurviveLateAndRoundTripDirEvents(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	release := h.w.Suppress()
	deploy(t, h)
	release()
	require.Empty(t, h.settle())

	h.w.mu.Lock()
	h.w.handleLocked(fsnotify.Event{Name: h.path("conf.dispatcher.d"), Op: fsnotify.Rename}, time.Now())
	h.w.mu.Unlock()
	require.Empty(t, h.settle())
	h.write("conf.dispatcher.d/filters/filters.any", "hand\n")
	require.Equal(t, []Event{{Path: "conf.dispatcher.d/filters/filters.any", Kind: KindModified, Before: sha("deployed filters\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))

	outside := filepath.Join(t.TempDir(), "v")
	require.NoError(t, os.Rename(h.path("conf.d/available_vhosts"), outside))
	require.NoError(t, os.Rename(outside, h.path("conf.d/available_vhosts")))
	require.Empty(t, h.settle())
	h.write("conf.d/available_vhosts/site2.vhost", "hand\n")
	require.Equal(t, []Event{{Path: "conf.d/available_vhosts/site2.vhost", Kind: KindModified, Before: sha("site\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

func TestHashUnchanged(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(p, []byte("one\n"), 0o640))
	statOf := func() fileStat {
		fi, err := os.Lstat(p)
		require.NoError(t, err)
		st, ok := fileStatOf(fi)
		require.True(t, ok)
		return st
	}
	st := statOf()
	e, err := hashUnchanged(p, st)
	require.NoError(t, err)
	require.Equal(t, entry{typ: typeFile, perm: 0o640, hash: sha("one\n")}, e)

	unknown := entry{typ: typeFile, perm: 0o640, unknown: true}
	// Same size, new content: the ctime tells (the file is racy to the
	// second write only if it happens within the clock tick).
	require.NoError(t, os.WriteFile(p, []byte("two\n"), 0o640))
	if statOf() != st {
		e, err = hashUnchanged(p, st)
		require.NoError(t, err)
		require.Equal(t, unknown, e)
	}
	st = statOf()
	require.NoError(t, os.Chmod(p, 0o600))
	e, err = hashUnchanged(p, st)
	require.NoError(t, err)
	require.Equal(t, unknown, e, "chmod")
	st = statOf()
	require.NoError(t, os.Remove(p))
	e, err = hashUnchanged(p, st)
	require.NoError(t, err)
	require.Equal(t, entry{typ: typeFile, perm: 0o600, unknown: true}, e, "removed")
	require.NoError(t, os.Symlink("elsewhere", p))
	e, err = hashUnchanged(p, st)
	require.NoError(t, err)
	require.True(t, e.unknown, "replaced by a symlink")
	require.False(t, e.same(e), "unknown equals nothing")

	now := time.Now()
	require.True(t, racy(fileStat{ctime: now.Add(-time.Millisecond).UnixNano() + 1}, now))
	require.False(t, racy(fileStat{ctime: now.Add(-time.Second).UnixNano() + 1}, now))
	require.True(t, racy(fileStat{ctime: now.Truncate(time.Second).Add(-time.Second).UnixNano()}, now), "whole-second timestamps")
}
