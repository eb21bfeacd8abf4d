package aeminstall_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/controlplane/fleet"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/simtest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
)

// topology declares one author and two publish/dispatcher pairs. The
// dispatchers get no agent here: PackageInstall goes to author and
// publish hosts only ("all AEM artifacts are deployed to both the author
// and the publishers").
const topology = `
environments:
  - name: prod
    type: prod
    hosts:
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
      - {id: publish2, role: publish, pair: 2}
      - {id: dispatcher2, role: dispatcher, pair: 2}
`

// topologies are the host sets every scenario runs on: one agent alone, and
// an author with two publishers deploying in parallel.
var topologies = []struct {
	name  string
	hosts []string
}{
	{"author", []string{"author1"}},
	{"author+2publish", []string{"author1", "publish1", "publish2"}},
}

// forEachTopology runs scenario once per topology, as parallel subtests
// (each with its own control plane, agents and simulators).
func forEachTopology(t *testing.T, scenario func(t *testing.T, hosts []string)) {
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			scenario(t, tp.hosts)
		})
	}
}

// group is the AEM package group of every test package.
const group = "e2e"

// pkgDef is one test package: e2e:<name>:1.0 with the raw dependencies
// property deps; dependsOn names the packages deps resolves to, for the
// order assertions.
type pkgDef struct {
	name      string
	deps      string
	dependsOn []string
}

// standardSet is a chain (base <- core <- api <- ui), a fan-out (conf-a/b/c
// on base) and a fan-in (all on ui and the confs), listed scrambled so the
// agent has to order them. Dependencies use a range, bare versions ("at
// least") and no version at all.
var standardSet = []pkgDef{
	{"all", "e2e:ui:1.0,e2e:conf-a,e2e:conf-b,e2e:conf-c", []string{"ui", "conf-a", "conf-b", "conf-c"}},
	{"ui", "e2e:api:1.0,e2e:core:1.0", []string{"api", "core"}},
	{"conf-c", "e2e:base:1.0", []string{"base"}},
	{"api", "e2e:core:1.0", []string{"core"}},
	{"conf-a", "e2e:base:1.0", []string{"base"}},
	{"core", "e2e:base:[1.0,2.0)", []string{"base"}},
	{"conf-b", "e2e:base:1.0", []string{"base"}},
	{"base", "", nil},
}

// pid is the package id of a test package name.
func pid(name string) string { return group + ":" + name + ":1.0" }

// options tune a cluster.
type options struct {
	// installTimeout is the agents' aem.install_timeout; default 10s.
	installTimeout time.Duration
	// agentEnv, when set, gives extra environment for a host's first agent
	// start (failpoints).
	agentEnv func(h *aemHost) []string
}

// cluster is a control plane in this process, and per host an AEM
// simulator in this process and a deckhand-agent child process.
type cluster struct {
	t      *testing.T
	cp     *servertest.Control
	dir    string
	hosts  []*aemHost
	byID   map[string]*aemHost
	events *eventLog
	// deps maps a package id to the ids it depends on.
	deps map[string][]string
	arts map[string]task.Artifact // by package name
}

// aemHost is one AEM host: its simulator and its agent.
type aemHost struct {
	c       *cluster
	id      string
	dir     string
	sim     *simtest.Server
	cfgPath string
	// fpLog is the agent's DECKHAND_FAILPOINT_LOG.
	fpLog string
	agent *agentProc
}

// keptDir is a directory removed when the test passes and kept (with its
// path logged) when it fails, for the post-mortem STYLE.md asks for.
func keptDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "deckhand-e2e-"+strings.NewReplacer("/", "-", "+", "-").Replace(t.Name())+"-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keeping the data dir for the post-mortem: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// newCluster starts the control plane, one strict-mode simulator per host
// and one agent per host, enrolled with a fresh join token, and waits
// until every agent is online.
func newCluster(t *testing.T, hosts []string, o options) *cluster {
	t.Helper()
	if o.installTimeout == 0 {
		o.installTimeout = 10 * time.Second
	}
	dir := keptDir(t)
	cp := servertest.Start(t, servertest.Options{Topology: topology})
	c := &cluster{t: t, cp: cp, dir: dir, byID: map[string]*aemHost{}, deps: map[string][]string{}, arts: map[string]task.Artifact{}}
	c.events = subscribe(t, cp.Server.Fleet())
	for _, id := range hosts {
		h := &aemHost{c: c, id: id, dir: filepath.Join(dir, id)}
		require.NoError(t, os.MkdirAll(h.dir, 0o700))
		h.fpLog = filepath.Join(h.dir, "failpoints.log")
		// Strict: AEM refuses an install whose dependencies are not
		// installed yet, instead of quietly installing them first, so an
		// ordering mistake by the agent fails the install.
		h.sim = simtest.New(t, func(sc *sim.Config) {
			sc.DataDir = filepath.Join(h.dir, "aem")
			sc.DependencyHandling = sim.DepStrict
			sc.Logger = testlog.New(t, "aem-"+id)
		})
		aemYAML := fmt.Sprintf(`log_level: debug
aem:
  base_url: %s
  user: %s
  password: %s
  request_timeout: 10s
  install_timeout: %s
  reconcile_timeout: 30s
  poll_interval: 20ms
  retries: {count: 3, base_backoff: 5ms, max_backoff: 20ms}
  dependency_handling: strict
`, h.sim.URL, simtest.User, simtest.Password, o.installTimeout)
		h.cfgPath = filepath.Join(h.dir, "agent.yaml")
		// The config carries a one-time join token; restarts reuse the file,
		// and the agent ignores the spent token once it has a certificate.
		require.NoError(t, os.WriteFile(h.cfgPath, []byte(cp.AgentConfig(id, filepath.Join(h.dir, "agent"), aemYAML)), 0o600))
		c.hosts = append(c.hosts, h)
		c.byID[id] = h
	}
	for _, h := range c.hosts {
		var env []string
		if o.agentEnv != nil {
			env = o.agentEnv(h)
		}
		h.start(env...)
	}
	c.waitOnline()
	return c
}

// waitOnline waits until every host's agent has a session.
func (c *cluster) waitOnline() {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		for _, h := range c.hosts {
			if !c.cp.Server.Fleet().Online(h.id) {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond, "agents never came online; see their logs above")
}

// host returns a host by id.
func (c *cluster) host(id string) *aemHost {
	h := c.byID[id]
	require.NotNil(c.t, h, "no host %s", id)
	return h
}

// upload builds the packages, stores them on the control plane and
// returns their artifacts in the order given.
func (c *cluster) upload(defs []pkgDef) []task.Artifact {
	c.t.Helper()
	var arts []task.Artifact
	for _, d := range defs {
		data := aempkgtest.Package(aempkgtest.Spec{Group: group, Name: d.name, Version: "1.0", Dependencies: d.deps})
		sum, size, err := c.cp.Server.Blobs().Put(bytes.NewReader(data))
		require.NoError(c.t, err)
		a := task.Artifact{SHA256: sum, Size: size, Name: d.name + "-1.0.zip"}
		var deps []string
		for _, n := range d.dependsOn {
			deps = append(deps, pid(n))
		}
		c.deps[pid(d.name)] = deps
		c.arts[d.name] = a
		arts = append(arts, a)
	}
	return arts
}

// pick returns the uploaded artifacts of the named packages.
func (c *cluster) pick(names ...string) []task.Artifact {
	var out []task.Artifact
	for _, n := range names {
		a, ok := c.arts[n]
		require.True(c.t, ok, "package %s not uploaded", n)
		out = append(out, a)
	}
	return out
}

// assign creates one PackageInstall task per host in execution exec and
// returns the task ids in host order.
func (c *cluster) assign(exec string, arts []task.Artifact, hosts ...string) []string {
	c.t.Helper()
	var specs []task.Spec
	var ids []string
	for _, h := range hosts {
		id, err := task.ID(exec, "deploy", h)
		require.NoError(c.t, err)
		specs = append(specs, task.Spec{ID: id, ExecutionID: exec, Step: "deploy", HostID: h,
			Timeout: 2 * time.Minute, Kind: task.PackageInstall{Packages: arts}})
		ids = append(ids, id)
	}
	require.NoError(c.t, c.cp.Server.Fleet().Assign(context.Background(), specs...))
	return ids
}

// await waits for a task's result at the control plane.
func (c *cluster) await(id string) (*task.Result, *task.PackageInstallOutput) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r, err := c.cp.Server.Fleet().Await(ctx, id)
	require.NoError(c.t, err, "no result for %s", id)
	out, ok := r.Output.(*task.PackageInstallOutput)
	require.True(c.t, ok, "task %s: output is %T, want *task.PackageInstallOutput (status %s, error %q)", id, r.Output, r.Status, r.Error)
	return r, out
}

// requireResultOnce checks that the control plane took the task's result
// exactly once: one result event (published only for the first stored
// result) and no duplicate result counted by the store.
func (c *cluster) requireResultOnce(id string) {
	c.t.Helper()
	// Await returns when the result is stored; the event follows it.
	require.Eventually(c.t, func() bool { return len(c.events.results(id)) > 0 }, 10*time.Second, 5*time.Millisecond)
	require.Len(c.t, c.events.results(id), 1, "result events of %s", id)
	st, err := c.cp.Server.Store().Task(id)
	require.NoError(c.t, err)
	require.True(c.t, st.Done)
	require.Zero(c.t, st.Duplicates, "the agent sent the result of %s more than once", id)
}

// requireDependencyOrder checks that in order (package ids as AEM
// installed them) every package comes after each of its dependencies.
func (c *cluster) requireDependencyOrder(order []string) {
	c.t.Helper()
	for i, id := range order {
		for _, d := range c.deps[id] {
			j := slices.Index(order, d)
			require.GreaterOrEqual(c.t, j, 0, "%s was installed but its dependency %s never was (order %v)", id, d, order)
			require.Less(c.t, j, i, "%s was installed before its dependency %s (order %v)", id, d, order)
		}
	}
}

// ---- the simulator's view ----

// installOrder lists the packages AEM installed, in order, from the
// request log.
func installOrder(reqs []sim.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.Installed...)
	}
	return out
}

// only filters requests by cmd and, when pkg is not empty, by package.
func only(reqs []sim.Request, cmd, pkg string) []sim.Request {
	var out []sim.Request
	for _, r := range reqs {
		if r.Cmd == cmd && (pkg == "" || r.Package == pkg) {
			out = append(out, r)
		}
	}
	return out
}

// installsOf returns the install requests for package id, also those an
// injected fault answered before the simulator read the package (their
// Package field is empty; their path names it).
func installsOf(reqs []sim.Request, id string) []sim.Request {
	parts := strings.Split(id, ":")
	path := "/etc/packages/" + parts[0] + "/" + parts[1] + "-" + parts[2] + ".zip"
	var out []sim.Request
	for _, r := range reqs {
		if r.Cmd == "install" && (r.Package == id || strings.HasSuffix(r.Path, path)) {
			out = append(out, r)
		}
	}
	return out
}

// after returns the requests with a sequence number above seq.
func after(reqs []sim.Request, seq int64) []sim.Request {
	var out []sim.Request
	for _, r := range reqs {
		if r.Seq > seq {
			out = append(out, r)
		}
	}
	return out
}

// lastSeq is the sequence number of the last logged request (0 if none).
func lastSeq(reqs []sim.Request) int64 {
	if len(reqs) == 0 {
		return 0
	}
	return reqs[len(reqs)-1].Seq
}

// cmds renders requests as "cmd package" lines for readable assertions.
func cmds(reqs []sim.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, strings.TrimSpace(r.Cmd+" "+r.Package))
	}
	return out
}

// field maps requests to one of their fields.
func field[T any](reqs []sim.Request, f func(sim.Request) T) []T {
	var out []T
	for _, r := range reqs {
		out = append(out, f(r))
	}
	return out
}

// onceEach is the InstallCounts map of ids each installed exactly once.
func onceEach(ids ...string) map[string]int {
	m := map[string]int{}
	for _, id := range ids {
		m[id] = 1
	}
	return m
}

// allIDs lists the ids of defs.
func allIDs(defs []pkgDef) []string {
	var out []string
	for _, d := range defs {
		out = append(out, pid(d.name))
	}
	return out
}

// ---- the result's view ----

// outcomeIDs lists the outcome ids in order.
func outcomeIDs(out *task.PackageInstallOutput) []string {
	var s []string
	for _, p := range out.Packages {
		s = append(s, p.ID)
	}
	return s
}

// outcome returns the outcome for id.
func outcome(t *testing.T, out *task.PackageInstallOutput, id string) task.PackageOutcome {
	t.Helper()
	for _, p := range out.Packages {
		if p.ID == id {
			return p
		}
	}
	require.Failf(t, "no outcome", "no outcome for %s in %v", id, outcomeIDs(out))
	return task.PackageOutcome{}
}

// ---- fleet events ----

// eventLog records the control plane's fleet events for a test.
type eventLog struct {
	mu     sync.Mutex
	events []fleet.Event
}

func subscribe(t *testing.T, f *fleet.Fleet) *eventLog {
	l := &eventLog{}
	// A full buffer drops events rather than blocking the fleet; this one
	// is far larger than any test produces.
	ch, stop := f.Subscribe(1 << 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range ch {
			l.mu.Lock()
			l.events = append(l.events, e)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	return l
}

func (l *eventLog) of(kind fleet.EventKind, taskID string) []fleet.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []fleet.Event
	for _, e := range l.events {
		if e.Kind == kind && e.TaskID == taskID {
			out = append(out, e)
		}
	}
	return out
}

func (l *eventLog) results(taskID string) []fleet.Event { return l.of(fleet.EventResult, taskID) }

// progressLines returns the task's progress log lines.
func (l *eventLog) progressLines(taskID string) []string {
	var out []string
	for _, e := range l.of(fleet.EventProgress, taskID) {
		if e.Message != "" {
			out = append(out, e.Message)
		}
	}
	return out
}

// ---- the agent process ----

// agentProc is one run of the deckhand-agent binary.
type agentProc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and its output is copied
}

// start runs the agent binary for h with env added to this process's
// environment; it is stopped (SIGTERM) when the test ends.
func (h *aemHost) start(env ...string) *agentProc {
	t := h.c.t
	t.Helper()
	name := "agent-" + h.id
	cmd := exec.Command(agentBin, "--config", h.cfgPath)
	cmd.Env = append(withoutFailpoints(os.Environ()), env...)
	sink := newLogSink(t, name, filepath.Join(h.dir, "agent.log"))
	cmd.Stdout, cmd.Stderr = sink, sink
	require.NoError(t, cmd.Start())
	p := &agentProc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	h.agent = p
	return p
}

// withoutFailpoints drops failpoint settings inherited from the shell, so
// only a test's own failpoints apply.
func withoutFailpoints(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		return strings.HasPrefix(kv, "DECKHAND_FAILPOINT")
	})
}

// stop ends the agent with SIGTERM, as an operator would, and kills it if
// it does not exit in time.
func (p *agentProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop within 20s of SIGTERM; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitExit waits for the process to exit on its own and returns how.
func (p *agentProc) waitExit(timeout time.Duration) *os.ProcessState {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState
	case <-time.After(timeout):
		require.FailNow(p.t, p.name+" did not exit", "waited %v", timeout)
		return nil
	}
}

// requireKilled checks that the process died of SIGKILL (the failpoint's
// doing, not a crash of its own).
func requireKilled(t *testing.T, st *os.ProcessState, name string) {
	t.Helper()
	ws, ok := st.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled() && ws.Signal() == syscall.SIGKILL, "%s should have died of SIGKILL at its failpoint, got %v", name, st)
}

// failpointHits counts the hits of point in a failpoint log.
func failpointHits(t *testing.T, path, point string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if l == point {
			n++
		}
	}
	return n
}

// logSink copies a child's output into a file (kept with the data dir) and
// into the test log line by line, one prefix per agent, and watches for
// the race detector's report.
type logSink struct {
	mu   sync.Mutex
	t    *testing.T
	name string
	f    *os.File
	buf  []byte
	done bool // set when the test ends: t.Log must not be called after
	race bool
}

func newLogSink(t *testing.T, name, path string) *logSink {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	s := &logSink{t: t, name: name, f: f}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.buf) > 0 {
			t.Log(s.name + ": " + string(s.buf))
		}
		s.done = true
		s.f.Close()
		if s.race {
			t.Errorf("%s reported a data race; see its log (%s)", name, path)
		}
	})
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return len(p), nil
	}
	_, _ = s.f.Write(p)
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		line := string(s.buf[:i])
		s.buf = s.buf[i+1:]
		if strings.Contains(line, "WARNING: DATA RACE") {
			s.race = true
		}
		s.t.Log(s.name + ": " + line)
	}
	return len(p), nil
}

// ---- seeds ----

// seeded returns a random source for a crash test and logs its seed;
// DECKHAND_E2E_SEED replays a run.
func seeded(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("DECKHAND_E2E_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "DECKHAND_E2E_SEED")
		seed = s
	}
	t.Logf("seed %d (replay with DECKHAND_E2E_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
