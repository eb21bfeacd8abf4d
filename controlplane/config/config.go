// Package config reads and validates deckhand-server's config file: where
// it listens, where it keeps state, and the environments with their hosts.
package config

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// Role is what a host does in an AEM topology.
type Role string

const (
	RoleAuthor     Role = "author"
	RolePublish    Role = "publish"
	RoleDispatcher Role = "dispatcher"
	// RoleBuilder hosts run pipeline builds and code scans; rollouts do
	// not touch them.
	RoleBuilder Role = "builder"
)

// EnvType is dev, stage or prod.
type EnvType string

const (
	EnvDev   EnvType = "dev"
	EnvStage EnvType = "stage"
	EnvProd  EnvType = "prod"
)

// Host is one declared host.
type Host struct {
	Pos  yamlconf.Pos `yaml:"-"`
	ID   string       `yaml:"id"`
	Role Role         `yaml:"role"`
	// Pair is the publish/dispatcher pair number (1, 2, ...); 0 for authors.
	Pair int `yaml:"pair"`
}

// Environment is a named set of hosts deployed together.
type Environment struct {
	Pos   yamlconf.Pos `yaml:"-"`
	Name  string       `yaml:"name"`
	Type  EnvType      `yaml:"type"`
	Hosts []Host       `yaml:"hosts"`
	// SkipLBChanges leaves out the detach and attach steps; the seed allows
	// it for dev and stage environments only.
	SkipLBChanges bool `yaml:"skip_lb_changes"`
	// MaxUnavailable is how many publish/dispatcher pairs a production
	// rollout may have out of the load balancer at once (default 1). It is
	// a global budget: a pair left detached by a failure counts.
	MaxUnavailable int `yaml:"max_unavailable"`
	// InvalidatePaths are invalidated (like an activation) and FlushPaths
	// deleted from the dispatcher cache after the packages install; at
	// most 100 each.
	InvalidatePaths []string `yaml:"invalidate_paths"`
	FlushPaths      []string `yaml:"flush_paths"`
	// KeepFailedPublishDetached leaves a pair out of the load balancer when
	// its publish failed to install packages (default true): its
	// dispatcher would serve a half-deployed publish.
	KeepFailedPublishDetached *bool `yaml:"keep_failed_publish_detached"`
	// StepTimeout bounds each step of a rollout (default 30m).
	StepTimeout yamlconf.Duration `yaml:"step_timeout"`
}

// KeepPublishDetached is KeepFailedPublishDetached with its default.
func (e *Environment) KeepPublishDetached() bool {
	return e.KeepFailedPublishDetached == nil || *e.KeepFailedPublishDetached
}

// TLS is the server's certificate setup.
type TLS struct {
	// CACert and CAKey name an operator-supplied CA (both or neither);
	// without them the server creates its own in <data_dir>/ca.
	CACert string `yaml:"ca_cert"`
	CAKey  string `yaml:"ca_key"`
	// ServerNames are the DNS names and IPs agents and deckctl use to
	// reach the server; default: the listen host, localhost, loopback and
	// this machine's hostname.
	ServerNames []string `yaml:"server_names"`
	// HostCertLifetime is how long agent certificates are valid; agents
	// renew them before that. Default 720h (30 days).
	HostCertLifetime yamlconf.Duration `yaml:"host_cert_lifetime"`
}

// Config is the whole server config file.
type Config struct {
	// File is the path the config was read from, for messages.
	File string `yaml:"-"`

	// Listen is the gRPC address agents and deckctl connect to.
	Listen string `yaml:"listen"`
	// DataDir holds the bbolt state file and, later, the CA and artifacts.
	DataDir string `yaml:"data_dir"`
	// HeartbeatInterval is told to agents in Welcome; an agent silent for
	// three intervals is offline.
	HeartbeatInterval yamlconf.Duration `yaml:"heartbeat_interval"`
	LogLevel          string            `yaml:"log_level"`

	// TLS configures the control plane CA and the server certificate.
	TLS TLS `yaml:"tls"`
	// AdminCredentialsFile is where the first start writes the first
	// admin's credentials; default <data_dir>/admin-credentials.yaml.
	AdminCredentialsFile string `yaml:"admin_credentials_file"`

	Environments []Environment `yaml:"environments"`

	hosts []HostInfo          // derived in validate, in declaration order
	byID  map[string]HostInfo // derived in validate
}

// Defaults for keys left out.
const (
	DefaultListen            = "127.0.0.1:7443"
	DefaultHeartbeatInterval = 10 * time.Second
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Load reads and validates a config file.
func Load(path string) (*Config, error) {
	var c Config
	if err := yamlconf.DecodeFile(path, &c); err != nil {
		return nil, err
	}
	c.File = path
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Parse validates config text; file names it in errors.
func Parse(file string, data []byte) (*Config, error) {
	var c Config
	if err := yamlconf.Decode(file, data, &c); err != nil {
		return nil, err
	}
	c.File = file
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) errf(line int, format string, args ...any) error {
	return yamlconf.Errorf(c.File, line, format, args...)
}

func (c *Config) validate() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c.errf(0, "listen %q is not host:port: %v", c.Listen, err)
	}
	if c.DataDir == "" {
		return c.errf(0, "data_dir is required (where the server keeps its state)")
	}
	if (c.TLS.CACert == "") != (c.TLS.CAKey == "") {
		return c.errf(0, "tls: ca_cert and ca_key must be given together")
	}
	if c.TLS.HostCertLifetime != 0 && c.TLS.HostCertLifetime.D() < 30*time.Second {
		return c.errf(0, "tls: host_cert_lifetime %s is below the minimum of 30s", c.TLS.HostCertLifetime.D())
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = yamlconf.Duration(DefaultHeartbeatInterval)
	}
	if c.HeartbeatInterval.D() < 100*time.Millisecond {
		return c.errf(0, "heartbeat_interval %s is below the minimum of 100ms", c.HeartbeatInterval.D())
	}
	c.hosts = nil
	envs := map[string]int{}
	hosts := map[string]string{}
	for i := range c.Environments {
		e := &c.Environments[i]
		if !idPattern.MatchString(e.Name) {
			return c.errf(e.Pos.Of("name"), "environment name %q must be 1-63 letters, digits, '.', '_' or '-'", e.Name)
		}
		if prev, dup := envs[e.Name]; dup {
			return c.errf(e.Pos.Of("name"), "environment %q is declared twice (first at line %d)", e.Name, prev)
		}
		envs[e.Name] = e.Pos.Of("name")
		switch e.Type {
		case EnvDev, EnvStage, EnvProd:
		case "":
			return c.errf(e.Pos.Line, "environment %q: type is required (dev, stage or prod)", e.Name)
		default:
			return c.errf(e.Pos.Of("type"), "environment %q: type %q is not one of dev, stage, prod", e.Name, e.Type)
		}
		if len(e.Hosts) == 0 {
			return c.errf(e.Pos.Line, "environment %q has no hosts", e.Name)
		}
		if e.SkipLBChanges && e.Type == EnvProd {
			return c.errf(e.Pos.Of("skip_lb_changes"), "environment %q: skip_lb_changes is only allowed for dev and stage environments", e.Name)
		}
		if e.MaxUnavailable < 0 {
			return c.errf(e.Pos.Of("max_unavailable"), "environment %q: max_unavailable must be 1 or more", e.Name)
		}
		if e.MaxUnavailable == 0 {
			e.MaxUnavailable = 1
		}
		for key, paths := range map[string][]string{"invalidate_paths": e.InvalidatePaths, "flush_paths": e.FlushPaths} {
			if len(paths) > 100 {
				return c.errf(e.Pos.Of(key), "environment %q: %s has %d entries; at most 100 are allowed", e.Name, key, len(paths))
			}
			for _, p := range paths {
				if err := ValidCachePath(p); err != nil {
					return c.errf(e.Pos.Of(key), "environment %q: %s: %v", e.Name, key, err)
				}
			}
		}
		if e.StepTimeout == 0 {
			e.StepTimeout = yamlconf.Duration(30 * time.Minute)
		}
		type pairSeen struct{ publish, dispatcher string }
		pairs := map[int]*pairSeen{}
		for j := range e.Hosts {
			h := &e.Hosts[j]
			if !idPattern.MatchString(h.ID) {
				return c.errf(h.Pos.Of("id"), "host id %q must be 1-63 letters, digits, '.', '_' or '-'", h.ID)
			}
			if other, dup := hosts[h.ID]; dup {
				return c.errf(h.Pos.Of("id"), "host %q is declared twice (also in environment %q)", h.ID, other)
			}
			hosts[h.ID] = e.Name
			switch h.Role {
			case RoleAuthor, RoleBuilder:
				if h.Pos.Has("pair") {
					return c.errf(h.Pos.Of("pair"), "host %q: an %s is not part of a publish/dispatcher pair; remove pair", h.ID, h.Role)
				}
			case RolePublish, RoleDispatcher:
				if h.Pair < 1 {
					return c.errf(h.Pos.Of("pair"), "host %q: a %s host needs pair: N (1, 2, ...) naming its publish/dispatcher pair", h.ID, h.Role)
				}
				p := pairs[h.Pair]
				if p == nil {
					p = &pairSeen{}
					pairs[h.Pair] = p
				}
				slot := &p.publish
				if h.Role == RoleDispatcher {
					slot = &p.dispatcher
				}
				if *slot != "" {
					return c.errf(h.Pos.Of("pair"), "host %q: pair %d already has a %s (%s)", h.ID, h.Pair, h.Role, *slot)
				}
				*slot = h.ID
			case "":
				return c.errf(h.Pos.Line, "host %q: role is required (author, publish, dispatcher or builder)", h.ID)
			default:
				return c.errf(h.Pos.Of("role"), "host %q: role %q is not one of author, publish, dispatcher, builder", h.ID, h.Role)
			}
		}
		for _, h := range e.Hosts {
			c.hosts = append(c.hosts, HostInfo{Host: h, Env: e.Name, EnvType: e.Type})
		}
		nums := make([]int, 0, len(pairs))
		for n := range pairs {
			nums = append(nums, n)
		}
		sort.Ints(nums)
		for _, n := range nums {
			p := pairs[n]
			if p.publish == "" || p.dispatcher == "" {
				have := p.publish + p.dispatcher
				return c.errf(e.Pos.Line, "environment %q: pair %d has only %s; each pair is one publish and one dispatcher", e.Name, n, have)
			}
		}
	}
	c.byID = make(map[string]HostInfo, len(c.hosts))
	for _, h := range c.hosts {
		c.byID[h.ID] = h
	}
	return nil
}

// ValidCachePath checks a dispatcher cache path: absolute, no "..", no
// NUL, no control characters (it travels in an HTTP header).
func ValidCachePath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("cache path %q must be absolute", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return fmt.Errorf("cache path %q must not contain ..", p)
		}
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("cache path %q contains a control character", p)
		}
	}
	return nil
}

// HostInfo is a declared host with its environment.
type HostInfo struct {
	Host
	Env     string
	EnvType EnvType
}

// Hosts returns every declared host, in declaration order.
func (c *Config) Hosts() []HostInfo { return c.hosts }

// Lookup finds a declared host by id.
func (c *Config) Lookup(id string) (HostInfo, bool) {
	h, ok := c.byID[id]
	return h, ok
}

// Environment finds an environment by name.
func (c *Config) Environment(name string) (*Environment, bool) {
	for i := range c.Environments {
		if c.Environments[i].Name == name {
			return &c.Environments[i], true
		}
	}
	return nil, false
}

// String summarises the config for logs.
func (c *Config) String() string {
	return fmt.Sprintf("%s (%d environments, %d hosts)", c.File, len(c.Environments), len(c.Hosts()))
}
