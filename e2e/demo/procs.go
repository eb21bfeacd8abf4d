package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// console serializes output lines: the demo's own progress and the
// deckctl watch it relays come from different goroutines.
type console struct {
	mu sync.Mutex
	w  io.Writer
	// While held, relayed lines wait in pending so that a command's
	// output is not cut by the watch it causes.
	held    bool
	pending []string
}

// hold delays relayed lines until release.
func (c *console) hold() {
	c.mu.Lock()
	c.held = true
	c.mu.Unlock()
}

// release prints the delayed lines.
func (c *console) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.held = false
	for _, l := range c.pending {
		fmt.Fprintln(c.w, l)
	}
	c.pending = nil
}

// relay prints a relayed line, or keeps it while held.
func (c *console) relay(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.pending = append(c.pending, line)
		return
	}
	fmt.Fprintln(c.w, line)
}

func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.w, format, args...)
}

// block prints text with every line indented, in one piece.
func (c *console) block(indent, text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range strings.Split(text, "\n") {
		fmt.Fprintln(c.w, strings.TrimRight(indent+l, " "))
	}
}

// proc is a process the demo started: in its own process group, killed
// by the kernel if the demo dies (Pdeathsig), stopped by group.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and waits up to d, then kills
// the group.
func (p *proc) stop(d time.Duration) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	// Whatever else the group still holds (a build's children).
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// spawn starts bin with its output appended to logs/name.log.
func (d *demo) spawn(name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(d.logs, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); lf.Close(); close(p.done) }()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return p, nil
}

// tail is the end of a log file, for a one-line reason.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

var (
	portsMu sync.Mutex
	handed  = map[string]bool{}
)

// mustFreeAddr picks a free loopback address it has not handed out
// before (the kernel may offer a released port again).
func mustFreeAddr() string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		a, err := freeAddr()
		if err != nil {
			panic(err)
		}
		if !handed[a] {
			handed[a] = true
			return a
		}
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// get fetches url and returns the status and body.
func get(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// poll calls ok every interval until it returns true, ctx ends or d
// passes.
func poll(ctx context.Context, d, interval time.Duration, ok func() bool) error {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// leftovers lists processes (other than this one) whose command line or
// working directory is under dir: anything the demo started and did not
// stop.
func leftovers(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue // a zombie is not running
			}
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if bytes.Contains(cmdline, []byte(dir)) || cwd == dir || strings.HasPrefix(cwd, dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// lineRelay copies r to the console line by line with an indent.
func lineRelay(c *console, indent string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		c.relay(strings.TrimRight(indent+sc.Text(), " "))
	}
}

var errStopped = errors.New("stopped by a signal")

// reapFlag runs the demo binary as its own reaper: a child that outlives
// a killed demo just long enough to kill everything still running from the
// demo's temp dir. Pdeathsig alone does not do it: the kernel signals the
// demo's direct children, and Apache's workers survive their parent's
// SIGKILL.
const reapFlag = "--reap-after-parent"

// startReaper starts the reaper for dir.
func (d *demo) startReaper() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, reapFlag, d.dir, strconv.Itoa(os.Getpid()))
	// Its own process group: Ctrl-C goes to the demo, which stops things
	// in order; the reaper acts only when the demo is gone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	d.reaper = cmd
	go func() { _ = cmd.Wait() }()
	return nil
}

// stopReaper ends the reaper once the demo has stopped everything itself.
func (d *demo) stopReaper() {
	if d.reaper != nil && d.reaper.Process != nil {
		_ = d.reaper.Process.Kill()
		for i := 0; i < 100; i++ {
			if syscall.Kill(d.reaper.Process.Pid, 0) != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// reap waits until the demo (parent) is gone, then kills every process
// still running from dir.
func reap(dir string, parent int) {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	for os.Getppid() == parent {
		select {
		case <-term:
		case <-time.After(500 * time.Millisecond):
			continue
		}
		break
	}
	for i := 0; i < 3; i++ {
		for _, pid := range leftovers(dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
