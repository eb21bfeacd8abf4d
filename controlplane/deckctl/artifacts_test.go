package deckctl_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deckhand-dev/deckhand/controlplane/deckctl"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/stretchr/testify/require"
)

func ctl(args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	code = deckctl.Execute(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// buildTarget writes what a Maven build leaves in target/: two packages,
// one depending on the other and on a product package, and a dispatcher
// configuration.
func buildTarget(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "target")
	aempkgtest.WriteFile(t, dir, "core-1.0.zip", aempkgtest.Package(aempkgtest.Spec{Group: "com/example", Name: "core", Version: "1.0"}))
	aempkgtest.WriteFile(t, dir, "all-1.0.zip", aempkgtest.Package(aempkgtest.Spec{Group: "com/example", Name: "all", Version: "1.0",
		Dependencies: "com/example:core:[1.0,2.0),day/cq60/product:cq-content:[6.5,)"}))
	aempkgtest.WriteFile(t, dir, "dispatcher.zip", dispatcherFiles("a"))
	return dir
}

func dispatcherFiles(tag string) []byte {
	return aempkgtest.Zip(map[string]string{
		"conf/httpd.conf":                  "# " + tag + "\n",
		"conf.d/dispatcher_vhost.conf":     "# vhosts\n",
		"conf.dispatcher.d/dispatcher.any": "/farms {}\n",
	})
}

func TestArtifactPushListShow(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	creds := c.CredentialsPath()
	target := buildTarget(t)

	// The pattern is quoted, as a script might: deckctl globs it itself.
	out, stderr, code := ctl("--credentials", creds, "artifact", "push", filepath.Join(target, "*.zip"), "--version", "1.0")
	require.Equal(t, 0, code, stderr)
	require.NotContains(t, out, "\r", "no progress bar when stdout is not a terminal")
	lines := strings.Split(out, "\n")
	require.Regexp(t, `^FILE\s+KIND\s+PACKAGE\s+SIZE\s+SHA256\s+STORED$`, lines[0])
	require.Regexp(t, `^all-1\.0\.zip\s+aem-package\s+com/example:all:1\.0\s+\d+ (B|KiB)\s+[0-9a-f]{12}\s+stored$`, lines[1])
	require.Regexp(t, `^core-1\.0\.zip\s+aem-package\s+com/example:core:1\.0\s+`, lines[2])
	require.Regexp(t, `^dispatcher\.zip\s+dispatcher-config\s+-\s+`, lines[3])
	m := regexp.MustCompile(`(?m)^set (set-[0-9a-f]{12}), version 1\.0: created$`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	setID := m[1]
	require.Contains(t, out, "install order: com/example:core:1.0 -> com/example:all:1.0\n")
	require.Contains(t, out, "dispatcher config: dispatcher.zip\n")
	require.Contains(t, out, "  com/example:all:1.0 requires day/cq60/product:cq-content:6.5\n")

	// Pushing the same bytes again stores nothing new and names the same set.
	out, stderr, code = ctl("--credentials", creds, "artifact", "push", filepath.Join(target, "core-1.0.zip"), filepath.Join(target, "all-1.0.zip"), filepath.Join(target, "dispatcher.zip"), "--version", "1.0", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var pushed struct {
		Artifacts []struct {
			Name          string `json:"name"`
			Kind          string `json:"kind"`
			SHA256        string `json:"sha256"`
			PackageID     string `json:"package_id"`
			AlreadyStored bool   `json:"already_stored"`
		} `json:"artifacts"`
		Set struct {
			ID       string `json:"id"`
			Version  string `json:"version"`
			Packages []struct {
				Name string `json:"name"`
			} `json:"packages"`
			Dispatcher *struct {
				Name string `json:"name"`
				Kind string `json:"kind"`
			} `json:"dispatcher"`
			External []struct {
				Package  string `json:"package"`
				Requires string `json:"requires"`
			} `json:"external_dependencies"`
		} `json:"set"`
		Created bool `json:"created"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &pushed), out)
	require.Len(t, pushed.Artifacts, 3)
	for _, a := range pushed.Artifacts {
		require.True(t, a.AlreadyStored, a.Name)
	}
	require.Equal(t, "aem-package", pushed.Artifacts[0].Kind)
	require.Equal(t, "com/example:core:1.0", pushed.Artifacts[0].PackageID)
	require.Equal(t, "dispatcher-config", pushed.Artifacts[2].Kind)
	require.False(t, pushed.Created)
	require.Equal(t, setID, pushed.Set.ID)
	require.Equal(t, "core-1.0.zip", pushed.Set.Packages[0].Name)
	require.Equal(t, "all-1.0.zip", pushed.Set.Packages[1].Name)
	require.Equal(t, "dispatcher-config", pushed.Set.Dispatcher.Kind)
	require.Len(t, pushed.Set.External, 1)
	require.Equal(t, "com/example:all:1.0", pushed.Set.External[0].Package)

	// A second set: a package on its own, no version.
	out, stderr, code = ctl("--credentials", creds, "artifact", "push", filepath.Join(target, "core-1.0.zip"))
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "already stored")
	require.Contains(t, out, ", version -: created")
	require.Contains(t, out, "dispatcher config: none")

	out, stderr, code = ctl("--credentials", creds, "artifact", "list")
	require.Equal(t, 0, code, stderr)
	lines = strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	require.Regexp(t, `^SET\s+VERSION\s+CREATED\s+BY\s+PACKAGES\s+DISPATCHER\s+EXTERNAL DEPS$`, lines[0])
	require.Regexp(t, `^`+setID+`\s+1\.0\s+.+\s+admin\s+2\s+dispatcher\.zip\s+1$`, lines[2], "newest first")
	require.Regexp(t, `^set-[0-9a-f]{12}\s+-\s+.+\s+admin\s+1\s+-\s+0$`, lines[1])

	out, stderr, code = ctl("--credentials", creds, "artifact", "list", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var sets []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &sets))
	require.Len(t, sets, 2)
	require.Equal(t, setID, sets[1]["id"])
	require.Nil(t, sets[0]["dispatcher"])

	out, stderr, code = ctl("--credentials", creds, "artifact", "show", setID)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "set:      "+setID+"\nversion:  1.0\n")
	require.Regexp(t, `(?m)^ORDER\s+KIND\s+FILE\s+PACKAGE\s+SIZE\s+SHA256$`, out)
	require.Regexp(t, `(?m)^1\s+aem-package\s+core-1\.0\.zip\s+com/example:core:1\.0\s+`, out)
	require.Regexp(t, `(?m)^2\s+aem-package\s+all-1\.0\.zip\s+com/example:all:1\.0\s+`, out)
	require.Regexp(t, `(?m)^-\s+dispatcher-config\s+dispatcher\.zip\s+-\s+`, out)
	require.Contains(t, out, "install order: com/example:core:1.0 -> com/example:all:1.0\n")
	require.Contains(t, out, "external dependencies (must already be installed on the targets; checked before installing):\n  com/example:all:1.0 requires day/cq60/product:cq-content:6.5\n")

	out, stderr, code = ctl("--credentials", creds, "artifact", "show", setID, "-o", "json")
	require.Equal(t, 0, code, stderr)
	var shown map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &shown))
	require.Equal(t, "1.0", shown["version"])
	require.Len(t, shown["packages"], 2)
	require.Equal(t, "dispatcher.zip", shown["dispatcher"].(map[string]any)["name"])
	require.Equal(t, []any{map[string]any{"package": "com/example:all:1.0", "requires": "day/cq60/product:cq-content:6.5"}}, shown["external_dependencies"])
}

func TestArtifactErrorsAreOneLine(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	creds := c.CredentialsPath()
	dir := t.TempDir()
	readme := aempkgtest.WriteFile(t, dir, "readme.zip", aempkgtest.Zip(map[string]string{"README.md": "hi"}))
	notZip := aempkgtest.WriteFile(t, dir, "notes.zip", []byte("plain text"))
	d1 := aempkgtest.WriteFile(t, dir, "dispatcher-a.zip", dispatcherFiles("a"))
	d2 := aempkgtest.WriteFile(t, dir, "dispatcher-b.zip", dispatcherFiles("b"))
	ca := aempkgtest.WriteFile(t, dir, "a.zip", aempkgtest.Package(aempkgtest.Spec{Group: "g", Name: "a", Version: "1", Dependencies: "g:b"}))
	cb := aempkgtest.WriteFile(t, dir, "b.zip", aempkgtest.Package(aempkgtest.Spec{Group: "g", Name: "b", Version: "1", Dependencies: "g:a"}))
	viewerCreds := filepath.Join(t.TempDir(), "viewer.yaml")
	_, stderr, code := ctl("--credentials", creds, "admins", "create", "vic", "--role", "viewer", "--write", viewerCreds)
	require.Equal(t, 0, code, stderr)

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--credentials", creds, "artifact", "push", readme},
			"deckctl: artifact readme.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (no conf/ and conf.d/ directories)\n"},
		{[]string{"--credentials", creds, "artifact", "push", notZip},
			"deckctl: artifact notes.zip is not a zip archive (zip: not a valid zip file)\n"},
		{[]string{"--credentials", creds, "artifact", "push", d1, d2},
			"deckctl: a set holds at most one dispatcher configuration, and this one has 2: dispatcher-a.zip (sha256 "},
		{[]string{"--credentials", creds, "artifact", "push", ca, cb},
			"deckctl: the set's packages depend on each other in a circle, so there is no order to install them in: package dependency cycle: g:a:1 -> g:b:1 -> g:a:1 (a.zip, b.zip)\n"},
		{[]string{"--credentials", viewerCreds, "artifact", "push", d1},
			"deckctl: PushArtifact needs the deployer role; vic has viewer\n"},
		{[]string{"--credentials", creds, "artifact", "push", filepath.Join(dir, "missing.zip")},
			"deckctl: " + filepath.Join(dir, "missing.zip") + ": no such file\n"},
		{[]string{"--credentials", creds, "artifact", "push", filepath.Join(dir, "*.jar")},
			"deckctl: no file matches " + filepath.Join(dir, "*.jar") + "\n"},
		{[]string{"--credentials", creds, "artifact", "push", dir},
			"deckctl: " + dir + " is a directory; push the zips in it"},
		{[]string{"--credentials", creds, "artifact", "show", "set-000000000000"},
			"deckctl: artifact set not found: \"set-000000000000\"\n"},
		{[]string{"--credentials", creds, "artifact", "push"},
			"deckctl: requires at least 1 arg(s), only received 0\n"},
	}
	for _, tc := range cases {
		out, stderr, code := ctl(tc.args...)
		require.Equal(t, 1, code, "args %v", tc.args)
		require.Empty(t, out, "args %v", tc.args)
		require.True(t, strings.HasPrefix(stderr, tc.want), "got %q want prefix %q", stderr, tc.want)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "error must be one line: %q", stderr)
	}
}
