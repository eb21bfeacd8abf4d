package aem

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// Defaults for settings left out of the config (zero).
const (
	DefaultRequestTimeout   = 2 * time.Minute
	DefaultInstallTimeout   = 10 * time.Minute
	DefaultReconcileTimeout = 30 * time.Minute
	DefaultPollInterval     = 2 * time.Second
	DefaultRetries          = 5
	DefaultBaseBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff       = 30 * time.Second
)

// maxRetries bounds retries.count; more than this is a typo, not a policy.
const maxRetries = 100

// Config is the agent's aem section: how to reach the AEM instance on this
// host. Durations are written as "30s", "10m"; zero or absent means the
// default named on the field.
//
//	aem:
//	  base_url: http://127.0.0.1:4502
//	  user: admin
//	  password_file: /etc/deckhand/aem-password
//	  request_timeout: 2m
//	  install_timeout: 10m
//	  reconcile_timeout: 30m
//	  poll_interval: 2s
//	  retries: {count: 5, base_backoff: 500ms, max_backoff: 30s}
//	  dependency_handling: strict
type Config struct {
	Pos yamlconf.Pos `yaml:"-"`

	// BaseURL is the instance's scheme, host and port, e.g.
	// http://127.0.0.1:4502 (a path prefix is kept, for an AEM behind a
	// context path). Required. Credentials do not belong in it.
	BaseURL string `yaml:"base_url"`
	// User is the AEM user for Basic auth. Required.
	User string `yaml:"user"`
	// Password is the user's password. Exactly one of Password and
	// PasswordFile is required.
	Password string `yaml:"password"`
	// PasswordFile is an absolute path to a file holding the password
	// (surrounding whitespace and a trailing newline are ignored). It is
	// read when the agent starts.
	PasswordFile string `yaml:"password_file"`
	// RequestTimeout bounds one upload, cmd=ls or installstatus request.
	// Default DefaultRequestTimeout.
	RequestTimeout yamlconf.Duration `yaml:"request_timeout"`
	// InstallTimeout bounds one install request. An install that outlasts it
	// is not abandoned: the client reconciles (see ReconcileTimeout).
	// Default DefaultInstallTimeout.
	InstallTimeout yamlconf.Duration `yaml:"install_timeout"`
	// ReconcileTimeout bounds how long the client waits for AEM to finish
	// an install whose request was lost before it gives up and reports the
	// package's state as unknown. Default DefaultReconcileTimeout.
	ReconcileTimeout yamlconf.Duration `yaml:"reconcile_timeout"`
	// PollInterval is how often installstatus.jsp is asked while
	// reconciling. Default DefaultPollInterval.
	PollInterval yamlconf.Duration `yaml:"poll_interval"`
	// Retries governs transient failures (connection refused or reset,
	// dropped connections, timeouts, HTTP 5xx).
	Retries Retries `yaml:"retries"`
	// DependencyHandling, when set, is sent with every install as
	// FileVault's dependencyHandling parameter (ignore, best_effort,
	// required or strict, any case). Empty leaves AEM's default. Deckhand
	// orders packages itself either way; strict makes AEM refuse rather
	// than silently install an uploaded dependency out of order.
	DependencyHandling string `yaml:"dependency_handling"`
}

// Retries governs retrying transient failures.
type Retries struct {
	Pos yamlconf.Pos `yaml:"-"`

	// Count is how many times a request that failed transiently is tried
	// again; written as 0 it means never. Absent (or 0 in a Config built
	// in Go) means DefaultRetries.
	Count int `yaml:"count"`
	// BaseBackoff is the first delay's ceiling; it doubles per failure up
	// to MaxBackoff, with full jitter. Defaults DefaultBaseBackoff and
	// DefaultMaxBackoff.
	BaseBackoff yamlconf.Duration `yaml:"base_backoff"`
	MaxBackoff  yamlconf.Duration `yaml:"max_backoff"`
}

// dependencyHandlings are FileVault's DependencyHandling values, lower case.
var dependencyHandlings = []string{"ignore", "best_effort", "required", "strict"}

// Validate reports every problem in c, joined, as *yamlconf.Error values
// naming file and the line of the offending key (0 when c was not decoded
// from YAML). It does not contact AEM or read the password file: the agent
// may start before AEM, and NewClient reads the file.
func (c *Config) Validate(file string) error {
	var errs []error
	bad := func(p yamlconf.Pos, key, format string, args ...any) {
		errs = append(errs, yamlconf.Errorf(file, p.Of(key), "aem."+format, args...))
	}
	if c.BaseURL == "" {
		bad(c.Pos, "base_url", "base_url is required (e.g. http://127.0.0.1:4502)")
	} else if err := checkBaseURL(c.BaseURL); err != nil {
		bad(c.Pos, "base_url", "base_url %q: %v", c.BaseURL, err)
	}
	if c.User == "" {
		bad(c.Pos, "user", "user is required (the AEM user that installs packages)")
	}
	switch {
	case c.Password != "" && c.PasswordFile != "":
		bad(c.Pos, "password_file", "set password or password_file, not both")
	case c.Password == "" && c.PasswordFile == "":
		bad(c.Pos, "password", "password or password_file is required")
	case c.PasswordFile != "" && !filepath.IsAbs(c.PasswordFile):
		bad(c.Pos, "password_file", "password_file must be an absolute path, got %q", c.PasswordFile)
	}
	for _, d := range []struct {
		name, key string
		v         yamlconf.Duration
		p         yamlconf.Pos
	}{
		{"request_timeout", "request_timeout", c.RequestTimeout, c.Pos},
		{"install_timeout", "install_timeout", c.InstallTimeout, c.Pos},
		{"reconcile_timeout", "reconcile_timeout", c.ReconcileTimeout, c.Pos},
		{"poll_interval", "poll_interval", c.PollInterval, c.Pos},
		{"retries.base_backoff", "base_backoff", c.Retries.BaseBackoff, c.Retries.Pos},
		{"retries.max_backoff", "max_backoff", c.Retries.MaxBackoff, c.Retries.Pos},
	} {
		// yamlconf rejects negative durations when decoding; a Config
		// built in Go has no such guard.
		if d.v < 0 {
			bad(d.p, d.key, "%s must not be negative (got %v)", d.name, d.v.D())
		}
	}
	if c.Retries.Count < 0 || c.Retries.Count > maxRetries {
		bad(c.Retries.Pos, "count", "retries.count must be between 0 and %d, got %d", maxRetries, c.Retries.Count)
	}
	if c.Retries.BaseBackoff > 0 && c.Retries.MaxBackoff > 0 && c.Retries.BaseBackoff > c.Retries.MaxBackoff {
		bad(c.Retries.Pos, "base_backoff", "retries.base_backoff (%v) must not exceed retries.max_backoff (%v)",
			c.Retries.BaseBackoff.D(), c.Retries.MaxBackoff.D())
	}
	if c.PollInterval > 0 && c.ReconcileTimeout > 0 && c.PollInterval > c.ReconcileTimeout {
		bad(c.Pos, "poll_interval", "poll_interval (%v) must not exceed reconcile_timeout (%v)",
			c.PollInterval.D(), c.ReconcileTimeout.D())
	}
	if c.DependencyHandling != "" && !validDependencyHandling(c.DependencyHandling) {
		bad(c.Pos, "dependency_handling", "dependency_handling %q is not one of %s (or leave it out for AEM's default)",
			c.DependencyHandling, strings.Join(dependencyHandlings, ", "))
	}
	return errors.Join(errs...)
}

// checkBaseURL accepts http(s)://host[:port][/prefix] and nothing else: a
// query or fragment would be silently mangled when paths are appended, and
// user info would put a credential where logs print URLs.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must start with http:// or https://")
	case u.Host == "":
		return errors.New("has no host")
	case u.User != nil:
		return errors.New("must not contain credentials; use user and password or password_file")
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.Contains(s, "#"):
		return errors.New("must not have a query or fragment")
	}
	return nil
}

func validDependencyHandling(v string) bool {
	v = strings.ToLower(v)
	for _, h := range dependencyHandlings {
		if v == h {
			return true
		}
	}
	return false
}

// settings is a Config with defaults applied.
type settings struct {
	requestTimeout, installTimeout, reconcileTimeout, pollInterval time.Duration
	retries                                                        int
	baseBackoff, maxBackoff                                        time.Duration
}

func (c *Config) settings() settings {
	s := settings{
		requestTimeout:   orDefault(c.RequestTimeout, DefaultRequestTimeout),
		installTimeout:   orDefault(c.InstallTimeout, DefaultInstallTimeout),
		reconcileTimeout: orDefault(c.ReconcileTimeout, DefaultReconcileTimeout),
		pollInterval:     orDefault(c.PollInterval, DefaultPollInterval),
		retries:          c.Retries.Count,
		baseBackoff:      orDefault(c.Retries.BaseBackoff, DefaultBaseBackoff),
		maxBackoff:       orDefault(c.Retries.MaxBackoff, DefaultMaxBackoff),
	}
	// A count written as 0 means "no retries"; one not written at all (or
	// a Go-built Config's zero) means the default.
	if s.retries == 0 && !c.Retries.Pos.Has("count") {
		s.retries = DefaultRetries
	}
	if s.baseBackoff > s.maxBackoff {
		s.baseBackoff = s.maxBackoff
	}
	return s
}

func orDefault(v yamlconf.Duration, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v.D()
}

// String describes the config without its password, for logs.
func (c *Config) String() string {
	return fmt.Sprintf("aem %s as %s", c.BaseURL, c.User)
}
