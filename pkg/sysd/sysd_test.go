package sysd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET: a unixgram socket the
// test owns, as systemd's is.
type fakeSystemd struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes and
	// t.TempDir() can be longer than that under a deep TMPDIR.
	dir, err := os.MkdirTemp("", "sysd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &fakeSystemd{t: t, conn: conn}
}

// next returns the next datagram, or "" when none arrives within d.
func (f *fakeSystemd) next(d time.Duration) string {
	f.t.Helper()
	buf := make([]byte, 4096)
	if err := f.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		f.t.Fatal(err)
	}
	n, err := f.conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return string(buf[:n])
}

func (f *fakeSystemd) expect(want string) {
	f.t.Helper()
	if got := f.next(2 * time.Second); got != want {
		f.t.Fatalf("notify message %q, want %q", got, want)
	}
}

func TestMessages(t *testing.T) {
	f := newFakeSystemd(t)

	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	f.expect("READY=1")

	if err := Status("connected to %s", "cp1:7443"); err != nil {
		t.Fatal(err)
	}
	f.expect("STATUS=connected to cp1:7443")

	if err := Stopping(); err != nil {
		t.Fatal(err)
	}
	f.expect("STOPPING=1")

	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	msg := f.next(2 * time.Second)
	lines := strings.Split(msg, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("reload message %q, want RELOADING=1 and MONOTONIC_USEC=", msg)
	}
	if _, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64); err != nil {
		t.Fatalf("MONOTONIC_USEC in %q: %v", msg, err)
	}

	if err := ExtendTimeout(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	f.expect("EXTEND_TIMEOUT_USEC=90000000")
}

// A status built from outside text (an error message) cannot smuggle in a
// second assignment such as READY=1.
func TestStatusCannotInjectAssignments(t *testing.T) {
	f := newFakeSystemd(t)
	if err := Status("failed: %v", "boom\nREADY=1\r\nWATCHDOG=1"); err != nil {
		t.Fatal(err)
	}
	got := f.next(2 * time.Second)
	if strings.ContainsAny(got, "\n\r") || !strings.HasPrefix(got, "STATUS=failed: boom") {
		t.Fatalf("status message %q has more than one line", got)
	}
}

func TestNoSocketNoMessage(t *testing.T) {
	f := newFakeSystemd(t)
	// The fake is listening, but the daemon was not told about it.
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	for name, call := range map[string]func() error{
		"Ready":         Ready,
		"Stopping":      Stopping,
		"Reloading":     Reloading,
		"Status":        func() error { return Status("x") },
		"ExtendTimeout": func() error { return ExtendTimeout(time.Second) },
		"Ping":          func() error { return NewWatchdog().Ping() },
	} {
		if err := call(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	NewWatchdog().Run(ctx, nil)
	if got := f.next(100 * time.Millisecond); got != "" {
		t.Fatalf("received %q without NOTIFY_SOCKET", got)
	}
}

func TestNotifyErrorIsReturned(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	if err := Ready(); err == nil {
		t.Fatal("Ready to a missing socket: no error")
	}
}

func TestWatchdogDisabled(t *testing.T) {
	newFakeSystemd(t)
	for _, tc := range []struct{ usec, pid string }{
		{"", ""}, // no WatchdogSec=
		{"100000", strconv.Itoa(os.Getpid() + 1)}, // meant for our parent
		{"nonsense", ""},
		{"-5", ""},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		w := NewWatchdog()
		if w.Enabled() || w.Interval() != 0 {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: enabled with interval %v", tc.usec, tc.pid, w.Interval())
		}
		done := make(chan struct{})
		go func() { w.Run(context.Background(), nil); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Second):
			t.Fatal("Run of a disabled watchdog did not return")
		}
	}
}

// The watchdog pings while the main loop advances and stops pinging as soon
// as the loop is stuck, so systemd would restart the service.
func TestWatchdogStopsWhenLoopIsStuck(t *testing.T) {
	f := newFakeSystemd(t)
	const interval = 200 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.FormatInt(interval.Microseconds(), 10))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	w := NewWatchdog()
	if !w.Enabled() || w.Interval() != interval {
		t.Fatalf("watchdog enabled=%v interval=%v, want %v", w.Enabled(), w.Interval(), interval)
	}

	var p Progress
	// The test hook: a send on stuck returns once the loop has wedged, so
	// no Advance can happen after it.
	stuck := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() { // the daemon's main loop
		defer close(loopDone)
		tick := time.NewTicker(interval / 10)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stuck:
				<-ctx.Done() // wedged: never advances again
				return
			case <-tick.C:
				p.Advance()
			}
		}
	}()
	runDone := make(chan struct{})
	go func() { w.Run(ctx, p.Advanced); close(runDone) }()
	defer func() {
		cancel()
		<-loopDone
		<-runDone
	}()

	// Healthy: keep-alives arrive about every interval/2.
	for i := 0; i < 3; i++ {
		f.expect("WATCHDOG=1")
	}

	stuck <- struct{}{}
	// One keep-alive may still be owed to an Advance made before the loop
	// wedged; after that, silence for longer than systemd's timeout.
	pings := 0
	for {
		got := f.next(2 * interval)
		if got == "" {
			break
		}
		if got != "WATCHDOG=1" {
			t.Fatalf("unexpected message %q", got)
		}
		if pings++; pings > 1 {
			t.Fatalf("%d keep-alives sent after the main loop got stuck", pings)
		}
	}
}

func TestWatchdogPing(t *testing.T) {
	f := newFakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	w := NewWatchdog()
	if w.Interval() != 30*time.Second {
		t.Fatalf("interval %v, want 30s", w.Interval())
	}
	if err := w.Ping(); err != nil {
		t.Fatal(err)
	}
	f.expect("WATCHDOG=1")
}

func TestProgress(t *testing.T) {
	var p Progress
	if p.Advanced() {
		t.Fatal("a new Progress reports progress")
	}
	p.Advance()
	p.Advance()
	if !p.Advanced() {
		t.Fatal("no progress reported after Advance")
	}
	if p.Advanced() {
		t.Fatal("progress reported twice for the same Advance")
	}
}

func TestJournalStream(t *testing.T) {
	fi, err := os.Stderr.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no stat_t for stderr")
	}
	ours := fmt.Sprintf("%d:%d", uint64(st.Dev), uint64(st.Ino))
	for v, want := range map[string]bool{
		"":                             false,
		ours:                           true,
		ours + "x":                     false,
		"1:2":                          false, // inherited, but stderr was redirected
		"nonsense":                     false,
		strings.Repeat("9", 30) + ":1": false,
	} {
		t.Setenv("JOURNAL_STREAM", v)
		if got := JournalStream(); got != want {
			t.Errorf("JOURNAL_STREAM=%q: JournalStream() = %v, want %v", v, got, want)
		}
	}
}

// A daemon whose main loop ends on its own (no signal) still tells systemd
// it is stopping, and Close does not return before the datagrams are sent:
// the process exits right after it. The socket is read without waiting, a
// hundred times over, so a notification still in flight fails the test.
func TestCloseSendsStoppingBeforeReturning(t *testing.T) {
	f := newFakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "")
	for i := 0; i < 100; i++ {
		s := Listen("stopping: test")
		s.Close()
		for _, want := range []string{"STOPPING=1", "STATUS=stopping: test"} {
			if got := f.nextNow(); got != want {
				t.Fatalf("round %d, right after Close: %q, want %q already sent", i, got, want)
			}
		}
	}
}

// nextNow returns the datagram already queued on the socket, or "".
func (f *fakeSystemd) nextNow() string {
	f.t.Helper()
	rc, err := f.conn.SyscallConn()
	if err != nil {
		f.t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n := 0
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		f.t.Fatal(err)
	}
	if rerr == syscall.EAGAIN {
		return ""
	}
	if rerr != nil {
		f.t.Fatal(rerr)
	}
	return string(buf[:n])
}
