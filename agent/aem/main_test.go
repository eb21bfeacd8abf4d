package aem_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/simtest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger logs through t at trace level, one prefix per component, so a
// failing test reads as the story of what agent and AEM did.
func testLogger(t testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Trace, Output: tWriter{t}})
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeFetcher serves artifacts from local files by digest, as the real
// fetcher does after download and verification.
type fakeFetcher struct {
	mu    sync.Mutex
	paths map[string]string
}

func (f *fakeFetcher) Fetch(_ context.Context, a task.Artifact) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.paths[a.SHA256]
	if !ok {
		return "", fmt.Errorf("artifact %s not on the control plane", a.SHA256)
	}
	return p, nil
}

// env is one AEM (simulator) plus an agent-side handler for it.
type env struct {
	t     *testing.T
	sim   *simtest.Server
	cfg   *aem.Config
	fetch *fakeFetcher
	dir   string
}

// newEnv starts a simulator in strict dependency mode (so an install out
// of order is refused rather than silently fixed by AEM) and a config with
// short timings for it.
func newEnv(t *testing.T, simOpts ...func(*sim.Config)) *env {
	t.Helper()
	opts := append([]func(*sim.Config){func(c *sim.Config) { c.DependencyHandling = sim.DepStrict }}, simOpts...)
	s := simtest.New(t, opts...)
	return &env{
		t:   t,
		sim: s,
		cfg: &aem.Config{
			BaseURL:          s.URL,
			User:             simtest.User,
			Password:         simtest.Password,
			RequestTimeout:   yamlconf.Duration(5 * time.Second),
			InstallTimeout:   yamlconf.Duration(5 * time.Second),
			ReconcileTimeout: yamlconf.Duration(20 * time.Second),
			PollInterval:     yamlconf.Duration(20 * time.Millisecond),
			Retries:          aem.Retries{Count: 3, BaseBackoff: yamlconf.Duration(time.Millisecond), MaxBackoff: yamlconf.Duration(5 * time.Millisecond)},
		},
		fetch: &fakeFetcher{paths: map[string]string{}},
		dir:   t.TempDir(),
	}
}

// pkg builds a package "g:<name>:<version>" with the given dependencies
// property and makes it fetchable.
func (e *env) pkg(name, version, deps string) task.Artifact {
	e.t.Helper()
	data := aempkgtest.Package(aempkgtest.Spec{Group: "g", Name: name, Version: version, Dependencies: deps})
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	path := aempkgtest.WriteFile(e.t, e.dir, d, data)
	e.fetch.mu.Lock()
	e.fetch.paths[d] = path
	e.fetch.mu.Unlock()
	return task.Artifact{SHA256: d, Size: int64(len(data)), Name: name + "-" + version + ".zip"}
}

func (e *env) client() *aem.Client {
	e.t.Helper()
	c, err := aem.NewClient(e.cfg, testLogger(e.t, "aem-client"))
	require.NoError(e.t, err)
	e.t.Cleanup(c.Close)
	return c
}

func (e *env) handler() *aem.Handler {
	e.t.Helper()
	h, err := aem.NewHandler(e.cfg, e.fetch, testLogger(e.t, "aem"))
	require.NoError(e.t, err)
	e.t.Cleanup(h.Client.Close)
	return h
}

func (e *env) fault(f sim.Fault) {
	e.t.Helper()
	_, err := e.sim.AddFault(f)
	require.NoError(e.t, err)
}

// requests returns the request log entries with the given cmd (and, when
// pkg is not empty, about that package).
func (e *env) requests(cmd, pkg string) []sim.Request {
	var out []sim.Request
	for _, r := range e.sim.Requests() {
		if r.Cmd == cmd && (pkg == "" || r.Package == pkg) {
			out = append(out, r)
		}
	}
	return out
}

// installed lists, in order, the packages the request log shows installed.
func (e *env) installed() []string {
	var out []string
	for _, r := range e.sim.Requests() {
		out = append(out, r.Installed...)
	}
	return out
}

// requireInstalledOnce checks that AEM installed each id exactly once and
// nothing else.
func (e *env) requireInstalledOnce(ids ...string) {
	e.t.Helper()
	want := map[string]int{}
	for _, id := range ids {
		want[id] = 1
	}
	require.Equal(e.t, want, e.sim.InstallCounts())
}

// agent is a worker with a journal, running the aem handler: the real path
// a PackageInstall task takes on deckhand-agent.
type agent struct {
	t *testing.T
	j *journal.Journal
	w *worker.Worker
}

func newJournal(t *testing.T) *journal.Journal {
	j, err := journal.New(kv.NewMemory())
	require.NoError(t, err)
	return j
}

func newAgent(t *testing.T, j *journal.Journal, h worker.Handler) *agent {
	w := worker.New(worker.Config{
		Journal:  j,
		Handlers: map[string]worker.Handler{task.PackageInstall{}.Name(): h},
		Logger:   testLogger(t, "worker"),
	})
	t.Cleanup(func() { _ = w.Shutdown(context.Background()) })
	return &agent{t: t, j: j, w: w}
}

func (a *agent) submit(id string, arts ...task.Artifact) {
	a.t.Helper()
	spec := task.Spec{ID: id, ExecutionID: "e1", Step: "deploy", HostID: "author1", Timeout: time.Minute,
		Kind: task.PackageInstall{Packages: arts}}
	raw, err := task.MarshalSpec(spec)
	require.NoError(a.t, err)
	a.w.Submit(spec, raw, 1, nil)
}

// result waits for the task's journaled result and decodes it.
func (a *agent) result(id string) (*task.Result, *task.PackageInstallOutput) {
	a.t.Helper()
	var e journal.Entry
	require.Eventually(a.t, func() bool {
		var err error
		e, err = a.j.Get(id)
		return err == nil && e.State == journal.Finished
	}, 30*time.Second, 5*time.Millisecond, "task %s did not finish", id)
	r, err := task.UnmarshalResult(e.Result)
	require.NoError(a.t, err)
	out, _ := r.Output.(*task.PackageInstallOutput)
	return r, out
}

// run submits a task and waits for its result.
func (e *env) run(h *aem.Handler, arts ...task.Artifact) (*task.Result, *task.PackageInstallOutput) {
	e.t.Helper()
	a := newAgent(e.t, newJournal(e.t), h)
	a.submit("t1", arts...)
	return a.result("t1")
}

// statuses renders outcomes as "id=status" for compact assertions.
func statuses(out *task.PackageInstallOutput) []string {
	if out == nil {
		return nil
	}
	var s []string
	for _, p := range out.Packages {
		s = append(s, p.ID+"="+p.Status)
	}
	return s
}

// uninstall uninstalls the package at path through the Package Manager.
func (e *env) uninstall(path string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.sim.URL+"/crx/packmgr/service/.json"+path+"?cmd=uninstall", http.NoBody)
	require.NoError(e.t, err)
	req.SetBasicAuth(simtest.User, simtest.Password)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Contains(e.t, string(body), `"success":true`)
}

// writeFile writes a file in t's temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	p := t.TempDir() + "/" + name
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// indexOf returns the position of id in order, failing when absent.
func indexOf(t *testing.T, order []string, id string) int {
	t.Helper()
	i := slices.Index(order, id)
	require.GreaterOrEqual(t, i, 0, "%s was never installed (installed: %v)", id, order)
	return i
}
