package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/e2e/harness/haproxy"
	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/stretchr/testify/require"
)

// buildDemo builds the Deckhand binaries (shared with the other e2e
// tests) and this command.
func buildDemo(t *testing.T) (binDir, demo string) {
	t.Helper()
	binDir = topology.Binaries(t)
	demo = filepath.Join(t.TempDir(), "demo")
	out, err := exec.Command("go", "build", "-o", demo, ".").CombinedOutput()
	require.NoError(t, err, "go build ./e2e/demo: %s", out)
	return binDir, demo
}

// runDemo runs the demo with DEMO_EXIT=1 and returns its exit code and
// output.
func runDemo(t *testing.T, demo, binDir string, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo, "--bin", binDir)
	cmd.Env = append(os.Environ(), append([]string{"DEMO_EXIT=1"}, env...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("demo took %s", time.Since(start).Round(time.Second))
	code := 0
	if err != nil {
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, "demo did not run: %v\n%s", err, out.String())
		code = ee.ExitCode()
	}
	return code, out.String()
}

var workDir = regexp.MustCompile(`demo: working in (\S+)`)

// checkClean asserts the demo left no process and no temp dir behind.
func checkClean(t *testing.T, out string) {
	t.Helper()
	m := workDir.FindStringSubmatch(out)
	require.NotNil(t, m, "the demo did not say where it works:\n%s", out)
	dir := m[1]
	require.Empty(t, leftovers(dir), "processes still running from %s after the demo exited", dir)
	_, err := os.Stat(dir)
	require.True(t, os.IsNotExist(err), "the demo did not remove %s", dir)
}

// TestDemo runs `make demo`'s program to completion, with HAProxy when it
// is installed: the production pipeline execution must finish and the new
// release must be served.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole installation and a pipeline (about 20s)")
	}
	apache.Require(t)
	withHAProxy := true
	if _, err := haproxy.Find(); err != nil {
		if os.Getenv(haproxy.RequireRealEnv) == "1" {
			t.Fatalf("haproxy is required (%s=1) but not usable: %v", haproxy.RequireRealEnv, err)
		}
		withHAProxy = false
	}
	binDir, demo := buildDemo(t)
	code, out := runDemo(t, demo, binDir)
	if code != 0 || !strings.Contains(out, "FINISHED") {
		t.Fatalf("demo exited %d:\n%s", code, out)
	}
	require.Contains(t, out, "demo: OK: execution 1 of demo/main FINISHED")
	require.Contains(t, out, "Deckhand demo site: release "+release)
	require.Contains(t, out, "$ deckctl execution advance approve -p demo/main")
	require.Contains(t, out, "$ deckctl execution advance schedule --now -p demo/main")
	if withHAProxy {
		require.Contains(t, out, "HAProxy: dispatcher1 UP, dispatcher2 UP")
	}
	checkClean(t, out)

	// Without HAProxy the production dispatchers fall back to the
	// healthfile driver and the site is checked on each of them.
	t.Run("without HAProxy", func(t *testing.T) {
		code, out := runDemo(t, demo, binDir, haproxy.BinaryEnv+"=/nonexistent/haproxy")
		if code != 0 || !strings.Contains(out, "FINISHED") {
			t.Fatalf("demo exited %d:\n%s", code, out)
		}
		require.Contains(t, out, "healthfile load-balancer driver")
		require.Contains(t, out, "Deckhand demo site: release "+release)
		checkClean(t, out)
	})
}

// TestDemoWithoutApache: without Apache the demo says how to install it
// and exits non-zero before starting anything.
func TestDemoWithoutApache(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries")
	}
	binDir, demo := buildDemo(t)
	code, out := runDemo(t, demo, binDir, apache.BinaryEnv+"=/nonexistent/apache2")
	require.NotEqual(t, 0, code, out)
	require.Contains(t, out, "Apache (apache2) is not installed")
	require.Contains(t, out, "apt-get install -y apache2 haproxy")
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, "want one line:\n%s", out)
}
