package lb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/hashicorp/go-hclog"
)

// HAProxyConfig configures the haproxy driver, which drives one server line
// of one HAProxy backend through HAProxy's runtime API.
type HAProxyConfig struct {
	// Socket is the absolute path of HAProxy's runtime API socket. It must
	// be declared "stats socket PATH level admin" in haproxy.cfg: lower
	// levels may read but not "set server".
	Socket string `yaml:"socket" json:"socket"`
	// Backend and Server name this host's "server" line, e.g. "be" and
	// "d1" for "backend be ... server d1 10.0.0.5:80 check".
	Backend string `yaml:"backend" json:"backend"`
	Server  string `yaml:"server" json:"server"`
	// DrainTimeout bounds how long Detach waits for the server's current
	// sessions to reach 0 after setting it to drain. When it runs out,
	// Detach sets maint anyway (HAProxy does not cut open sessions on
	// maint by default) and logs a warning. Default 30s.
	DrainTimeout yamlconf.Duration `yaml:"drain_timeout" json:"drain_timeout"`
	// UpTimeout bounds how long Attach waits for HAProxy to report the
	// server UP after setting it ready. It must cover the health check's
	// "inter" × "fall" (see Attach). Default 30s.
	UpTimeout yamlconf.Duration `yaml:"up_timeout" json:"up_timeout"`
	// PollInterval is how often Detach and Attach re-read "show stat".
	// Default 100ms.
	PollInterval yamlconf.Duration `yaml:"poll_interval" json:"poll_interval"`
	// CommandTimeout bounds one runtime API round trip. Default 5s.
	CommandTimeout yamlconf.Duration `yaml:"command_timeout" json:"command_timeout"`
}

// Defaults for HAProxyConfig's zero durations.
const (
	DefaultHAProxyDrainTimeout   = 30 * time.Second
	DefaultHAProxyUpTimeout      = 30 * time.Second
	DefaultHAProxyCommandTimeout = 5 * time.Second
)

// haproxyName matches the characters HAProxy accepts in proxy and server
// names. Checking it also keeps a name from smuggling a second command into
// the runtime API, where ';' separates commands and a newline ends one.
var haproxyName = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

// maxSocketPath is the usable length of a unix socket path on Linux.
const maxSocketPath = 107

func (c *HAProxyConfig) validate() error {
	var errs []error
	switch {
	case c.Socket == "":
		errs = append(errs, errors.New("lb: haproxy.socket is required (the path of HAProxy's \"stats socket ... level admin\")"))
	case !filepath.IsAbs(c.Socket):
		errs = append(errs, fmt.Errorf("lb: haproxy.socket must be an absolute path, got %q", c.Socket))
	case len(c.Socket) > maxSocketPath:
		errs = append(errs, fmt.Errorf("lb: haproxy.socket %q is longer than a unix socket path may be (%d bytes)", c.Socket, maxSocketPath))
	}
	for _, f := range []struct{ key, v string }{{"backend", c.Backend}, {"server", c.Server}} {
		switch {
		case f.v == "":
			errs = append(errs, fmt.Errorf("lb: haproxy.%s is required", f.key))
		case !haproxyName.MatchString(f.v):
			errs = append(errs, fmt.Errorf("lb: haproxy.%s %q is not a valid HAProxy name (letters, digits, '-', '_', '.', ':')", f.key, f.v))
		}
	}
	errs = append(errs,
		nonNegative("lb: haproxy.drain_timeout", c.DrainTimeout),
		nonNegative("lb: haproxy.up_timeout", c.UpTimeout),
		nonNegative("lb: haproxy.poll_interval", c.PollInterval),
		nonNegative("lb: haproxy.command_timeout", c.CommandTimeout),
	)
	return errors.Join(errs...)
}

// HAProxy is the haproxy Driver.
type HAProxy struct {
	backend, server string
	drainTimeout    time.Duration
	upTimeout       time.Duration
	poll            time.Duration
	api             runtimeAPI
	id              string // "backend/server", for messages
	log             hclog.Logger
}

var _ Driver = (*HAProxy)(nil)

// NewHAProxy validates cfg and returns a driver. It does not contact
// HAProxy, so the agent can start before the load balancer is reachable.
func NewHAProxy(cfg HAProxyConfig, logger hclog.Logger) (*HAProxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	id := cfg.Backend + "/" + cfg.Server
	return &HAProxy{
		backend:      cfg.Backend,
		server:       cfg.Server,
		drainTimeout: orDefault(cfg.DrainTimeout, DefaultHAProxyDrainTimeout),
		upTimeout:    orDefault(cfg.UpTimeout, DefaultHAProxyUpTimeout),
		poll:         orDefault(cfg.PollInterval, DefaultPollInterval),
		api:          runtimeAPI{socket: cfg.Socket, timeout: orDefault(cfg.CommandTimeout, DefaultHAProxyCommandTimeout)},
		id:           id,
		log:          orNull(logger).Named("lb.haproxy").With("server", id),
	}, nil
}

// DrainReport says how a Detach went.
type DrainReport struct {
	// AlreadyDetached: the server was in maint before Detach; nothing
	// was changed.
	AlreadyDetached bool
	// Drained: current and queued sessions reached 0 before maint was set.
	Drained bool
	// Remaining is the number of sessions (current + queued) still open
	// when DrainTimeout ran out and maint was set anyway; 0 if Drained.
	Remaining int
	// Waited is the time from "drain" to "maint".
	Waited time.Duration
}

// Detach is DetachReport without the report.
func (h *HAProxy) Detach(ctx context.Context) error {
	_, err := h.DetachReport(ctx)
	return err
}

// DetachReport sets the server to drain (no new requests; open ones
// continue), waits until its current and queued sessions reach 0 or
// DrainTimeout runs out, then sets it to maint. A drain timeout is not an
// error: it is logged at warn level and shown in the report, because a
// client holding a connection open must not block a deploy forever.
//
// If ctx ends or the runtime API fails while draining, the server is left
// in drain, which is safe (no new requests); a later Detach or Attach
// continues from there.
func (h *HAProxy) DetachReport(ctx context.Context) (DrainReport, error) {
	var rep DrainReport
	// Setting "drain" on a server in maint would clear maint, so a second
	// Detach must not touch it.
	if ss, err := h.api.showServersState(ctx, h.backend, h.server); err != nil {
		return rep, err
	} else if ss.AdminState&admForcedMaint != 0 {
		h.log.Info("already detached (maint); nothing to do")
		rep.AlreadyDetached = true
		return rep, nil
	}

	start := time.Now()
	if err := h.api.setServerState(ctx, h.backend, h.server, "drain"); err != nil {
		return rep, err
	}
	h.log.Info("set to drain; waiting for sessions to finish", "drain_timeout", h.drainTimeout)

	deadline := start.Add(h.drainTimeout)
	for {
		st, err := h.api.showServerStat(ctx, h.backend, h.server)
		if err != nil {
			return rep, fmt.Errorf("%w (server left in drain)", err)
		}
		busy := st.Scur + st.Qcur
		if busy == 0 {
			rep.Drained = true
			break
		}
		left := time.Until(deadline)
		if left <= 0 {
			rep.Remaining = busy
			h.log.Warn("drain timeout reached with sessions still open; setting maint anyway (open sessions are not cut)",
				"sessions", st.Scur, "queued", st.Qcur, "drain_timeout", h.drainTimeout)
			break
		}
		h.log.Trace("draining", "sessions", st.Scur, "queued", st.Qcur)
		if err := sleepCtx(ctx, min(h.poll, left)); err != nil {
			return rep, fmt.Errorf("lb/haproxy: %s: detach interrupted while draining (%d sessions open; server left in drain): %w", h.id, busy, err)
		}
	}

	if err := h.api.setServerState(ctx, h.backend, h.server, "maint"); err != nil {
		return rep, fmt.Errorf("%w (server left in drain)", err)
	}
	rep.Waited = time.Since(start)
	h.log.Info("detached (maint)", "drained", rep.Drained, "remaining_sessions", rep.Remaining, "waited", rep.Waited)
	return rep, nil
}

// Attach sets the server to ready and waits until HAProxy's status column
// reads exactly "UP" (or "no check" for a server without health checks).
//
// Why not return at "UP 1/2": HAProxy puts a server set ready into rotation
// at once, with its health at the lowest "up" value, so a single failed
// check marks it DOWN. "UP" means the checks have passed since, i.e. the
// host really answers. With "check inter I fall F" that takes about
// (F-1)×I after "ready"; for a server that was DOWN it takes R×I (rise).
//
// On timeout the server stays ready (in rotation as far as its checks
// allow); the error names the last status and check result.
func (h *HAProxy) Attach(ctx context.Context) error {
	start := time.Now()
	if err := h.api.setServerState(ctx, h.backend, h.server, "ready"); err != nil {
		return err
	}
	h.log.Info("set to ready; waiting for HAProxy to report UP", "up_timeout", h.upTimeout)

	deadline := start.Add(h.upTimeout)
	var last serverStat
	for {
		st, err := h.api.showServerStat(ctx, h.backend, h.server)
		if err != nil {
			return err
		}
		if st.Status != last.Status {
			h.log.Debug("status", "status", st.Status, "check", st.CheckDesc)
		}
		last = st
		if st.Status == "UP" || st.Status == "no check" {
			if st.Status == "no check" {
				h.log.Warn("server has no health check; HAProxy cannot confirm the host answers")
			}
			h.log.Info("attached (UP)", "waited", time.Since(start))
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("lb/haproxy: %s not UP within %v after \"ready\" (last status %q, check %s): %w",
				h.id, h.upTimeout, last.Status, checkText(last), ErrTimeout)
		}
		if err := sleepCtx(ctx, min(h.poll, left)); err != nil {
			return fmt.Errorf("lb/haproxy: %s: attach interrupted waiting for UP (last status %q, check %s): %w",
				h.id, last.Status, checkText(last), err)
		}
	}
}

func checkText(st serverStat) string {
	switch {
	case st.CheckStatus == "" && st.CheckDesc == "":
		return "none"
	case st.CheckDesc == "":
		return st.CheckStatus
	}
	return fmt.Sprintf("%s %q", st.CheckStatus, st.CheckDesc)
}

// Status reads "show stat" for the status column and current sessions, and
// "show servers state" for the admin flags (drain/maint set by an operator
// or by Detach). The two reads are not atomic; a change in between shows
// up on the next call.
func (h *HAProxy) Status(ctx context.Context) (Status, error) {
	st, err := h.api.showServerStat(ctx, h.backend, h.server)
	if err != nil {
		return Status{State: StateUnknown, Sessions: -1}, err
	}
	ss, err := h.api.showServersState(ctx, h.backend, h.server)
	if err != nil {
		return Status{State: StateUnknown, Sessions: -1}, err
	}
	detail := st.Status
	if st.CheckDesc != "" {
		detail += " (" + st.CheckDesc + ")"
	}
	return Status{State: classify(st, ss.AdminState), Detail: detail, Sessions: st.Scur + st.Qcur}, nil
}
