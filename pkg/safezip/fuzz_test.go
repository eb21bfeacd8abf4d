package safezip

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite the FuzzExtract seed corpus in testdata/fuzz/FuzzExtract")

// fuzzLimits are small so that a fuzzer-made archive cannot make one execution slow, and the
// ratio allowance is small so the ratio check is reachable.
var fuzzLimits = Limits{MaxEntries: 1000, MaxTotalBytes: 4 << 20, MaxFileBytes: 1 << 20, MaxRatio: 200, RatioAllowance: 64 << 10}

// fuzzSeeds are the committed seed archives, by file name.
func fuzzSeeds(tb testing.TB) map[string][]byte {
	return map[string][]byte{
		"zip-slip":           buildZip(tb, file("ok", "x"), file("../escaped", "evil"), file("a/../../escaped2", "evil")),
		"symlink-root-write": buildZip(tb, link("link", "/"), file("link/tmp/escaped", "evil")),
		"symlink-dotdot":     buildZip(tb, link("link", "../.."), link("x/s", ".."), link("t", "x/s/../..")),
		"bomb":               buildZip(tb, zent{name: "bomb", body: make([]byte, 5<<20)}),
		"bomb-lying-header":  buildZip(tb, zent{name: "bomb", body: make([]byte, 2<<20), lie: true, size: 1 << 40}),
		"corrupt-central-directory": func() []byte {
			b := buildZip(tb, file("a", "hello"), file("b", "world"))
			i := bytes.LastIndex(b, []byte("PK\x01\x02"))
			b[i+2] = 'X'
			return b
		}(),
		"duplicates":      buildZip(tb, file("a/b", "1"), file("a//b", "2"), file("a/./b", "3"), dir("a/b/")),
		"dispatcher-tree": dispatcherZip(tb),
		"types-and-modes": buildZip(tb, fileMode("suid", "x", 0o4777), typed("fifo", sIFIFO), typed("dev", sIFCHR), dirMode("d/", 0o7777)),
	}
}

// TestFuzzSeeds checks that the seed corpus is committed; with -write-seeds it rewrites it
// from fuzzSeeds (go test -run TestFuzzSeeds -write-seeds ./pkg/safezip/).
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzExtract")
	for name, data := range fuzzSeeds(t) {
		p := filepath.Join(dir, name)
		if *writeSeeds {
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.WriteFile(p, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data), 0o644))
			continue
		}
		got, err := os.ReadFile(p)
		require.NoError(t, err, "seed %s is missing: run with -write-seeds", name)
		require.True(t, bytes.HasPrefix(got, []byte("go test fuzz v1\n[]byte(")), name)

		// Every seed but the valid tree is an attack the package must refuse.
		sandbox, _, _, err := extractBytes(t, data, Options{Limits: fuzzLimits})
		if name == "dispatcher-tree" {
			require.NoError(t, err)
			continue
		}
		requireRejected(t, sandbox, err, kindOf(err), "-")
		require.NotNil(t, kindOf(err), "seed %s: %v", name, err)
	}
}

// FuzzExtract extracts arbitrary bytes; see checkExtraction for what it asserts. Run it with
// TMPDIR on a tmpfs: every execution fsyncs what it extracts.
func FuzzExtract(f *testing.F) {
	f.Fuzz(checkExtraction)
}

// FuzzExtractEntries builds well-formed archives from a line-based description, so the
// fuzzer spends its time on names, types and symlink targets instead of on zip framing.
// Each line is a kind byte, a name, and optionally "=" and a payload: 'f' file (payload is
// the content), 'd' directory, 'l' symlink (payload is the target), 's' setuid file, 'p'
// FIFO.
func FuzzExtractEntries(f *testing.F) {
	for _, seed := range []string{
		"fa/b=x\nla/l=../c\nfc=y",
		"ll=/\nfl/x=evil",
		"lx/s=..\nlt=x/s/../..",
		"d../\nf../x=1",
		"fa/b=1\nfa//b=2\nda/b/",
		"lenabled/a=../available/a\nfavailable/a=A\nsbin=x\npfifo",
		"lup=.\nlup2=up/up/..\nfup/x=1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		var ents []zent
		for _, line := range strings.Split(spec, "\n") {
			if line == "" {
				continue
			}
			name, payload, _ := strings.Cut(line[1:], "=")
			if strings.HasSuffix(name, "/") {
				payload = "" // archive/zip cannot write data under a directory name
			}
			switch line[0] {
			case 'f':
				ents = append(ents, file(name, payload))
			case 'd':
				ents = append(ents, dirMode(name, 0o755))
			case 'l':
				ents = append(ents, link(name, payload))
			case 's':
				ents = append(ents, fileMode(name, payload, 0o6777))
			case 'p':
				ents = append(ents, typed(name, sIFIFO))
			}
		}
		if len(ents) > 64 {
			return
		}
		checkExtraction(t, buildZip(t, ents...))
	})
}

// checkExtraction extracts data into a sandbox and checks that, whatever happened, nothing
// exists outside the destination, an error is classified and leaves nothing behind, and a
// successful tree holds only what the package promises.
func checkExtraction(t *testing.T, data []byte) {
	sandbox := t.TempDir()
	parent := filepath.Join(sandbox, "parent")
	sentinel := filepath.Join(sandbox, "sentinel")
	require.NoError(t, os.Mkdir(parent, 0o755))
	require.NoError(t, os.Mkdir(sentinel, 0o755))
	dest := filepath.Join(parent, "dest")

	res, err := ExtractReader(bytes.NewReader(data), int64(len(data)), dest, Options{Limits: fuzzLimits})

	require.Equal(t, []string{"parent", "sentinel"}, dirNames(t, sandbox), "nothing may appear next to the parent")
	require.Empty(t, dirNames(t, sentinel), "nothing may be written into a sibling directory")
	if err != nil {
		var ee *EntryError
		if kindOf(err) == nil && !errors.As(err, &ee) {
			t.Fatalf("unclassified error: %v", err)
		}
		require.Empty(t, dirNames(t, parent), "a failed extraction leaves nothing behind")
		return
	}
	require.Equal(t, []string{"dest"}, dirNames(t, parent), "only the destination, no temporary directory")

	var got Result
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if p == dest {
			return nil
		}
		rel, err := filepath.Rel(dest, p)
		require.NoError(t, err)
		fi, err := d.Info()
		require.NoError(t, err)
		mode := fi.Mode()
		require.Zero(t, mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), rel)
		switch mode.Type() {
		case 0:
			require.Zero(t, mode.Perm()&^0o755, rel)
			got.Files++
			got.Bytes += fi.Size()
		case fs.ModeDir:
			require.Zero(t, mode.Perm()&^0o755, rel)
			require.Equal(t, fs.FileMode(0o700), mode.Perm()&0o700, "directories are owner-rwx: %s", rel)
			got.Dirs++
		case fs.ModeSymlink:
			target, err := os.Readlink(p)
			require.NoError(t, err)
			got.Symlinks++
			got.Bytes += int64(len(target))
			require.True(t, resolvesInside(dest, filepath.ToSlash(rel)), "symlink %s -> %s leaves the tree", rel, target)
		default:
			t.Fatalf("%s has unexpected type %v", rel, mode.Type())
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, res.Files, got.Files)
	require.Equal(t, res.Dirs, got.Dirs)
	require.Equal(t, res.Symlinks, got.Symlinks)
	require.Equal(t, res.Bytes, got.Bytes)
	require.LessOrEqual(t, res.Bytes, fuzzLimits.MaxTotalBytes)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// resolvesInside follows the symlink rel (slash path relative to root) component by component
// the way the kernel does, and reports whether the walk ever leaves root. It is an independent
// oracle for checkLinkTarget: it reads the links actually on disk. A missing component, or
// one that is not a directory, is assumed to be a directory that might appear later, so the
// rest of the target is still checked; after 40 links (ELOOP for the kernel) it stops.
func resolvesInside(root, rel string) bool {
	var cur []string // the real directory the walk is in, as components under root
	if d := path.Dir(rel); d != "." {
		cur = strings.Split(d, "/")
	}
	target, err := os.Readlink(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil || path.IsAbs(target) {
		return false
	}
	pending := strings.Split(target, "/")
	for hops := 1; len(pending) > 0; {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return false
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := append(slices.Clone(cur), c)
		p := filepath.Join(append([]string{root}, next...)...)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return true
		}
		t, err := os.Readlink(p)
		if err != nil || path.IsAbs(t) {
			return false
		}
		pending = append(strings.Split(t, "/"), pending...)
	}
	return true
}

func TestResolvesInside(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "x"), 0o755))
	for name, target := range map[string]string{
		"x/s":     "..",
		"escape":  "x/s/../..",
		"ok":      "x/s/x",
		"abs":     "/etc",
		"up":      "../y",
		"loop":    "loop",
		"missing": "nope/../../..",
	} {
		require.NoError(t, os.Symlink(target, filepath.Join(root, name)))
	}
	for name, want := range map[string]bool{"x/s": true, "escape": false, "ok": true, "abs": false, "up": false, "loop": true, "missing": false} {
		require.Equal(t, want, resolvesInside(root, name), name)
	}
}
