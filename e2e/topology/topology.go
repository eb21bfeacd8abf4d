// Package topology runs a whole Deckhand installation for end-to-end
// tests, all real: the deckhand-server and deckhand-agent binaries, one
// aemsim process per author and publish, a private Apache per dispatcher
// (e2e/harness/apache), and one HAProxy in front of the dispatchers with
// health checks (e2e/harness/haproxy). Agents enroll with join tokens
// printed by the real deckctl. Everything is on loopback and is stopped
// when the test ends.
package topology

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/e2e/harness/haproxy"
	"github.com/stretchr/testify/require"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds deckhand-server, deckhand-agent, deckctl and aemsim once
// per test binary and returns their directory.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deckhand-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", dir+"/", "./controlplane/cmd/deckhand-server", "./controlplane/cmd/deckctl", "./agent/cmd/deckhand-agent", "./e2e/aemsim")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binDir = dir
	})
	require.NoError(t, buildErr)
	return binDir
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Options shape the installation.
type Options struct {
	// Env is "prod" (default) or "stage".
	EnvType string
	Pairs   int // publish/dispatcher pairs, default 2
	// MaxUnavailable for production rollouts (default 1).
	MaxUnavailable int
	SkipLBChanges  bool
	// InvalidatePaths for the environment's cache flush.
	InvalidatePaths []string
	// NoHAProxy leaves the load balancer out (SkipLBChanges setups).
	NoHAProxy bool
	// AgentEnv is extra environment for agent processes (failpoints).
	AgentEnv map[string][]string
	// ServerEnv is extra environment for the server process.
	ServerEnv []string
}

// Proc is a running binary.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	Log  string
	done chan struct{}
	err  error
}

// Wait blocks until the process ends and returns its error.
func (p *Proc) Wait() error { <-p.done; return p.err }

// Exited reports whether the process ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Topology is a running installation.
type Topology struct {
	t        testing.TB
	Opts     Options
	Bin      string
	Dir      string
	Env      string
	Addr     string
	CredPath string
	Server   *Proc
	Agents   map[string]*Proc
	AEM      map[string]string // host -> aemsim base URL
	aemProcs map[string]*Proc
	Apache   map[string]*apache.Instance // dispatcher host -> Apache
	HAProxy  *haproxy.Instance
	Hosts    []Host
	agentCfg map[string]string
	mu       sync.Mutex
}

// Host is a declared host.
type Host struct {
	ID, Role string
	Pair     int
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// Start brings the installation up and waits until every agent is online.
func Start(t testing.TB, o Options) *Topology {
	t.Helper()
	apache.Require(t)
	if !o.NoHAProxy {
		haproxy.Require(t)
	}
	if o.EnvType == "" {
		o.EnvType = "prod"
	}
	if o.Pairs == 0 {
		o.Pairs = 2
	}
	if o.MaxUnavailable == 0 {
		o.MaxUnavailable = 1
	}
	tp := &Topology{t: t, Opts: o, Bin: Binaries(t), Dir: t.TempDir(), Env: o.EnvType + "-env", Agents: map[string]*Proc{},
		AEM: map[string]string{}, aemProcs: map[string]*Proc{}, Apache: map[string]*apache.Instance{}, agentCfg: map[string]string{}}
	tp.Hosts = append(tp.Hosts, Host{ID: "author1", Role: "author"})
	for i := 1; i <= o.Pairs; i++ {
		tp.Hosts = append(tp.Hosts, Host{ID: fmt.Sprintf("publish%d", i), Role: "publish", Pair: i}, Host{ID: fmt.Sprintf("dispatcher%d", i), Role: "dispatcher", Pair: i})
	}

	// AEM instances and Apache dispatchers.
	for _, h := range tp.Hosts {
		if h.Role == "dispatcher" {
			tp.Apache[h.ID] = apache.Start(t, apache.Config{})
			continue
		}
		tp.startAEM(h.ID)
	}
	if !o.NoHAProxy {
		var servers []haproxy.Server
		for _, h := range tp.Hosts {
			if h.Role == "dispatcher" {
				servers = append(servers, haproxy.Server{Name: h.ID, Addr: tp.Apache[h.ID].Addr})
			}
		}
		tp.HAProxy = haproxy.Start(t, haproxy.Config{Servers: servers, CheckPath: "/health.html", CheckInter: 200 * time.Millisecond, Rise: 2, Fall: 2})
	}

	// The control plane.
	tp.Addr = freeAddr(t)
	var hosts strings.Builder
	for _, h := range tp.Hosts {
		if h.Pair > 0 {
			fmt.Fprintf(&hosts, "      - {id: %s, role: %s, pair: %d}\n", h.ID, h.Role, h.Pair)
		} else {
			fmt.Fprintf(&hosts, "      - {id: %s, role: %s}\n", h.ID, h.Role)
		}
	}
	paths := ""
	if len(o.InvalidatePaths) > 0 {
		paths = "    invalidate_paths: [" + strings.Join(o.InvalidatePaths, ", ") + "]\n"
	}
	skip := ""
	if o.SkipLBChanges {
		skip = "    skip_lb_changes: true\n"
	}
	cfg := fmt.Sprintf("listen: %s\nmetrics_listen: 127.0.0.1:0\ndata_dir: %s\nheartbeat_interval: 1s\nlog_level: debug\nenvironments:\n  - name: %s\n    type: %s\n    max_unavailable: %d\n    step_timeout: 5m\n%s%s    hosts:\n%s",
		tp.Addr, filepath.Join(tp.Dir, "server"), tp.Env, o.EnvType, o.MaxUnavailable, paths, skip, hosts.String())
	require.NoError(t, os.WriteFile(filepath.Join(tp.Dir, "server.yaml"), []byte(cfg), 0o600))
	tp.CredPath = filepath.Join(tp.Dir, "server", "admin-credentials.yaml")
	tp.StartServer()

	for _, h := range tp.Hosts {
		tp.writeAgentConfig(h)
		tp.StartAgent(h.ID)
	}
	tp.WaitOnline()
	return tp
}

func (tp *Topology) startAEM(host string) {
	t := tp.t
	addr := freeAddr(t)
	p := tp.spawn("aemsim-"+host, nil, filepath.Join(tp.Bin, "aemsim"), "--listen", addr, "--user", "admin", "--password", "admin", "--data", filepath.Join(tp.Dir, "aem", host), "--dependency-handling", "strict")
	tp.aemProcs[host] = p
	url := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(url + "/_sim/health")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	}, 15*time.Second, 20*time.Millisecond, "aemsim for %s did not start; see %s", host, p.Log)
	tp.AEM[host] = url
}

// spawn starts a binary with its output in a log file, stopped (TERM,
// then KILL) when the test ends.
func (tp *Topology) spawn(name string, env []string, bin string, args ...string) *Proc {
	t := tp.t
	logPath := filepath.Join(tp.Dir, "logs", name+".log")
	require.NoError(t, os.MkdirAll(filepath.Dir(logPath), 0o755))
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	p := &Proc{Name: name, cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); lf.Close(); close(p.done) }()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Stop ends the process with SIGTERM (SIGKILL after 15 s).
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process with SIGKILL at once, as a crash would.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// StartServer starts (or restarts) deckhand-server on the same address
// and data dir.
func (tp *Topology) StartServer() {
	tp.Server = tp.spawn("server", tp.Opts.ServerEnv, filepath.Join(tp.Bin, "deckhand-server"), "--config", filepath.Join(tp.Dir, "server.yaml"))
	require.Eventually(tp.t, func() bool {
		if _, err := os.Stat(tp.CredPath); err != nil {
			return false
		}
		_, err := tp.Deckctl("agents", "list", "-o", "json")
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "server did not come up; see %s", tp.Server.Log)
}

func (tp *Topology) writeAgentConfig(h Host) {
	t := tp.t
	out, err := tp.Deckctl("tokens", "create", "--host", h.ID, "-o", "json")
	require.NoError(t, err)
	var tok struct {
		Token         string `json:"token"`
		CAFingerprint string `json:"ca_fingerprint"`
	}
	require.NoError(t, json.Unmarshal(out, &tok))
	data := filepath.Join(tp.Dir, "agents", h.ID)
	y := fmt.Sprintf("host_id: %s\nserver: %s\ndata_dir: %s\njoin_token: %s\nca_fingerprint: %s\nlog_level: debug\nmetrics_listen: 127.0.0.1:0\nreconnect:\n  stagger: 200ms\n  base_backoff: 100ms\n  max_backoff: 1s\n",
		h.ID, tp.Addr, data, tok.Token, tok.CAFingerprint)
	switch h.Role {
	case "author", "publish":
		y += fmt.Sprintf("aem:\n  base_url: %s\n  user: admin\n  password: admin\n  request_timeout: 30s\n  poll_interval: 200ms\n  dependency_handling: strict\n", tp.AEM[h.ID])
	case "dispatcher":
		in := tp.Apache[h.ID]
		q := func(argv []string) string {
			b, _ := json.Marshal(argv)
			return string(b)
		}
		y += fmt.Sprintf("dispatcher:\n  httpd_dir: %s\n  configtest: %s\n  reload: %s\n  backup_dir: %s\n  flush:\n    mode: docroot\n    docroot: %s\n",
			in.Dir, q(in.ConfigTestArgv()), q(in.GracefulArgv()), filepath.Join(data, "backups"), in.DocRoot)
		if tp.HAProxy != nil {
			y += fmt.Sprintf("lb:\n  kind: haproxy\n  haproxy:\n    socket: %s\n    backend: %s\n    server: %s\n    drain_timeout: 10s\n    up_timeout: 30s\n    poll_interval: 20ms\n  health_url: %s/health.html\n  ready_interval: 20ms\n",
				tp.HAProxy.Socket, haproxy.Backend, h.ID, in.URL)
		}
	}
	p := filepath.Join(tp.Dir, h.ID+".yaml")
	require.NoError(t, os.WriteFile(p, []byte(y), 0o600))
	tp.agentCfg[h.ID] = p
}

// StartAgent starts (or restarts) the agent of host.
func (tp *Topology) StartAgent(host string) *Proc {
	env := tp.Opts.AgentEnv[host]
	p := tp.spawn("agent-"+host, env, filepath.Join(tp.Bin, "deckhand-agent"), "--config", tp.agentCfg[host])
	tp.mu.Lock()
	tp.Agents[host] = p
	tp.mu.Unlock()
	return p
}

// WaitOnline waits until every declared host's agent is online.
func (tp *Topology) WaitOnline() {
	tp.t.Helper()
	require.Eventually(tp.t, func() bool {
		out, err := tp.Deckctl("agents", "list", "-o", "json")
		if err != nil {
			return false
		}
		var agents []struct{ Online bool }
		if json.Unmarshal(out, &agents) != nil {
			return false
		}
		for _, a := range agents {
			if !a.Online {
				return false
			}
		}
		return len(agents) == len(tp.Hosts)
	}, 60*time.Second, 100*time.Millisecond, "agents did not come online; logs in %s", filepath.Join(tp.Dir, "logs"))
}

// Deckctl runs the real deckctl with the admin credentials.
func (tp *Topology) Deckctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(tp.Bin, "deckctl"), append([]string{"--credentials", tp.CredPath, "--server", tp.Addr}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("deckctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Dump prints every log file (for a failing test).
func (tp *Topology) Dump() {
	files, _ := filepath.Glob(filepath.Join(tp.Dir, "logs", "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 20000 {
			b = b[len(b)-20000:]
		}
		tp.t.Logf("==== %s\n%s", filepath.Base(f), b)
	}
}
