package dispatcher

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseApache(t *testing.T) {
	src := "# comment\n" +
		"  Include conf.d/a.conf\n" +
		"INCLUDE \"conf.d/with space.conf\"\n" +
		"include 'conf.d/single.conf'\n" +
		"Include \\\n" +
		"    conf.d/continued.conf\n" +
		"\tIncludeOptional conf.d/*.conf\n" +
		"ServerName x \\\r\n" +
		"  # not a comment: continuation\r\n" +
		"Define VAR \"some value\"\n" +
		"#Include conf.d/commented.conf\n" +
		"Include\n"
	ds := parseApache([]byte(src))
	type d struct {
		line int
		name string
		arg  string
	}
	var got []d
	for _, x := range ds {
		got = append(got, d{x.line, x.name, firstArg(x.args)})
	}
	require.Equal(t, []d{
		{2, "Include", "conf.d/a.conf"},
		{3, "INCLUDE", "conf.d/with space.conf"},
		{4, "include", "conf.d/single.conf"},
		{5, "Include", "conf.d/continued.conf"},
		{7, "IncludeOptional", "conf.d/*.conf"},
		{8, "ServerName", "x"},
		{10, "Define", "VAR"},
		{12, "Include", ""},
	}, got)
	require.Equal(t, `a"b`, firstArg(`"a\"b" rest`))
}

func TestParseDispatcherIncludes(t *testing.T) {
	src := "/farms {\n" +
		"  $include \"enabled_farms/*_farm.any\"\n" +
		"  # $include \"commented.any\"\n" +
		"  /x \"#not a comment\" $include '../single.any' # trailing\n" +
		"  /y { $include \"a.any\" } { $include \"b.any\" }\n" +
		"}\n"
	got := parseDispatcherIncludes([]byte(src))
	require.Equal(t, []dispInclude{{2, "enabled_farms/*_farm.any"}, {4, "../single.any"}, {5, "a.any"}, {5, "b.any"}}, got)
}

func writeTree(t *testing.T, root string, files map[string]string, links map[string]string) {
	for p, body := range files {
		fp := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(fp), 0o755))
		require.NoError(t, os.WriteFile(fp, []byte(body), 0o644))
	}
	for p, target := range links {
		fp := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(fp), 0o755))
		require.NoError(t, os.Symlink(target, fp))
	}
}

func TestCheckIncludes(t *testing.T) {
	stage := t.TempDir()
	cfg := &Config{HTTPDDir: "/etc/httpd", ConfigTest: []string{"true"}, Reload: []string{"true"}, BackupDir: "/var/lib/deckhand/backups"}
	require.NoError(t, cfg.Prepare("test", ""))
	writeTree(t, stage, map[string]string{
		"conf/httpd.conf":                  "ServerRoot \"/etc/httpd\"\nInclude conf.modules.d/*.conf\nIncludeOptional conf.d/*.conf\nInclude /etc/httpd/conf.d/abs.conf\nInclude /usr/share/outside.conf\n",
		"conf.modules.d/00-base.conf":      "LoadModule x modules/x.so\n",
		"conf.d/abs.conf":                  "Include conf.d/variables/*.vars\n",
		"conf.d/dispatcher_vhost.conf":     "Include conf.d/enabled_vhosts/*.vhost\n",
		"conf.d/variables/a.vars":          "Define RULES conf.d/rewrites\n",
		"conf.d/available_vhosts/a.vhost":  "<VirtualHost *:80>\n  Include ${RULES}/a.rules\n  Include ${RULES}/missing.rules\n  Include conf.d/rewrites/[ab].rules\n</VirtualHost>\n",
		"conf.d/rewrites/a.rules":          "RewriteEngine On\n",
		"conf.d/dir_include.conf":          "Include conf.d/rewrites\nInclude conf.d/*/a.rules\nInclude conf.d/nodir/*/x.conf\n",
		"conf.dispatcher.d/dispatcher.any": "/farms { $include \"enabled_farms/*.any\" }\n",
		"conf.dispatcher.d/available_farms/f.any": "/f {\n /cache { $include \"../cache/rules.any\" }\n" +
			" /abs { $include \"/etc/httpd/conf.dispatcher.d/cache/rules.any\" }\n" +
			" /root { $include \"conf.dispatcher.d/cache/rules.any\" }\n" +
			" /nope { $include \"../cache/nope.any\" }\n}\n",
		"conf.dispatcher.d/cache/rules.any": "/0 { /glob \"*\" }\n",
	}, map[string]string{
		"conf.d/enabled_vhosts/a.vhost":         "../available_vhosts/a.vhost",
		"conf.dispatcher.d/enabled_farms/f.any": "../available_farms/f.any",
		"conf.d/enabled_vhosts/broken.vhost":    "../available_vhosts/gone.vhost",
	})
	missing, unchecked, err := checkIncludes(cfg, stage)
	require.NoError(t, err)
	var got []string
	for _, m := range missing {
		got = append(got, m.String())
	}
	require.Equal(t, []string{
		"conf.d/enabled_vhosts/broken.vhost: dangling symlink matched by the wildcard (its target is not in the artifact) (Include at conf.d/dispatcher_vhost.conf:1)",
		"conf.d/nodir/*/x.conf: no file in the artifact matches the wildcard (Include at conf.d/dir_include.conf:3)",
		"conf.d/rewrites/missing.rules: no such file in the artifact (Include at conf.d/available_vhosts/a.vhost:3)",
		"conf.dispatcher.d/cache/nope.any: no such file in the artifact ($include at conf.dispatcher.d/available_farms/f.any:5)",
	}, got)
	require.Len(t, unchecked, 1)
	require.Contains(t, unchecked[0], "/usr/share/outside.conf (outside the managed dirs)")
}

func TestVTreeResolve(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"a/b/c.conf": "x"}, map[string]string{
		"a/link":     "b",
		"a/loop":     "loop",
		"a/escape":   "../../etc",
		"a/absolute": "/etc/passwd",
		"d/e":        "../a/link/c.conf",
	})
	v, err := buildVTree(root)
	require.NoError(t, err)
	for p, want := range map[string]string{"a/link/c.conf": "a/b/c.conf", "d/e": "a/b/c.conf", "a/b": "a/b"} {
		real, _, ok := v.resolve(p)
		require.True(t, ok, p)
		require.Equal(t, want, real)
	}
	for _, p := range []string{"a/loop", "a/escape", "a/absolute", "a/nope", "a/link/nope"} {
		_, _, ok := v.resolve(p)
		require.False(t, ok, p)
	}
	require.Equal(t, []string{"a/b/c.conf", "a/link/c.conf"}, v.glob("a/*/c.conf"))
	require.Empty(t, v.glob("x/*"))
}
