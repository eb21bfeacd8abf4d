// Package lb owns how a dispatcher agent takes its own host out of the load
// balancer's rotation before a deploy and puts it back afterwards.
//
// A Driver hides which load balancer is in front of the host: HAProxy
// through its runtime API (haproxy), a file that the load balancer's health
// check reads (healthfile), or commands the administrator configures
// (command). New picks one from Config.
//
// The order matters for not dropping requests (see WaitReady): after
// reloading Apache, wait until the host's own health URL answers 200, then
// Attach; AttachWhenReady does both.
package lb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/hashicorp/go-hclog"
)

// Driver detaches/attaches this host at its load balancer.
//
// Detach and Attach are idempotent: detaching a detached host or attaching
// an attached one succeeds. They must not be called concurrently on the same
// Driver; Status may be called at any time.
type Driver interface {
	// Detach takes the host out of rotation and returns once in-flight
	// requests have drained (or a driver-specific drain bound passed).
	Detach(ctx context.Context) error
	// Attach puts the host back and returns only when the load balancer
	// reports it in service, or with an error when it does not in time.
	Attach(ctx context.Context) error
	// Status reports what the load balancer (or the driver's stand-in for
	// it) says about this host now.
	Status(ctx context.Context) (Status, error)
}

// State is a driver-independent summary of the host's place at the load
// balancer.
type State string

const (
	// StateUnknown: the driver cannot tell (e.g. no status command).
	StateUnknown State = "unknown"
	// StateInService: attached and healthy; the load balancer sends it
	// new requests.
	StateInService State = "in-service"
	// StateChecking: attached but health checks have not settled, e.g.
	// HAProxy "UP 1/2" right after "set server ... state ready" (one failed
	// check takes it down) or "DOWN 1/2" on the way up.
	StateChecking State = "checking"
	// StateDown: attached but failing the load balancer's health checks.
	StateDown State = "down"
	// StateDraining: receives no new requests; existing ones continue.
	StateDraining State = "draining"
	// StateDetached: out of rotation (HAProxy MAINT, health file absent).
	StateDetached State = "detached"
)

// Status is one observation of the host at the load balancer.
type Status struct {
	State State
	// Detail is the load balancer's own words, for logs and operators,
	// e.g. `UP 1/2 (Layer7 check passed)` or a status command's output.
	Detail string
	// Sessions is the number of sessions the load balancer has open to
	// the host, or -1 when the driver cannot see it.
	Sessions int
}

// ErrTimeout is wrapped by errors returned when a driver's own bound ran
// out (haproxy up_timeout or command_timeout, command timeout), as opposed
// to the caller's ctx ending, which is reported by wrapping ctx.Err(). The
// haproxy drain timeout is not an error (see HAProxy.DetachReport).
var ErrTimeout = errors.New("timed out")

// Kinds accepted in Config.Kind.
const (
	KindHAProxy    = "haproxy"
	KindHealthFile = "healthfile"
	KindCommand    = "command"
)

// DefaultPollInterval is how often drivers re-check the load balancer while
// they wait, unless configured otherwise.
const DefaultPollInterval = 100 * time.Millisecond

// Config selects and configures a Driver. Exactly the section that matches
// Kind must be set. Durations decode from YAML strings such as "30s".
type Config struct {
	// Kind is "haproxy", "healthfile" or "command".
	Kind       string            `yaml:"kind" json:"kind"`
	HAProxy    *HAProxyConfig    `yaml:"haproxy,omitempty" json:"haproxy,omitempty"`
	HealthFile *HealthFileConfig `yaml:"healthfile,omitempty" json:"healthfile,omitempty"`
	Command    *CommandConfig    `yaml:"command,omitempty" json:"command,omitempty"`
}

// Validate reports every problem in c, joined, or nil. It does not contact
// the load balancer: the agent may start before it.
func (c Config) Validate() error {
	var errs []error
	sections := map[string]bool{
		KindHAProxy:    c.HAProxy != nil,
		KindHealthFile: c.HealthFile != nil,
		KindCommand:    c.Command != nil,
	}
	switch c.Kind {
	case KindHAProxy, KindHealthFile, KindCommand:
		if !sections[c.Kind] {
			errs = append(errs, fmt.Errorf("lb: kind is %q but the %q section is missing", c.Kind, c.Kind))
		}
	case "":
		errs = append(errs, fmt.Errorf("lb: kind is required (one of %q, %q, %q)", KindHAProxy, KindHealthFile, KindCommand))
	default:
		errs = append(errs, fmt.Errorf("lb: unknown kind %q (want %q, %q or %q)", c.Kind, KindHAProxy, KindHealthFile, KindCommand))
	}
	// A section for another kind is almost certainly a mistake (a copied
	// config or a half-done migration); refusing it beats silently
	// ignoring settings the operator believes are in effect.
	for _, k := range []string{KindHAProxy, KindHealthFile, KindCommand} {
		if sections[k] && k != c.Kind {
			errs = append(errs, fmt.Errorf("lb: kind is %q but a %q section is also set", c.Kind, k))
		}
	}
	if c.HAProxy != nil && c.Kind == KindHAProxy {
		errs = append(errs, c.HAProxy.validate())
	}
	if c.HealthFile != nil && c.Kind == KindHealthFile {
		errs = append(errs, c.HealthFile.validate())
	}
	if c.Command != nil && c.Kind == KindCommand {
		errs = append(errs, c.Command.validate())
	}
	return errors.Join(errs...)
}

// New validates cfg and returns the Driver it selects. A nil logger
// discards logs.
func New(cfg Config, logger hclog.Logger) (Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Kind {
	case KindHAProxy:
		return NewHAProxy(*cfg.HAProxy, logger)
	case KindHealthFile:
		return NewHealthFile(*cfg.HealthFile, logger)
	default:
		return NewCommand(*cfg.Command, logger)
	}
}

func orNull(l hclog.Logger) hclog.Logger {
	if l == nil {
		return hclog.NewNullLogger()
	}
	return l
}

// sleepCtx waits for d or until ctx ends, returning ctx.Err() in that case.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// nonNegative reports a negative duration setting; zero means "default".
func nonNegative(name string, v yamlconf.Duration) error {
	if v < 0 {
		return fmt.Errorf("%s must not be negative (got %v)", name, v.D())
	}
	return nil
}

// orDefault returns v, or def when v is zero.
func orDefault(v yamlconf.Duration, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v.D()
}
