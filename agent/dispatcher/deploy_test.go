package dispatcher

import (
	"archive/zip"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

const v2Rules = "RewriteEngine On\nRewriteRule ^/page$ /v2.html [PT]\n"

func TestDeployReplacesTreeKeepsImmutableFiles(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	before := e.manifest()

	a := withFiles(map[string]string{
		"conf.d/rewrites/default_rewrite.rules": v2Rules,
		"conf.d/new_site.conf":                  "# new in this release\n",
		// Immutable: the artifact's copies must be ignored.
		"conf/httpd.conf":                  "# the artifact's httpd.conf must never be written\n",
		"conf.dispatcher.d/dispatcher.any": "/farms { }\n",
	})
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(a)}, nil)
	require.NoError(t, r.Err())
	out := dispOut(t, r)

	require.Equal(t, []string{"conf.d/dispatcher_vhost.conf", "conf.dispatcher.d/dispatcher.any", "conf.modules.d/02-dispatcher.conf", "conf/httpd.conf"}, out.Ignored)
	require.Equal(t, len(a.Files)+len(a.Symlinks)-4, out.Files)
	require.Equal(t, "Syntax OK\n", out.ConfigTest)
	require.False(t, out.Restored)
	require.Equal(t, BackupID(r.TaskID), out.BackupID)

	// New content is live, the host's immutable files are untouched and
	// the orphan is gone.
	require.Equal(t, v2Rules, e.read("conf.d/rewrites/default_rewrite.rules"))
	require.Equal(t, "# new in this release\n", e.read("conf.d/new_site.conf"))
	require.Equal(t, hostHTTPDConf, e.read("conf/httpd.conf"))
	require.Equal(t, apache.ImmutableFiles()["conf.dispatcher.d/dispatcher.any"], e.read("conf.dispatcher.d/dispatcher.any"))
	require.NoFileExists(t, filepath.Join(e.httpd, "conf.d/orphan.conf"))
	target, err := os.Readlink(filepath.Join(e.httpd, "conf.d/enabled_vhosts/default.vhost"))
	require.NoError(t, err)
	require.Equal(t, "../available_vhosts/default.vhost", target)
	// Outside the managed dirs nothing changed.
	b, err := os.ReadFile(filepath.Join(e.httpd, "logs", "error_log"))
	require.NoError(t, err)
	require.Equal(t, "not managed\n", string(b))

	require.Equal(t, 1, e.reloadCount())
	e.requireNoLeftovers()

	// The backup holds exactly the tree as it was, and is indexed.
	bk, err := ListBackups(e.cfg, e.j)
	require.NoError(t, err)
	require.Len(t, bk, 1)
	require.Equal(t, out.BackupID, bk[0].ID)
	require.Equal(t, r.TaskID, bk[0].TaskID)
	require.Equal(t, BackupKindDeploy, bk[0].Kind)
	require.Equal(t, OutcomeApplied, bk[0].Outcome)
	require.Equal(t, before.Files(), bk[0].Files)
	require.Equal(t, filepath.Join(e.cfg.BackupDir, bk[0].ID), bk[0].Path)
	saved, err := TreeManifest(filepath.Join(bk[0].Path, "tree"), e.cfg.ManagedDirs)
	require.NoError(t, err)
	require.Empty(t, before.Diff(saved))
	_, err = d.loadBackup(bk[0])
	require.NoError(t, err, "backup matches its manifest")
}

func TestDeployWrappedArtifact(t *testing.T) {
	e := newEnv(t, nil)
	a := withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules})
	a.Wrapper = "dispatcher"
	r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(a)}, nil)
	require.NoError(t, r.Err())
	require.Equal(t, v2Rules, e.read("conf.d/rewrites/default_rewrite.rules"))
	require.NoDirExists(t, filepath.Join(e.httpd, "dispatcher"))
}

func TestDeployConfigTestFailureRestoresPrevious(t *testing.T) {
	e := newEnv(t, nil)
	before := e.manifest()
	a := withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": "RewriteEngine On\nBOGUS here\n"})
	r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(a)}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	out := dispOut(t, r)
	want := "AH00526: Syntax error on line 2 of " + filepath.Join(e.httpd, "conf.d/rewrites/default_rewrite.rules") + ":\n" +
		"Invalid command 'BOGUS', perhaps misspelled or defined by a module not included in the server configuration\n"
	require.Equal(t, want, r.Error, "the configtest output verbatim is the task error")
	require.Equal(t, want, out.ConfigTest)
	require.True(t, out.Restored)
	require.Empty(t, before.Diff(e.manifest()), "the previous tree is back exactly")
	require.Equal(t, 1, e.reloadCount(), "reloaded after restoring")
	e.requireNoLeftovers()
	bk, err := ListBackups(e.cfg, e.j)
	require.NoError(t, err)
	require.Equal(t, OutcomeRolledBack, bk[0].Outcome)
}

// TestDeployRejections: every bad artifact is refused before the live tree
// changes, with an error that says why.
func TestDeployRejections(t *testing.T) {
	big := strings.Repeat("0", 2<<20)
	cases := []struct {
		name   string
		build  func(e *env) task.Artifact
		mod    func(*Config)
		errHas []string
	}{
		{
			name: "missing included files",
			build: func(e *env) task.Artifact {
				a := withFiles(map[string]string{
					"conf.d/rewrites/default_rewrite.rules":         "",
					"conf.d/available_vhosts/default.vhost":         "<VirtualHost *:*>\n\tServerName x\n\t# comment\n\tinclude \\\n  \"conf.d/rewrites/default_rewrite.rules\"\n</VirtualHost>\n",
					"conf.dispatcher.d/filters/default_filters.any": "",
				})
				return e.artifact(a)
			},
			errHas: []string{
				"does not hold the full file set; nothing on the host was changed",
				"conf.d/rewrites/default_rewrite.rules: no such file in the artifact (Include at conf.d/available_vhosts/default.vhost:4)",
				"conf.dispatcher.d/filters/default_filters.any: no such file in the artifact ($include at conf.dispatcher.d/available_farms/default_farm.any:4)",
			},
		},
		{
			name: "missing required path",
			build: func(e *env) task.Artifact {
				a := apache.DefaultArtifact()
				for k := range a.Files {
					if strings.HasPrefix(k, "conf.dispatcher.d/") {
						delete(a.Files, k)
					}
				}
				for k := range a.Symlinks {
					if strings.HasPrefix(k, "conf.dispatcher.d/") {
						delete(a.Symlinks, k)
					}
				}
				return e.artifact(a)
			},
			errHas: []string{"conf.dispatcher.d/: required path is missing from the artifact"},
		},
		{
			name: "include of an immutable file the host lacks",
			build: func(e *env) task.Artifact {
				a := withFiles(map[string]string{
					"conf.d/site.conf":          "Include conf.d/logformat.conf\n",
					"conf.d/logformat.conf":     "# immutable: this copy is ignored\n",
					"conf.d/other/glob.conf":    "IncludeOptional conf.d/nothing/*.conf\nInclude conf.d/nothing/*.conf\n",
					"conf.d/variables/x.vars":   "Define MYDIR conf.d/defined\n",
					"conf.d/variables/use.conf": "Include ${MYDIR}/x.conf\nInclude ${UNDEFINED}/skipped.conf\nInclude /etc/outside/ignored.conf\n",
				})
				return e.artifact(a)
			},
			errHas: []string{
				"conf.d/logformat.conf: immutable file missing on the host (the artifact's copy of an immutable file is ignored) (Include at conf.d/site.conf:1)",
				"conf.d/nothing/*.conf: no file in the artifact matches the wildcard (Include at conf.d/other/glob.conf:2)",
				"conf.d/defined/x.conf: no such file in the artifact (Include at conf.d/variables/use.conf:1)",
			},
		},
		{
			name:   "zip slip",
			build:  func(e *env) task.Artifact { return e.artifact(withFiles(map[string]string{"../../evil.conf": "x"})) },
			errHas: []string{"rejected (unsafe path)", `"../../evil.conf"`, "escapes the destination"},
		},
		{
			name: "symlink escaping the tree",
			build: func(e *env) task.Artifact {
				a := apache.DefaultArtifact()
				a.Symlinks["conf.d/passwd.conf"] = "../../../../etc/passwd"
				return e.artifact(a)
			},
			errHas: []string{"rejected (unsafe path)", "conf.d/passwd.conf", `symlink target "../../../../etc/passwd" escapes`},
		},
		{
			name:   "bomb",
			mod:    func(c *Config) { c.Limits.MaxTotalBytes = 1 << 20 },
			build:  func(e *env) task.Artifact { return e.artifact(withFiles(map[string]string{"conf.d/zeros.conf": big})) },
			errHas: []string{"rejected (limit exceeded)", "conf.d/zeros.conf", "more than the total limit of 1048576 bytes"},
		},
		{
			name: "corrupt zip",
			build: func(e *env) task.Artifact {
				return e.rawArtifact([]byte("PK\x03\x04 this is not a zip archive at all"))
			},
			errHas: []string{"rejected (corrupt archive)"},
		},
		{
			name: "truncated zip",
			build: func(e *env) task.Artifact {
				p, _ := withFiles(nil).Build(t)
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				return e.rawArtifact(b[:len(b)/2])
			},
			errHas: []string{"rejected (corrupt archive)"},
		},
		{
			name: "digest mismatch",
			build: func(e *env) task.Artifact {
				a := e.artifact(withFiles(nil))
				other := e.artifact(withFiles(map[string]string{"conf.d/x.conf": "x"}))
				e.fetch.add(a.SHA256, e.fetch.paths[other.SHA256])
				return a
			},
			errHas: []string{"rejected (archive sha256 mismatch)"},
		},
		{
			name: "AEM content package",
			build: func(e *env) task.Artifact {
				return e.artifact(apache.Artifact{Files: map[string]string{
					"META-INF/vault/properties.xml": `<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE properties SYSTEM "http://java.sun.com/dtd/properties.dtd"><properties><entry key="name">p</entry><entry key="group">g</entry><entry key="version">1.0</entry></properties>`,
					"jcr_root/apps/x/.content.xml":  "<x/>",
				}})
			},
			errHas: []string{"aem-package, not a dispatcher configuration"},
		},
		{
			name:   "stray top-level entry",
			build:  func(e *env) task.Artifact { return e.artifact(withFiles(map[string]string{"README.md": "hi"})) },
			errHas: []string{"top-level entries outside the managed dirs", "README.md"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.mod)
			before := e.manifest()
			r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: c.build(e)}, nil)
			require.Equal(t, task.StatusFailed, r.Status)
			for _, s := range c.errHas {
				require.Contains(t, r.Error, s)
			}
			require.Empty(t, before.Diff(e.manifest()), "the live tree is untouched")
			require.Equal(t, 0, e.reloadCount())
			e.requireNoLeftovers()
			bk, err := ListBackups(e.cfg, e.j)
			require.NoError(t, err)
			require.Empty(t, bk, "no backup for a rejected artifact")
		})
	}
}

func TestDeployKeepsChattrImmutable(t *testing.T) {
	e := newEnv(t, nil)
	httpdConf := filepath.Join(e.httpd, "conf/httpd.conf")
	if err := setImmutableAttr(httpdConf, true); err != nil || !immutableAttr(httpdConf) {
		t.Skipf("filesystem of %s has no chattr +i (%v)", e.httpd, err)
	}
	d := e.dispatcher()
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, nil)
	require.NoError(t, r.Err())
	require.True(t, immutableAttr(httpdConf), "the live httpd.conf is chattr +i again")
	require.Equal(t, hostHTTPDConf, e.read("conf/httpd.conf"))
	e.requireNoLeftovers() // the original, moved aside, was unflagged and removed

	// A failing deploy puts the original (flagged) inode back.
	r = e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/x.conf": "BOGUS\n"}))}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.True(t, immutableAttr(httpdConf))
	e.requireNoLeftovers()
}

func TestDeployWithoutExchange(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	d.noExchange = true
	before := e.manifest()
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, nil)
	require.NoError(t, r.Err())
	require.Equal(t, v2Rules, e.read("conf.d/rewrites/default_rewrite.rules"))
	r = e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/x.conf": "BOGUS\n"}))}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Equal(t, v2Rules, e.read("conf.d/rewrites/default_rewrite.rules"))
	require.NotEmpty(t, before.Diff(e.manifest()))
	e.requireNoLeftovers()
}

func TestDeployAddsAndRemovesManagedDirs(t *testing.T) {
	e := newEnv(t, nil)
	// The artifact has no conf.modules.d: only the host's immutable
	// 02-dispatcher.conf remains there.
	a := apache.DefaultArtifact()
	delete(a.Files, "conf.modules.d/00-base.conf")
	r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(a)}, nil)
	require.NoError(t, r.Err())
	ents, err := os.ReadDir(filepath.Join(e.httpd, "conf.modules.d"))
	require.NoError(t, err)
	require.Equal(t, []string{"02-dispatcher.conf"}, names(ents))
}

func TestDeployReRunUsesItsBackup(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, nil)
	require.NoError(t, r.Err())
	require.Equal(t, BackupID(r.TaskID), dispOut(t, r).BackupID)
	require.NotEqual(t, BackupID(r.TaskID), BackupID(r.TaskID+"x"))
	require.Regexp(t, `^bk-[0-9a-f]{16}$`, BackupID(r.TaskID))
}

// zipWith builds a zip from raw entries (for entry types the harness does
// not write).
func zipWith(t *testing.T, entries map[string]fs.FileMode) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, mode := range entries {
		h := &zip.FileHeader{Name: name}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		require.NoError(t, err)
		_, _ = w.Write([]byte("x"))
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func TestDeployRejectsDeviceEntries(t *testing.T) {
	e := newEnv(t, nil)
	before := e.manifest()
	art := e.rawArtifact(zipWith(t, map[string]fs.FileMode{
		"conf/x.conf": 0o644, "conf.d/a.conf": 0o644, "conf.dispatcher.d/a.any": 0o644,
		"conf.d/dev": fs.ModeDevice | 0o644,
	}))
	r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: art}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "rejected (unsupported entry)")
	require.Contains(t, r.Error, `"conf.d/dev": block devices are not supported`)
	require.Empty(t, before.Diff(e.manifest()))
}
