// Package sysd tells systemd what a Deckhand daemon is doing: ready,
// reloading, stopping, a one-line status, and watchdog keep-alives. Both
// deckhand-agent and deckhand-server use it (the units in packaging/ are
// Type=notify with WatchdogSec=).
//
// Every call is a no-op returning nil when NOTIFY_SOCKET is unset, so the
// binaries run the same from a shell, in tests and under systemd. Errors
// are returned for logging only: a daemon must not stop because systemd
// could not be told something.
//
// The environment is read on every call rather than once, so tests can
// point NOTIFY_SOCKET at their own socket. The variables are left in the
// environment; children the agent runs (apachectl, load-balancer commands)
// inherit them, which is harmless because the units set NotifyAccess=main
// and WATCHDOG_PID names only the main process.
package sysd

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends one datagram of newline-separated assignments.
func notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	if err != nil {
		return fmt.Errorf("sd_notify %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Ready tells systemd that start-up (or a reload begun with Reloading) is
// complete. With Type=notify, `systemctl start` returns, and units ordered
// after this one start, only once it has been sent, and the watchdog is
// armed from then on.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd the daemon is shutting down on its own account
// (after SIGTERM, or before exiting for any other reason), so the state
// shows "deactivating" while it finishes the running work.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Reloading tells systemd a configuration reload has begun; systemd holds
// `systemctl reload` until Ready is sent. MONOTONIC_USEC goes with it
// because systemd 253+ requires it to match the reload to the request (and
// older versions ignore it).
func Reloading() error {
	return notify(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Status sets the one-line status `systemctl status` shows ("connected to
// cp1:7443", "deploying task t-42"). Newlines in the text are replaced
// with spaces: the protocol is newline-separated, and text that comes from
// elsewhere (an error message, a host name) must not be able to add a
// READY=1 or WATCHDOG=1 line of its own.
func Status(format string, args ...any) error {
	s := fmt.Sprintf(format, args...)
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == 0 {
			return ' '
		}
		return r
	}, s)
	return notify("STATUS=" + s)
}

// ExtendTimeout asks systemd for d more time from now to finish the
// current start-up, reload or stop (EXTEND_TIMEOUT_USEC, systemd 236+),
// e.g. while the agent restores a dispatcher backup interrupted by a crash
// before it can report ready. Older systemd ignores it.
func ExtendTimeout(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	return notify("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}
