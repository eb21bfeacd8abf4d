package dispatcher

import (
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

type agentFile struct {
	DataDir    string  `yaml:"data_dir"`
	Dispatcher *Config `yaml:"dispatcher"`
}

func parse(t *testing.T, src string) (*Config, error) {
	t.Helper()
	var f agentFile
	if err := yamlconf.Decode("agent.yaml", []byte(src), &f); err != nil {
		return nil, err
	}
	require.NotNil(t, f.Dispatcher)
	return f.Dispatcher, f.Dispatcher.Prepare("agent.yaml", f.DataDir)
}

func TestConfigDefaults(t *testing.T) {
	c, err := parse(t, "data_dir: /var/lib/deckhand\ndispatcher:\n  configtest: [true]\n  reload: [true]\n")
	require.NoError(t, err)
	require.Equal(t, "/etc/httpd", c.HTTPDDir)
	require.Equal(t, "/etc/httpd", c.ServerRoot)
	require.Equal(t, []string{"conf", "conf.d", "conf.dispatcher.d", "conf.modules.d"}, c.ManagedDirs)
	require.Equal(t, []string{"conf/", "conf.d/", "conf.dispatcher.d/"}, c.RequiredPaths)
	require.Equal(t, DefaultImmutable, c.Immutable)
	require.Len(t, c.Immutable, 45)
	require.Equal(t, "/var/lib/deckhand/backups", c.BackupDir)
	require.Equal(t, 10, c.BackupsKeep)
	require.Equal(t, "/etc/httpd/.deckhand", c.WorkDir)
	require.Equal(t, 60*time.Second, c.CommandTimeout.D())
	require.Equal(t, 20_000, c.Limits.MaxEntries)
	require.Equal(t, FlushHTTP, c.Flush.Mode)
	require.Equal(t, "http://127.0.0.1/dispatcher/invalidate.cache", c.Flush.URL)
	require.Equal(t, "flush", c.Flush.Host)
	require.True(t, c.IsImmutable("conf/httpd.conf"))
	require.True(t, c.IsImmutable("conf.dispatcher.d/cache/ams_publish_invalidate_allowed.any"))
	require.False(t, c.IsImmutable("conf.d/available_vhosts/mysite.vhost"))

	// The defaults the brief names for the commands (found on $PATH or not,
	// they are what an AMS host runs).
	var d Config
	d.ApplyDefaults("/data")
	require.Equal(t, []string{"apachectl", "-t"}, d.ConfigTest)
	require.Equal(t, []string{"apachectl", "-k", "graceful"}, d.Reload)
}

func TestConfigFull(t *testing.T) {
	c, err := parse(t, `
dispatcher:
  httpd_dir: /srv/httpd
  server_root: /srv/httpd
  managed_dirs: [conf, conf.d]
  required_paths: [conf.d/]
  immutable: [conf/httpd.conf, "conf.d/available_vhosts/aem_*.vhost"]
  configtest: [sh, -c, "exit 0"]
  reload: [true]
  command_timeout: 5s
  backup_dir: /srv/backups
  backups_keep: 3
  limits: {max_entries: 100, max_total_bytes: 1000000, max_file_bytes: 1000, max_ratio: 50}
  flush:
    mode: docroot
    docroot: /mnt/var/www/html
    statfileslevel: 2
`)
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, c.CommandTimeout.D())
	require.Equal(t, 3, c.BackupsKeep)
	require.True(t, c.IsImmutable("conf.d/available_vhosts/aem_publish.vhost"))
	require.Equal(t, 2, c.Flush.StatFilesLevel)
	require.Equal(t, int64(1000), c.limits().MaxFileBytes)
}

func TestConfigErrors(t *testing.T) {
	_, err := parse(t, "dispatcher:\n  httpd_dri: /etc/httpd\n")
	require.ErrorContains(t, err, `agent.yaml:2: unknown key "httpd_dri" (did you mean "httpd_dir"?)`)

	_, err = parse(t, "dispatcher:\n  httpd_dir: etc/httpd\n  configtest: [/nonexistent/apachectl, -t]\n  reload: [true]\n  backups_keep: -1\n"+
		"  managed_dirs: [conf, conf/x, conf]\n  immutable: [\"../x\", \"other/file\"]\n  flush:\n    mode: docroot\n")
	require.Error(t, err)
	for _, s := range []string{
		`agent.yaml:2: dispatcher: httpd_dir: "etc/httpd" must be an absolute path`,
		"agent.yaml:3: dispatcher: configtest:",
		"/nonexistent/apachectl",
		"agent.yaml:5: dispatcher: backups_keep: must be at least 1",
		`managed_dirs: "conf/x" must be one directory name`,
		`managed_dirs: "conf" is listed twice`,
		`immutable: "../x": must not contain ".."`,
		`immutable: "other/file": is not inside one of the managed_dirs`,
		"agent.yaml:9: dispatcher: docroot: is required in docroot mode",
		"backup_dir: is required when the agent has no data_dir",
	} {
		require.ErrorContains(t, err, s)
	}

	_, err = parse(t, "data_dir: /d\ndispatcher:\n  configtest: [true]\n  reload: [true]\n  backup_dir: /etc/httpd/backups\n  flush: {mode: ftp}\n")
	require.ErrorContains(t, err, "must not be inside httpd_dir")
	require.ErrorContains(t, err, `mode: "ftp" is not "http" or "docroot"`)

	_, err = parse(t, "data_dir: /d\ndispatcher:\n  configtest: [true]\n  reload: [true]\n  work_dir: /etc/httpd/conf.d/tmp\n  flush: {url: \"ftp://x\"}\n")
	require.ErrorContains(t, err, "must not be inside the managed dir conf.d")
	require.ErrorContains(t, err, `url: "ftp://x" must be an http(s) URL`)
}

// TestIsImmutablePatterns: literal entries compare exactly, globs match
// as path.Match does, per path segment.
func TestIsImmutablePatterns(t *testing.T) {
	c := &Config{Immutable: []string{"conf/httpd.conf", "conf.d/available_vhosts/aem_*.vhost", `conf.d/odd\*name`}}
	for rel, want := range map[string]bool{
		"conf/httpd.conf":     true,
		"conf/httpd.conf.bak": false,
		"conf/httpd":          false,
		"conf.d/available_vhosts/aem_publish.vhost": true,
		"conf.d/available_vhosts/x/aem_a.vhost":     false,
		"conf.d/available_vhosts/site.vhost":        false,
		"conf.d/odd*name":                           true,
		"conf.d/oddXname":                           false,
	} {
		require.Equal(t, want, c.IsImmutable(rel), rel)
	}
	d := &Config{}
	d.ApplyDefaults("/data")
	for _, p := range DefaultImmutable {
		require.True(t, d.IsImmutable(p), p)
	}
	require.False(t, d.IsImmutable("conf.d/rewrites/default_rewrite.rules"))
}
