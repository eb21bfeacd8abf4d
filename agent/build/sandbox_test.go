package build_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

// requireBwrap skips without bubblewrap, or fails when the run must use
// the real components (.ci/run sets DECKHAND_REQUIRE_REAL=1 and installs
// bubblewrap).
func requireBwrap(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/bwrap"); err != nil {
		if os.Getenv("DECKHAND_REQUIRE_REAL") == "1" {
			t.Fatal("/usr/bin/bwrap is not installed and DECKHAND_REQUIRE_REAL=1 (apt-get install bubblewrap)")
		}
		t.Skip("/usr/bin/bwrap is not installed (Debian package bubblewrap)")
	}
}

// TestSandboxKeepsBuildsInTheirWorkspace runs build profiles that try to
// leave the workspace; each must fail, and the host must be unchanged.
// The ci profile, run in the same sandbox, shows the sandbox itself works.
func TestSandboxKeepsBuildsInTheirWorkspace(t *testing.T) {
	requireBwrap(t)
	marker := fmt.Sprintf("deckhand-escaped-%d", os.Getpid())
	etcFile := filepath.Join("/etc", marker)
	usrFile := filepath.Join("/usr", marker)
	t.Cleanup(func() {
		// Only there if the sandbox failed; never leave it on the host.
		os.Remove(etcFile)
		os.Remove(usrFile)
	})
	escapes := map[string]string{}
	h := newHarness(t, func(h *harness) string {
		_, port, _ := net.SplitHostPort(h.c.Addr)
		escapes = map[string]string{
			"write-data-dir": fmt.Sprintf("echo x > %s/escaped", h.dataDir),
			"write-repos":    fmt.Sprintf("echo x > %s/escaped", h.proj.reposDir),
			"write-etc":      "echo x > " + etcFile,
			"remount-usr":    "mount -o remount,rw,bind /usr && touch " + usrFile,
			"read-agent-key": fmt.Sprintf("cat %s/tls/agent.key", h.dataDir),
			"no-network":     fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%s", port),
			"forge-record":   "echo '{}' > /workspace/build.json",
		}
		var b strings.Builder
		fmt.Fprintf(&b, "builder:\n  sandbox: bwrap\n  allowed_repositories: [%q]\n  profiles:\n", "file://"+h.proj.reposDir+"/")
		b.WriteString("    ci:\n      command: [/bin/sh, build.sh]\n")
		for name, script := range escapes {
			fmt.Fprintf(&b, "    %s:\n      command: [/usr/bin/bash, -c, %q]\n", name, script)
		}
		// The same connection with network: true succeeds: the test above
		// fails for the sandbox's reason, not for a wrong port.
		fmt.Fprintf(&b, "    with-network:\n      command: [/usr/bin/bash, -c, %q]\n      network: true\n", escapes["no-network"]+" && echo connected")
		return b.String()
	})

	_, res := h.build("ci", "main")
	require.NoError(t, res.Err(), "a normal build works inside the sandbox")
	require.Len(t, res.Output.(*task.BuildOutput).Artifacts, 2)

	for name := range escapes {
		t.Run(name, func(t *testing.T) {
			spec, res := h.build(name, "main")
			require.Equal(t, task.StatusFailed, res.Status)
			require.Contains(t, res.Error, "build failed with exit code")
			require.NotContains(t, h.progress(spec.ID), "PRIVATE KEY")
		})
	}
	require.NoFileExists(t, filepath.Join(h.dataDir, "escaped"))
	require.NoFileExists(t, filepath.Join(h.proj.reposDir, "escaped"))
	require.NoFileExists(t, etcFile)
	require.NoFileExists(t, usrFile)

	spec, res := h.build("with-network", "main")
	// It connects, then fails for want of artifacts: the point is the
	// connection.
	require.Contains(t, h.progress(spec.ID), "connected")
	require.Contains(t, res.Error, "produced no artifacts")
}
