package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
)

// release is the version the pipeline deploys; the dispatchers serve
// oldRelease until it does.
const (
	release    = "2.0.0"
	oldRelease = "1.0.0"
	group      = "com.example.demo"
)

// pagePath is the page the dispatchers' rewrite rules map to a release
// page: the pipeline's dispatcher configuration points it at the new one.
const pagePath = "/page"

func releasePage(v string) string {
	return fmt.Sprintf("Deckhand demo site: release %s\n", v)
}

// docRoot is what every dispatcher's cache holds: both release pages
// (content the publish tier rendered); which one /page serves is the
// dispatcher configuration's choice.
func docRoot() map[string]string {
	d := apache.DefaultDocRoot()
	d["index.html"] = "<html><body><h1>Deckhand demo site</h1><p><a href=\"/page\">the current release</a></p></body></html>\n"
	d["v1.html"] = releasePage(oldRelease)
	d["v2.html"] = releasePage(release)
	d["content/demo/en.html"] = "<html><body>cached English home page</body></html>\n"
	return d
}

// dispatcherArtifact is the release's dispatcher configuration: the
// harness's default layout with a vhost that sends X-Frame-Options and
// refuses what a hardened dispatcher refuses (the Security Testing
// checklist, docs/gates.md), and rewrite rules that serve the new
// release's page.
func dispatcherArtifact() apache.Artifact {
	a := apache.DefaultArtifact()
	a.Files["conf.d/available_vhosts/default.vhost"] = fmt.Sprintf(`<VirtualHost *:*>
	ServerName default
	Include conf.d/rewrites/default_rewrite.rules
	Header always set X-Deckhand-Vhost "default"
	Header always set X-Deckhand-Release %q
	Header always set X-Frame-Options "SAMEORIGIN"
</VirtualHost>
`, release)
	a.Files["conf.d/rewrites/default_rewrite.rules"] = `RewriteEngine On
# What a hardened AEM dispatcher refuses (docs/gates.md).
RewriteCond %{REQUEST_METHOD} !^(GET|HEAD|POST)$
RewriteRule .* - [F,L]
RewriteRule ^/(crx|system|bin|libs|apps|etc)(/|\.|$) - [F,L]
RewriteRule \.json(/|$) - [F,L]
# The release's page.
RewriteRule ^/page$ /v2.html [PT]
`
	return a
}

// packages are the release's AEM packages, a dependency chain:
// ui.apps needs ui.frontend, which needs core.
type pkgFile struct {
	file string
	data []byte
}

func packages() []pkgFile {
	core := aempkgtest.Spec{Group: group, Name: "demo-site.core", Version: release}
	front := aempkgtest.Spec{Group: group, Name: "demo-site.ui.frontend", Version: release,
		Dependencies: fmt.Sprintf("%s:demo-site.core:[%s,3.0)", group, release)}
	apps := aempkgtest.Spec{Group: group, Name: "demo-site.ui.apps", Version: release,
		Dependencies: fmt.Sprintf("%s:demo-site.ui.frontend:[%s,3.0)", group, release)}
	return []pkgFile{
		{"demo-site.core-" + release + ".zip", aempkgtest.Package(core)},
		{"demo-site.ui.frontend-" + release + ".zip", aempkgtest.Package(front)},
		{"demo-site.ui.apps-" + release + ".zip", aempkgtest.Package(apps)},
	}
}

// qualityMetrics is what the sample project's scan reports: passing
// Cloud Manager's thresholds.
const qualityMetrics = `{
  "security_rating": "A",
  "reliability_rating": "A",
  "maintainability_rating": "A",
  "coverage": 82.5,
  "skipped_tests": 0,
  "open_issues": 0,
  "duplicated_lines": 0.4
}`

// writeProject creates the sample project in work, commits it and pushes
// it to a new bare repository, whose path it returns.
func writeProject(gitDir string) (string, error) {
	work := filepath.Join(gitDir, "demo-site")
	bare := filepath.Join(gitDir, "demo-site.git")
	files := map[string]string{
		"README.md": "# demo-site\n\nThe `make demo` sample project. `build.sh` stands in for the Maven build: it puts\n" +
			"the release's packages where a multi-module AEM project leaves them (`target/`,\n" +
			"`ui.frontend/target/`). `scan.sh` stands in for the code scan.\n",
		"build.sh": `#!/bin/sh
# Stands in for "mvn clean install" of an AEM project: the packages it
# would build are in prebuilt/; it leaves them in the modules' target/.
set -eu
echo "[INFO] Building demo-site ` + release + `"
rm -rf target ui.frontend/target
mkdir -p target ui.frontend/target
for f in prebuilt/*.zip; do
  case "$f" in
    *ui.frontend*) dest=ui.frontend/target ;;
    *) dest=target ;;
  esac
  cp "$f" "$dest/"
  echo "[INFO] $dest/$(basename "$f")"
done
echo "[INFO] Tests run: 42, Failures: 0, Errors: 0, Skipped: 0"
echo "[INFO] BUILD SUCCESS"
`,
		"scan.sh": `#!/bin/sh
# Stands in for the code scan: writes the code-quality metrics
# (docs/gates.md) to the file the builder's scan profile names.
set -eu
mkdir -p target/deckhand
cat > target/deckhand/code-quality.json <<'EOF'
` + qualityMetrics + `
EOF
echo "[INFO] code quality: security A, reliability A, maintainability A, coverage 82.5%"
`,
	}
	for name, body := range files {
		if err := writeFile(filepath.Join(work, name), body, 0o755); err != nil {
			return "", err
		}
	}
	for _, p := range packages() {
		if err := writeFile(filepath.Join(work, "prebuilt", p.file), string(p.data), 0o644); err != nil {
			return "", err
		}
	}
	if _, _, err := dispatcherArtifact().Write(filepath.Join(work, "prebuilt", "demo-site.dispatcher-"+release+".zip")); err != nil {
		return "", err
	}
	git := func(dir string, args ...string) error {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=Deckhand Demo", "GIT_AUTHOR_EMAIL=demo@example.com",
			"GIT_COMMITTER_NAME=Deckhand Demo", "GIT_COMMITTER_EMAIL=demo@example.com",
			"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	steps := [][]string{
		{gitDir, "init", "-q", "--bare", "-b", "main", bare},
		{work, "init", "-q", "-b", "main"},
		{work, "add", "."},
		{work, "commit", "-q", "-m", "demo-site " + release},
		{work, "push", "-q", bare, "main"},
	}
	for _, s := range steps {
		if err := git(s[0], s[1:]...); err != nil {
			return "", err
		}
	}
	return bare, nil
}

func writeFile(p, body string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(body), mode)
}
