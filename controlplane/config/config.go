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
	// URL is a dispatcher's site base URL, for Security and Performance
	// Testing (e.g. http://10.0.0.7 or https://stage.example.com).
	URL string `yaml:"url"`
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

// Program is a Cloud Manager program: its production pipelines. Whether
// emergency mode is enabled starts from EmergencyModeEnabled and is
// switched at runtime by a cse or admin operator (deckctl program
// set-emergency), as Customer Success Engineers do.
type Program struct {
	Pos                  yamlconf.Pos `yaml:"-"`
	Name                 string       `yaml:"name"`
	EmergencyModeEnabled bool         `yaml:"emergency_mode_enabled"`
	Pipelines            []Pipeline   `yaml:"pipelines"`
}

// Pipeline is a production pipeline: stage deployment, stage testing,
// production deployment.
type Pipeline struct {
	Pos yamlconf.Pos `yaml:"-"`
	// Name is the pipeline id in the API.
	Name string `yaml:"name"`
	// Repository and Branch are what Validation checks and the build
	// clones.
	Repository string `yaml:"repository"`
	Branch     string `yaml:"branch"`
	// StageEnvironment and ProductionEnvironment name declared environments.
	StageEnvironment      string        `yaml:"stage_environment"`
	ProductionEnvironment string        `yaml:"production_environment"`
	Build                 PipelineBuild `yaml:"build"`
	// Gates configure Code Scanning, Security Testing and Performance
	// Testing (see docs/gates.md); each is kept as written and checked by
	// the gates package.
	CodeQuality *CodeQualityGate `yaml:"code_quality"`
	Security    *SecurityGate    `yaml:"security"`
	Performance *PerformanceGate `yaml:"performance"`
	// Approval, Schedule and CSESupport add the production phase's
	// waiting steps ("if enabled" in the seed).
	Approval   bool `yaml:"approval"`
	Schedule   bool `yaml:"schedule"`
	CSESupport bool `yaml:"cse_support"`
	// WaitingTimeout ends a step left waiting for a person; default 168h
	// (7 days), the seed's value.
	WaitingTimeout yamlconf.Duration `yaml:"waiting_timeout"`
}

// PipelineBuild says how the Build step runs.
type PipelineBuild struct {
	// Profile names a build profile in the builder's own config; the
	// command lives there, not here.
	Profile string `yaml:"profile"`
	// Builder picks a builder host; default: any online builder.
	Builder string `yaml:"builder"`
	// Timeout bounds clone and build; default 1h.
	Timeout yamlconf.Duration `yaml:"timeout"`
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
	// HTTPListen is the address of the HTTP/JSON API (docs/api.md), e.g.
	// 127.0.0.1:7444; empty (the default) leaves it off. It serves TLS
	// with the server's certificate, or plain HTTP in --dev-insecure mode
	// (loopback only).
	HTTPListen string `yaml:"http_listen"`
	// MetricsListen serves Prometheus metrics on http://ADDR/metrics;
	// default 127.0.0.1:9464, "off" to disable.
	MetricsListen string `yaml:"metrics_listen"`
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
	// Programs group production pipelines (Cloud Manager's programs).
	Programs []Program `yaml:"programs"`

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
	if c.MetricsListen == "" {
		c.MetricsListen = "127.0.0.1:9464"
	}
	if c.MetricsListen != "off" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return c.errf(0, "metrics_listen %q is not host:port or off: %v", c.MetricsListen, err)
		}
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
	return c.validatePrograms(envs)
}

func (c *Config) validatePrograms(envs map[string]int) error {
	progs := map[string]bool{}
	for i := range c.Programs {
		p := &c.Programs[i]
		if !idPattern.MatchString(p.Name) {
			return c.errf(p.Pos.Of("name"), "program name %q must be 1-63 letters, digits, '.', '_' or '-'", p.Name)
		}
		if progs[p.Name] {
			return c.errf(p.Pos.Of("name"), "program %q is declared twice", p.Name)
		}
		progs[p.Name] = true
		pipes := map[string]bool{}
		for j := range p.Pipelines {
			pl := &p.Pipelines[j]
			if !idPattern.MatchString(pl.Name) {
				return c.errf(pl.Pos.Of("name"), "pipeline name %q must be 1-63 letters, digits, '.', '_' or '-'", pl.Name)
			}
			if pipes[pl.Name] {
				return c.errf(pl.Pos.Of("name"), "program %q: pipeline %q is declared twice", p.Name, pl.Name)
			}
			pipes[pl.Name] = true
			for key, name := range map[string]string{"stage_environment": pl.StageEnvironment, "production_environment": pl.ProductionEnvironment} {
				if name == "" {
					return c.errf(pl.Pos.Line, "pipeline %q: %s is required", pl.Name, key)
				}
				if _, ok := envs[name]; !ok {
					return c.errf(pl.Pos.Of(key), "pipeline %q: %s %q is not a declared environment", pl.Name, key, name)
				}
			}
			if e, _ := c.Environment(pl.StageEnvironment); e.Type != EnvStage {
				return c.errf(pl.Pos.Of("stage_environment"), "pipeline %q: stage_environment %q is a %s environment, not stage", pl.Name, pl.StageEnvironment, e.Type)
			}
			if e, _ := c.Environment(pl.ProductionEnvironment); e.Type != EnvProd {
				return c.errf(pl.Pos.Of("production_environment"), "pipeline %q: production_environment %q is a %s environment, not prod", pl.Name, pl.ProductionEnvironment, e.Type)
			}
			if pl.Repository != "" && pl.Branch == "" {
				pl.Branch = "main"
			}
			if pl.Build.Builder != "" {
				h, ok := c.byID[pl.Build.Builder]
				if !ok || h.Role != RoleBuilder {
					return c.errf(pl.Pos.Of("build"), "pipeline %q: build.builder %q is not a declared builder host", pl.Name, pl.Build.Builder)
				}
			}
			if pl.Build.Timeout == 0 {
				pl.Build.Timeout = yamlconf.Duration(time.Hour)
			}
			if pl.WaitingTimeout == 0 {
				pl.WaitingTimeout = yamlconf.Duration(7 * 24 * time.Hour)
			}
			if err := pl.CodeQuality.validate(c.File); err != nil {
				return c.errf(pl.Pos.Of("code_quality"), "pipeline %q: %v", pl.Name, err)
			}
			if err := pl.Security.validate(c.File); err != nil {
				return c.errf(pl.Pos.Of("security"), "pipeline %q: %v", pl.Name, err)
			}
			if err := pl.Performance.validate(c.File); err != nil {
				return c.errf(pl.Pos.Of("performance"), "pipeline %q: %v", pl.Name, err)
			}
			stage, _ := c.Environment(pl.StageEnvironment)
			needURL := (pl.Security != nil && pl.Security.Enabled && pl.Security.BaseURL == "") || (pl.Performance != nil && pl.Performance.Enabled && pl.Performance.BaseURL == "")
			for _, h := range stage.Hosts {
				if needURL && h.Role == RoleDispatcher && h.URL == "" {
					return c.errf(h.Pos.Line, "pipeline %q tests the stage dispatchers: host %q needs url: (its site's base URL, e.g. http://10.0.0.7)", pl.Name, h.ID)
				}
			}
		}
	}
	return nil
}

// Pipeline finds a program's pipeline.
func (c *Config) Pipeline(program, pipeline string) (*Program, *Pipeline, bool) {
	for i := range c.Programs {
		p := &c.Programs[i]
		if p.Name != program {
			continue
		}
		for j := range p.Pipelines {
			if p.Pipelines[j].Name == pipeline {
				return p, &p.Pipelines[j], true
			}
		}
		return p, nil, false
	}
	return nil, nil, false
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
