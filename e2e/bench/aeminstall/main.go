// Command aeminstall benchmarks AEM package deployment through Deckhand
// against a plain curl loop doing the same uploads and installs, side by
// side in one run:
//
//	go run ./e2e/bench/aeminstall [flags]
//
// Both sides install the same generated packages (a dependency chain and a
// fan-out on the chain's root, built with aempkgtest) into one author and N
// publish instances, each a separate aemsim process (strict dependency
// handling, so an out-of-order install fails; aemsim answers at once), with
// the instances deployed in parallel:
//
//   - agent: an in-process control plane (real mutual TLS) assigns one
//     PackageInstall task per host to a real deckhand-agent process per
//     host (enrolled with a join token), and the clock runs from Assign
//     until the control plane has every result. The agents' artifact
//     caches are emptied before each repetition, so every run downloads
//     the packages from the control plane as a fresh deployment would.
//   - curl: a bash script, one background loop per instance, uploads each
//     package with force=true and installs it with curl, in the order the
//     agent installs them, checking "success":true in each answer.
//   - curl+ls: the same script also runs cmd=ls after every install and
//     checks the package is listed as installed — the verification the
//     agent does, so this is the like-for-like comparison.
//
// Every repetition runs the three sides on fresh AEM instances, in rotating
// order, and checks that every instance installed every package exactly
// once. The report gives wall time, time per package, orchestration
// overhead per package (wall time minus the time AEM spent answering, per
// instance), the agent's phases, and the ratios agent/curl (raw) and
// agent/(curl+ls) against the goal of 1.1.
//
// Flags:
//
//	--bin DIR         directory holding deckhand-agent and aemsim (default: build both into the work dir)
//	--chain N         packages in the dependency chain (default 25)
//	--fan N           packages depending on the chain's root (default 25)
//	--publishers N    publish instances besides the author (default 4)
//	--reps N          repetitions of each side (default 5)
//	--work DIR        work directory (default: a new temp dir)
//	--keep            keep the work directory (logs, AEM state, agent journals)
//	--cpuprofile FILE write a CPU profile of this process (control plane and driver) to FILE
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "aeminstall bench:", err)
		os.Exit(1)
	}
}

// AEM credentials of every simulated instance.
const (
	aemUser     = "admin"
	aemPassword = "admin"
	group       = "bench"
)

type bench struct {
	work       string
	agentBin   string
	simBin     string
	hosts      []string
	pkgs       []benchPkg      // in install order
	given      []string        // package paths in the order the agents get them
	arts       []task.Artifact // as given to the agents: reversed, so the agent must order them
	orderFile  string
	script     string
	srv        *server.Server
	stopServer func()
}

// benchPkg is one generated package.
type benchPkg struct {
	name, path string
	id         aempkg.ID
}

func run() error {
	bin := flag.String("bin", "", "directory holding deckhand-agent and aemsim (default: build them)")
	chain := flag.Int("chain", 25, "packages in the dependency chain")
	fan := flag.Int("fan", 25, "packages depending on the chain's root")
	publishers := flag.Int("publishers", 4, "publish instances besides the author")
	reps := flag.Int("reps", 5, "repetitions of each side")
	work := flag.String("work", "", "work directory (default: a new temp dir)")
	keep := flag.Bool("keep", false, "keep the work directory")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process to FILE")
	flag.Parse()
	if *chain < 1 || *fan < 0 || *publishers < 0 || *reps < 1 {
		return errors.New("--chain and --reps must be at least 1, --fan and --publishers not negative")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		return fmt.Errorf("curl: %w", err)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		return fmt.Errorf("bash: %w", err)
	}

	b := &bench{work: *work}
	if b.work == "" {
		d, err := os.MkdirTemp("", "deckhand-bench-aeminstall-")
		if err != nil {
			return err
		}
		b.work = d
	}
	if *keep {
		fmt.Printf("work dir (kept): %s\n", b.work)
	} else {
		defer os.RemoveAll(b.work)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if err := b.binaries(*bin); err != nil {
		return err
	}
	b.hosts = []string{"author1"}
	for i := 1; i <= *publishers; i++ {
		b.hosts = append(b.hosts, fmt.Sprintf("publish%d", i))
	}
	if err := b.generate(*chain, *fan); err != nil {
		return err
	}
	if err := b.startControlPlane(); err != nil {
		return err
	}
	defer b.stopServer()
	if err := b.writeScript(); err != nil {
		return err
	}

	fmt.Printf("machine: %d CPUs, load average %s at start\n", runtime.NumCPU(), loadavg())
	fmt.Printf("deploying %d packages (chain of %d, fan-out of %d on its root) to %d AEM instances (1 author, %d publish), %d repetitions\n",
		len(b.pkgs), *chain, *fan, len(b.hosts), *publishers, *reps)
	fmt.Println("agent: control plane assigns, real deckhand-agent processes download, upload, install and verify with cmd=ls")
	fmt.Println("curl: bash + curl, upload (force) and install per package, instances in parallel; curl+ls also verifies with cmd=ls like the agent")
	fmt.Println()

	sides := []string{"agent", "curl", "curl+ls"}
	all := map[string][]result{}
	for rep := 1; rep <= *reps; rep++ {
		// Rotate the order so warm caches and background noise do not
		// favour one side.
		order := slices.Clone(sides)
		for range (rep - 1) % len(sides) {
			order = append(order[1:], order[0])
		}
		line := fmt.Sprintf("rep %d:", rep)
		got := map[string]result{}
		for _, side := range order {
			var r result
			var err error
			switch side {
			case "agent":
				r, err = b.runAgents(rep)
			case "curl":
				r, err = b.runCurl(rep, false)
			case "curl+ls":
				r, err = b.runCurl(rep, true)
			}
			if err != nil {
				return fmt.Errorf("rep %d, %s: %w", rep, side, err)
			}
			got[side] = r
			all[side] = append(all[side], r)
		}
		for _, side := range sides {
			line += fmt.Sprintf("  %s %v", side, got[side].wall.Round(time.Millisecond))
		}
		line += fmt.Sprintf("  agent/curl %.2f  agent/(curl+ls) %.2f", ratio(got["agent"].wall, got["curl"].wall), ratio(got["agent"].wall, got["curl+ls"].wall))
		fmt.Println(line)
	}
	b.report(all, len(b.pkgs))
	// The curl side starts two or three processes per package and
	// instance, so a busy machine slows it far more than the agents.
	fmt.Printf("\nload average %s at the end (other work on the machine makes the curl side noisy)\n", loadavg())
	return nil
}

// loadavg is the 1, 5 and 15 minute load average, or "unknown".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

// binaries builds deckhand-agent and aemsim unless dir has them.
func (b *bench) binaries(dir string) error {
	if dir != "" {
		b.agentBin, b.simBin = filepath.Join(dir, "deckhand-agent"), filepath.Join(dir, "aemsim")
		for _, p := range []string{b.agentBin, b.simBin} {
			if _, err := os.Stat(p); err != nil {
				return fmt.Errorf("--bin: %w", err)
			}
		}
		return nil
	}
	out := filepath.Join(b.work, "bin")
	cmd := exec.Command("go", "build", "-o", out+"/",
		"github.com/deckhand-dev/deckhand/agent/cmd/deckhand-agent", "github.com/deckhand-dev/deckhand/e2e/aemsim")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build deckhand-agent and aemsim: %w", err)
	}
	b.agentBin, b.simBin = filepath.Join(out, "deckhand-agent"), filepath.Join(out, "aemsim")
	return nil
}

// generate writes the packages, computes the install order the agent will
// use (aempkg.Order on the reversed list, as the agent does) and writes it
// for the curl script.
func (b *bench) generate(chain, fan int) error {
	dir := filepath.Join(b.work, "packages")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var given []*aempkg.Package
	paths := map[aempkg.ID]string{}
	add := func(name, deps string) error {
		data := aempkgtest.Package(aempkgtest.Spec{Group: group, Name: name, Version: "1.0.0", Dependencies: deps})
		path := filepath.Join(dir, name+"-1.0.0.zip")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		p, err := aempkg.ReadFile(path)
		if err != nil {
			return err
		}
		paths[p.ID] = path
		// Reversed: the agent gets dependents before their dependencies.
		given = append([]*aempkg.Package{p}, given...)
		return nil
	}
	for i := range chain {
		deps := ""
		if i > 0 {
			deps = fmt.Sprintf("%s:chain-%02d:[1.0,2.0)", group, i-1)
		}
		if err := add(fmt.Sprintf("chain-%02d", i), deps); err != nil {
			return err
		}
	}
	for i := range fan {
		if err := add(fmt.Sprintf("fan-%02d", i), group+":chain-00:1.0.0"); err != nil {
			return err
		}
	}
	for _, p := range given {
		b.given = append(b.given, paths[p.ID])
	}
	ordered, err := aempkg.Order(given, nil)
	if err != nil {
		return err
	}
	var lines strings.Builder
	for _, p := range ordered {
		b.pkgs = append(b.pkgs, benchPkg{name: p.ID.Name, path: paths[p.ID], id: p.ID})
		fmt.Fprintf(&lines, "%s %s %s %s\n", paths[p.ID], p.ID.Group, p.ID.Name, p.ID.Version)
	}
	b.orderFile = filepath.Join(b.work, "order.txt")
	return os.WriteFile(b.orderFile, []byte(lines.String()), 0o644)
}

// startControlPlane runs deckhand-server's server in this process with
// mutual TLS and stores the packages as artifacts.
func (b *bench) startControlPlane() error {
	var topo strings.Builder
	topo.WriteString("environments:\n  - name: prod\n    type: prod\n    hosts:\n      - {id: author1, role: author}\n")
	for i := 1; i < len(b.hosts); i++ {
		fmt.Fprintf(&topo, "      - {id: publish%d, role: publish, pair: %d}\n      - {id: dispatcher%d, role: dispatcher, pair: %d}\n", i, i, i, i)
	}
	dir := filepath.Join(b.work, "controlplane")
	cfg, err := config.Parse("bench.yaml", []byte("data_dir: "+dir+"\n"+topo.String()))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.work, "controlplane.log"))
	if err != nil {
		return err
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "server", Level: hclog.Info, Output: logf})
	srv, err := server.New(cfg, server.Options{Logger: log, Listener: ln})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ctx)
	}()
	b.srv = srv
	b.stopServer = func() { cancel(); <-done; logf.Close() }
	// The agents get the packages reversed, dependents first.
	for _, path := range b.given {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		sum, size, err := srv.Blobs().Put(f)
		f.Close()
		if err != nil {
			return err
		}
		b.arts = append(b.arts, task.Artifact{SHA256: sum, Size: size, Name: filepath.Base(path)})
	}
	return nil
}

// curlScript uploads (force) and installs each package of ORDER_FILE on
// every instance given, one background loop per instance, and with
// VERIFY=1 also checks each install with cmd=ls. It checks AEM's answer
// body, as any careful script must: AEM reports failures with HTTP 200.
//
// The listing is checked with bash's =~ (the C library's regex, linear
// here), not with ${var#*pattern}: bash's pattern removal is quadratic and
// takes about 300 ms on a 50-package listing, which would make the script
// look slow for a reason that has nothing to do with AEM or curl. Package
// names are used in the regex as they are (the generated names have no
// regex metacharacters).
const curlScript = `#!/usr/bin/env bash
# Usage: curl.sh ORDER_FILE BASE_URL...
# ORDER_FILE lines: ZIP_PATH GROUP NAME VERSION, in dependency order.
set -euo pipefail
order=$1; shift
auth="$AEM_USER:$AEM_PASSWORD"
deploy() {
  local base=$1 path group name version out blk
  while read -r path group name version; do
    out=$(curl -sS -u "$auth" -F force=true -F "package=@$path" "$base/crx/packmgr/service/.json?cmd=upload")
    [[ $out == *'"success":true'* ]] || { echo "$base: upload $name: $out" >&2; return 1; }
    out=$(curl -sS -u "$auth" --data '' "$base/crx/packmgr/service/.json/etc/packages/$group/$name-$version.zip?cmd=install")
    [[ $out == *'"success":true'* ]] || { echo "$base: install $name: $out" >&2; return 1; }
    if [[ ${VERIFY:-0} == 1 ]]; then
      out=$(curl -sS -u "$auth" "$base/crx/packmgr/service.jsp?cmd=ls")
      # The package's element, from its name through simple <x>..</x>
      # fields (which cannot cross a </package>) to lastUnpackedBy.
      re="<name>$name</name>([[:space:]]*<[a-zA-Z]+>[^<]*</[a-zA-Z]+>)*[[:space:]]*<lastUnpackedBy>$AEM_USER</lastUnpackedBy>"
      [[ $out =~ $re ]] || { echo "$base: cmd=ls does not list $name as installed" >&2; return 1; }
    fi
  done < "$order"
}
pids=()
for base in "$@"; do
  deploy "$base" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
`

func (b *bench) writeScript() error {
	b.script = filepath.Join(b.work, "curl.sh")
	return os.WriteFile(b.script, []byte(curlScript), 0o755)
}

// result is one side's run.
type result struct {
	wall time.Duration
	// busy is, per instance, the time AEM spent answering requests.
	busy []time.Duration
	// phases of the agent side (zero for curl).
	dispatch, prepare, loop, report time.Duration
	requests                        int // Package Manager requests per instance
	// gaps is the client's time between AEM's answer to one request and
	// the arrival of the next, by transition ("ls→upload"), averaged over
	// instances: the client-side cost per step.
	gaps map[string]time.Duration
	// listCost is the agent's verification step timed in this process:
	// aem.Client.List (cmd=ls plus parsing) on the final listing.
	listCost time.Duration
}

// overhead is the mean over instances of wall time minus AEM's busy time:
// what the client side added.
func (r result) overhead() time.Duration {
	var sum time.Duration
	for _, b := range r.busy {
		sum += r.wall - b
	}
	return sum / time.Duration(len(r.busy))
}

// ---- aemsim processes ----

type simProc struct {
	url  string
	cmd  *exec.Cmd
	done chan struct{}
}

var listeningRE = regexp.MustCompile(`listening: addr=(\S+)`)

// startSims starts one fresh aemsim per host (new data dirs).
func (b *bench) startSims(tag string) ([]*simProc, error) {
	var sims []*simProc
	for _, h := range b.hosts {
		dir := filepath.Join(b.work, "aem", tag, h)
		s, err := startSim(b.simBin, dir)
		if err != nil {
			stopSims(sims)
			return nil, fmt.Errorf("aemsim for %s: %w", h, err)
		}
		sims = append(sims, s)
	}
	return sims, nil
}

func startSim(bin, dir string) (*simProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--data", dir, "--user", aemUser, "--password", aemPassword,
		"--dependency-handling", sim.DepStrict, "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &simProc{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		// Read the address from the log, then keep draining it to the file
		// so the simulator never blocks on a full pipe.
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if m := listeningRE.FindStringSubmatch(line); m != nil && !found {
				found = true
				addr <- m[1]
			}
		}
		_, _ = io.Copy(logf, stderr)
		_ = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	select {
	case a := <-addr:
		s.url = "http://" + a
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("exited before listening; see %s.log", dir)
	case <-time.After(10 * time.Second):
		stopSims([]*simProc{s})
		return nil, fmt.Errorf("not listening after 10s; see %s.log", dir)
	}
}

func stopSims(sims []*simProc) {
	for _, s := range sims {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, s := range sims {
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
}

// simRequests fetches an instance's request log.
func simRequests(url string) ([]sim.Request, error) {
	resp, err := http.Get(url + "/_sim/requests")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var reqs []sim.Request
	if err := json.NewDecoder(resp.Body).Decode(&reqs); err != nil {
		return nil, err
	}
	return reqs, nil
}

// check verifies that every instance installed every package exactly
// once, in the planned order (the agent's; strict mode would have refused
// an order that breaks a dependency), and returns the request logs.
func (b *bench) check(sims []*simProc) ([][]sim.Request, error) {
	var logs [][]sim.Request
	for i, s := range sims {
		reqs, err := simRequests(s.url)
		if err != nil {
			return nil, err
		}
		counts := map[string]int{}
		var order []string
		for _, r := range reqs {
			for _, id := range r.Installed {
				counts[id]++
				order = append(order, id)
			}
		}
		// Both sides must do the same work in the same order.
		for k, p := range b.pkgs {
			if k >= len(order) || order[k] != p.id.String() {
				return nil, fmt.Errorf("%s: install order %v differs from the planned %d packages", b.hosts[i], order, len(b.pkgs))
			}
		}
		if len(counts) != len(b.pkgs) {
			return nil, fmt.Errorf("%s: %d packages installed, want %d", b.hosts[i], len(counts), len(b.pkgs))
		}
		for id, n := range counts {
			if n != 1 {
				return nil, fmt.Errorf("%s: %s installed %d times", b.hosts[i], id, n)
			}
		}
		logs = append(logs, reqs)
	}
	return logs, nil
}

// busy sums the time AEM spent answering each instance's requests.
func busy(logs [][]sim.Request) ([]time.Duration, int) {
	var out []time.Duration
	n := 0
	for _, reqs := range logs {
		var d time.Duration
		for _, r := range reqs {
			d += time.Duration(r.Duration)
		}
		out = append(out, d)
		n += len(reqs)
	}
	return out, n / len(logs)
}

// gaps averages, per transition between consecutive requests to one
// instance, the time from the end of AEM's answer to the next request.
func gaps(logs [][]sim.Request) map[string]time.Duration {
	sum := map[string]time.Duration{}
	n := map[string]int{}
	for _, reqs := range logs {
		for i := 1; i < len(reqs); i++ {
			prev, cur := reqs[i-1], reqs[i]
			k := prev.Cmd + "→" + cur.Cmd
			sum[k] += cur.Time.Sub(prev.Time.Add(time.Duration(prev.Duration)))
			n[k]++
		}
	}
	out := map[string]time.Duration{}
	for k, d := range sum {
		out[k] = d / time.Duration(n[k])
	}
	return out
}

// ---- the curl side ----

func (b *bench) runCurl(rep int, verify bool) (result, error) {
	tag := fmt.Sprintf("rep%d-curl", rep)
	if verify {
		tag += "+ls"
	}
	sims, err := b.startSims(tag)
	if err != nil {
		return result{}, err
	}
	defer stopSims(sims)
	args := []string{b.script, b.orderFile}
	for _, s := range sims {
		args = append(args, s.url)
	}
	cmd := exec.Command("bash", args...)
	v := "0"
	if verify {
		v = "1"
	}
	cmd.Env = append(os.Environ(), "VERIFY="+v, "AEM_USER="+aemUser, "AEM_PASSWORD="+aemPassword)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return result{}, fmt.Errorf("curl script: %w: %s", err, stderr.String())
	}
	logs, err := b.check(sims)
	if err != nil {
		return result{}, err
	}
	r := result{wall: wall, gaps: gaps(logs)}
	r.busy, r.requests = busy(logs)
	return r, nil
}

// ---- the agent side ----

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (b *bench) agentDir(host string) string { return filepath.Join(b.work, "agents", host) }

// startAgent writes host's config for the AEM at url and starts its agent.
// The first start enrolls with a join token; later starts reuse the
// certificate in the data dir.
func (b *bench) startAgent(host, url string) (*agentProc, error) {
	dir := b.agentDir(host)
	data := filepath.Join(dir, "data")
	// A fresh deployment: the artifacts are not on the host yet.
	if err := os.RemoveAll(filepath.Join(data, "artifacts")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("host_id: %s\nserver: %s\ndata_dir: %s\nlog_level: info\napachectl: [\"true\"]\nreconnect: {stagger: 50ms, base_backoff: 50ms, max_backoff: 500ms}\n",
		host, b.srv.Addr(), data)
	if _, err := os.Stat(filepath.Join(data, "tls", "agent.crt")); err != nil {
		tok, _, err := b.srv.PKI().NewJoinToken(host, "bench", time.Hour)
		if err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("join_token: %s\nca_fingerprint: %s\n", tok, b.srv.PKI().Fingerprint())
	}
	cfg += fmt.Sprintf("aem:\n  base_url: %s\n  user: %s\n  password: %s\n", url, aemUser, aemPassword)
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.agentBin, "--config", path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func stopAgents(agents []*agentProc) {
	for _, a := range agents {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, a := range agents {
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	}
}

func (b *bench) runAgents(rep int) (result, error) {
	sims, err := b.startSims(fmt.Sprintf("rep%d-agent", rep))
	if err != nil {
		return result{}, err
	}
	defer stopSims(sims)
	var agents []*agentProc
	defer func() { stopAgents(agents) }()
	for i, h := range b.hosts {
		a, err := b.startAgent(h, sims[i].url)
		if err != nil {
			return result{}, fmt.Errorf("agent %s: %w", h, err)
		}
		agents = append(agents, a)
	}
	fl := b.srv.Fleet()
	deadline := time.Now().Add(60 * time.Second)
	for _, h := range b.hosts {
		for !fl.Online(h) {
			if time.Now().After(deadline) {
				return result{}, fmt.Errorf("agent %s did not come online; see %s", h, filepath.Join(b.agentDir(h), "agent.log"))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	exec := fmt.Sprintf("bench-%d", rep)
	var specs []task.Spec
	for _, h := range b.hosts {
		id, err := task.ID(exec, "deploy", h)
		if err != nil {
			return result{}, err
		}
		specs = append(specs, task.Spec{ID: id, ExecutionID: exec, Step: "deploy", HostID: h,
			Timeout: 10 * time.Minute, Kind: task.PackageInstall{Packages: b.arts}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := fl.Assign(ctx, specs...); err != nil {
		return result{}, err
	}
	results := make([]*task.Result, len(specs))
	received := make([]time.Time, len(specs))
	for i, sp := range specs {
		r, err := fl.Await(ctx, sp.ID)
		if err != nil {
			return result{}, err
		}
		results[i], received[i] = r, time.Now()
	}
	wall := time.Since(start)
	for i, r := range results {
		if err := r.Err(); err != nil {
			return result{}, err
		}
		out, _ := r.Output.(*task.PackageInstallOutput)
		if out == nil || len(out.Packages) != len(b.pkgs) {
			return result{}, fmt.Errorf("%s: output %v", b.hosts[i], r.Output)
		}
	}
	logs, err := b.check(sims)
	if err != nil {
		return result{}, err
	}
	res := result{wall: wall, gaps: gaps(logs)}
	res.busy, res.requests = busy(logs)
	if res.listCost, err = listCost(sims[0].url); err != nil {
		return result{}, err
	}
	// Phases, averaged over hosts: Assign -> the agent starts the task;
	// -> its first AEM request (artifact download and reading the zips);
	// -> its last AEM answer; -> the control plane has the result.
	for i, r := range results {
		reqs := logs[i]
		first := reqs[0].Time
		last := reqs[len(reqs)-1].Time.Add(time.Duration(reqs[len(reqs)-1].Duration))
		res.dispatch += r.StartedAt.Sub(start)
		res.prepare += first.Sub(r.StartedAt)
		res.loop += last.Sub(first)
		res.report += received[i].Sub(last)
	}
	n := time.Duration(len(results))
	res.dispatch, res.prepare, res.loop, res.report = res.dispatch/n, res.prepare/n, res.loop/n, res.report/n
	return res, nil
}

// listCost times the agent's own cmd=ls code path (aem.Client.List:
// request and XML parsing) against an instance holding every package: the
// upper bound of what verifying one install costs the agent.
func listCost(url string) (time.Duration, error) {
	c, err := aem.NewClient(&aem.Config{BaseURL: url, User: aemUser, Password: aemPassword}, nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	const n = 20
	if _, err := c.List(context.Background()); err != nil { // warm the connection
		return 0, err
	}
	start := time.Now()
	for range n {
		if _, err := c.List(context.Background()); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / n, nil
}

// ---- report ----

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pick(rs []result, f func(result) time.Duration) []time.Duration {
	var out []time.Duration
	for _, r := range rs {
		out = append(out, f(r))
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func (b *bench) report(all map[string][]result, npkg int) {
	p := time.Duration(npkg)
	fmt.Printf("\nmedians over %d repetitions (%d packages x %d instances in parallel)\n", len(all["agent"]), npkg, len(b.hosts))
	fmt.Printf("%-8s %10s %12s %14s %12s %10s\n", "side", "wall", "wall/pkg", "overhead/pkg", "AEM busy", "requests")
	for _, side := range []string{"agent", "curl", "curl+ls"} {
		rs := all[side]
		wall := median(pick(rs, func(r result) time.Duration { return r.wall }))
		ov := median(pick(rs, result.overhead))
		bz := median(pick(rs, func(r result) time.Duration {
			var s time.Duration
			for _, x := range r.busy {
				s += x
			}
			return s / time.Duration(len(r.busy))
		}))
		fmt.Printf("%-8s %10s %12s %14s %12s %10d\n", side, wall.Round(time.Millisecond), ms(wall/p), ms(ov/p), bz.Round(time.Millisecond), rs[0].requests)
	}
	a := median(pick(all["agent"], func(r result) time.Duration { return r.wall }))
	c := median(pick(all["curl"], func(r result) time.Duration { return r.wall }))
	cl := median(pick(all["curl+ls"], func(r result) time.Duration { return r.wall }))
	fmt.Printf("\nratio agent/curl (raw; the agent also verifies every install with cmd=ls): %.2f\n", ratio(a, c))
	fmt.Printf("ratio agent/(curl+ls) (equivalent work):                                   %.2f\n", ratio(a, cl))
	fmt.Printf("verification with cmd=ls costs the curl script %s per package (%+.0f%%)\n", ms((cl-c)/p), 100*(ratio(cl, c)-1))
	lc := median(pick(all["agent"], func(r result) time.Duration { return r.listCost }))
	fmt.Printf("verification costs the agent at most %s per package (aem.Client.List, request and parse, on the final %d-package listing; %.0f%% of the agent's wall/pkg)\n",
		ms(lc), npkg, 100*float64(lc)/float64(a/p))
	goal := "met"
	if ratio(a, cl) > 1.1 {
		goal = "MISSED"
	}
	fmt.Printf("goal agent <= 1.1x the curl script doing the same work: %s\n", goal)
	fmt.Println("\nclient time between AEM's answer and the next request (median over repetitions of the mean per instance):")
	for _, side := range []string{"agent", "curl", "curl+ls"} {
		var keys []string
		for k := range all[side][0].gaps {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		line := fmt.Sprintf("  %-8s", side)
		for _, k := range keys {
			line += fmt.Sprintf("  %s %s", k, ms(median(pick(all[side], func(r result) time.Duration { return r.gaps[k] }))))
		}
		fmt.Println(line)
	}
	ag := all["agent"]
	fmt.Printf("\nagent phases (median, mean over hosts): dispatch %s, download+read packages %s, AEM loop %s (%s/pkg), result to control plane %s\n",
		ms(median(pick(ag, func(r result) time.Duration { return r.dispatch }))),
		ms(median(pick(ag, func(r result) time.Duration { return r.prepare }))),
		ms(median(pick(ag, func(r result) time.Duration { return r.loop }))),
		ms(median(pick(ag, func(r result) time.Duration { return r.loop }))/p),
		ms(median(pick(ag, func(r result) time.Duration { return r.report }))))
}
