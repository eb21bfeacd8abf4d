// Package config reads deckhand-agent's config file. Everything the agent
// runs locally (commands, credentials, paths) comes from here and never from
// the server: a task can choose what to do, not how to do it on the host.
package config

import (
	"net"
	"regexp"
	"time"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/agent/build"
	"github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/agent/lbtask"
	"github.com/deckhand-dev/deckhand/pkg/netaddr"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// Reconnect tunes how the agent finds its server again.
type Reconnect struct {
	// MaxBackoff caps the exponential, fully jittered retry delay. Default 30s.
	MaxBackoff yamlconf.Duration `yaml:"max_backoff"`
	// BaseBackoff is the first retry's ceiling. Default 500ms.
	BaseBackoff yamlconf.Duration `yaml:"base_backoff"`
	// Stagger is the window over which the first reconnect after losing an
	// established session is spread at random, so a server restart with
	// thousands of agents is not a thundering herd. Default 5s.
	Stagger yamlconf.Duration `yaml:"stagger"`
}

// Config is the whole agent config file.
type Config struct {
	File string `yaml:"-"`

	// HostID names this host; it must be declared in the server's config.
	HostID string `yaml:"host_id"`
	// Server is the control plane's host:port.
	Server string `yaml:"server"`
	// JoinToken enrolls the agent on its first start (from `deckctl tokens
	// create --host HOST`); ignored once a certificate exists.
	JoinToken string `yaml:"join_token"`
	// CAFingerprint pins the control plane's CA for enrollment (printed
	// with the token): no trust on first use.
	CAFingerprint string `yaml:"ca_fingerprint"`
	// Insecure talks to a --dev-insecure server without TLS. Only allowed
	// when server is a loopback address.
	Insecure bool `yaml:"insecure"`
	// DataDir holds the journal, downloaded artifacts and backups.
	DataDir   string    `yaml:"data_dir"`
	LogLevel  string    `yaml:"log_level"`
	Reconnect Reconnect `yaml:"reconnect"`
	// ApacheCtl is the argv used to ask Apache its version for HostFacts;
	// default tries apachectl, then apache2ctl.
	ApacheCtl []string `yaml:"apachectl"`
	// MetricsListen serves Prometheus metrics on http://ADDR/metrics;
	// default 127.0.0.1:9465, "off" to disable.
	MetricsListen string `yaml:"metrics_listen"`
	// JournalRetention is how long finished, acked tasks are kept to answer
	// re-sends. Default 168h (7 days).
	JournalRetention yamlconf.Duration `yaml:"journal_retention"`
	// AEM is the AEM instance on this host; without it the agent refuses
	// package_install tasks.
	AEM *aem.Config `yaml:"aem"`
	// LB is how this dispatcher is detached from and attached to its load
	// balancer; without it the agent refuses load-balancer tasks.
	LB *lbtask.Config `yaml:"lb"`
	// Builder makes this host a builder: clone, build and scan profiles
	// (docs/builder.md); without it the agent refuses build tasks.
	Builder *build.Config `yaml:"builder"`
	// Dispatcher is this host's Apache dispatcher config tree and cache;
	// without it the agent refuses dispatcher deploy/restore and cache
	// flush tasks.
	Dispatcher *dispatcher.Config `yaml:"dispatcher"`
}

var hostPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Load reads and validates an agent config file.
func Load(path string) (*Config, error) {
	var c Config
	if err := yamlconf.DecodeFile(path, &c); err != nil {
		return nil, err
	}
	c.File = path
	return &c, c.validate()
}

// Parse validates config text.
func Parse(file string, data []byte) (*Config, error) {
	var c Config
	if err := yamlconf.Decode(file, data, &c); err != nil {
		return nil, err
	}
	c.File = file
	return &c, c.validate()
}

func (c *Config) validate() error {
	if c.HostID == "" {
		return yamlconf.Errorf(c.File, 0, "host_id is required (the id this host has in the server's config)")
	}
	if !hostPattern.MatchString(c.HostID) {
		return yamlconf.Errorf(c.File, 0, "host_id %q must be 1-63 letters, digits, '.', '_' or '-'", c.HostID)
	}
	if c.Server == "" {
		return yamlconf.Errorf(c.File, 0, "server is required (the control plane's host:port)")
	}
	if _, _, err := net.SplitHostPort(c.Server); err != nil {
		return yamlconf.Errorf(c.File, 0, "server %q is not host:port: %v", c.Server, err)
	}
	if c.DataDir == "" {
		return yamlconf.Errorf(c.File, 0, "data_dir is required")
	}
	if c.Insecure && !netaddr.IsLoopback(c.Server) {
		return yamlconf.Errorf(c.File, 0, "insecure: true is only allowed with a loopback server address, not %q", c.Server)
	}
	if c.Reconnect.MaxBackoff == 0 {
		c.Reconnect.MaxBackoff = yamlconf.Duration(30 * time.Second)
	}
	if c.Reconnect.BaseBackoff == 0 {
		c.Reconnect.BaseBackoff = yamlconf.Duration(500 * time.Millisecond)
	}
	if c.Reconnect.Stagger == 0 {
		c.Reconnect.Stagger = yamlconf.Duration(5 * time.Second)
	}
	if c.MetricsListen == "" {
		c.MetricsListen = "127.0.0.1:9465"
	}
	if c.MetricsListen != "off" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return yamlconf.Errorf(c.File, 0, "metrics_listen %q is not host:port or off: %v", c.MetricsListen, err)
		}
	}
	if c.JournalRetention == 0 {
		c.JournalRetention = yamlconf.Duration(7 * 24 * time.Hour)
	}
	if c.LB != nil {
		if err := c.LB.Validate(c.File); err != nil {
			return err
		}
	}
	if c.AEM != nil {
		if err := c.AEM.Validate(c.File); err != nil {
			return err
		}
	}
	if c.Builder != nil {
		if err := c.Builder.Validate(c.File, c.DataDir); err != nil {
			return err
		}
	}
	if c.Dispatcher != nil {
		if err := c.Dispatcher.Prepare(c.File, c.DataDir); err != nil {
			return err
		}
	}
	return nil
}
