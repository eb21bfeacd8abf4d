// Package lbtask runs the LoadBalancerDetach and LoadBalancerAttach tasks
// on a dispatcher host with the driver its config chooses (agent/lb).
// Attach first waits until the host's own health URL answers 200 — Apache
// does not accept work for up to a second after a graceful reload — then
// re-enables the host and returns only when the load balancer reports it in
// service. Both tasks are idempotent, so a re-run after a crash is safe.
package lbtask

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/hashicorp/go-hclog"
)

// Config is the agent config's `lb:` section: a driver (kind and its
// section) plus the direct readiness check.
type Config struct {
	lb.Config `yaml:",inline"`
	// HealthURL is this host's own health URL, requested directly (not
	// through the load balancer) before attaching, e.g.
	// http://127.0.0.1:80/health. Required.
	HealthURL string `yaml:"health_url"`
	// ReadyTimeout bounds the wait for HealthURL. Default 60s.
	ReadyTimeout yamlconf.Duration `yaml:"ready_timeout"`
	// ReadyInterval is the poll interval. Default 100ms.
	ReadyInterval yamlconf.Duration `yaml:"ready_interval"`
}

// Validate checks the section; file names the config in messages.
func (c *Config) Validate(file string) error {
	var errs []error
	if err := c.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HealthURL == "" {
		errs = append(errs, errors.New("lb.health_url is required: attach waits until the host answers it directly"))
	} else if u, err := url.Parse(c.HealthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("lb.health_url %q must be an http(s) URL", c.HealthURL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// Handler runs detach and attach tasks.
type Handler struct {
	cfg    *Config
	driver lb.Driver
	log    hclog.Logger
	attach bool
}

// New returns the detach and attach handlers sharing one driver.
func New(cfg *Config, log hclog.Logger) (detach, attach *Handler, err error) {
	d, err := lb.New(cfg.Config, log)
	if err != nil {
		return nil, nil, err
	}
	return &Handler{cfg: cfg, driver: d, log: log}, &Handler{cfg: cfg, driver: d, log: log, attach: true}, nil
}

// Run implements worker.Handler.
func (h *Handler) Run(ctx context.Context, t *worker.Task) (any, error) {
	start := time.Now()
	out := &task.LBOutput{Drained: true}
	var err error
	if h.attach {
		timeout := h.cfg.ReadyTimeout.D()
		if timeout <= 0 {
			timeout = time.Minute
		}
		interval := h.cfg.ReadyInterval.D()
		if interval <= 0 {
			interval = lb.DefaultPollInterval
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		err = lb.WaitReady(rctx, h.cfg.HealthURL, interval)
		cancel()
		if err != nil {
			err = fmt.Errorf("not attaching: %s did not answer 200 within %s: %w", h.cfg.HealthURL, timeout, err)
		} else {
			t.Logf("%s answers 200; attaching", h.cfg.HealthURL)
			err = h.driver.Attach(ctx)
		}
	} else if hp, ok := h.driver.(*lb.HAProxy); ok {
		var rep lb.DrainReport
		rep, err = hp.DetachReport(ctx)
		out.Drained, out.RemainingSessions = rep.Drained, rep.Remaining
		if err == nil && !rep.Drained {
			t.Logf("drain timeout: %d sessions were still open when the server was put in maintenance", rep.Remaining)
		}
	} else {
		err = h.driver.Detach(ctx)
	}
	out.Waited = time.Since(start)
	if st, serr := h.driver.Status(context.WithoutCancel(ctx)); serr == nil {
		out.State, out.Detail = string(st.State), st.Detail
	}
	return out, err
}
