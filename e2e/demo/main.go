// Command demo is `make demo`: Deckhand's main job on one machine.
//
// In a temp dir it starts a control plane (real TLS, admin credentials
// from its first start), a stage environment (s-author, s-publish1,
// s-dispatcher1), a production environment (author1, publish1/2,
// dispatcher1/2) and a builder host; an aemsim (AEM Package Manager) per
// author and publish, a real Apache per dispatcher, HAProxy in front of the
// production dispatchers, and one deckhand-agent per host, each enrolled
// with a join token from deckctl. A sample project (three AEM packages in
// a dependency chain and a dispatcher configuration) is committed to a
// local git repository, and a full production pipeline execution of
// demo/main runs: build, code scan, stage deployment, security and
// performance testing, approval, schedule (now), production deployment
// pair by pair through HAProxy. The demo answers the approval and the
// schedule with the deckctl commands a person would type, then shows the
// new release served through HAProxy and where to look.
//
// It waits for Ctrl-C and then stops everything. With DEMO_EXIT=1 it
// checks the outcome and exits: 0 when the execution FINISHED and the new
// release is served, 1 with a one-line reason otherwise.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/e2e/harness/haproxy"
)

const (
	program     = "demo"
	pipelineRef = "demo/main"
	setupHint   = "sudo apt-get update && sudo apt-get install -y apache2 haproxy protobuf-compiler bubblewrap unzip socat curl git"
)

// host is one declared host.
type host struct {
	id, env, role string
	pair          int
}

var hosts = []host{
	{"builder1", "build", "builder", 0},
	{"s-author", "stage", "author", 0},
	{"s-publish1", "stage", "publish", 1},
	{"s-dispatcher1", "stage", "dispatcher", 1},
	{"author1", "prod", "author", 0},
	{"publish1", "prod", "publish", 1},
	{"dispatcher1", "prod", "dispatcher", 1},
	{"publish2", "prod", "publish", 2},
	{"dispatcher2", "prod", "dispatcher", 2},
}

type demo struct {
	ctx        context.Context
	bin        string
	dir        string
	logs       string
	exitAtOnce bool
	out        *console
	started    time.Time

	mu    sync.Mutex
	procs []*proc

	apaches      map[string]*apache.Instance
	hap          *haproxy.Instance
	aem          map[string]string // host -> aemsim URL
	addr         string            // server gRPC address
	creds        string
	serverMetric string
	agentMetrics map[string]string
	repo         string
	sandbox      string
	execID       string
	reaper       *exec.Cmd
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == reapFlag {
		parent, _ := strconv.Atoi(os.Args[3])
		reap(os.Args[2], parent)
		return
	}
	os.Exit(run())
}

func run() int {
	bin := flag.String("bin", "bin", "directory with deckhand-server, deckhand-agent, deckctl and aemsim (make build)")
	keep := flag.Bool("keep", false, "keep the temp dir after stopping")
	flag.Parse()
	out := &console{w: os.Stdout}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	absBin, err := filepath.Abs(*bin)
	if err != nil {
		out.printf("demo: FAILED: %v\n", err)
		return 1
	}
	d := &demo{ctx: ctx, bin: absBin, out: out, exitAtOnce: os.Getenv("DEMO_EXIT") == "1", started: time.Now(),
		apaches: map[string]*apache.Instance{}, aem: map[string]string{}, agentMetrics: map[string]string{}}
	if err := d.preflight(); err != nil {
		out.printf("demo: %s\n", oneLine(err.Error()))
		return 1
	}
	d.dir, err = os.MkdirTemp("", "deckhand-demo-")
	if err != nil {
		out.printf("demo: FAILED: %v\n", err)
		return 1
	}
	// Apache's workers (www-data) must reach the docroots inside it.
	if err := os.Chmod(d.dir, 0o755); err != nil {
		out.printf("demo: FAILED: %v\n", err)
		return 1
	}
	d.logs = filepath.Join(d.dir, "logs")
	if err := os.MkdirAll(d.logs, 0o755); err != nil {
		out.printf("demo: FAILED: %v\n", err)
		return 1
	}
	if err := d.startReaper(); err != nil {
		out.printf("demo: FAILED: %v\n", err)
		return 1
	}

	runErr := d.main()
	interrupted := errors.Is(runErr, errStopped) || (runErr != nil && ctx.Err() != nil)
	// From here a second Ctrl-C ends the demo at once (stop also cancels
	// ctx); the reaper then kills what is left.
	stop()
	n, left := d.stopAll()
	keepDir := *keep || (runErr != nil && !interrupted)
	if keepDir {
		out.printf("demo: stopped %d processes; temp dir kept: %s (logs in %s)\n", n, d.dir, d.logs)
	} else {
		os.RemoveAll(d.dir)
		out.printf("demo: stopped %d processes; removed %s\n", n, d.dir)
	}
	if left > 0 && runErr == nil {
		runErr = fmt.Errorf("%d processes were still running after the stop and were killed", left)
	}
	switch {
	case interrupted:
		out.printf("demo: interrupted\n")
		if d.exitAtOnce {
			return 1
		}
		return 0
	case runErr != nil:
		out.printf("demo: FAILED: %s\n", oneLine(runErr.Error()))
		return 1
	}
	return 0
}

// oneLine squeezes s into one line of at most 400 bytes (a reason may
// carry a whole log; the logs are kept).
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// preflight checks the binaries and the real components the README's setup
// installs.
func (d *demo) preflight() error {
	for _, b := range []string{"deckhand-server", "deckhand-agent", "deckctl", "aemsim"} {
		if _, err := os.Stat(filepath.Join(d.bin, b)); err != nil {
			return fmt.Errorf("FAILED: %s is not built in %s: run make build (or make demo)", b, d.bin)
		}
	}
	if _, err := exec.LookPath("git"); err != nil {
		return fmt.Errorf("FAILED: git is not installed; the demo's pipeline builds from a git repository. Install the README's setup: %s", setupHint)
	}
	if _, err := apache.Find(); err != nil {
		return fmt.Errorf("FAILED: Apache (apache2) is not installed (%v); the dispatchers are real Apache servers. Install the README's setup: %s", err, setupHint)
	}
	return nil
}

func (d *demo) say(format string, args ...any) {
	d.out.printf("demo: "+format+"\n", args...)
}

func (d *demo) main() error {
	d.say("working in %s (logs in %s)", d.dir, d.logs)

	// The sample project.
	repo, err := writeProject(filepath.Join(d.dir, "git"))
	if err != nil {
		return fmt.Errorf("sample project: %w", err)
	}
	d.repo = repo
	d.say("sample project demo-site %s in git repository %s (3 AEM packages core <- ui.frontend <- ui.apps, a dispatcher config)", release, repo)

	if err := d.startDispatchers(); err != nil {
		return err
	}
	if err := d.startAEM(); err != nil {
		return err
	}
	if err := d.startServer(); err != nil {
		return err
	}
	if err := d.startAgents(); err != nil {
		return err
	}
	if err := d.show("agents", "list"); err != nil {
		return err
	}
	if err := d.showSite("before the pipeline"); err != nil {
		return err
	}
	if err := d.runPipeline(); err != nil {
		return err
	}
	if err := d.verify(); err != nil {
		return err
	}
	d.whereToLook()
	if d.exitAtOnce {
		d.say("OK: execution %s of %s FINISHED in %s and release %s is served (DEMO_EXIT=1: stopping)", d.execID, pipelineRef, time.Since(d.started).Round(time.Second), release)
		return nil
	}
	d.say("everything keeps running; press Ctrl-C to stop it all")
	<-d.ctx.Done()
	return nil
}

// startDispatchers starts a real Apache per dispatcher and HAProxy in front
// of the production ones.
func (d *demo) startDispatchers() error {
	var prod []haproxy.Server
	for _, h := range hosts {
		if h.role != "dispatcher" {
			continue
		}
		in, err := apache.StartProcess(filepath.Join(d.dir, "apache", h.id), apache.Config{DocRoot: docRoot()})
		if err != nil {
			return fmt.Errorf("apache for %s: %w", h.id, err)
		}
		d.apaches[h.id] = in
		d.say("Apache for %-13s %s (httpd dir %s)", h.id, in.URL, in.Dir)
		if h.env == "prod" {
			prod = append(prod, haproxy.Server{Name: h.id, Addr: in.Addr})
		}
	}
	if _, err := haproxy.Find(); err != nil {
		d.say("HAProxy is not installed (%v): the production dispatchers use the healthfile load-balancer driver instead and the site is checked on each dispatcher directly. For HAProxy, install the README's setup: %s", err, setupHint)
		return nil
	}
	hap, err := haproxy.StartProcess(filepath.Join(d.dir, "haproxy"), haproxy.Config{Servers: prod, CheckPath: "/health.html", CheckInter: 200 * time.Millisecond, Rise: 2, Fall: 2})
	if err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	d.hap = hap
	d.say("HAProxy %s in front of dispatcher1 and dispatcher2 (health check GET /health.html every 200ms; runtime API %s)", hap.URL, hap.Socket)
	// Both servers UP before anything relies on the site.
	return poll(d.ctx, 15*time.Second, 50*time.Millisecond, func() bool {
		for _, s := range prod {
			st, err := hap.ReadStat(s.Name)
			if err != nil || st.Status != "UP" {
				return false
			}
		}
		return true
	})
}

// startAEM starts one aemsim per author and publish.
func (d *demo) startAEM() error {
	var names []string
	for _, h := range hosts {
		if h.role != "author" && h.role != "publish" {
			continue
		}
		var lastErr error
		for attempt := 0; attempt < 3; attempt++ {
			addr := mustFreeAddr()
			p, err := d.spawn("aemsim-"+h.id, nil, filepath.Join(d.bin, "aemsim"), "--listen", addr, "--user", "admin", "--password", "admin",
				"--data", filepath.Join(d.dir, "aem", h.id), "--dependency-handling", "strict")
			if err != nil {
				return err
			}
			url := "http://" + addr
			lastErr = poll(d.ctx, 15*time.Second, 20*time.Millisecond, func() bool {
				code, _, err := get(url + "/_sim/health")
				return (err == nil && code == 200) || p.exited()
			})
			if lastErr == nil && !p.exited() {
				d.aem[h.id] = url
				break
			}
			if lastErr == nil {
				lastErr = fmt.Errorf("aemsim for %s exited: %s", h.id, tail(p.log, 1))
			}
		}
		if lastErr != nil {
			return lastErr
		}
		names = append(names, h.id+" "+d.aem[h.id])
	}
	d.say("aemsim (AEM Package Manager) for %s", strings.Join(names, ", "))
	return nil
}

func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func qs(argv []string) string {
	b, _ := json.Marshal(argv)
	return string(b)
}

func (d *demo) serverConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# deckhand-server config written by make demo\nlisten: %s\nmetrics_listen: %s\ndata_dir: %s\nheartbeat_interval: 1s\nlog_level: info\n",
		d.addr, d.serverMetric, q(filepath.Join(d.dir, "server")))
	b.WriteString("environments:\n")
	env := func(name, typ, extra string) {
		fmt.Fprintf(&b, "  - name: %s\n    type: %s\n%s    hosts:\n", name, typ, extra)
		for _, h := range hosts {
			if h.env != name {
				continue
			}
			switch {
			case h.role == "dispatcher" && h.env == "stage":
				fmt.Fprintf(&b, "      - {id: %s, role: %s, pair: %d, url: %s}\n", h.id, h.role, h.pair, q(d.apaches[h.id].URL))
			case h.pair > 0:
				fmt.Fprintf(&b, "      - {id: %s, role: %s, pair: %d}\n", h.id, h.role, h.pair)
			default:
				fmt.Fprintf(&b, "      - {id: %s, role: %s}\n", h.id, h.role)
			}
		}
	}
	env("build", "dev", "")
	// Stage has one dispatcher and no load balancer in front of it.
	env("stage", "stage", "    skip_lb_changes: true\n    invalidate_paths: [/content/demo]\n    step_timeout: 5m\n")
	env("prod", "prod", "    max_unavailable: 1\n    invalidate_paths: [/content/demo]\n    step_timeout: 5m\n")
	fmt.Fprintf(&b, `programs:
  - name: %s
    pipelines:
      - name: main
        repository: %s
        branch: main
        stage_environment: stage
        production_environment: prod
        build: {profile: demo-build, timeout: 5m}
        code_quality: {profile: quality}
        security: {enabled: true}
        performance:
          enabled: true
          urls: [%s]
          duration: 10s
          rate: 10
          kpis: {p95: 1s, page_views_per_minute: 300}
        approval: true
        schedule: true
        cse_support: false
`, program, q(d.repo), pagePath)
	return b.String()
}

func (d *demo) startServer() error {
	cfgPath := filepath.Join(d.dir, "server.yaml")
	d.creds = filepath.Join(d.dir, "server", "admin-credentials.yaml")
	for attempt := 1; ; attempt++ {
		d.addr = mustFreeAddr()
		d.serverMetric = mustFreeAddr()
		if err := os.WriteFile(cfgPath, []byte(d.serverConfig()), 0o600); err != nil {
			return err
		}
		p, err := d.spawn("server", nil, filepath.Join(d.bin, "deckhand-server"), "--config", cfgPath)
		if err != nil {
			return err
		}
		err = poll(d.ctx, 30*time.Second, 50*time.Millisecond, func() bool {
			if p.exited() {
				return true
			}
			if _, err := os.Stat(d.creds); err != nil {
				return false
			}
			_, err := d.deckctl("whoami")
			return err == nil
		})
		if p.exited() {
			// Another program took the port between picking and binding.
			if strings.Contains(tail(p.log, 5), "address already in use") && attempt < 3 {
				continue
			}
			return fmt.Errorf("deckhand-server exited: %s", tail(p.log, 3))
		}
		if err != nil {
			if d.ctx.Err() != nil {
				return errStopped
			}
			return fmt.Errorf("deckhand-server did not answer on %s: %w; see %s", d.addr, err, p.log)
		}
		break
	}
	d.say("deckhand-server on %s (TLS with its own CA; config %s); its first start wrote the admin credentials to %s", d.addr, cfgPath, d.creds)
	d.say("below, deckctl means: %s --credentials %s (or export DECKHAND_CREDENTIALS=%s)", filepath.Join(d.bin, "deckctl"), d.creds, d.creds)
	return nil
}

// deckctlEnv is the environment of deckctl runs: the admin credentials,
// and none of the caller's DECKHAND_* settings that would point elsewhere.
func (d *demo) deckctlEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DECKHAND_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "DECKHAND_CREDENTIALS="+d.creds)
}

func (d *demo) deckctlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "deckctl"), args...)
	cmd.Env = d.deckctlEnv()
	return cmd
}

// deckctl runs deckctl quietly and returns its stdout; an error carries
// its stderr.
func (d *demo) deckctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 60*time.Second)
	defer cancel()
	cmd := d.deckctlCmd(ctx, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("deckctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// show prints the command a person would type, runs it and prints its
// output.
func (d *demo) show(args ...string) error {
	d.out.printf("\n$ deckctl %s\n", strings.Join(args, " "))
	ctx, cancel := context.WithTimeout(d.ctx, 60*time.Second)
	defer cancel()
	cmd := d.deckctlCmd(ctx, args...)
	b, err := cmd.CombinedOutput()
	d.out.block("  ", string(b))
	if err != nil {
		return fmt.Errorf("deckctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
	}
	return nil
}

// bwrapWorks reports whether bubblewrap can build a sandbox here (it needs
// user namespaces or root).
func bwrapWorks() bool {
	if _, err := os.Stat("/usr/bin/bwrap"); err != nil {
		return false
	}
	cmd := exec.Command("/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true")
	return cmd.Run() == nil
}

func (d *demo) agentConfig(h host, token, fingerprint string) string {
	data := filepath.Join(d.dir, "agents", h.id)
	metrics := mustFreeAddr()
	d.agentMetrics[h.id] = metrics
	y := fmt.Sprintf("# deckhand-agent config written by make demo\nhost_id: %s\nserver: %s\ndata_dir: %s\njoin_token: %s\nca_fingerprint: %s\nlog_level: info\nmetrics_listen: %s\nreconnect:\n  stagger: 200ms\n  base_backoff: 100ms\n  max_backoff: 1s\n",
		h.id, d.addr, q(data), token, q(fingerprint), metrics)
	switch h.role {
	case "author", "publish":
		y += fmt.Sprintf("aem:\n  base_url: %s\n  user: admin\n  password: admin\n  request_timeout: 30s\n  poll_interval: 200ms\n  dependency_handling: strict\n", d.aem[h.id])
	case "dispatcher":
		in := d.apaches[h.id]
		y += fmt.Sprintf("dispatcher:\n  httpd_dir: %s\n  configtest: %s\n  reload: %s\n  backup_dir: %s\n  flush:\n    mode: docroot\n    docroot: %s\n",
			q(in.Dir), qs(in.ConfigTestArgv()), qs(in.GracefulArgv()), q(filepath.Join(data, "backups")), q(in.DocRoot))
		switch {
		case h.env != "prod":
			// Stage skips load-balancer changes.
		case d.hap != nil:
			y += fmt.Sprintf("lb:\n  kind: haproxy\n  haproxy:\n    socket: %s\n    backend: %s\n    server: %s\n    drain_timeout: 10s\n    up_timeout: 30s\n    poll_interval: 20ms\n  health_url: %s/health.html\n  ready_interval: 20ms\n",
				q(d.hap.Socket), haproxy.Backend, h.id, in.URL)
		default:
			y += fmt.Sprintf("lb:\n  kind: healthfile\n  healthfile:\n    path: %s\n    drain_time: 300ms\n    rise_time: 300ms\n  health_url: %s/health.html\n  ready_interval: 20ms\n",
				q(filepath.Join(in.DocRoot, "lb-health.html")), in.URL)
		}
	case "builder":
		y += fmt.Sprintf(`builder:
  allowed_repositories: [%s]
  git_timeout: 1m
  sandbox: %s
  profiles:
    demo-build:
      command: [/bin/sh, build.sh]
      timeout: 2m
  scans:
    quality:
      command: [/bin/sh, scan.sh]
      timeout: 1m
      metrics_file: target/deckhand/code-quality.json
`, q(d.repo), d.sandbox)
	}
	return y
}

// startAgents enrolls and starts one agent per host and waits until all are
// online.
func (d *demo) startAgents() error {
	d.sandbox = "none"
	if bwrapWorks() {
		d.sandbox = "bwrap"
	}
	for _, h := range hosts {
		out, err := d.deckctl("tokens", "create", "--host", h.id, "--ttl", "10m", "-o", "json")
		if err != nil {
			return fmt.Errorf("join token for %s: %w", h.id, err)
		}
		var tok struct {
			Token         string `json:"token"`
			CAFingerprint string `json:"ca_fingerprint"`
		}
		if err := json.Unmarshal(out, &tok); err != nil || tok.Token == "" {
			return fmt.Errorf("join token for %s: unexpected answer %q", h.id, out)
		}
		if h.role == "dispatcher" && h.env == "prod" && d.hap == nil {
			// The healthfile driver's file starts present: in service.
			if err := os.WriteFile(filepath.Join(d.apaches[h.id].DocRoot, "lb-health.html"), []byte("OK\n"), 0o644); err != nil {
				return err
			}
		}
		cfgPath := filepath.Join(d.dir, "agent-"+h.id+".yaml")
		if err := os.WriteFile(cfgPath, []byte(d.agentConfig(h, tok.Token, tok.CAFingerprint)), 0o600); err != nil {
			return err
		}
		if _, err := d.spawn("agent-"+h.id, nil, filepath.Join(d.bin, "deckhand-agent"), "--config", cfgPath); err != nil {
			return err
		}
	}
	d.say("%d deckhand-agents started (configs %s/agent-*.yaml), each enrolled with a one-time token from: deckctl tokens create --host HOST -o json", len(hosts), d.dir)
	if d.sandbox == "bwrap" {
		d.say("builder1 runs builds and scans in a bubblewrap sandbox")
	} else {
		d.say("builder1 runs builds without a sandbox (bubblewrap is not installed or cannot run here)")
	}
	var online int
	err := poll(d.ctx, 45*time.Second, 100*time.Millisecond, func() bool {
		out, err := d.deckctl("agents", "list", "-o", "json")
		if err != nil {
			return false
		}
		var agents []struct {
			Host   string `json:"host"`
			Online bool   `json:"online"`
		}
		if json.Unmarshal(out, &agents) != nil {
			return false
		}
		online = 0
		for _, a := range agents {
			if a.Online {
				online++
			}
		}
		return online == len(hosts)
	})
	if err != nil {
		if d.ctx.Err() != nil {
			return errStopped
		}
		for _, p := range d.procs {
			if strings.HasPrefix(p.name, "agent-") && p.exited() {
				return fmt.Errorf("%s exited: %s", p.name, tail(p.log, 2))
			}
		}
		return fmt.Errorf("only %d of %d agents came online within 45s; see %s", online, len(hosts), d.logs)
	}
	d.say("all %d agents online", len(hosts))
	return nil
}

// siteURLs are where the production site is served: HAProxy, or each
// production dispatcher without it.
func (d *demo) siteURLs() []string {
	if d.hap != nil {
		return []string{d.hap.URL}
	}
	var out []string
	for _, h := range hosts {
		if h.role == "dispatcher" && h.env == "prod" {
			out = append(out, d.apaches[h.id].URL)
		}
	}
	return out
}

// curl shows a GET as a person would type it; it runs curl when it is
// installed.
func (d *demo) curl(url string) (int, string, error) {
	d.out.printf("\n$ curl -s %s\n", url)
	if path, err := exec.LookPath("curl"); err == nil {
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, "-sS", "--max-time", "5", "-w", "\n%{http_code}", url).CombinedOutput()
		text := strings.TrimRight(string(out), "\n")
		i := strings.LastIndexByte(text, '\n')
		if err != nil {
			d.out.block("  ", text)
			return 0, "", fmt.Errorf("curl %s: %v: %s", url, err, text)
		}
		// The body, then the newline and status -w added.
		body, status := "", text
		if i >= 0 {
			body, status = text[:i], text[i+1:]
		}
		d.out.block("  ", body)
		code, _ := strconv.Atoi(status)
		return code, body, nil
	}
	code, body, err := get(url)
	if err != nil {
		d.out.block("  ", "curl: "+err.Error())
		return code, body, err
	}
	d.out.block("  ", body)
	return code, body, nil
}

func (d *demo) showSite(when string) error {
	for _, u := range d.siteURLs() {
		if _, _, err := d.curl(u + pagePath); err != nil {
			return fmt.Errorf("the site %s does not answer %s: %w", u, when, err)
		}
	}
	return nil
}

type execState struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Reason string `json:"reason"`
	Steps  []struct {
		ID     string `json:"id"`
		Action string `json:"action"`
		Status string `json:"status"`
	} `json:"steps"`
}

func ended(status string) bool {
	switch status {
	case "FINISHED", "CANCELLED", "FAILED", "ERROR":
		return true
	}
	return false
}

// runPipeline starts an execution of demo/main, relays `deckctl execution
// watch` while it runs and answers the approval and schedule steps as a
// person would.
func (d *demo) runPipeline() error {
	if err := d.show("pipeline", "list"); err != nil {
		return err
	}
	d.out.printf("\n$ deckctl pipeline create-execution %s\n", pipelineRef)
	out, err := d.deckctl("pipeline", "create-execution", pipelineRef, "-o", "json")
	if err != nil {
		return err
	}
	var e execState
	if err := json.Unmarshal(out, &e); err != nil {
		return fmt.Errorf("create-execution: %w", err)
	}
	d.execID = e.ID
	d.out.printf("  %s › main › Execution %s started; follow it with: deckctl execution watch %s -p %s\n", program, e.ID, e.ID, pipelineRef)

	d.out.printf("\n$ deckctl execution watch %s -p %s\n", e.ID, pipelineRef)
	watchCtx, cancelWatch := context.WithCancel(d.ctx)
	defer cancelWatch()
	watch := d.deckctlCmd(watchCtx, "execution", "watch", e.ID, "-p", pipelineRef)
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	watch.Stdout, watch.Stderr = pw, pw
	if err := watch.Start(); err != nil {
		pw.Close()
		pr.Close()
		return err
	}
	pw.Close()
	relayed := make(chan struct{})
	go func() { lineRelay(d.out, "  ", pr); pr.Close(); close(relayed) }()
	watchDone := make(chan error, 1)
	go func() { <-relayed; watchDone <- watch.Wait() }()

	answered := map[string]bool{}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if d.ctx.Err() != nil {
			return errStopped
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("execution %s did not end within 5 minutes; see deckctl execution get %s -p %s and %s", e.ID, e.ID, pipelineRef, d.logs)
		}
		out, err := d.deckctl("execution", "get", e.ID, "-p", pipelineRef, "-o", "json")
		if err != nil {
			return err
		}
		var cur execState
		if err := json.Unmarshal(out, &cur); err != nil {
			return fmt.Errorf("execution get: %w", err)
		}
		if ended(cur.Status) {
			e = cur
			break
		}
		for _, s := range cur.Steps {
			if s.Status != "WAITING" || answered[s.ID] {
				continue
			}
			answered[s.ID] = true
			// Let the watch print the step waiting first, then hold it
			// while the answer runs.
			time.Sleep(500 * time.Millisecond)
			d.out.hold()
			err := d.answer(e.ID, s.ID, s.Action)
			d.out.release()
			if err != nil {
				return err
			}
		}
		select {
		case <-d.ctx.Done():
			return errStopped
		case <-time.After(250 * time.Millisecond):
		}
	}
	// The watch prints the final screen and ends with the execution.
	select {
	case err := <-watchDone:
		if err != nil && e.Status == "FINISHED" {
			return fmt.Errorf("deckctl execution watch: %v", err)
		}
	case <-time.After(15 * time.Second):
		cancelWatch()
		<-watchDone
	}
	if e.Status != "FINISHED" {
		return fmt.Errorf("execution %s %s: %s", e.ID, e.Status, oneLine(e.Reason))
	}
	return nil
}

// answer runs the command a person would type for a waiting step.
func (d *demo) answer(execID, stepID, action string) error {
	switch action {
	case "approval":
		d.out.printf("\ndemo: step %s (Application for Approval) waits for an approver; as one, type:\n", stepID)
		return d.show("execution", "advance", "approve", "-p", pipelineRef)
	case "schedule":
		d.out.printf("\ndemo: step %s (Schedule Production Deployment) waits for a time or Now; for Now, type:\n", stepID)
		return d.show("execution", "advance", "schedule", "--now", "-p", pipelineRef)
	case "codeQuality", "securityTest", "loadTest":
		d.out.printf("\ndemo: the %s gate has failing important metrics:\n", action)
		_ = d.show("execution", "gate-results", action, "-p", pipelineRef)
		return fmt.Errorf("the %s gate of execution %s failed important metrics (deckctl execution gate-results %s -p %s)", action, execID, action, pipelineRef)
	}
	return fmt.Errorf("step %s (%s) waits, which the demo does not expect", stepID, action)
}

// verify checks that the production site serves the new release, through
// HAProxy from both dispatchers (several requests), or on each dispatcher.
func (d *demo) verify() error {
	d.out.printf("\n")
	d.say("execution %s FINISHED; the production site now serves release %s:", d.execID, release)
	for _, u := range d.siteURLs() {
		_, body, err := d.curl(u + pagePath)
		if err != nil {
			return err
		}
		if body != releasePage(release) {
			return fmt.Errorf("%s%s serves %q, not release %s", u, pagePath, strings.TrimSpace(body), release)
		}
		for i := 0; i < 6; i++ {
			code, body, err := get(u + pagePath)
			if err != nil || code != 200 || body != releasePage(release) {
				return fmt.Errorf("request %d to %s%s: HTTP %d %q %v, want release %s", i+2, u, pagePath, code, strings.TrimSpace(body), err, release)
			}
		}
	}
	if d.hap != nil {
		var states []string
		for _, h := range []string{"dispatcher1", "dispatcher2"} {
			st, err := d.hap.ReadStat(h)
			if err != nil {
				return err
			}
			if st.Status != "UP" {
				return fmt.Errorf("HAProxy reports %s %s after the deployment, want UP", h, st.Status)
			}
			states = append(states, h+" "+st.Status)
		}
		d.say("HAProxy: %s", strings.Join(states, ", "))
	}
	return nil
}

func (d *demo) whereToLook() {
	dc := filepath.Join(d.bin, "deckctl")
	var b strings.Builder
	fmt.Fprintf(&b, "\nWhere to look (took %s so far):\n", time.Since(d.started).Round(time.Second))
	if d.hap != nil {
		fmt.Fprintf(&b, "  the site through HAProxy:  curl -si %s%s   (dispatchers: %s, %s)\n", d.hap.URL, pagePath, d.apaches["dispatcher1"].URL, d.apaches["dispatcher2"].URL)
	} else {
		fmt.Fprintf(&b, "  the site (no HAProxy):     curl -si %s%s, curl -si %s%s\n", d.apaches["dispatcher1"].URL, pagePath, d.apaches["dispatcher2"].URL, pagePath)
	}
	fmt.Fprintf(&b, "  stage dispatcher:          curl -si %s%s\n", d.apaches["s-dispatcher1"].URL, pagePath)
	fmt.Fprintf(&b, "  deckctl, in another shell:\n")
	fmt.Fprintf(&b, "    export DECKHAND_CREDENTIALS=%s PATH=%s:$PATH\n", d.creds, filepath.Dir(dc))
	for _, c := range []string{
		"deckctl agents list",
		"deckctl deployments list",
		"deckctl execution get -p " + pipelineRef,
		"deckctl execution step-log build -p " + pipelineRef,
		"deckctl execution gate-results loadTest -p " + pipelineRef,
		"deckctl artifact list",
		"deckctl drift",
		"deckctl audit --limit 20",
	} {
		fmt.Fprintf(&b, "    %s\n", c)
	}
	fmt.Fprintf(&b, "  metrics:                   server http://%s/metrics\n", d.serverMetric)
	ids := make([]string, 0, len(d.agentMetrics))
	for id := range d.agentMetrics {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return hostIndex(ids[i]) < hostIndex(ids[j]) })
	for _, id := range ids {
		fmt.Fprintf(&b, "                             %-13s http://%s/metrics\n", id, d.agentMetrics[id])
	}
	fmt.Fprintf(&b, "  logs:                      %s\n", d.logs)
	d.out.printf("%s\n", b.String())
}

func hostIndex(id string) int {
	for i, h := range hosts {
		if h.id == id {
			return i
		}
	}
	return len(hosts)
}

// stopAll stops agents first (they may be mid-task), then the server,
// the AEM simulators, Apache and HAProxy; then kills anything still
// running from the temp dir. It returns how many processes it stopped and
// how many it found left over.
func (d *demo) stopAll() (stopped, left int) {
	d.mu.Lock()
	procs := append([]*proc(nil), d.procs...)
	d.mu.Unlock()
	order := func(p *proc) int {
		switch {
		case strings.HasPrefix(p.name, "agent-"):
			return 0
		case p.name == "server":
			return 1
		}
		return 2
	}
	sort.SliceStable(procs, func(i, j int) bool { return order(procs[i]) < order(procs[j]) })
	for tier := 0; tier <= 2; tier++ {
		var wg sync.WaitGroup
		for _, p := range procs {
			if order(p) != tier {
				continue
			}
			stopped++
			wg.Add(1)
			go func() { defer wg.Done(); p.stop(10 * time.Second) }()
		}
		wg.Wait()
	}
	for _, in := range d.apaches {
		_ = in.Stop()
		stopped++
	}
	if d.hap != nil {
		_ = d.hap.Stop()
		stopped++
	}
	d.stopReaper()
	if d.dir != "" {
		pids := leftovers(d.dir)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		left = len(pids)
	}
	return stopped, left
}
