package build

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// Defaults for settings left out of the config (zero).
const (
	DefaultArtifacts      = "**/target/*.zip"
	DefaultMaxLogBytes    = 4 << 20
	DefaultBuildTimeout   = 30 * time.Minute
	DefaultScanTimeout    = 30 * time.Minute
	DefaultGitTimeout     = 10 * time.Minute
	DefaultKeepWorkspaces = 24 * time.Hour
)

// Sandbox modes.
const (
	SandboxBwrap = "bwrap"
	SandboxNone  = "none"
)

// Config is the agent config's `builder:` section. Its presence makes the
// agent accept build and code_scan tasks. Durations are written as "30s",
// "10m"; zero or absent means the default named on the field.
//
//	builder:
//	  workspace_dir: /var/lib/deckhand-agent/workspaces
//	  keep_workspaces: 24h
//	  allowed_repositories:
//	    - https://git.example.com/site/
//	  git_timeout: 10m
//	  git_env: [SSH_AUTH_SOCK]
//	  sandbox: bwrap
//	  sandbox_read_only: [/opt/maven]
//	  artifacts: "**/target/*.zip"
//	  max_log_bytes: 4194304
//	  profiles:
//	    maven:
//	      command: [/opt/maven/bin/mvn, -B, -Dmaven.repo.local=/var/cache/deckhand/m2, clean, install]
//	      timeout: 45m
//	      env: [JAVA_HOME=/usr/lib/jvm/java-11-openjdk-amd64, MAVEN_OPTS]
//	      network: true
//	      cache_dirs: [/var/cache/deckhand/m2]
//	  scans:
//	    quality:
//	      command: [/usr/local/bin/site-scan, --out, target/metrics.json]
//	      timeout: 20m
//	      metrics_file: target/metrics.json
type Config struct {
	Pos yamlconf.Pos `yaml:"-"`

	// WorkspaceDir holds one workspace per build task. Default
	// <data_dir>/workspaces.
	WorkspaceDir string `yaml:"workspace_dir"`
	// KeepWorkspaces is how long a finished build's workspace is kept for
	// the code scan of its execution; older workspaces are removed when
	// the next build starts. Default DefaultKeepWorkspaces.
	KeepWorkspaces yamlconf.Duration `yaml:"keep_workspaces"`
	// AllowedRepositories are the repository URL prefixes this builder
	// clones from; a task's repository must start with one of them, at a
	// path boundary. Required: there is no default that allows any.
	AllowedRepositories []string `yaml:"allowed_repositories"`
	// GitTimeout bounds the clone. Default DefaultGitTimeout.
	GitTimeout yamlconf.Duration `yaml:"git_timeout"`
	// GitEnv names environment variables of the agent passed to git (e.g.
	// SSH_AUTH_SOCK, GIT_SSH_COMMAND, HTTPS_PROXY); NAME=VALUE sets one.
	// Everything else is left out of git's environment.
	GitEnv []string `yaml:"git_env"`
	// Sandbox is "bwrap" (run build and scan commands under bubblewrap) or
	// "none". Default: bwrap when it is installed, none otherwise (logged
	// as a warning at start).
	Sandbox string `yaml:"sandbox"`
	// SandboxReadOnly are extra host paths made visible read-only inside
	// the sandbox (e.g. /opt/maven); /usr, /bin, /lib* and a few /etc
	// entries always are.
	SandboxReadOnly []string `yaml:"sandbox_read_only"`
	// Artifacts is the glob, relative to the checkout, of the files
	// uploaded after a successful build. "**" matches any number of
	// directories. Default DefaultArtifacts: every target/*.zip at any
	// depth, as Maven multi-module builds produce them.
	Artifacts string `yaml:"artifacts"`
	// MaxLogBytes caps the build and scan output streamed to the server;
	// the last lines are always in the result. Default DefaultMaxLogBytes.
	MaxLogBytes int64 `yaml:"max_log_bytes"`
	// Profiles are the build commands a Build task may name. At least one.
	Profiles map[string]Profile `yaml:"profiles"`
	// Scans are the code scan commands a CodeScan task may name.
	Scans map[string]Scan `yaml:"scans"`
}

// Step is how one command runs; profiles and scans share it.
type Step struct {
	// Command is the argv, run in the checkout without a shell. A first
	// element without '/' is looked up in the sandbox's PATH; one with
	// '/' may be absolute or relative to the checkout (./mvnw). Required.
	Command []string `yaml:"command"`
	// Timeout bounds the command; it is killed when it runs out.
	Timeout yamlconf.Duration `yaml:"timeout"`
	// Env lists environment variables: NAME passes the agent's value (if
	// set), NAME=VALUE sets one. The command starts from an empty
	// environment otherwise (PATH, HOME, LANG, TMPDIR are set).
	Env []string `yaml:"env"`
	// Network keeps the host's network inside the sandbox (a Maven build
	// that downloads its dependencies needs it). Default false: the
	// command runs without network.
	Network bool `yaml:"network"`
	// CacheDirs are host directories bound writable at the same path
	// inside the sandbox and shared by all builds (a Maven repository).
	// Created 0700 when missing.
	CacheDirs []string `yaml:"cache_dirs"`
}

// Profile is one named build command.
type Profile struct {
	Pos  yamlconf.Pos `yaml:"-"`
	Step `yaml:",inline"`
}

// Scan is one named code scan command and the file it leaves.
type Scan struct {
	Pos  yamlconf.Pos `yaml:"-"`
	Step `yaml:",inline"`
	// MetricsFile is the file, relative to the checkout, the scan writes
	// and the CodeScan task returns verbatim. Required.
	MetricsFile string `yaml:"metrics_file"`
}

var (
	namePattern    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Validate reports every problem in c, joined, as *yamlconf.Error values
// naming file and the line of the offending key, and fills in defaults
// (workspace_dir under dataDir). It does not look at the host: New checks
// that bwrap exists.
func (c *Config) Validate(file, dataDir string) error {
	var errs []error
	bad := func(p yamlconf.Pos, key, format string, args ...any) {
		errs = append(errs, yamlconf.Errorf(file, p.Of(key), "builder."+format, args...))
	}
	if c.WorkspaceDir == "" {
		c.WorkspaceDir = filepath.Join(dataDir, "workspaces")
	} else if !filepath.IsAbs(c.WorkspaceDir) {
		bad(c.Pos, "workspace_dir", "workspace_dir must be an absolute path, got %q", c.WorkspaceDir)
	}
	if c.KeepWorkspaces == 0 {
		c.KeepWorkspaces = yamlconf.Duration(DefaultKeepWorkspaces)
	}
	if c.GitTimeout == 0 {
		c.GitTimeout = yamlconf.Duration(DefaultGitTimeout)
	}
	if len(c.AllowedRepositories) == 0 {
		bad(c.Pos, "allowed_repositories", "allowed_repositories is required: the repository URL prefixes this builder may clone (e.g. https://git.example.com/site/)")
	}
	for _, r := range c.AllowedRepositories {
		if err := checkRepositoryText(r); err != nil {
			bad(c.Pos, "allowed_repositories", "allowed_repositories: %q %v", r, err)
		}
	}
	for _, e := range c.GitEnv {
		if err := checkEnvEntry(e); err != nil {
			bad(c.Pos, "git_env", "git_env: %v", err)
		}
	}
	switch c.Sandbox {
	case "", SandboxBwrap, SandboxNone:
	default:
		bad(c.Pos, "sandbox", "sandbox %q is not one of bwrap, none (or leave it out: bwrap when installed)", c.Sandbox)
	}
	for _, p := range c.SandboxReadOnly {
		if !filepath.IsAbs(p) || filepath.Clean(p) == "/" {
			bad(c.Pos, "sandbox_read_only", "sandbox_read_only: %q must be an absolute path other than /", p)
		}
	}
	if c.Artifacts == "" {
		c.Artifacts = DefaultArtifacts
	} else if err := checkGlob(c.Artifacts); err != nil {
		bad(c.Pos, "artifacts", "artifacts %q: %v", c.Artifacts, err)
	}
	switch {
	case c.MaxLogBytes < 0:
		bad(c.Pos, "max_log_bytes", "max_log_bytes must not be negative (got %d)", c.MaxLogBytes)
	case c.MaxLogBytes == 0:
		c.MaxLogBytes = DefaultMaxLogBytes
	}
	if len(c.Profiles) == 0 {
		bad(c.Pos, "profiles", "profiles: at least one build profile is required (name: {command: [...]})")
	}
	for _, name := range sortedKeys(c.Profiles) {
		p := c.Profiles[name]
		where := "profiles." + name
		if !namePattern.MatchString(name) {
			bad(p.Pos, "command", "%s: a profile name must be 1-63 letters, digits, '.', '_' or '-'", where)
		}
		c.checkStep(&p.Step, p.Pos, where, DefaultBuildTimeout, bad)
		c.Profiles[name] = p
	}
	for _, name := range sortedKeys(c.Scans) {
		s := c.Scans[name]
		where := "scans." + name
		if !namePattern.MatchString(name) {
			bad(s.Pos, "command", "%s: a scan name must be 1-63 letters, digits, '.', '_' or '-'", where)
		}
		c.checkStep(&s.Step, s.Pos, where, DefaultScanTimeout, bad)
		switch {
		case s.MetricsFile == "":
			bad(s.Pos, "metrics_file", "%s.metrics_file is required: the file the scan writes, relative to the checkout", where)
		case !filepath.IsLocal(s.MetricsFile):
			bad(s.Pos, "metrics_file", "%s.metrics_file %q must be a relative path inside the checkout", where, s.MetricsFile)
		}
		c.Scans[name] = s
	}
	return errors.Join(errs...)
}

func (c *Config) checkStep(s *Step, p yamlconf.Pos, where string, defTimeout time.Duration, bad func(yamlconf.Pos, string, string, ...any)) {
	if len(s.Command) == 0 || s.Command[0] == "" {
		bad(p, "command", "%s.command is required: the argv to run in the checkout, e.g. [mvn, -B, clean, install]", where)
	}
	if s.Timeout == 0 {
		s.Timeout = yamlconf.Duration(defTimeout)
	}
	for _, e := range s.Env {
		if err := checkEnvEntry(e); err != nil {
			bad(p, "env", "%s.env: %v", where, err)
		}
	}
	for _, d := range s.CacheDirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) == "/" {
			bad(p, "cache_dirs", "%s.cache_dirs: %q must be an absolute path other than /", where, d)
		}
	}
}

func checkEnvEntry(e string) error {
	name, _, _ := strings.Cut(e, "=")
	if !envNamePattern.MatchString(name) {
		return fmt.Errorf("%q is not NAME or NAME=VALUE", e)
	}
	return nil
}

// checkGlob accepts a relative slash-separated pattern whose segments are
// path.Match patterns or "**".
func checkGlob(g string) error {
	if strings.HasPrefix(g, "/") {
		return errors.New("must be relative to the checkout")
	}
	for _, seg := range strings.Split(g, "/") {
		switch seg {
		case "":
			return errors.New("has an empty path segment")
		case "..":
			return errors.New("must not contain ..")
		case "**":
			continue
		}
		if _, err := path.Match(seg, ""); err != nil {
			return fmt.Errorf("segment %q: %v", seg, err)
		}
	}
	return nil
}

// checkRepositoryText refuses what cannot be a repository location (or a
// prefix of one) git should be handed: option-like text, control
// characters, git's command-running transports (ext::, fd::).
func checkRepositoryText(r string) error {
	switch {
	case r == "":
		return errors.New("is empty")
	case strings.HasPrefix(r, "-"):
		return errors.New("must not start with '-'")
	case strings.Contains(r, "::"):
		return errors.New("uses a git remote helper transport (ext::, fd::, ...), which is not allowed")
	}
	for _, ch := range r {
		if unicode.IsControl(ch) || unicode.IsSpace(ch) {
			return errors.New("contains whitespace or a control character")
		}
	}
	for _, seg := range strings.Split(r, "/") {
		if seg == ".." {
			return errors.New("must not contain a '..' segment")
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
