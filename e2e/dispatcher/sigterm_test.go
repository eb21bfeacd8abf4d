package dispatcher_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	disp "github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// slowCommand writes a wrapper around argv that, while flagDir/slow-NAME
// exists, touches flagDir/in-NAME and sleeps 2 s before running argv: a
// configtest or reload long enough to stop the agent in the middle of.
func slowCommand(t *testing.T, flagDir, name string, argv []string) []string {
	t.Helper()
	var q []string
	for _, a := range argv {
		q = append(q, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	script := fmt.Sprintf("#!/bin/sh\nif [ -e '%[1]s/slow-%[2]s' ]; then touch '%[1]s/in-%[2]s'; sleep 2; fi\nexec %[3]s\n", flagDir, name, strings.Join(q, " "))
	p := filepath.Join(flagDir, name+".sh")
	require.NoError(t, os.WriteFile(p, []byte(script), 0o755))
	return []string{"/bin/sh", p}
}

// TestSIGTERMDuringDeploy stops the real agent with SIGTERM — as systemd
// does with the unit's KillMode=mixed: the agent only, not its children —
// while a DispatcherDeploy runs a slow configtest or reload (wrappers that
// sleep 2 s). The agent must exit on its own with status 0, the task's
// progress journaled; the tree is exactly the old or exactly the new config
// at that moment already; after the restart the control plane gets one
// result: a good deployment whose swap had begun goes live, a bad one is
// rolled back with Apache's configtest output as the error.
func TestSIGTERMDuringDeploy(t *testing.T) {
	flags := t.TempDir()
	h := newHost(t, hostOptions{
		wrapConfigTest: func(argv []string) []string { return slowCommand(t, flags, "configtest", argv) },
		wrapReload:     func(argv []string) []string { return slowCommand(t, flags, "reload", argv) },
	})
	v1, v2, bad := h.upload(artifactV1()), h.upload(artifactV2()), h.upload(artifactBad())

	// Clean runs (no slow commands) give the two trees.
	mans := map[string]*disp.Manifest{}
	pages := map[string]string{v1.SHA256: pageV1, v2.SHA256: pageV2}
	for i, a := range []task.Artifact{v2, v1} {
		require.NoError(t, h.deploy(fmt.Sprintf("warm-%d", i), a).Err())
		mans[a.SHA256] = h.live()
	}
	live := v1

	cases := []struct {
		name, slow string
		bad        bool
	}{
		{"good deploy, SIGTERM during configtest", "configtest", false},
		{"bad deploy, SIGTERM during configtest", "configtest", true},
		{"good deploy, SIGTERM during reload", "reload", false},
	}
	for i, tc := range cases {
		t.Logf("case %d: %s", i+1, tc.name)
		old := h.live()
		require.Empty(t, mans[live.SHA256].Diff(old))
		target := v1
		if live.SHA256 == v1.SHA256 {
			target = v2
		}
		if tc.bad {
			target = bad
		}
		flag, marker := filepath.Join(flags, "slow-"+tc.slow), filepath.Join(flags, "in-"+tc.slow)
		require.NoError(t, os.WriteFile(flag, nil, 0o644))
		_ = os.Remove(marker)

		p := h.start()
		id := h.assign(fmt.Sprintf("sigterm-%d", i), target)
		require.Eventually(t, func() bool { _, err := os.Stat(marker); return err == nil }, time.Minute, 5*time.Millisecond, "the slow %s never ran", tc.slow)
		sent := time.Now()
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		st := p.waitExit(60 * time.Second)
		ws := st.Sys().(syscall.WaitStatus)
		require.False(t, ws.Signaled(), "the agent should exit on its own after SIGTERM, got %v", st)
		require.Zero(t, st.ExitCode(), "exit status after SIGTERM")
		t.Logf("  the agent exited %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
		require.NoError(t, os.Remove(flag))

		// At exit: one tree, whole.
		atExit := h.live()
		want := old
		if !tc.bad {
			want = mans[target.SHA256]
		}
		require.Empty(t, want.Diff(atExit), "the tree the agent left at exit is not exactly the %s one", map[bool]string{true: "old", false: "new"}[tc.bad])

		p = h.start()
		r := h.await(id, time.Minute)
		p.stop()
		done, dups := h.done(id)
		require.True(t, done)
		require.Zero(t, dups, "the result arrived more than once")
		o := output(r)
		t.Logf("  result %s after %d attempt(s); recovery %q", r.Status, r.Attempts, o.Recovery)
		require.Empty(t, want.Diff(h.live()), "the restart changed the tree")
		if tc.bad {
			require.Equal(t, task.StatusFailed, r.Status)
			require.Contains(t, r.Error, "AH00526", "Apache's configtest output is the error")
			require.True(t, o.Restored)
			if r.Attempts > 1 {
				// The stopped run had finished its rollback; the worker
				// left the result to the next start. Recovery must not
				// claim work it did not do.
				require.Contains(t, o.Recovery, "recovery only reported it")
			}
			h.requireServes(pages[live.SHA256])
			continue
		}
		require.NoError(t, r.Err())
		h.requireServes(pages[target.SHA256], pages[live.SHA256])
		live = target
	}
}
