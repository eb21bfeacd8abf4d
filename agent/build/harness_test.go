package build_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/stretchr/testify/require"
)

const topology = `
environments:
  - name: prod
    type: prod
    hosts:
      - {id: builder1, role: builder}
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
`

// buildScript is the test project's "Maven": it proves it runs in the
// checkout, prints its environment (the test checks nothing leaked in),
// and puts zips into target/ of the root and of a nested module, as a
// multi-module build does.
const buildScript = `#!/bin/sh
set -eu
if [ -e stale.txt ]; then echo "stale workspace: an earlier attempt's files are here"; exit 9; fi
echo "attempt" > stale.txt
echo "building in $(pwd)"
echo "env: $(env | sort | tr '\n' ' ')"
if [ -n "${BUILD_GATE:-}" ]; then
  echo "waiting for the gate"
  while [ -e "$BUILD_GATE" ]; do sleep 0.05; done
fi
mkdir -p target sub/module/target
cp fixtures/site.ui.apps-1.0.zip target/
cp fixtures/site.dispatcher-1.0.zip sub/module/target/
echo "not an artifact" > target/notes.txt
echo "BUILD SUCCESS"
`

// scanScript checks it runs in the build's workspace (the build's output
// is there) and writes the metrics file.
const scanScript = `#!/bin/sh
set -eu
test -f target/site.ui.apps-1.0.zip
printf '{"coverage": 81.5, "bugs": 0}\n' > target/metrics.json
echo "scan done"
`

// project is a bare git repository holding the test project.
type project struct {
	reposDir string // parent of the bare repositories
	url      string // file:// URL of site.git
	commit   string
	pkg      []byte // the AEM package the build copies
	disp     []byte // the dispatcher config zip
}

func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("/usr/bin/git", args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "LANG=C",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com", "GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %v: %s", args, out)
	return strings.TrimSpace(string(out))
}

func newProject(t *testing.T) *project {
	t.Helper()
	if _, err := os.Stat("/usr/bin/git"); err != nil {
		t.Fatal("git is not installed at /usr/bin/git")
	}
	p := &project{reposDir: filepath.Join(t.TempDir(), "repos")}
	bare := filepath.Join(p.reposDir, "site.git")
	require.NoError(t, os.MkdirAll(bare, 0o755))
	gitCmd(t, bare, "init", "-q", "--bare", "--initial-branch=main")
	work := t.TempDir()
	gitCmd(t, work, "init", "-q", "--initial-branch=main")
	p.pkg = aempkgtest.Package(aempkgtest.Spec{Group: "site", Name: "site.ui.apps", Version: "1.0"})
	p.disp = aempkgtest.Zip(map[string]string{
		"conf/httpd.conf":             "Include conf.d/*.conf\n",
		"conf.d/site.conf":            "<VirtualHost *:80>\n</VirtualHost>\n",
		"conf.dispatcher.d/farm.any":  "/farm { }\n",
		"conf.modules.d/modules.conf": "# none\n",
	})
	aempkgtest.WriteFile(t, work, "build.sh", []byte(buildScript))
	aempkgtest.WriteFile(t, work, "scan.sh", []byte(scanScript))
	aempkgtest.WriteFile(t, work, "fixtures/site.ui.apps-1.0.zip", p.pkg)
	aempkgtest.WriteFile(t, work, "fixtures/site.dispatcher-1.0.zip", p.disp)
	aempkgtest.WriteFile(t, work, "pom.xml", []byte("<project/>\n"))
	gitCmd(t, work, "add", "-A")
	gitCmd(t, work, "commit", "-q", "-m", "site 1.0")
	gitCmd(t, work, "push", "-q", bare, "main")
	gitCmd(t, work, "checkout", "-q", "-b", "release/1.0")
	aempkgtest.WriteFile(t, work, "RELEASE", []byte("1.0\n"))
	gitCmd(t, work, "add", "-A")
	gitCmd(t, work, "commit", "-q", "-m", "release")
	gitCmd(t, work, "push", "-q", bare, "release/1.0")
	p.commit = gitCmd(t, bare, "rev-parse", "main")
	p.url = "file://" + bare
	return p
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// harness is a control plane, a builder agent and a project.
type harness struct {
	t       *testing.T
	c       *servertest.Control
	proj    *project
	dataDir string
	yaml    string // the builder: section
	sets    *artifacts.Sets
	execs   atomic.Int64

	mu   sync.Mutex
	stop func()
}

// newHarness starts a control plane and a builder agent whose builder
// section is made by builderYAML from the project.
func newHarness(t *testing.T, builderYAML func(h *harness) string) *harness {
	h := &harness{t: t, proj: newProject(t), dataDir: t.TempDir()}
	h.c = servertest.Start(t, servertest.Options{Topology: topology})
	h.sets = artifacts.NewSets(h.c.Server.Blobs(), h.c.Server.Store().Backend())
	h.yaml = builderYAML(h)
	h.startAgent()
	return h
}

func (h *harness) startAgent() {
	t := h.t
	acfg, err := agentconfig.Parse("agent.yaml", []byte(h.c.AgentConfig("builder1", h.dataDir, h.yaml)))
	require.NoError(t, err)
	a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, "builder1")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	h.mu.Lock()
	h.stop = stop
	h.mu.Unlock()
	t.Cleanup(stop)
	require.Eventually(t, func() bool { return h.c.Server.Fleet().Online("builder1") }, 20*time.Second, 10*time.Millisecond)
}

func (h *harness) stopAgent() {
	h.mu.Lock()
	stop := h.stop
	h.mu.Unlock()
	stop()
}

func (h *harness) spec(kind task.Kind) task.Spec {
	exec := fmt.Sprintf("e%d", h.execs.Add(1))
	id, err := task.ID(exec, kind.Name(), "builder1")
	require.NoError(h.t, err)
	return task.Spec{ID: id, ExecutionID: exec, HostID: "builder1", Kind: kind, Timeout: 2 * time.Minute}
}

func (h *harness) run(spec task.Spec) *task.Result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := h.c.Server.Fleet().Run(ctx, spec)
	require.NoError(h.t, err)
	return res
}

func (h *harness) build(profile, branch string) (task.Spec, *task.Result) {
	s := h.spec(task.Build{Repository: h.proj.url, Branch: branch, Profile: profile})
	return s, h.run(s)
}

// progress joins the progress lines the server received for a task.
func (h *harness) progress(id string) string {
	var b strings.Builder
	for _, p := range h.c.Server.Fleet().Progress(id) {
		b.WriteString(p.Line)
		b.WriteByte('\n')
	}
	return b.String()
}
