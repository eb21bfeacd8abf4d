package dispatcher_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	disp "github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// hostID is the dispatcher host of servertest.DefaultTopology.
const hostID = "dispatcher1"

// hostOptions tune a host.
type hostOptions struct {
	// wrapConfigTest and wrapReload, when set, replace Apache's own
	// commands with what they return for them (wrappers that sleep, for
	// the SIGTERM tests).
	wrapConfigTest, wrapReload func(argv []string) []string
	// backupsKeep is dispatcher.backups_keep (0: the default).
	backupsKeep int
	// logLevel is the agent's log level (default debug).
	logLevel string
}

// host is one dispatcher host under test: a private real Apache, the
// control plane in this process, and the real deckhand-agent binary run
// as a child process on one data dir, restarted as often as a test likes.
type host struct {
	t   testing.TB
	cp  *servertest.Control
	in  *apache.Instance
	bin string
	// dir is kept when the test fails: the agent's data dir, its log,
	// failpoint logs, the server log and a copy of the httpd dir.
	dir     string
	dataDir string
	cfgPath string
	logPath string
	// managed are the managed dirs (the agent's defaults).
	managed []string
	agent   *agentProc
}

// newHost starts Apache and the control plane and writes the agent's
// config (with a join token: the first start enrolls). No agent runs yet.
func newHost(t testing.TB, o hostOptions) *host {
	t.Helper()
	apache.Require(t)
	bin := os.Getenv("DECKHAND_AGENT_BIN")
	if bin == "" {
		bin = filepath.Join(topology.Binaries(t), "deckhand-agent")
	}
	dir := keptDir(t)
	h := &host{t: t, bin: bin, dir: dir, dataDir: filepath.Join(dir, "agent"), logPath: filepath.Join(dir, "agent.log")}
	// The server logs to a file: at trace level through t.Log it would
	// bury the story (and b.Log always prints).
	serverLog, err := os.OpenFile(filepath.Join(dir, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	t.Cleanup(func() { serverLog.Close() })
	h.cp = servertest.Start(t, servertest.Options{Server: func(so *server.Options) {
		so.Logger = hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.Debug, Output: serverLog, TimeFormat: "15:04:05.000"})
	}})
	h.in = apache.Start(t, apache.Config{})
	// Registered after apache.Start, so it runs before Apache's cleanup
	// removes the httpd dir.
	t.Cleanup(func() {
		if t.Failed() {
			_ = exec.Command("cp", "-a", h.in.Dir, filepath.Join(dir, "httpd-at-failure")).Run()
			h.dumpLog()
		}
	})
	configTest, reload := h.in.ConfigTestArgv(), h.in.GracefulArgv()
	if o.wrapConfigTest != nil {
		configTest = o.wrapConfigTest(configTest)
	}
	if o.wrapReload != nil {
		reload = o.wrapReload(reload)
	}
	if o.logLevel == "" {
		o.logLevel = "debug"
	}
	q := func(argv []string) string { b, _ := json.Marshal(argv); return string(b) }
	y := fmt.Sprintf("log_level: %s\ndispatcher:\n  httpd_dir: %s\n  configtest: %s\n  reload: %s\n  command_timeout: 60s\n",
		o.logLevel, h.in.Dir, q(configTest), q(reload))
	if o.backupsKeep > 0 {
		y += fmt.Sprintf("  backups_keep: %d\n", o.backupsKeep)
	}
	h.cfgPath = filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(h.cfgPath, []byte(h.cp.AgentConfig(hostID, h.dataDir, y)), 0o600))
	cfg := disp.Config{}
	cfg.ApplyDefaults(h.dataDir)
	h.managed = cfg.ManagedDirs
	return h
}

// keptDir is removed when the test passes and kept, with its path logged,
// when it fails.
func keptDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "deckhand-e2e-dispatcher-"+strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())+"-")
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

// dumpLog prints the tail of the agent's log (all its runs, appended).
func (h *host) dumpLog() {
	b, err := os.ReadFile(h.logPath)
	if err != nil {
		h.t.Logf("no agent log: %v", err)
		return
	}
	const max = 64 << 10
	if len(b) > max {
		b = append([]byte("[...]\n"), b[len(b)-max:]...)
	}
	h.t.Logf("agent log (%s):\n%s", h.logPath, b)
}

// ---- the agent process ----

// agentProc is one run of the deckhand-agent binary.
type agentProc struct {
	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs the agent with env added (failpoints); it is stopped
// (SIGTERM) when the test ends. Its output goes to the host's agent log.
func (h *host) start(env ...string) *agentProc {
	h.t.Helper()
	lf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(h.t, err)
	fmt.Fprintf(lf, "==== %s start %s\n", time.Now().Format("15:04:05.000"), strings.Join(env, " "))
	cmd := exec.Command(h.bin, "--config", h.cfgPath)
	cmd.Env = append(withoutFailpoints(os.Environ()), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Pdeathsig: the agent never outlives a test process that died.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(h.t, cmd.Start())
	p := &agentProc{t: h.t, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	h.t.Cleanup(p.stop)
	h.agent = p
	return p
}

// withoutFailpoints drops failpoint settings inherited from the shell.
func withoutFailpoints(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "DECKHAND_FAILPOINT") })
}

func (p *agentProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the agent with SIGTERM, as systemd would, and kills it if it
// does not exit in time.
func (p *agentProc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("deckhand-agent pid %d did not stop within 30s of SIGTERM; killing it", p.cmd.Process.Pid)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitExit waits for the process to exit on its own.
func (p *agentProc) waitExit(timeout time.Duration) *os.ProcessState {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState
	case <-time.After(timeout):
		require.FailNow(p.t, "deckhand-agent did not exit", "pid %d, waited %v", p.cmd.Process.Pid, timeout)
		return nil
	}
}

// killedBySIGKILL reports whether the process died of SIGKILL (the
// failpoint's doing, not a crash of its own).
func killedBySIGKILL(st *os.ProcessState) bool {
	ws, ok := st.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// ---- tasks ----

// upload stores an artifact on the control plane.
func (h *host) upload(a apache.Artifact) task.Artifact {
	h.t.Helper()
	p := filepath.Join(h.t.TempDir(), "artifact.zip")
	sha, size, err := a.Write(p)
	require.NoError(h.t, err)
	f, err := os.Open(p)
	require.NoError(h.t, err)
	defer f.Close()
	sum, n, err := h.cp.Server.Blobs().Put(f)
	require.NoError(h.t, err)
	require.Equal(h.t, sha, sum)
	require.Equal(h.t, size, n)
	return task.Artifact{SHA256: sum, Size: n, Name: "dispatcher.zip"}
}

// assign sends a DispatcherDeploy to the host (delivered when its agent
// is connected) and returns the task id.
func (h *host) assign(exec string, a task.Artifact) string {
	h.t.Helper()
	id, err := task.ID(exec, "deploy", hostID)
	require.NoError(h.t, err)
	spec := task.Spec{ID: id, ExecutionID: exec, Step: "deploy", HostID: hostID, Timeout: 5 * time.Minute, Kind: task.DispatcherDeploy{Artifact: a}}
	require.NoError(h.t, h.cp.Server.Fleet().Assign(context.Background(), spec))
	return id
}

// await waits for a task's result at the control plane.
func (h *host) await(id string, timeout time.Duration) *task.Result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := h.cp.Server.Fleet().Await(ctx, id)
	require.NoError(h.t, err, "no result for %s", id)
	return r
}

// output is the result's DispatcherOutput (never nil: an empty one when
// the agent sent none).
func output(r *task.Result) *task.DispatcherOutput {
	if o, ok := r.Output.(*task.DispatcherOutput); ok && o != nil {
		return o
	}
	return &task.DispatcherOutput{}
}

// done reports whether the control plane has the task's result, and how
// many duplicates of it it dropped.
func (h *host) done(id string) (bool, int) {
	h.t.Helper()
	st, err := h.cp.Server.Store().Task(id)
	require.NoError(h.t, err)
	return st.Done, st.Duplicates
}

// deploy runs one deployment with a clean agent start and stop.
func (h *host) deploy(exec string, a task.Artifact, env ...string) *task.Result {
	h.t.Helper()
	p := h.start(env...)
	defer p.stop()
	return h.await(h.assign(exec, a), 2*time.Minute)
}

// ---- what is on the host ----

// live describes the managed dirs of the live httpd dir.
func (h *host) live() *disp.Manifest {
	h.t.Helper()
	m, err := disp.TreeManifest(h.in.Dir, h.managed)
	require.NoError(h.t, err)
	return m
}

// inodes maps the inode numbers of the regular files of the managed dirs
// below root (the httpd dir or a backup's tree) to their paths.
func (h *host) inodes(root string) map[uint64]string {
	h.t.Helper()
	out := map[uint64]string{}
	for _, d := range h.managed {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if de.Type().IsRegular() {
				fi, err := de.Info()
				if err != nil {
					return err
				}
				out[fi.Sys().(*syscall.Stat_t).Ino] = p
			}
			return nil
		})
		require.NoError(h.t, err)
	}
	return out
}

// page is what Apache answers for /page (the harness rewrites it to a
// version file chosen by conf.d/rewrites/default_rewrite.rules).
func (h *host) page() string {
	code, body, err := h.in.Get("/page")
	if err != nil {
		return "error: " + err.Error()
	}
	if code != 200 {
		return fmt.Sprintf("status %d", code)
	}
	return body
}

// requireServes waits until Apache answers /page with want. Right after a
// graceful reload Apache may take up to a second to start the new
// generation's workers; anything but the old or new page on the way is a
// failure.
func (h *host) requireServes(want string, allowed ...string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		got = h.page()
		if got == want {
			return
		}
		require.Contains(h.t, append(allowed, want), got, "Apache served something that is neither the old nor the new config's page")
		time.Sleep(10 * time.Millisecond) // poll; bounded by the deadline
	}
	require.Failf(h.t, "Apache does not serve the live config", "/page = %q, want %q", got, want)
}

// backupsList runs `deckhand-agent backups list -o json` (the agent must
// be stopped) and returns the records.
func (h *host) backupsList() []backupRecord {
	h.t.Helper()
	out, err := exec.Command(h.bin, "backups", "list", "--config", h.cfgPath, "-o", "json").CombinedOutput()
	require.NoError(h.t, err, "backups list: %s", out)
	var recs []backupRecord
	require.NoError(h.t, json.Unmarshal(out, &recs), "%s", out)
	return recs
}

// backupRecord is one entry of `backups list -o json`.
type backupRecord struct {
	ID           string    `json:"id"`
	TaskID       string    `json:"task_id"`
	Kind         string    `json:"kind"`
	CreatedAt    time.Time `json:"created_at"`
	Files        int       `json:"files"`
	Outcome      string    `json:"outcome"`
	Artifact     string    `json:"artifact"`
	RestoredFrom string    `json:"restored_from"`
	Path         string    `json:"path"`
}

// ---- failpoints and seeds ----

// readLines returns the lines of a failpoint log (empty if absent).
func readLines(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			out = append(out, l)
		}
	}
	require.NoError(t, sc.Err())
	return out
}

// envInt reads a positive integer from the environment.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	require.Positive(t, n, name)
	return n
}

// seeded returns a random source and logs its seed; E2E_DISPATCHER_SEED
// replays a run.
func seeded(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("E2E_DISPATCHER_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "E2E_DISPATCHER_SEED")
		seed = s
	}
	t.Logf("seed %d (replay with E2E_DISPATCHER_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// ---- artifacts ----

const (
	rulesV1 = "RewriteEngine On\nRewriteRule ^/page$ /v1.html [PT]\n"
	rulesV2 = "RewriteEngine On\nRewriteRule ^/page$ /v2.html [PT]\n"
	// rulesBad passes the agent's include checks and fails Apache's
	// configtest (AH00526 Invalid command 'Bogus').
	rulesBad = "RewriteEngine On\nRewriteRule ^/page$ /v3.html [PT]\nBogus directive\n"

	pageV1 = "version 1\n"
	pageV2 = "version 2\n"
	pageV3 = "version 3\n" // the bad config's page: never served
)

const rulesPath = "conf.d/rewrites/default_rewrite.rules"

// artifactV1 redeploys the harness layout unchanged (/page is version 1).
func artifactV1() apache.Artifact {
	a := apache.DefaultArtifact()
	a.Files[rulesPath] = rulesV1
	return a
}

// artifactV2 serves version 2, adds a file and a directory and drops one,
// so old and new trees differ in shape, not only in content.
func artifactV2() apache.Artifact {
	a := apache.DefaultArtifact()
	a.Files[rulesPath] = rulesV2
	a.Files["conf.d/zz_site_v2.conf"] = "# added by version 2\n"
	a.Files["conf.dispatcher.d/extra/v2_notes.any"] = "/notes \"v2\"\n"
	delete(a.Files, "conf.d/variables/custom.vars")
	return a
}

// artifactBad is version 2 with a syntax error Apache's configtest finds.
func artifactBad() apache.Artifact {
	a := artifactV2()
	a.Files[rulesPath] = rulesBad
	return a
}
