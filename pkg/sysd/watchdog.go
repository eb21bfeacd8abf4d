package sysd

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Watchdog sends systemd's WATCHDOG=1 keep-alives. With WatchdogSec= set on
// the unit, systemd puts the interval in WATCHDOG_USEC (and the main pid in
// WATCHDOG_PID) and kills and restarts the service (Restart=on-failure)
// when no keep-alive arrives for that long.
//
// The point is to catch a hung daemon, not a dead one (systemd sees that
// anyway), so a keep-alive must prove that the main loop still turns: use
// Run with a healthy func such as Progress.Advanced, or call Ping from the
// main loop itself. A goroutine pinging on a timer regardless would keep a
// deadlocked daemon alive forever.
type Watchdog struct {
	interval time.Duration
}

// NewWatchdog reads WATCHDOG_USEC/WATCHDOG_PID. The watchdog is disabled
// (Interval 0, Ping and Run no-ops) when the unit has no WatchdogSec=,
// when the variables are meant for another process (WATCHDOG_PID is not
// ours: we are a child of the daemon) or when they cannot be parsed.
func NewWatchdog() *Watchdog {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return &Watchdog{}
	}
	return &Watchdog{interval: d}
}

// Enabled reports whether systemd expects keep-alives.
func (w *Watchdog) Enabled() bool { return w.interval > 0 }

// Interval is systemd's timeout (WatchdogSec=); 0 when disabled. Keep-alives
// should come at least twice per interval.
func (w *Watchdog) Interval() time.Duration { return w.interval }

// Ping sends one keep-alive (WATCHDOG=1). It is a no-op when the watchdog
// is disabled or NOTIFY_SOCKET is unset.
func (w *Watchdog) Ping() error {
	if !w.Enabled() {
		return nil
	}
	return notify(daemon.SdNotifyWatchdog)
}

// Run pings every Interval()/2 until ctx ends, but only when healthy()
// returns true at that moment. healthy should report that the main loop
// made progress since it was last asked (Progress.Advanced does exactly
// that), so a main loop that stops turning stops the keep-alives and
// systemd restarts the service after at most one interval. The main loop
// must therefore advance at least once per Interval()/2 (15 s with the
// packaged WatchdogSec=30s). A nil healthy pings unconditionally, which
// only proves the process is scheduled.
//
// Run returns at once when the watchdog is disabled, so `go w.Run(...)`
// costs nothing outside systemd. Send errors are ignored: the next tick
// tries again, and a socket that stays broken is systemd's to notice.
func (w *Watchdog) Run(ctx context.Context, healthy func() bool) {
	if !w.Enabled() {
		return
	}
	t := time.NewTicker(w.interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if healthy == nil || healthy() {
				_ = w.Ping()
			}
		}
	}
}

// Progress is the usual healthy func for Watchdog.Run: the main loop calls
// Advance each time it goes round (and on each event it handles), Run asks
// Advanced. The zero value is ready to use; it is safe for concurrent use.
type Progress struct {
	n    atomic.Uint64
	seen atomic.Uint64
}

// Advance records that the main loop went round once more.
func (p *Progress) Advance() { p.n.Add(1) }

// Advanced reports whether Advance was called since the previous call of
// Advanced (the first call: since the Progress was made).
func (p *Progress) Advanced() bool {
	n := p.n.Load()
	return p.seen.Swap(n) != n
}

// Signals is what both daemons set up before their main loop: Ctx ends
// at SIGINT or SIGTERM (and then STOPPING=1 and the stopping status are
// sent), HUP receives SIGHUP, and the watchdog pings systemd while Alive
// advances. Close releases the signals.
type Signals struct {
	Ctx      context.Context
	HUP      <-chan os.Signal
	Alive    *Progress
	Watchdog *Watchdog
	close    func()
}

// Listen starts Signals; stopping is the STATUS line sent on SIGTERM.
// STOPPING=1 is also sent by Close when the daemon ends for another
// reason, and Close returns only once it has been sent: a daemon that
// exits right after its main loop must not race the notification.
func Listen(stopping string) *Signals {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	told := make(chan struct{})
	go func() {
		defer close(told)
		<-ctx.Done()
		Stopping()
		Status("%s", stopping)
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	s := &Signals{Ctx: ctx, HUP: hup, Alive: &Progress{}, Watchdog: NewWatchdog()}
	go s.Watchdog.Run(ctx, s.Alive.Advanced)
	s.close = func() {
		signal.Stop(hup)
		stop()
		<-told
	}
	return s
}

// Close stops listening for the signals and returns once STOPPING=1 has
// been sent.
func (s *Signals) Close() { s.close() }
