// Package haproxy runs a real HAProxy for tests: one private instance per
// test, configured in t.TempDir(), listening on a free loopback port, with
// an admin-level runtime API socket, and stopped on t.Cleanup.
//
// The harness owns only the HAProxy process and a deliberately small,
// independent reader of its runtime API. It does not import the code under
// test (agent/lb), so a test can check what a driver did by asking HAProxy
// itself rather than by trusting the driver's own parser.
//
// Process model: HAProxy runs in the foreground (-db) as a direct child of
// the test binary, not daemonized with -D. A child can be waited for (no
// zombie, no pid-file race), its stderr goes to a file that is printed when
// the test fails, and on Linux it is killed by the kernel (Pdeathsig) if the
// test binary itself dies, so no HAProxy outlives the test.
package haproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireRealEnv names the environment variable that turns a missing real
// component into a test failure instead of a skip. CI sets it to "1" so a
// broken install cannot pass as "all tests skipped".
const RequireRealEnv = "DECKHAND_REQUIRE_REAL"

// BinaryEnv names the environment variable that overrides the HAProxy
// binary path (default /usr/sbin/haproxy, then $PATH).
const BinaryEnv = "DECKHAND_HAPROXY"

// Backend is the name of the backend every harness config declares.
const Backend = "be"

// defaultBinary is where Debian's haproxy package installs the binary.
const defaultBinary = "/usr/sbin/haproxy"

// Require returns the path of the HAProxy binary. When it is missing, the
// test fails if RequireRealEnv is "1" and is skipped otherwise. A sibling
// harness for another real component (Apache) mirrors this function with
// its own binary name and BinaryEnv.
func Require(t testing.TB) string {
	t.Helper()
	path, err := findBinary()
	if err == nil {
		return path
	}
	if os.Getenv(RequireRealEnv) == "1" {
		t.Fatalf("haproxy is required (%s=1) but not usable: %v", RequireRealEnv, err)
		return ""
	}
	t.Skipf("haproxy not available (%v); set %s=1 to make this a failure", err, RequireRealEnv)
	return ""
}

// findBinary resolves BinaryEnv, then defaultBinary, then $PATH.
func findBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%s=%q: %w", BinaryEnv, p, err)
		}
		return path, nil
	}
	if path, err := exec.LookPath(defaultBinary); err == nil {
		return path, nil
	}
	return exec.LookPath("haproxy")
}

// Server is one backend server line in the generated config.
type Server struct {
	Name string // e.g. "d1"
	Addr string // host:port, e.g. "127.0.0.1:18081"
}

// Config describes the instance to start. Zero values take the defaults
// noted on each field.
type Config struct {
	Servers []Server
	// CheckPath is the path of "option httpchk GET <path>". Default "/".
	CheckPath string
	// CheckInter is each server's "check inter". Default 200ms.
	CheckInter time.Duration
	// Rise and Fall are each server's "rise"/"fall". Default 2 and 2.
	Rise, Fall int
	// TimeoutServer is "timeout server". Default 10s.
	TimeoutServer time.Duration
	// TimeoutCheck is "timeout check", how long a health check may wait
	// for the answer. Default 1s: without it HAProxy allows only "inter"
	// (200ms), and a backend under -race on a loaded test machine would
	// flap DOWN for reasons that have nothing to do with the test.
	TimeoutCheck time.Duration
	// BackendLines are extra lines appended to the backend section, for
	// tests that need e.g. "option redispatch".
	BackendLines []string
	// StartTimeout bounds waiting for the runtime API socket. Default 10s.
	StartTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.CheckPath == "" {
		c.CheckPath = "/"
	}
	if c.CheckInter == 0 {
		c.CheckInter = 200 * time.Millisecond
	}
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 2
	}
	if c.TimeoutServer == 0 {
		c.TimeoutServer = 10 * time.Second
	}
	if c.TimeoutCheck == 0 {
		c.TimeoutCheck = time.Second
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 10 * time.Second
	}
}

// Instance is a running HAProxy. Its fields are read-only.
type Instance struct {
	// URL is the frontend's base URL, e.g. "http://127.0.0.1:41234".
	URL string
	// Addr is the frontend's host:port.
	Addr string
	// Socket is the admin-level runtime API socket path.
	Socket string
	// Dir holds the config, the socket and haproxy's stderr log.
	Dir string
	// ConfigPath is the generated haproxy.cfg.
	ConfigPath string

	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait returned
	waitErr error         // set before exited is closed
	logPath string
	stopped bool
}

// maxSunPath is the usable length of a unix socket path on Linux
// (sizeof(sun_path) 108 minus the terminating NUL).
const maxSunPath = 107

// startAttempts bounds retries when the free port picked for the frontend
// was taken by someone else between our probe and HAProxy's bind.
const startAttempts = 5

// Start writes a config for cfg, starts HAProxy and returns once the runtime
// API answers. It is stopped on t.Cleanup. Start calls Require, so a test
// that uses it skips or fails as Require decides.
func Start(t testing.TB, cfg Config) *Instance {
	t.Helper()
	bin := Require(t)
	cfg.setDefaults()
	if len(cfg.Servers) == 0 {
		t.Fatalf("haproxy harness: Config.Servers is empty")
	}

	dir := t.TempDir()
	// t.TempDir() paths grow with the test name; unix socket paths cannot
	// exceed sun_path, so fall back to a short directory when needed.
	if len(filepath.Join(dir, "hap.sock")) > maxSunPath {
		short, err := os.MkdirTemp("", "hap-")
		if err != nil {
			t.Fatalf("haproxy harness: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(short) })
		dir = short
	}

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		inst, err := start(bin, dir, cfg)
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					if b, err := os.ReadFile(inst.logPath); err == nil && len(b) > 0 {
						t.Logf("haproxy stderr (%s):\n%s", inst.logPath, b)
					}
				}
				if err := inst.Stop(); err != nil {
					t.Errorf("haproxy harness: stop: %v", err)
				}
			})
			return inst
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
		t.Logf("haproxy harness: attempt %d: %v; retrying with another port", attempt, err)
	}
	t.Fatalf("haproxy harness: start: %v", lastErr)
	return nil
}

// Find returns the path of the HAProxy binary (BinaryEnv, then
// /usr/sbin/haproxy, then $PATH), for programs that cannot use Require.
func Find() (string, error) { return findBinary() }

// StartProcess is Start for a program rather than a test (e.g. make
// demo): it writes the config into dir (created if missing), starts
// HAProxy in the foreground as a child of the caller and returns once the
// runtime API answers. The caller must call Stop; HAProxy dies with the
// calling thread's process (Pdeathsig).
func StartProcess(dir string, cfg Config) (*Instance, error) {
	bin, err := Find()
	if err != nil {
		return nil, fmt.Errorf("haproxy not available: %w", err)
	}
	cfg.setDefaults()
	if len(cfg.Servers) == 0 {
		return nil, errors.New("haproxy: Config.Servers is empty")
	}
	if len(filepath.Join(dir, "hap.sock")) > maxSunPath {
		return nil, fmt.Errorf("haproxy: %s is too long for a unix socket path (at most %d bytes)", filepath.Join(dir, "hap.sock"), maxSunPath)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		inst, err := start(bin, dir, cfg)
		if err == nil {
			return inst, nil
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
	}
	return nil, lastErr
}

// LogPath is the file HAProxy's stdout and stderr go to.
func (in *Instance) LogPath() string { return in.logPath }

// errBind marks a start that failed because the frontend port was taken.
var errBind = errors.New("frontend port already in use")

func start(bin, dir string, cfg Config) (*Instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	inst := &Instance{
		Addr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Socket:     filepath.Join(dir, "hap.sock"),
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "haproxy.cfg"),
		logPath:    filepath.Join(dir, "haproxy.stderr"),
		exited:     make(chan struct{}),
	}
	inst.URL = "http://" + inst.Addr
	if err := os.WriteFile(inst.ConfigPath, []byte(renderConfig(cfg, inst)), 0o644); err != nil {
		return nil, err
	}
	// A socket left by a previous failed attempt would make HAProxy's
	// bind fail or our readiness probe talk to nothing.
	_ = os.Remove(inst.Socket)

	if out, err := exec.Command(bin, "-c", "-f", inst.ConfigPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("config check failed: %v\n%s\nconfig:\n%s", err, out, renderConfig(cfg, inst))
	}

	logf, err := os.Create(inst.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(bin, "-db", "-f", inst.ConfigPath)
	// An *os.File (not a buffer) keeps exec from starting copy goroutines,
	// so reading the log while HAProxy runs is race-free.
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	inst.cmd = cmd
	go func() {
		inst.waitErr = cmd.Wait()
		close(inst.exited)
	}()

	deadline := time.Now().Add(cfg.StartTimeout)
	for {
		select {
		case <-inst.exited:
			log, _ := os.ReadFile(inst.logPath)
			err := fmt.Errorf("haproxy exited during start (%v):\n%s", inst.waitErr, log)
			if strings.Contains(string(log), "cannot bind socket") && !strings.Contains(string(log), inst.Socket) {
				err = fmt.Errorf("%w: %v", errBind, err)
			}
			return nil, err
		default:
		}
		if _, err := inst.command("show info"); err == nil {
			return inst, nil
		}
		if time.Now().After(deadline) {
			_ = inst.Stop()
			log, _ := os.ReadFile(inst.logPath)
			return nil, fmt.Errorf("runtime API socket %s did not answer within %v; stderr:\n%s", inst.Socket, cfg.StartTimeout, log)
		}
		select {
		case <-inst.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePort asks the kernel for a free loopback port. The port is released
// before HAProxy binds it, so Start retries if someone else takes it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func renderConfig(cfg Config, inst *Instance) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n")
	fmt.Fprintf(&b, "  stats socket %s mode 600 level admin\n", inst.Socket)
	fmt.Fprintf(&b, "defaults\n")
	fmt.Fprintf(&b, "  mode http\n")
	fmt.Fprintf(&b, "  timeout connect 2s\n")
	fmt.Fprintf(&b, "  timeout client 10s\n")
	fmt.Fprintf(&b, "  timeout server %dms\n", cfg.TimeoutServer.Milliseconds())
	fmt.Fprintf(&b, "  timeout check %dms\n", cfg.TimeoutCheck.Milliseconds())
	fmt.Fprintf(&b, "frontend fe\n")
	fmt.Fprintf(&b, "  bind %s\n", inst.Addr)
	fmt.Fprintf(&b, "  default_backend %s\n", Backend)
	fmt.Fprintf(&b, "backend %s\n", Backend)
	fmt.Fprintf(&b, "  option httpchk GET %s\n", cfg.CheckPath)
	for _, l := range cfg.BackendLines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, s := range cfg.Servers {
		fmt.Fprintf(&b, "  server %s %s check inter %dms rise %d fall %d\n",
			s.Name, s.Addr, cfg.CheckInter.Milliseconds(), cfg.Rise, cfg.Fall)
	}
	return b.String()
}

// Pid returns HAProxy's process id.
func (in *Instance) Pid() int { return in.cmd.Process.Pid }

// stopTimeout bounds waiting for HAProxy to exit after SIGTERM before it
// is killed.
const stopTimeout = 5 * time.Second

// Stop stops HAProxy and waits for it to exit. SIGTERM is HAProxy's hard
// stop (SIGUSR1 would be a soft stop that waits for open connections, which
// a test holding a slow request would turn into a hang). Stop is idempotent
// and is called on t.Cleanup.
func (in *Instance) Stop() error {
	if in.stopped {
		return nil
	}
	in.stopped = true
	select {
	case <-in.exited:
		return nil
	default:
	}
	_ = in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = in.cmd.Process.Kill()
	<-in.exited
	return fmt.Errorf("haproxy pid %d ignored SIGTERM for %v and was killed", in.Pid(), stopTimeout)
}

// Exited reports whether the HAProxy process has exited.
func (in *Instance) Exited() bool {
	select {
	case <-in.exited:
		return true
	default:
		return false
	}
}

// maxResponse bounds a runtime API answer the harness reads.
const maxResponse = 4 << 20

// Command sends one runtime API command and returns HAProxy's answer. The
// socket takes one command per connection and closes after answering.
func (in *Instance) Command(t testing.TB, line string) string {
	t.Helper()
	out, err := in.command(line)
	if err != nil {
		t.Fatalf("haproxy harness: %q: %v", line, err)
	}
	return out
}

func (in *Instance) command(line string) (string, error) {
	conn, err := net.DialTimeout("unix", in.Socket, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(conn, maxResponse))
	return string(b), err
}

// ServerStat is one server's row of "show stat", as the harness reads it.
type ServerStat struct {
	Status string // the status column, e.g. "UP", "UP 1/2", "DRAIN", "MAINT"
	Scur   int    // current sessions
	// Fields holds every column by header name.
	Fields map[string]string
}

// Stat returns server name's row of "show stat" for Backend.
func (in *Instance) Stat(t testing.TB, name string) ServerStat {
	t.Helper()
	st, err := in.stat(name)
	if err != nil {
		t.Fatalf("haproxy harness: %v", err)
	}
	return st
}

// Status returns server name's status column ("UP", "MAINT", ...).
func (in *Instance) Status(t testing.TB, name string) string {
	t.Helper()
	return in.Stat(t, name).Status
}

// ReadStat is Stat without a testing.TB, for conditions polled by
// require.Eventually/Never, which run them on another goroutine where
// t.Fatal must not be called.
func (in *Instance) ReadStat(name string) (ServerStat, error) { return in.stat(name) }

func (in *Instance) stat(name string) (ServerStat, error) {
	out, err := in.command("show stat")
	if err != nil {
		return ServerStat{}, err
	}
	return parseServerStat(out, Backend, name)
}

// parseServerStat finds pxname/svname in "show stat" CSV output. It is
// kept independent of agent/lb's parser on purpose (see package doc).
func parseServerStat(out, pxname, svname string) (ServerStat, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), maxResponse)
	var header []string
	for sc.Scan() {
		line := sc.Text()
		if header == nil {
			if !strings.HasPrefix(line, "# ") {
				return ServerStat{}, fmt.Errorf("show stat: unexpected answer %q", strings.TrimSpace(out))
			}
			header = strings.Split(strings.TrimPrefix(line, "# "), ",")
			continue
		}
		// Values never contain commas in the columns the harness
		// reads; a plain split is enough for a test helper.
		vals := strings.Split(line, ",")
		if len(vals) < 2 || vals[0] != pxname || vals[1] != svname {
			continue
		}
		st := ServerStat{Fields: map[string]string{}}
		for i, h := range header {
			if i < len(vals) {
				st.Fields[h] = vals[i]
			}
		}
		st.Status = st.Fields["status"]
		st.Scur, _ = strconv.Atoi(st.Fields["scur"])
		return st, nil
	}
	if err := sc.Err(); err != nil {
		return ServerStat{}, err
	}
	return ServerStat{}, fmt.Errorf("show stat: no row for %s/%s", pxname, svname)
}

// WaitStatus waits until server name's status column equals want, failing
// the test after timeout with the last status seen.
func (in *Instance) WaitStatus(t testing.TB, name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		st, err := in.stat(name)
		if err == nil && st.Status == want {
			return
		}
		last = st.Status
		if err != nil {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy harness: %s/%s: want status %q within %v, last %q", Backend, name, want, timeout, last)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// SetState sets server name's admin state ("ready", "drain", "maint")
// directly, for arranging a test; it fails the test on any answer.
func (in *Instance) SetState(t testing.TB, name, state string) {
	t.Helper()
	out := in.Command(t, fmt.Sprintf("set server %s/%s state %s", Backend, name, state))
	if s := strings.TrimSpace(out); s != "" {
		t.Fatalf("haproxy harness: set server %s/%s state %s: %s", Backend, name, state, s)
	}
}
