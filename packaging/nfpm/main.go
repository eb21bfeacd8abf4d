// Command nfpm builds Deckhand's deb and rpm packages from the binaries
// `make build` put in bin/, with nfpm as a library (no nfpm binary, no YAML
// to keep in step with this code):
//
//	dist/deckhand-agent_<version>_<arch>.deb  .rpm   deckhand-agent
//	dist/deckhand-server_<version>_<arch>.deb .rpm   deckhand-server, deckctl
//
// `make package` runs it. What goes into each package (paths, modes,
// config files, scripts) is in spec.go; the unit files and scripts are in
// packaging/.
package main

import (
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"

	"github.com/goreleaser/nfpm/v2"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nfpm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", ".", "repository root (packaging/, docs/, README.md)")
	bin := fs.String("bin", "bin", "directory with the built deckhand-agent, deckhand-server and deckctl")
	dist := fs.String("dist", "dist", "output directory")
	rawVersion := fs.String("version", "", "version, e.g. v1.2.3 or `git describe --tags --always --dirty` output (required)")
	arch := fs.String("arch", "amd64", "Go architecture of the binaries (amd64, arm64)")
	maintainer := fs.String("maintainer", defaultMaintainer, "package maintainer (Name <email>)")
	formatsFlag := fs.String("formats", "deb,rpm", "comma-separated package formats")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *rawVersion == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: nfpm --version V [--bin DIR] [--dist DIR] [--root DIR] [--arch ARCH]")
		return 2
	}
	version, err := packageVersion(*rawVersion)
	if err != nil {
		fmt.Fprintln(stderr, "nfpm:", err)
		return 2
	}
	formats := strings.Split(*formatsFlag, ",")
	for _, f := range formats {
		if _, err := nfpm.Get(f); err != nil {
			// deb and rpm register themselves from packagers.go, which
			// needs their dependencies in go.sum (see that file).
			fmt.Fprintf(stderr, "nfpm: no %s packager in this build (%v): build with -tags nfpm_packagers once go.sum has nfpm's deb/rpm dependencies\n", f, err)
			return 1
		}
	}
	b := builder{root: *root, bin: *bin, dist: *dist, version: version, arch: *arch, maintainer: *maintainer}
	if err := os.MkdirAll(b.dist, 0o755); err != nil {
		fmt.Fprintln(stderr, "nfpm:", err)
		return 1
	}
	type job struct {
		p      pkg
		format string
		out    string
		err    error
	}
	var jobs []*job
	for _, p := range packages() {
		for _, bn := range p.binaries {
			if err := checkBinary(filepath.Join(b.bin, bn), b.arch); err != nil {
				fmt.Fprintln(stderr, "nfpm:", err)
				return 1
			}
		}
		for _, f := range formats {
			jobs = append(jobs, &job{p: p, format: f})
		}
	}
	// Compressing ~20 MB binaries is most of the time: one package per
	// CPU at once.
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			j.out, j.err = b.build(j.p, j.format)
		}()
	}
	wg.Wait()
	code := 0
	for _, j := range jobs {
		if j.err != nil {
			fmt.Fprintf(stderr, "nfpm: %s %s: %v\n", j.p.name, j.format, j.err)
			code = 1
			continue
		}
		fmt.Fprintln(stdout, j.out)
	}
	return code
}

// defaultMaintainer is a placeholder until the project has a maintainers'
// address; .invalid makes that obvious in `dpkg -s` and `rpm -qi`.
const defaultMaintainer = "Deckhand developers <deckhand@example.invalid>"

type builder struct {
	root, bin, dist string
	version, arch   string
	maintainer      string
}

// build writes one package and returns its path. It writes to a temporary
// file and renames it into place, so a failed run never leaves a truncated
// package that looks finished.
func (b builder) build(p pkg, format string) (string, error) {
	packager, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	info := nfpm.WithDefaults(b.info(p, format))
	if err := nfpm.PrepareForPackager(info, format); err != nil {
		return "", err
	}
	out := filepath.Join(b.dist, fmt.Sprintf("%s_%s_%s.%s", p.name, b.version, b.arch, format))
	tmp, err := os.CreateTemp(b.dist, "."+p.name+"-*."+format)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this finds nothing
	if err := packager.Package(info, tmp); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return out, os.Rename(tmp.Name(), out)
}

var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// checkBinary refuses a missing binary, or one built for another
// architecture than the package claims (a package built on a laptop with
// GOARCH unset would otherwise install and fail to exec on the host).
func checkBinary(path, arch string) error {
	want, ok := elfMachine[arch]
	if !ok {
		return fmt.Errorf("unsupported --arch %q", arch)
	}
	f, err := elf.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s is missing: run `make build` first", path)
	}
	if err != nil {
		return fmt.Errorf("%s is not a Linux binary: %w", path, err)
	}
	defer f.Close()
	if f.Machine != want {
		return fmt.Errorf("%s is built for %v, not %s", path, f.Machine, arch)
	}
	return nil
}

var (
	// v1.2.3, v1.2.3-4-gabc123, v1.2.3-dirty: `git describe --tags --dirty`.
	gitDescribe = regexp.MustCompile(`^(\d+\.\d+\.\d+)(?:-(\d+)-(g[0-9a-f]+))?(-dirty)?$`)
	semverLike  = regexp.MustCompile(`^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$`)
	untagged    = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.-]*$`)
)

// packageVersion turns the Makefile's VERSION into one that dpkg and rpm
// order correctly and that is safe in a file name:
//
//	v1.2.3               -> 1.2.3
//	v1.2.3-4-gabc-dirty  -> 1.2.3+4.gabc.dirty  (after 1.2.3, not before)
//	1.3.0-rc.1           -> 1.3.0-rc.1          (nfpm: 1.3.0~rc.1, before 1.3.0)
//	2ff5d6e-dirty, dev   -> 0.0.0~dev.2ff5d6e.dirty  (before any release)
func packageVersion(raw string) (string, error) {
	v := strings.TrimPrefix(strings.TrimSpace(raw), "v")
	if m := gitDescribe.FindStringSubmatch(v); m != nil {
		var meta []string
		if m[2] != "" {
			meta = append(meta, m[2], m[3])
		}
		if m[4] != "" {
			meta = append(meta, "dirty")
		}
		if len(meta) == 0 {
			return m[1], nil
		}
		return m[1] + "+" + strings.Join(meta, "."), nil
	}
	if semverLike.MatchString(v) {
		return v, nil
	}
	if v == "dev" { // the Makefile's VERSION outside a git checkout
		return "0.0.0~dev", nil
	}
	if untagged.MatchString(v) {
		return "0.0.0~dev." + strings.ReplaceAll(v, "-", "."), nil
	}
	return "", fmt.Errorf("version %q: want a tag like v1.2.3 or git describe output", raw)
}
