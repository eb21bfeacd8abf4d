package build_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/pkg/classify"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

// builderConfig is the builder section most tests use: the project's
// repository directory allowed, a working profile, failing and slow ones,
// and two scans.
func builderConfig(extra string) func(h *harness) string {
	return func(h *harness) string {
		return fmt.Sprintf(`builder:
  allowed_repositories: [%q]
%s  profiles:
    ci:
      command: [/bin/sh, build.sh]
      timeout: 60s
      env: [BUILD_FLAVOR=ci, DECKHAND_TEST_PASS]
    fail:
      command: [/bin/sh, -c, 'echo compiling; echo "[ERROR] Tests run: 3, Failures: 1" >&2; exit 3']
    slow:
      command: [/bin/sh, -c, 'echo started; sleep 60']
      timeout: 1s
  scans:
    quality:
      command: [/bin/sh, scan.sh]
      metrics_file: target/metrics.json
    nometrics:
      command: ["true"]
      metrics_file: target/none.json
`, "file://"+h.proj.reposDir+"/", extra)
	}
}

func TestBuildUploadsArtifactsAndScanReadsMetrics(t *testing.T) {
	t.Setenv("DECKHAND_TEST_SECRET", "must-not-leak")
	t.Setenv("DECKHAND_TEST_PASS", "yes")
	h := newHarness(t, builderConfig(""))

	spec, res := h.build("ci", "main")
	require.NoError(t, res.Err())
	out := res.Output.(*task.BuildOutput)
	require.Equal(t, h.proj.commit, out.Commit)
	require.Equal(t, 0, out.ExitCode)
	require.Equal(t, []task.Artifact{
		{SHA256: digest(h.proj.disp), Size: int64(len(h.proj.disp)), Name: "site.dispatcher-1.0.zip"},
		{SHA256: digest(h.proj.pkg), Size: int64(len(h.proj.pkg)), Name: "site.ui.apps-1.0.zip"},
	}, out.Artifacts)
	require.Contains(t, out.LogTail, "BUILD SUCCESS")

	// The server's store has both, classified.
	pkg, err := h.sets.Artifact(digest(h.proj.pkg))
	require.NoError(t, err)
	require.Equal(t, classify.AEMPackage, pkg.Kind)
	require.Equal(t, "site:site.ui.apps:1.0", pkg.PackageID.String())
	disp, err := h.sets.Artifact(digest(h.proj.disp))
	require.NoError(t, err)
	require.Equal(t, classify.DispatcherConfig, disp.Kind)
	all, err := h.sets.Artifacts()
	require.NoError(t, err)
	require.Len(t, all, 2, "only the zips under target/ are uploaded")

	// The log reached the server as progress lines, with a clean
	// environment: the profile's entries, nothing else of the agent's.
	log := h.progress(spec.ID)
	require.Contains(t, log, "git clone --depth 1 --branch main "+h.proj.url)
	require.Contains(t, log, "building in ")
	require.Contains(t, log, "BUILD SUCCESS")
	require.Contains(t, log, "uploaded target/site.ui.apps-1.0.zip: aem-package")
	require.Contains(t, log, "uploaded sub/module/target/site.dispatcher-1.0.zip: dispatcher-config")
	require.Contains(t, log, "BUILD_FLAVOR=ci")
	require.Contains(t, log, "DECKHAND_TEST_PASS=yes")
	require.Contains(t, log, "LANG=C.UTF-8")
	require.NotContains(t, log, "DECKHAND_TEST_SECRET")
	require.NotContains(t, log, "must-not-leak")

	// The code scan runs in that workspace and returns the metrics file.
	scan := h.run(h.spec(task.CodeScan{BuildTaskID: spec.ID, Profile: "quality"}))
	require.NoError(t, scan.Err())
	so := scan.Output.(*task.CodeScanOutput)
	require.JSONEq(t, `{"coverage": 81.5, "bugs": 0}`, string(so.Metrics))
	require.Equal(t, "{\"coverage\": 81.5, \"bugs\": 0}\n", string(so.Metrics), "returned verbatim")
	require.Contains(t, so.LogTail, "scan done")

	// A scan that writes no metrics file fails clearly.
	scan = h.run(h.spec(task.CodeScan{BuildTaskID: spec.ID, Profile: "nometrics"}))
	require.ErrorContains(t, scan.Err(), "did not write its metrics file target/none.json")

	// Another branch: its own commit.
	_, res = h.build("ci", "release/1.0")
	require.NoError(t, res.Err())
	require.Equal(t, gitCmd(t, filepath.Join(h.proj.reposDir, "site.git"), "rev-parse", "release/1.0"), res.Output.(*task.BuildOutput).Commit)
	require.NotEqual(t, h.proj.commit, res.Output.(*task.BuildOutput).Commit)
}

// TestBuildWithoutSandbox runs the same build with sandbox: none: the
// command runs directly in the host workspace, with the same clean
// environment.
func TestBuildWithoutSandbox(t *testing.T) {
	t.Setenv("DECKHAND_TEST_SECRET", "must-not-leak")
	h := newHarness(t, builderConfig("  sandbox: none\n"))
	spec, res := h.build("ci", "main")
	require.NoError(t, res.Err())
	require.Len(t, res.Output.(*task.BuildOutput).Artifacts, 2)
	log := h.progress(spec.ID)
	require.Contains(t, log, "building in "+filepath.Join(h.dataDir, "workspaces"))
	require.NotContains(t, log, "must-not-leak")
	require.NotContains(t, log, "building in /workspace/")
}

func TestBuildRefusals(t *testing.T) {
	h := newHarness(t, builderConfig(""))
	badRepo := func(repo string) task.Build { return task.Build{Repository: repo, Branch: "main", Profile: "ci"} }

	for _, tc := range []struct {
		name string
		kind task.Build
		want string
	}{
		{"repository not allowed", badRepo("file:///srv/elsewhere/site.git"), "is not in this builder's allowed_repositories"},
		{"repository next to an allowed prefix", badRepo("file://" + h.proj.reposDir + "-evil/site.git"), "is not in this builder's allowed_repositories"},
		{"repository with ..", badRepo("file://" + h.proj.reposDir + "/../site.git"), "is not in this builder's allowed_repositories"},
		{"unknown profile", task.Build{Repository: h.proj.url, Branch: "main", Profile: "nope"}, `unknown build profile "nope"; this builder has: ci, fail, slow`},
		{"option as branch", task.Build{Repository: h.proj.url, Branch: "--upload-pack=x", Profile: "ci"}, `branch "--upload-pack=x" must not start with '-'`},
		{"branch with ..", task.Build{Repository: h.proj.url, Branch: "main..x", Profile: "ci"}, "must not contain '..'"},
		{"branch with a control character", task.Build{Repository: h.proj.url, Branch: "main\x1b[2J", Profile: "ci"}, "control character"},
		{"branch that does not exist", task.Build{Repository: h.proj.url, Branch: "no-such-branch", Profile: "ci"}, "Remote branch no-such-branch not found in upstream origin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := h.run(h.spec(tc.kind))
			require.Equal(t, task.StatusFailed, res.Status)
			require.Contains(t, res.Error, tc.want)
		})
	}
	noArtifacts(t, h.sets)

	t.Run("clone failure names git", func(t *testing.T) {
		res := h.run(h.spec(task.Build{Repository: h.proj.url, Branch: "no-such-branch", Profile: "ci"}))
		require.Contains(t, res.Error, "git clone of "+h.proj.url+" (branch no-such-branch) failed: ")
	})

	var failedBuild string
	t.Run("failing build command", func(t *testing.T) {
		spec, res := h.build("fail", "main")
		failedBuild = spec.ID
		require.Equal(t, task.StatusFailed, res.Status)
		require.Contains(t, res.Error, "build failed with exit code 3: ")
		require.Contains(t, res.Error, "[ERROR] Tests run: 3, Failures: 1")
		out := res.Output.(*task.BuildOutput)
		require.Equal(t, 3, out.ExitCode)
		require.Equal(t, h.proj.commit, out.Commit)
		require.Contains(t, out.LogTail, "compiling")
		require.Empty(t, out.Artifacts)
		require.Contains(t, h.progress(spec.ID), "[ERROR] Tests run: 3, Failures: 1")
	})

	t.Run("build exceeding its timeout", func(t *testing.T) {
		start := time.Now()
		spec, res := h.build("slow", "main")
		require.Less(t, time.Since(start), 20*time.Second, "the command was not killed at its timeout")
		require.Equal(t, task.StatusFailed, res.Status)
		require.Contains(t, res.Error, "build exceeded its timeout of 1s (profile slow) and was killed")
		require.Contains(t, res.Error, "started")
		require.Equal(t, -1, res.Output.(*task.BuildOutput).ExitCode)
		require.Contains(t, h.progress(spec.ID), "started")
	})

	t.Run("scan of an unknown build", func(t *testing.T) {
		res := h.run(h.spec(task.CodeScan{BuildTaskID: "e99/build/builder1", Profile: "quality"}))
		require.Equal(t, task.StatusFailed, res.Status)
		require.Contains(t, res.Error, `no workspace of a successful build task "e99/build/builder1" on this builder`)
	})

	t.Run("scan of a failed build", func(t *testing.T) {
		require.NotEmpty(t, failedBuild)
		res := h.run(h.spec(task.CodeScan{BuildTaskID: failedBuild, Profile: "quality"}))
		require.Contains(t, res.Error, "no workspace of a successful build task")
	})

	t.Run("unknown scan profile", func(t *testing.T) {
		res := h.run(h.spec(task.CodeScan{BuildTaskID: failedBuild, Profile: "sonar"}))
		require.Contains(t, res.Error, `unknown scan profile "sonar"; this builder has: nometrics, quality`)
	})
}

// TestBuildRerunAfterCrash stops the agent in the middle of a build: the
// next start finds the task in its journal and runs it again from a fresh
// workspace (the build script fails if it finds the first attempt's files),
// and the upload goes through once.
func TestBuildRerunAfterCrash(t *testing.T) {
	gateDir := t.TempDir()
	gate := filepath.Join(gateDir, "closed")
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	h := newHarness(t, func(h *harness) string {
		return fmt.Sprintf(`builder:
  allowed_repositories: [%q]
  profiles:
    ci:
      command: [/bin/sh, build.sh]
      timeout: 60s
      env: [BUILD_GATE=%s]
      cache_dirs: [%q]
`, "file://"+h.proj.reposDir+"/", gate, gateDir)
	})
	spec := h.spec(task.Build{Repository: h.proj.url, Branch: "main", Profile: "ci"})
	require.NoError(t, h.c.Server.Fleet().Assign(t.Context(), spec))
	require.Eventually(t, func() bool { return strings.Contains(h.progress(spec.ID), "waiting for the gate") }, 30*time.Second, 10*time.Millisecond)

	h.stopAgent()
	require.NoError(t, os.Remove(gate))
	h.startAgent()

	res := h.run(spec)
	require.NoError(t, res.Err())
	require.Equal(t, 2, res.Attempts)
	out := res.Output.(*task.BuildOutput)
	require.Len(t, out.Artifacts, 2)
	// Both attempts ran the script; the second found no files of the first
	// (build.sh fails with "stale workspace" if it does).
	log := h.progress(spec.ID)
	require.Equal(t, 2, strings.Count(log, "waiting for the gate"), log)
	require.NotContains(t, log, "stale workspace")
	_, err := h.sets.Artifact(digest(h.proj.pkg))
	require.NoError(t, err)
	_, err = h.sets.Artifact(digest(h.proj.disp))
	require.NoError(t, err)
}

// noArtifacts asserts the server stored nothing.
func noArtifacts(t *testing.T, sets *artifacts.Sets) {
	t.Helper()
	arts, err := sets.Artifacts()
	require.NoError(t, err)
	require.Empty(t, arts)
}
