package drift

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var amsImmutable = []string{
	"conf/httpd.conf",
	"conf.d/available_vhosts/aem_*.vhost",
	"conf.dispatcher.d/**/ams_*.any",
}

func baseTree() map[string]string {
	return map[string]string{
		"conf/httpd.conf": "ServerRoot /etc/httpd\n",
		"conf.d/a.conf":   "a1\n",
		"conf.d/b.conf":   "b1\n",
		"conf.d/old.conf": "old\n",
		"conf.d/available_vhosts/aem_publish.vhost":  "<VirtualHost *:80>\n",
		"conf.d/available_vhosts/site.vhost":         "site\n",
		"conf.dispatcher.d/filters/ams_publish.any":  "/0001 { /type \"deny\" }\n",
		"conf.dispatcher.d/filters/filters.any":      "$include \"ams_publish.any\"\n",
		"conf.dispatcher.d/available_farms/farm.any": "/farm {}\n",
	}
}

func TestEditCreateDeleteRename(t *testing.T) {
	h := newHarness(t, Config{Immutable: amsImmutable}, baseTree()).start()
	require.Equal(t, ModeFsnotify, h.w.Mode())

	h.write("conf.d/a.conf", "a2\n")
	e := one(t, h.settle())
	require.Equal(t, Event{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("a2\n"), Severity: SeverityNormal}, shape([]Event{e})[0])
	require.False(t, e.At.IsZero())

	h.write("conf.d/new.conf", "new\n")
	require.Equal(t, []Event{{Path: "conf.d/new.conf", Kind: KindCreated, After: sha("new\n"), Severity: SeverityNormal}}, shape(h.settle()))

	h.remove("conf.d/b.conf")
	require.Equal(t, []Event{{Path: "conf.d/b.conf", Kind: KindRemoved, Before: sha("b1\n"), Severity: SeverityNormal}}, shape(h.settle()))

	h.rename("conf.d/old.conf", "conf.d/renamed.conf")
	require.Equal(t, []Event{{Path: "conf.d/renamed.conf", Kind: KindRenamed, From: "conf.d/old.conf", Before: sha("old\n"), After: sha("old\n"), Severity: SeverityNormal}}, shape(h.settle()))

	// The events chain: the next change is measured against the last one.
	h.write("conf.d/a.conf", "a3\n")
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a2\n"), After: sha("a3\n"), Severity: SeverityNormal}}, shape(h.settle()))

	// Immutable files, including through "**".
	h.write("conf/httpd.conf", "ServerRoot /tmp\n")
	e = one(t, h.settle())
	require.Equal(t, SeverityHigh, e.Severity)
	require.Equal(t, KindModified, e.Kind)
	h.write("conf.dispatcher.d/filters/ams_publish.any", "/0001 { /type \"allow\" }\n")
	require.Equal(t, SeverityHigh, one(t, h.settle()).Severity)
	h.rename("conf.d/available_vhosts/aem_publish.vhost", "conf.d/available_vhosts/publish.vhost")
	e = one(t, h.settle())
	require.Equal(t, KindRenamed, e.Kind)
	require.Equal(t, SeverityHigh, e.Severity, "renaming an immutable file away is high severity")
	h.write("conf.dispatcher.d/filters/filters.any", "changed\n")
	require.Equal(t, SeverityNormal, one(t, h.settle()).Severity)
}

func TestNewSubdirectory(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()

	// mkdir + write: the file may be created before the watch on the new
	// dir exists; it is reported either way, once.
	h.write("conf.d/sub/x.conf", "x1\n")
	require.Equal(t, []Event{{Path: "conf.d/sub/x.conf", Kind: KindCreated, After: sha("x1\n"), Severity: SeverityNormal}}, shape(h.settle()))

	h.write("conf.d/sub/x.conf", "x2\n")
	require.Equal(t, []Event{{Path: "conf.d/sub/x.conf", Kind: KindModified, Before: sha("x1\n"), After: sha("x2\n"), Severity: SeverityNormal}}, shape(h.settle()))

	h.write("conf.d/sub/y.conf", "y\n")
	require.Equal(t, KindCreated, one(t, h.settle()).Kind)

	h.rename("conf.d/sub/x.conf", "conf.d/sub/z.conf")
	require.Equal(t, []Event{{Path: "conf.d/sub/z.conf", Kind: KindRenamed, From: "conf.d/sub/x.conf", Before: sha("x2\n"), After: sha("x2\n"), Severity: SeverityNormal}}, shape(h.settle()))

	h.remove("conf.d/sub/z.conf")
	require.Equal(t, []Event{{Path: "conf.d/sub/z.conf", Kind: KindRemoved, Before: sha("x2\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

func TestDirectoryMovedInMovedAroundAndRemoved(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()

	// A directory prepared outside and moved in: the files it already
	// holds are reported, nested ones included.
	outside := t.TempDir()
	tree(t, outside, map[string]string{"farms/one.any": "1\n", "farms/deep/two.any": "2\n"})
	require.NoError(t, os.Rename(filepath.Join(outside, "farms"), h.path("conf.dispatcher.d/farms")))
	require.Equal(t, []Event{
		{Path: "conf.dispatcher.d/farms/deep/two.any", Kind: KindCreated, After: sha("2\n"), Severity: SeverityNormal},
		{Path: "conf.dispatcher.d/farms/one.any", Kind: KindCreated, After: sha("1\n"), Severity: SeverityNormal},
	}, shape(h.settle()))

	// And it is watched, down to the nested dir.
	h.write("conf.dispatcher.d/farms/deep/two.any", "2b\n")
	require.Equal(t, KindModified, one(t, h.settle()).Kind)

	// Moving the directory renames each file in it ...
	h.rename("conf.dispatcher.d/farms", "conf.dispatcher.d/farms2")
	require.Equal(t, []Event{
		{Path: "conf.dispatcher.d/farms2/deep/two.any", Kind: KindRenamed, From: "conf.dispatcher.d/farms/deep/two.any", Before: sha("2b\n"), After: sha("2b\n"), Severity: SeverityNormal},
		{Path: "conf.dispatcher.d/farms2/one.any", Kind: KindRenamed, From: "conf.dispatcher.d/farms/one.any", Before: sha("1\n"), After: sha("1\n"), Severity: SeverityNormal},
	}, shape(h.settle()))

	// ... and later events carry the new names (no stale watch paths).
	h.write("conf.dispatcher.d/farms2/deep/two.any", "2c\n")
	require.Equal(t, "conf.dispatcher.d/farms2/deep/two.any", one(t, h.settle()).Path)

	// Moving it out of the tree removes its files.
	require.NoError(t, os.Rename(h.path("conf.dispatcher.d/farms2"), filepath.Join(outside, "gone")))
	evs := shape(h.settle())
	require.Equal(t, []Event{
		{Path: "conf.dispatcher.d/farms2/deep/two.any", Kind: KindRemoved, Before: sha("2c\n"), Severity: SeverityNormal},
		{Path: "conf.dispatcher.d/farms2/one.any", Kind: KindRemoved, Before: sha("1\n"), Severity: SeverityNormal},
	}, evs)
	// Nothing from the moved-out tree reaches us any more.
	require.NoError(t, os.WriteFile(filepath.Join(outside, "gone", "one.any"), []byte("x"), 0o644))
	require.Empty(t, h.settle())

	// rm -r of a watched directory.
	h.remove("conf.d/available_vhosts")
	require.Equal(t, []Event{
		{Path: "conf.d/available_vhosts/aem_publish.vhost", Kind: KindRemoved, Before: sha("<VirtualHost *:80>\n"), Severity: SeverityNormal},
		{Path: "conf.d/available_vhosts/site.vhost", Kind: KindRemoved, Before: sha("site\n"), Severity: SeverityNormal},
	}, shape(h.settle()))
	// Re-created under the same name: watched again.
	h.write("conf.d/available_vhosts/site.vhost", "site2\n")
	require.Equal(t, KindCreated, one(t, h.settle()).Kind)
}

func TestIgnored(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	// vim, emacs, backup files; the agent's work dir; Apache's runtime dirs.
	h.write("conf.d/.a.conf.swp", "swap")
	h.write("conf.d/.a.conf.swx", "swap")
	h.write("conf.d/a.conf~", "backup")
	h.write("conf.d/#a.conf#", "autosave")
	require.NoError(t, os.Symlink("root@host.1234", h.path("conf.d/.#a.conf")))
	h.write(".deckhand/tx-1/stage/conf/httpd.conf", "staged")
	h.write("logs/access_log", "GET /\n")
	h.write("run/httpd.pid", "1\n")
	require.Empty(t, h.settle())
	h.write("logs/access_log", "GET /\nGET /x\n")
	require.Empty(t, h.settle())
	// A directory named like a runtime dir elsewhere is config.
	h.write("conf.d/logs/x.conf", "x")
	require.Equal(t, "conf.d/logs/x.conf", one(t, h.settle()).Path)

	// Custom list replaces the defaults.
	h2 := newHarness(t, Config{Ignore: []string{"*.bak", "conf.d/tmp/**"}}, baseTree()).start()
	h2.write("conf.d/a.conf.bak", "x")
	h2.write("conf.d/tmp/one/x.conf", "x")
	require.Empty(t, h2.settle())
	h2.write("conf.d/.a.conf.swp", "swap")
	require.Equal(t, "conf.d/.a.conf.swp", one(t, h2.settle()).Path)
}

func TestBurstIsOneEvent(t *testing.T) {
	h := newHarness(t, Config{Debounce: 200 * time.Millisecond}, baseTree()).start()
	var last string
	for i := 0; i < 20; i++ {
		last = strings.Repeat("line\n", i+1)
		f, err := os.OpenFile(h.path("conf.d/a.conf"), os.O_WRONLY|os.O_TRUNC, 0)
		require.NoError(t, err)
		// Two writes per round, like an editor writing in chunks.
		_, err = f.WriteString(last[:len(last)/2])
		require.NoError(t, err)
		_, err = f.WriteString(last[len(last)/2:])
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha(last), Severity: SeverityNormal}}, shape(h.settle()))
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Len(t, h.events, 2, "the burst and the barrier, nothing else")
}

func TestUndoneChangesAreNotDrift(t *testing.T) {
	h := newHarness(t, Config{Debounce: 200 * time.Millisecond}, baseTree()).start()

	// Edit then revert.
	h.write("conf.d/a.conf", "oops\n")
	h.write("conf.d/a.conf", "a1\n")
	// Create then delete.
	h.write("conf.d/tmp.conf", "tmp\n")
	h.remove("conf.d/tmp.conf")
	// Rename away and back.
	h.rename("conf.d/b.conf", "conf.d/b.conf.x")
	h.rename("conf.d/b.conf.x", "conf.d/b.conf")
	// touch(1): mtime only.
	now := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(h.path("conf.d/old.conf"), now, now))
	// sed -i style: write a temp file, rename it over the original. One
	// "modified", no trace of the temp file.
	h.write("conf.d/sedAbc123", "old edited\n")
	h.rename("conf.d/sedAbc123", "conf.d/old.conf")
	require.Equal(t, []Event{{Path: "conf.d/old.conf", Kind: KindModified, Before: sha("old\n"), After: sha("old edited\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

func TestPermissionOnlyChange(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	require.NoError(t, os.Chmod(h.path("conf.d/a.conf"), 0o666))
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("a1\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

func TestSymlinks(t *testing.T) {
	files := baseTree()
	h := newHarness(t, Config{}, files).start()
	require.NoError(t, os.MkdirAll(h.path("conf.d/enabled_vhosts"), 0o755))
	require.NoError(t, os.Symlink("../available_vhosts/site.vhost", h.path("conf.d/enabled_vhosts/site.vhost")))
	require.Equal(t, []Event{{Path: "conf.d/enabled_vhosts/site.vhost", Kind: KindCreated, After: sha("../available_vhosts/site.vhost"), Severity: SeverityNormal}}, shape(h.settle()))

	// The link is not followed: editing the target reports the target only.
	h.write("conf.d/available_vhosts/site.vhost", "site2\n")
	require.Equal(t, "conf.d/available_vhosts/site.vhost", one(t, h.settle()).Path)

	// Retargeting the link (ln -sf: new link, rename over).
	require.NoError(t, os.Symlink("/etc/passwd", h.path("conf.d/enabled_vhosts/.tmp-link")))
	h.rename("conf.d/enabled_vhosts/.tmp-link", "conf.d/enabled_vhosts/site.vhost")
	require.Equal(t, []Event{{Path: "conf.d/enabled_vhosts/site.vhost", Kind: KindModified, Before: sha("../available_vhosts/site.vhost"), After: sha("/etc/passwd"), Severity: SeverityNormal}}, shape(h.settle()))

	// A file replaced by a link with the same bytes as target is still a change (type).
	h.remove("conf.d/b.conf")
	require.NoError(t, os.Symlink("b1\n", h.path("conf.d/b.conf")))
	e := one(t, h.settle())
	require.Equal(t, KindModified, e.Kind)
	require.Equal(t, e.Before, e.After)
}

func TestChangesBeforeRunAreReported(t *testing.T) {
	h := newHarness(t, Config{}, baseTree())
	h.write("conf.d/a.conf", "edited while the agent started\n")
	h.start()
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("edited while the agent started\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

// deploy simulates a dispatcher deployment: every file rewritten, some
// removed, a new directory, a rename, and a managed dir swapped for a
// staged copy (what agent/dispatcher does).
func deploy(t *testing.T, h *harness) {
	t.Helper()
	for _, p := range []string{"conf.d/a.conf", "conf.d/b.conf", "conf/httpd.conf", "conf.dispatcher.d/filters/filters.any"} {
		h.write(p, "deployed "+p+"\n")
	}
	for i := 0; i < 20; i++ {
		h.write(filepath.Join("conf.d/generated", "site"+string(rune('a'+i))+".conf"), "gen\n")
	}
	h.remove("conf.d/old.conf")
	h.rename("conf.d/available_vhosts/site.vhost", "conf.d/available_vhosts/site2.vhost")
	// Swap conf.dispatcher.d for a staged copy, via the work dir.
	h.write(".deckhand/tx-1/stage/conf.dispatcher.d/available_farms/farm.any", "/farm { deployed }\n")
	h.write(".deckhand/tx-1/stage/conf.dispatcher.d/filters/filters.any", "deployed filters\n")
	h.rename("conf.dispatcher.d", ".deckhand/tx-1/aside")
	h.rename(".deckhand/tx-1/stage/conf.dispatcher.d", "conf.dispatcher.d")
	h.remove(".deckhand")
}

func TestSuppressedDeploymentIsNotDrift(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	release := h.w.Suppress()
	deploy(t, h)
	release()
	release() // idempotent
	require.Empty(t, h.settle())

	// Right after release, changes are measured against what was deployed.
	h.write("conf.d/a.conf", "hand edit\n")
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("deployed conf.d/a.conf\n"), After: sha("hand edit\n"), Severity: SeverityNormal}}, shape(h.settle()))
	// The directories the deployment created or swapped in are watched.
	h.write("conf.d/generated/sitea.conf", "hand\n")
	require.Equal(t, []Event{{Path: "conf.d/generated/sitea.conf", Kind: KindModified, Before: sha("gen\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))
	h.write("conf.dispatcher.d/available_farms/farm.any", "hand\n")
	require.Equal(t, []Event{{Path: "conf.dispatcher.d/available_farms/farm.any", Kind: KindModified, Before: sha("/farm { deployed }\n"), After: sha("hand\n"), Severity: SeverityNormal}}, shape(h.settle()))
	// What it removed stays removed without a report; re-adding is drift.
	h.write("conf.d/old.conf", "back\n")
	require.Equal(t, KindCreated, one(t, h.settle()).Kind)
}

func TestSuppressNested(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	r1 := h.w.Suppress()
	r2 := h.w.Suppress()
	h.write("conf.d/a.conf", "first\n")
	r1()
	// Still held by r2: absorbed.
	h.write("conf.d/a.conf", "second\n")
	r1() // a second call must not release r2's hold
	h.write("conf.d/b.conf", "second\n")
	r2()
	require.Empty(t, h.settle())
	h.write("conf.d/a.conf", "third\n")
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("second\n"), After: sha("third\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

// TestSuppressReportsEarlierChanges: hand edits pending when a deployment
// begins are drift, reported with the state they had when it began, also
// for a file the deployment then overwrites (it was live by hand until
// then), and also when the edit's last events arrive after the deployment
// began.
func TestSuppressReportsEarlierChanges(t *testing.T) {
	// A long debounce so both edits are still pending when Suppress is
	// called (checked, not assumed).
	h := newHarness(t, Config{Debounce: 2 * time.Second}, baseTree()).start()
	h.write("conf.d/a.conf", "hand edit of a\n") // not touched by the deployment
	h.write("conf.d/b.conf", "hand edit of b\n") // overwritten by the deployment
	require.Eventually(t, func() bool { return h.isPending("conf.d/a.conf") && h.isPending("conf.d/b.conf") }, waitFor, 5*time.Millisecond)

	release := h.w.Suppress()
	want := []Event{
		{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("hand edit of a\n"), Severity: SeverityNormal},
		{Path: "conf.d/b.conf", Kind: KindModified, Before: sha("b1\n"), After: sha("hand edit of b\n"), Severity: SeverityNormal},
	}
	// Reported as the deployment begins, not when it ends: the control
	// plane gets them before the deployment's result.
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.events) == 2
	}, waitFor, 5*time.Millisecond)
	h.mu.Lock()
	got := append([]Event(nil), h.events...)
	h.mu.Unlock()
	sortEvents(got)
	require.Equal(t, want, shape(got))

	// What the deployment does cannot change the report.
	h.write("conf.d/b.conf", "deployed b\n")
	h.write("conf.d/c.conf", "deployed c\n") // the deployment's own: not drift
	release()
	require.Equal(t, want, shape(h.settle()), "nothing more")
	h.write("conf.d/b.conf", "hand again\n")
	require.Equal(t, sha("deployed b\n"), one(t, h.settle()).Before)
}

// limitHook makes every fsnotify Add (matching match) fail like the
// kernel does at the watch limit.
func limitHook(errno syscall.Errno, match func(abs string) bool) func(string) error {
	return func(abs string) error {
		if match(abs) {
			return errno
		}
		return nil
	}
}

func TestScanFallback(t *testing.T) {
	h := newHarness(t, Config{Immutable: amsImmutable, ScanInterval: 50 * time.Millisecond}, baseTree())
	h.w.addHook = limitHook(syscall.ENOSPC, func(string) bool { return true })
	h.start()
	require.Equal(t, ModeScan, h.w.Mode())
	require.Contains(t, h.logs.String(), "falling back to a periodic scan")
	require.Contains(t, h.logs.String(), "no space left on device")

	h.write("conf.d/a.conf", "a2\n")
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("a2\n"), Severity: SeverityNormal}}, shape(h.settle()))
	h.write("conf.d/new/sub/n.conf", "n\n")
	require.Equal(t, []Event{{Path: "conf.d/new/sub/n.conf", Kind: KindCreated, After: sha("n\n"), Severity: SeverityNormal}}, shape(h.settle()))
	h.remove("conf.d/b.conf")
	require.Equal(t, []Event{{Path: "conf.d/b.conf", Kind: KindRemoved, Before: sha("b1\n"), Severity: SeverityNormal}}, shape(h.settle()))
	h.write("conf/httpd.conf", "x\n")
	require.Equal(t, SeverityHigh, one(t, h.settle()).Severity)
	// No rename pairing in scan mode.
	h.rename("conf.d/old.conf", "conf.d/renamed.conf")
	require.Equal(t, []Event{
		{Path: "conf.d/old.conf", Kind: KindRemoved, Before: sha("old\n"), Severity: SeverityNormal},
		{Path: "conf.d/renamed.conf", Kind: KindCreated, After: sha("old\n"), Severity: SeverityNormal},
	}, shape(h.settle()))
	h.write("conf.d/.a.conf.swp", "swap")
	require.Empty(t, h.settle())

	// Suppression in scan mode: a change before it is reported (Suppress
	// scans), the deployment is not, and the next change is measured
	// against the deployment.
	h.write("conf.d/renamed.conf", "before deploy\n")
	release := h.w.Suppress()
	deploy(t, h)
	release()
	evs := shape(h.settle())
	require.Equal(t, []Event{{Path: "conf.d/renamed.conf", Kind: KindModified, Before: sha("old\n"), After: sha("before deploy\n"), Severity: SeverityNormal}}, evs)
	h.write("conf.d/a.conf", "after\n")
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("deployed conf.d/a.conf\n"), After: sha("after\n"), Severity: SeverityNormal}}, shape(h.settle()))

	require.Equal(t, 1, strings.Count(h.logs.String(), "falling back"), "warned once")
}

func TestScanFallbackMidRun(t *testing.T) {
	h := newHarness(t, Config{ScanInterval: 50 * time.Millisecond}, baseTree())
	h.w.addHook = limitHook(syscall.EMFILE, func(abs string) bool { return strings.HasSuffix(abs, "/newfarms") })
	h.start()
	require.Equal(t, ModeFsnotify, h.w.Mode())
	require.NotContains(t, h.logs.String(), "falling back")

	// The new dir cannot be watched: switch to scanning; its file is
	// still reported, once.
	h.write("conf.dispatcher.d/newfarms/f.any", "f\n")
	require.Equal(t, []Event{{Path: "conf.dispatcher.d/newfarms/f.any", Kind: KindCreated, After: sha("f\n"), Severity: SeverityNormal}}, shape(h.settle()))
	require.Equal(t, ModeScan, h.w.Mode())
	require.Contains(t, h.logs.String(), "too many open files")

	h.write("conf.dispatcher.d/newfarms/f.any", "f2\n")
	require.Equal(t, KindModified, one(t, h.settle()).Kind)
	h.write("conf.d/a.conf", "a2\n")
	require.Equal(t, KindModified, one(t, h.settle()).Kind)
	require.Equal(t, 1, strings.Count(h.logs.String(), "falling back"))
}

func TestWatchedDirRemoved(t *testing.T) {
	h := newHarness(t, Config{ScanInterval: 50 * time.Millisecond}, map[string]string{"conf/httpd.conf": "x\n"}).start()
	parent := t.TempDir()
	require.NoError(t, os.Rename(h.dir, filepath.Join(parent, "moved")))
	require.Eventually(t, func() bool { return h.w.Mode() == ModeScan }, waitFor, 5*time.Millisecond)
	// The scan reports the tree gone, and back once it is recreated.
	require.Eventually(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.events) == 1
	}, waitFor, 5*time.Millisecond)
	h.mu.Lock()
	require.Equal(t, []Event{{Path: "conf/httpd.conf", Kind: KindRemoved, Before: sha("x\n"), Severity: SeverityNormal}}, shape(h.events))
	h.seen = len(h.events)
	h.mu.Unlock()
	require.NoError(t, os.Rename(filepath.Join(parent, "moved"), h.dir))
	require.Equal(t, []Event{{Path: "conf/httpd.conf", Kind: KindCreated, After: sha("x\n"), Severity: SeverityNormal}}, shape(h.settle()))
}

func TestQueueOverflowRescans(t *testing.T) {
	h := newHarness(t, Config{}, baseTree())
	// Not running: a change without an event, as when the kernel queue
	// dropped it.
	h.write("conf.d/a.conf", "lost event\n")
	// A change made a while ago: reported by the rescan itself.
	old := time.Now().Add(-time.Minute)
	require.NoError(t, os.Chtimes(h.path("conf.d/a.conf"), old, old))
	h.write("conf.d/new.conf", "being written")
	h.w.mu.Lock()
	h.w.fsnotifyErrorLocked(errOverflowForTest())
	out := h.w.outbox
	h.w.outbox = nil
	h.w.mu.Unlock()
	require.Equal(t, []Event{{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("lost event\n"), Severity: SeverityNormal}}, shape(out))
	require.Contains(t, h.logs.String(), "overflow")

	// A change made just now may be a write in progress: it waits for the
	// debounce, as a path with events does, and is then reported with
	// what it holds by then.
	h.write("conf.d/new.conf", "written\n")
	h.w.mu.Lock()
	h.w.flushLocked(time.Now().Add(h.w.debounce), false)
	out = h.w.outbox
	h.w.mu.Unlock()
	require.Equal(t, []Event{{Path: "conf.d/new.conf", Kind: KindCreated, After: sha("written\n"), Severity: SeverityNormal}}, shape(out))
}

func TestUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads everything")
	}
	h := newHarness(t, Config{}, baseTree()).start()
	require.NoError(t, os.Chmod(h.path("conf.d/a.conf"), 0o000))
	e := one(t, h.settle())
	require.Equal(t, KindModified, e.Kind)
	require.Equal(t, sha("a1\n"), e.Before)
	require.Empty(t, e.After)
	require.Contains(t, h.logs.String(), "cannot read")
	// Still tracked: a size change is noticed without reading.
	require.NoError(t, os.Truncate(h.path("conf.d/a.conf"), 100))
	require.Equal(t, KindModified, one(t, h.settle()).Kind)
}

func TestRunTwiceAndNewErrors(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	require.Error(t, h.w.Run(t.Context()))

	sink := func([]Event) {}
	_, err := New(Config{Dir: filepath.Join(t.TempDir(), "missing")}, sink, nil)
	require.Error(t, err)
	_, err = New(Config{Dir: t.TempDir()}, nil, nil)
	require.Error(t, err)
	_, err = New(Config{Dir: t.TempDir(), Immutable: []string{"conf/[x"}}, sink, nil)
	require.ErrorContains(t, err, "Immutable")
	_, err = New(Config{Dir: t.TempDir(), Ignore: []string{""}}, sink, nil)
	require.ErrorContains(t, err, "Ignore")
	f := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(f, nil, 0o644))
	_, err = New(Config{Dir: f}, sink, nil)
	require.ErrorContains(t, err, "not a directory")

	// Defaults.
	w, err := New(Config{Dir: t.TempDir()}, sink, nil)
	require.NoError(t, err)
	require.Equal(t, DefaultDebounce, w.debounce)
	require.Equal(t, DefaultScanInterval, w.interval)
	require.True(t, w.ignore.matchAny("conf.d/.x.conf.swp"))
}

func TestSymlinkedDir(t *testing.T) {
	real := t.TempDir()
	tree(t, real, map[string]string{"conf/httpd.conf": "x\n"})
	link := filepath.Join(t.TempDir(), "httpd")
	require.NoError(t, os.Symlink(real, link))
	h := newHarness(t, Config{}, nil)
	h.stop()
	var err error
	h.w, err = New(Config{Dir: link, Debounce: 50 * time.Millisecond}, h.sink, nil)
	require.NoError(t, err)
	h.dir = real
	h.start()
	h.write("conf/httpd.conf", "y\n")
	require.Equal(t, "conf/httpd.conf", one(t, h.settle()).Path)
}
