package dispatcher

import (
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/safezip"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// Config is the "dispatcher" section of deckhand-agent's config file. It
// says where the host's Apache config lives and which local commands test
// and reload it. Commands are argv lists taken from this file only, never
// from a task: the control plane chooses what to deploy, not what runs.
//
// Call Prepare (or ApplyDefaults then Validate) after decoding.
type Config struct {
	Pos yamlconf.Pos `yaml:"-"`

	// HTTPDDir is the Apache config root the artifact is extracted into,
	// e.g. /etc/httpd on AMS (RHEL). Default /etc/httpd.
	HTTPDDir string `yaml:"httpd_dir"`
	// ServerRoot is what Apache resolves relative Include paths against
	// (the ServerRoot directive). Default: HTTPDDir, as on AMS.
	ServerRoot string `yaml:"server_root"`
	// ManagedDirs are the top-level directories of HTTPDDir a deployment
	// replaces as a whole; everything else in HTTPDDir (logs, modules and
	// run symlinks on RHEL) is never touched. An artifact with another
	// top-level entry is rejected. Default conf, conf.d,
	// conf.dispatcher.d, conf.modules.d.
	ManagedDirs []string `yaml:"managed_dirs"`
	// RequiredPaths must be in every artifact (a trailing "/" means a
	// directory). Default conf/, conf.d/, conf.dispatcher.d/.
	RequiredPaths []string `yaml:"required_paths"`
	// Immutable lists the files the host keeps whatever the artifact says
	// (AMS marks them chattr +i). Patterns are slash-separated, relative to
	// HTTPDDir, in path.Match syntax (e.g. "conf.d/available_vhosts/aem_*.vhost").
	// Default: the AMS list (DefaultImmutable).
	Immutable []string `yaml:"immutable"`
	// ConfigTest is the argv that checks the live config: exit 0 means it
	// is good; otherwise its output is reported verbatim. Default
	// [apachectl, -t].
	ConfigTest []string `yaml:"configtest"`
	// Reload is the argv that makes Apache load the config without
	// dropping connections. Default [apachectl, -k, graceful].
	Reload []string `yaml:"reload"`
	// CommandTimeout bounds each configtest and reload run; at the deadline
	// the command's process group is killed. Default 60s.
	CommandTimeout yamlconf.Duration `yaml:"command_timeout"`
	// BackupDir holds one directory per backup. Default <data_dir>/backups.
	BackupDir string `yaml:"backup_dir"`
	// BackupsKeep is how many backups are kept; older ones are deleted
	// after each deployment or restore. Default 10, at least 1.
	BackupsKeep int `yaml:"backups_keep"`
	// WorkDir holds staging trees and the directories moved aside during a
	// swap. It must be on the same filesystem as the managed directories
	// (the swap is a rename). Default <httpd_dir>/.deckhand, which also
	// gives staged files the SELinux context of the httpd config.
	WorkDir string `yaml:"work_dir"`
	// Limits bound what one artifact may extract to.
	Limits Limits `yaml:"limits"`
	// Flush configures CacheFlush tasks.
	Flush FlushConfig `yaml:"flush"`
}

// Limits bound an artifact's extraction (see safezip.Limits). Zero means
// the default noted on each field.
type Limits struct {
	Pos yamlconf.Pos `yaml:"-"`
	// MaxEntries bounds files, directories and symlinks. Default 20000
	// (a dispatcher config has hundreds to a few thousand).
	MaxEntries int `yaml:"max_entries"`
	// MaxTotalBytes bounds the bytes extracted. Default 256 MiB.
	MaxTotalBytes int64 `yaml:"max_total_bytes"`
	// MaxFileBytes bounds one file. Default 32 MiB.
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// MaxRatio bounds extracted bytes / archive size once more than
	// safezip's allowance (16 MiB) was extracted. Default 200.
	MaxRatio float64 `yaml:"max_ratio"`
}

// Flush modes.
const (
	// FlushHTTP posts to the dispatcher's invalidate.cache handler.
	FlushHTTP = "http"
	// FlushDocroot applies the same effect directly on the cache docroot,
	// for hosts without Adobe's dispatcher module or without a flush vhost.
	FlushDocroot = "docroot"
)

// FlushConfig configures CacheFlush.
type FlushConfig struct {
	Pos yamlconf.Pos `yaml:"-"`
	// Mode is "http" (default) or "docroot".
	Mode string `yaml:"mode"`
	// URL is the flush endpoint (http mode). Default
	// http://127.0.0.1/dispatcher/invalidate.cache.
	URL string `yaml:"url"`
	// Host is the Host header of flush requests (http mode); the AMS flush
	// vhost matches on it. Default "flush".
	Host string `yaml:"host"`
	// Timeout bounds each flush request (http mode). Default 10s.
	Timeout yamlconf.Duration `yaml:"timeout"`
	// Docroot is the dispatcher cache root (docroot mode), e.g.
	// /mnt/var/www/html on AMS publish dispatchers. Required in that mode.
	Docroot string `yaml:"docroot"`
	// StatFilesLevel is the farm's /statfileslevel (docroot mode): .stat
	// files are touched from the docroot (level 0) down to
	// min(statfileslevel, depth of the handle). Default 0.
	StatFilesLevel int `yaml:"statfileslevel"`
}

// DefaultImmutable is the AMS list of immutable dispatcher files
// (AEM-APIS.md section 3), relative to the httpd dir.
var DefaultImmutable = []string{
	"conf/httpd.conf",
	"conf.modules.d/02-dispatcher.conf",
	"conf.dispatcher.d/dispatcher.any",
	"conf.d/dispatcher_vhost.conf",
	"conf.d/logformat.conf",
	"conf.d/security.conf",
	"conf.d/mimetypes3d.conf",
	"conf.d/remoteip.conf",
	"conf.d/000_init_ootb_vars.conf",
	"conf.d/001_init_ams_vars.conf",
	"conf.d/variables/ootb.vars",
	"conf.d/whitelists/000_base_whitelist.rules",
	"conf.d/rewrites/base_rewrite.rules",
	"conf.d/rewrites/xforwarded_forcessl_rewrite.rules",
	"conf.d/available_vhosts/aem_author.vhost",
	"conf.d/available_vhosts/aem_publish.vhost",
	"conf.d/available_vhosts/aem_flush.vhost",
	"conf.d/available_vhosts/aem_health.vhost",
	"conf.d/available_vhosts/000_unhealthy_author.vhost",
	"conf.d/available_vhosts/000_unhealthy_publish.vhost",
	"conf.d/available_vhosts/aem_flush_author.vhost",
	"conf.d/available_vhosts/ams_lc.vhost",
	"conf.dispatcher.d/available_farms/000_ams_catchall_farm.any",
	"conf.dispatcher.d/available_farms/001_ams_author_flush_farm.any",
	"conf.dispatcher.d/available_farms/001_ams_publish_flush_farm.any",
	"conf.dispatcher.d/available_farms/002_ams_author_farm.any",
	"conf.dispatcher.d/available_farms/002_ams_lc_farm.any",
	"conf.dispatcher.d/available_farms/002_ams_publish_farm.any",
	"conf.dispatcher.d/cache/ams_author_cache.any",
	"conf.dispatcher.d/cache/ams_author_invalidate_allowed.any",
	"conf.dispatcher.d/cache/ams_publish_cache.any",
	"conf.dispatcher.d/cache/ams_publish_invalidate_allowed.any",
	"conf.dispatcher.d/clientheaders/ams_author_clientheaders.any",
	"conf.dispatcher.d/clientheaders/ams_publish_clientheaders.any",
	"conf.dispatcher.d/clientheaders/ams_common_clientheaders.any",
	"conf.dispatcher.d/clientheaders/ams_lc_clientheaders.any",
	"conf.dispatcher.d/filters/ams_author_filters.any",
	"conf.dispatcher.d/filters/ams_publish_filters.any",
	"conf.dispatcher.d/filters/ams_lc_filters.any",
	"conf.dispatcher.d/renders/ams_author_renders.any",
	"conf.dispatcher.d/renders/ams_lc_renders.any",
	"conf.dispatcher.d/renders/ams_publish_renders.any",
	"conf.dispatcher.d/vhosts/ams_author_vhosts.any",
	"conf.dispatcher.d/vhosts/ams_publish_vhosts.any",
	"conf.dispatcher.d/vhosts/ams_lc_vhosts.any",
}

// Defaults for fields of Config left empty.
const (
	DefaultHTTPDDir       = "/etc/httpd"
	DefaultCommandTimeout = 60 * time.Second
	DefaultBackupsKeep    = 10
	DefaultFlushURL       = "http://127.0.0.1/dispatcher/invalidate.cache"
	DefaultFlushHost      = "flush"
	DefaultFlushTimeout   = 10 * time.Second
	defaultMaxEntries     = 20_000
	defaultMaxTotalBytes  = 256 << 20
	defaultMaxFileBytes   = 32 << 20
	defaultMaxRatio       = 200
)

var (
	defaultManagedDirs   = []string{"conf", "conf.d", "conf.dispatcher.d", "conf.modules.d"}
	defaultRequiredPaths = []string{"conf/", "conf.d/", "conf.dispatcher.d/"}
)

// Prepare fills defaults and validates; file names the config file in
// errors and dataDir is the agent's data_dir (for backup_dir's default).
func (c *Config) Prepare(file, dataDir string) error {
	c.ApplyDefaults(dataDir)
	return c.Validate(file)
}

// ApplyDefaults fills every empty field with its default.
func (c *Config) ApplyDefaults(dataDir string) {
	if c.HTTPDDir == "" {
		c.HTTPDDir = DefaultHTTPDDir
	}
	c.HTTPDDir = filepath.Clean(c.HTTPDDir)
	if c.ServerRoot == "" {
		c.ServerRoot = c.HTTPDDir
	}
	if c.ManagedDirs == nil {
		c.ManagedDirs = append([]string(nil), defaultManagedDirs...)
	}
	if c.RequiredPaths == nil {
		c.RequiredPaths = append([]string(nil), defaultRequiredPaths...)
	}
	if c.Immutable == nil {
		c.Immutable = append([]string(nil), DefaultImmutable...)
	}
	if c.ConfigTest == nil {
		c.ConfigTest = []string{"apachectl", "-t"}
	}
	if c.Reload == nil {
		c.Reload = []string{"apachectl", "-k", "graceful"}
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = yamlconf.Duration(DefaultCommandTimeout)
	}
	if c.BackupDir == "" && dataDir != "" {
		c.BackupDir = filepath.Join(dataDir, "backups")
	}
	if c.BackupsKeep == 0 {
		c.BackupsKeep = DefaultBackupsKeep
	}
	if c.WorkDir == "" {
		c.WorkDir = filepath.Join(c.HTTPDDir, ".deckhand")
	}
	if c.Limits.MaxEntries == 0 {
		c.Limits.MaxEntries = defaultMaxEntries
	}
	if c.Limits.MaxTotalBytes == 0 {
		c.Limits.MaxTotalBytes = defaultMaxTotalBytes
	}
	if c.Limits.MaxFileBytes == 0 {
		c.Limits.MaxFileBytes = defaultMaxFileBytes
	}
	if c.Limits.MaxRatio == 0 {
		c.Limits.MaxRatio = defaultMaxRatio
	}
	if c.Flush.Mode == "" {
		c.Flush.Mode = FlushHTTP
	}
	if c.Flush.Mode == FlushHTTP {
		if c.Flush.URL == "" {
			c.Flush.URL = DefaultFlushURL
		}
		if c.Flush.Host == "" {
			c.Flush.Host = DefaultFlushHost
		}
		if c.Flush.Timeout == 0 {
			c.Flush.Timeout = yamlconf.Duration(DefaultFlushTimeout)
		}
	}
}

// Validate reports every problem, joined, each at its line when the
// config came from a file. It checks that the commands' programs exist so
// a typo is a start-up error rather than a failed deployment.
func (c *Config) Validate(file string) error {
	var errs []error
	bad := func(pos yamlconf.Pos, key, format string, args ...any) {
		errs = append(errs, yamlconf.Errorf(file, pos.Of(key), "dispatcher: "+key+": "+format, args...))
	}
	for _, k := range []struct{ key, val string }{{"httpd_dir", c.HTTPDDir}, {"server_root", c.ServerRoot}, {"backup_dir", c.BackupDir}, {"work_dir", c.WorkDir}} {
		switch {
		case k.val == "" && k.key == "backup_dir":
			bad(c.Pos, k.key, "is required when the agent has no data_dir")
		case !filepath.IsAbs(k.val):
			bad(c.Pos, k.key, "%q must be an absolute path", k.val)
		case filepath.Clean(k.val) == "/":
			bad(c.Pos, k.key, "must not be /")
		}
	}
	if filepath.IsAbs(c.BackupDir) && within(filepath.Clean(c.BackupDir), c.HTTPDDir) {
		bad(c.Pos, "backup_dir", "%q must not be inside httpd_dir (backups would be part of the config tree)", c.BackupDir)
	}
	for _, d := range c.ManagedDirs {
		if filepath.IsAbs(c.WorkDir) && within(filepath.Clean(c.WorkDir), filepath.Join(c.HTTPDDir, d)) {
			bad(c.Pos, "work_dir", "%q must not be inside the managed dir %s (it would be swapped with it)", c.WorkDir, d)
		}
	}
	if len(c.ManagedDirs) == 0 {
		bad(c.Pos, "managed_dirs", "must name at least one directory")
	}
	seen := map[string]bool{}
	for _, d := range c.ManagedDirs {
		switch {
		case d == "" || strings.ContainsAny(d, "/\\\x00") || d == "." || d == "..":
			bad(c.Pos, "managed_dirs", "%q must be one directory name directly inside httpd_dir", d)
		case strings.HasPrefix(d, ".deckhand"):
			bad(c.Pos, "managed_dirs", "%q is reserved for deckhand's work dir", d)
		case seen[d]:
			bad(c.Pos, "managed_dirs", "%q is listed twice", d)
		}
		seen[d] = true
	}
	for _, p := range c.RequiredPaths {
		if err := c.checkRel(strings.TrimSuffix(p, "/"), false); err != nil {
			bad(c.Pos, "required_paths", "%q: %v", p, err)
		}
	}
	for _, p := range c.Immutable {
		if err := c.checkRel(p, true); err != nil {
			bad(c.Pos, "immutable", "%q: %v", p, err)
		}
	}
	checkArgv := func(key string, argv []string) {
		if len(argv) == 0 || argv[0] == "" {
			bad(c.Pos, key, "must be an argv list whose first element is the program, e.g. [apachectl, -t]")
			return
		}
		if _, err := exec.LookPath(argv[0]); err != nil {
			bad(c.Pos, key, "%v", err)
		}
	}
	checkArgv("configtest", c.ConfigTest)
	checkArgv("reload", c.Reload)
	if c.CommandTimeout < 0 {
		bad(c.Pos, "command_timeout", "must not be negative")
	}
	if c.BackupsKeep < 1 {
		bad(c.Pos, "backups_keep", "must be at least 1 (a deployment needs its backup)")
	}
	if c.Limits.MaxEntries < 0 || c.Limits.MaxTotalBytes < 0 || c.Limits.MaxFileBytes < 0 || c.Limits.MaxRatio < 0 {
		bad(c.Limits.Pos, "limits", "values must not be negative")
	}
	switch c.Flush.Mode {
	case FlushHTTP:
		u, err := url.Parse(c.Flush.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(c.Flush.Pos, "url", "%q must be an http(s) URL such as %s", c.Flush.URL, DefaultFlushURL)
		}
		if c.Flush.Docroot != "" {
			bad(c.Flush.Pos, "docroot", "is only used in docroot mode (mode is %q)", c.Flush.Mode)
		}
	case FlushDocroot:
		switch {
		case c.Flush.Docroot == "":
			bad(c.Flush.Pos, "docroot", "is required in docroot mode (the dispatcher cache root, e.g. /mnt/var/www/html)")
		case !filepath.IsAbs(c.Flush.Docroot):
			bad(c.Flush.Pos, "docroot", "%q must be an absolute path", c.Flush.Docroot)
		case filepath.Clean(c.Flush.Docroot) == "/":
			bad(c.Flush.Pos, "docroot", "must not be /")
		}
		if c.Flush.URL != "" {
			bad(c.Flush.Pos, "url", "is only used in http mode (mode is %q)", c.Flush.Mode)
		}
	default:
		bad(c.Flush.Pos, "mode", "%q is not %q or %q", c.Flush.Mode, FlushHTTP, FlushDocroot)
	}
	if c.Flush.StatFilesLevel < 0 {
		bad(c.Flush.Pos, "statfileslevel", "must not be negative")
	}
	return errors.Join(errs...)
}

// checkRel validates a slash-separated path relative to the httpd dir
// whose first element is a managed dir.
func (c *Config) checkRel(p string, pattern bool) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.Contains(p, "\x00") {
		return errors.New("must be a non-empty slash-separated path relative to httpd_dir")
	}
	if path.Clean(p) != p {
		return fmt.Errorf("is not clean (write %q)", path.Clean(p))
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return errors.New(`must not contain ".."`)
		}
	}
	if pattern {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("bad pattern: %v", err)
		}
	}
	first, _, _ := strings.Cut(p, "/")
	if !c.isManaged(first) {
		return fmt.Errorf("is not inside one of the managed_dirs %v", c.ManagedDirs)
	}
	return nil
}

func (c *Config) isManaged(name string) bool {
	for _, d := range c.ManagedDirs {
		if d == name {
			return true
		}
	}
	return false
}

// IsImmutable reports whether rel (slash-separated, relative to the httpd
// dir) matches one of the immutable patterns.
func (c *Config) IsImmutable(rel string) bool {
	for _, p := range c.Immutable {
		if !strings.ContainsAny(p, `*?[\`) {
			// A literal (the whole AMS list): path.Match would compare the
			// same, at a cost that adds up over thousands of entries.
			if p == rel {
				return true
			}
			continue
		}
		if ok, _ := path.Match(p, rel); ok {
			return true
		}
	}
	return false
}

func (c *Config) limits() safezip.Limits {
	return safezip.Limits{
		MaxEntries:    c.Limits.MaxEntries,
		MaxTotalBytes: c.Limits.MaxTotalBytes,
		MaxFileBytes:  c.Limits.MaxFileBytes,
		MaxRatio:      c.Limits.MaxRatio,
	}
}

// within reports whether p is dir or below it (both clean).
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}
