package drift

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFsnotifyErrorDoesNotDeadlock: fsnotify's reader sends some errors
// while holding its lock (removing the watch of a directory that moved
// away, which fails with EINVAL if the kernel already dropped the watch
// because the directory is gone), so whoever consumes Errors must never
// wait for fsnotify itself. The Run goroutine does (Add, Remove), so the
// errors are drained elsewhere.
func TestFsnotifyErrorDoesNotDeadlock(t *testing.T) {
	h := newHarness(t, Config{}, baseTree()).start()
	outside := filepath.Join(t.TempDir(), "gone")
	// Run is held (it waits for mu with an event in hand), so fsnotify's
	// reader waits to hand over the next one: the directory's move away.
	h.w.mu.Lock()
	h.write("conf.d/a.conf", "a2\n")
	require.NoError(t, os.Rename(h.path("conf.d/available_vhosts"), outside))
	// The kernel drops the watch of the deleted directory; fsnotify, when
	// it gets to the move, fails to remove it.
	require.NoError(t, os.RemoveAll(outside))
	h.w.mu.Unlock()
	evs := shape(h.settle())
	require.Equal(t, []Event{
		{Path: "conf.d/a.conf", Kind: KindModified, Before: sha("a1\n"), After: sha("a2\n"), Severity: SeverityNormal},
		{Path: "conf.d/available_vhosts/aem_publish.vhost", Kind: KindRemoved, Before: sha("<VirtualHost *:80>\n"), Severity: SeverityNormal},
		{Path: "conf.d/available_vhosts/site.vhost", Kind: KindRemoved, Before: sha("site\n"), Severity: SeverityNormal},
	}, evs)
}
