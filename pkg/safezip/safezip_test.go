package safezip

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRejects(t *testing.T) {
	t.Parallel()
	zeros := func(n int) []byte { return make([]byte, n) }
	small := Limits{MaxEntries: 3, MaxTotalBytes: 1000, MaxFileBytes: 600, MaxRatio: 1e9, RatioAllowance: 1 << 40}
	tests := []struct {
		name   string
		ents   []zent
		limits Limits
		kind   error
		entry  string // the entry the error must name
		reason string // a substring of the message
	}{
		// Names.
		{name: "zip slip", ents: []zent{file("ok", "x"), file("../x", "evil")}, kind: ErrUnsafePath, entry: "../x", reason: "path escapes the destination"},
		{name: "zip slip deep", ents: []zent{file("a/../../x", "evil")}, kind: ErrUnsafePath, entry: "a/../../x", reason: "path escapes"},
		{name: "dotdot inside", ents: []zent{file("a/../b", "x")}, kind: ErrUnsafePath, entry: "a/../b", reason: `".." component`},
		{name: "dotdot dir", ents: []zent{dir("../")}, kind: ErrUnsafePath, entry: "../", reason: "path escapes"},
		{name: "absolute", ents: []zent{file("/etc/x", "evil")}, kind: ErrUnsafePath, entry: "/etc/x", reason: "absolute path"},
		{name: "backslash", ents: []zent{file(`a\b`, "x")}, kind: ErrUnsafePath, entry: `a\b`, reason: "backslash"},
		{name: "backslash slip", ents: []zent{file(`..\..\x`, "x")}, kind: ErrUnsafePath, entry: `..\..\x`, reason: "backslash"},
		{name: "NUL", ents: []zent{file("a\x00b", "x")}, kind: ErrUnsafePath, entry: "a\x00b", reason: "NUL"},
		{name: "empty name", ents: []zent{file("", "x")}, kind: ErrUnsafePath, entry: "", reason: "empty name"},
		{name: "dot dir", ents: []zent{dir("./")}, kind: ErrUnsafePath, entry: "./", reason: "destination directory itself"},
		{name: "long component", ents: []zent{file("d/"+strings.Repeat("n", 256), "x")}, kind: ErrLimit, entry: "d/" + strings.Repeat("n", 256), reason: "component is longer than 255"},
		{name: "long name", ents: []zent{file(strings.Repeat("a/", 2100)+"f", "x")}, kind: ErrLimit, entry: strings.Repeat("a/", 2100) + "f", reason: "longer than 4096"},

		// Duplicates.
		{name: "duplicate", ents: []zent{file("a/b", "1"), file("a/b", "2")}, kind: ErrUnsafePath, entry: "a/b", reason: `duplicate of entry "a/b"`},
		{name: "duplicate double slash", ents: []zent{file("a/b", "1"), file("a//b", "2")}, kind: ErrUnsafePath, entry: "a//b", reason: "duplicate"},
		{name: "duplicate dot", ents: []zent{file("a/b", "1"), file("a/./b", "2")}, kind: ErrUnsafePath, entry: "a/./b", reason: "duplicate"},
		{name: "duplicate dir", ents: []zent{dir("a/"), dir("a/")}, kind: ErrUnsafePath, entry: "a/", reason: "duplicate"},
		{name: "file then dir", ents: []zent{file("a", "1"), dir("a/")}, kind: ErrUnsafePath, entry: "a/", reason: "duplicate"},
		{name: "dir then file", ents: []zent{dir("a/"), file("a", "1")}, kind: ErrUnsafePath, entry: "a", reason: "duplicate"},
		{name: "implied dir then file", ents: []zent{file("a/b", "1"), file("a", "1")}, kind: ErrUnsafePath, entry: "a", reason: `regular file with the same path as the directory implied by entry "a/b"`},
		{name: "file then child", ents: []zent{file("a", "1"), file("a/b", "1")}, kind: ErrUnsafePath, entry: "a/b", reason: `parent "a" is the regular file entry "a"`},

		// Symlinks.
		{name: "through symlink to root", ents: []zent{link("link", "/"), file("link/x", "evil")}, kind: ErrUnsafePath, entry: "link/x", reason: `passes through the symlink entry "link"`},
		{name: "through in-tree symlink", ents: []zent{dir("sub/"), link("link", "sub"), file("link/x", "x")}, kind: ErrUnsafePath, entry: "link/x", reason: "passes through the symlink"},
		{name: "through symlink deep", ents: []zent{link("a/link", "../b"), file("a/link/c/d", "x")}, kind: ErrUnsafePath, entry: "a/link/c/d", reason: "passes through the symlink"},
		{name: "child before symlink", ents: []zent{file("link/x", "x"), link("link", "/")}, kind: ErrUnsafePath, entry: "link", reason: "symlink with the same path as the directory implied"},
		{name: "symlink escapes", ents: []zent{link("link", "../..")}, kind: ErrUnsafePath, entry: "link", reason: `symlink target "../.." escapes the destination`},
		{name: "symlink escapes from subdir", ents: []zent{link("a/b/l", "../../../x")}, kind: ErrUnsafePath, entry: "a/b/l", reason: "escapes the destination"},
		{name: "symlink absolute", ents: []zent{link("l", "/etc/passwd")}, kind: ErrUnsafePath, entry: "l", reason: "absolute symlink target"},
		{name: "symlink dotdot after component", ents: []zent{link("x/s", ".."), link("t", "x/s/../..")}, kind: ErrUnsafePath, entry: "t", reason: `".." after a path component`},
		{name: "symlink empty target", ents: []zent{link("l", "")}, kind: ErrUnsafePath, entry: "l", reason: "empty symlink target"},
		{name: "symlink NUL target", ents: []zent{link("l", "a\x00b")}, kind: ErrUnsafePath, entry: "l", reason: "NUL"},
		{name: "symlink backslash target", ents: []zent{link("l", `..\..\etc`)}, kind: ErrUnsafePath, entry: "l", reason: "backslash"},
		{name: "symlink long target", ents: []zent{link("l", strings.Repeat("a/", 2100))}, kind: ErrLimit, entry: "l", reason: "longer than 4096"},
		{name: "symlink with dir name", ents: []zent{{name: "l/", mode: sIFLNK | 0o777}}, kind: ErrUnsupported, entry: "l/", reason: "symlink entry with a directory name"},

		// Types. Zip has no hardlink type: a hardlink is either stored as a regular file by
		// the archiver or shows up as an unknown type, which is refused.
		{name: "char device", ents: []zent{typed("dev/null", sIFCHR)}, kind: ErrUnsupported, entry: "dev/null", reason: "character devices"},
		{name: "block device", ents: []zent{typed("sda", sIFBLK)}, kind: ErrUnsupported, entry: "sda", reason: "block devices"},
		{name: "fifo", ents: []zent{typed("fifo", sIFIFO)}, kind: ErrUnsupported, entry: "fifo", reason: "FIFOs"},
		{name: "socket", ents: []zent{typed("sock", sIFSOCK)}, kind: ErrUnsupported, entry: "sock", reason: "sockets"},
		{name: "unknown type", ents: []zent{typed("hardlink", 0o160000)}, kind: ErrUnsupported, entry: "hardlink", reason: "unknown file type 0160000"},
		{name: "encrypted", ents: []zent{{name: "secret", body: []byte("x"), flags: 0x1}}, kind: ErrUnsupported, entry: "secret", reason: "encrypted"},
		{name: "unknown method", ents: []zent{{name: "m", body: []byte("x"), method: 99}}, kind: ErrUnsupported, entry: "m", reason: "compression method 99"},

		// Limits.
		{name: "entry count", ents: []zent{file("a", ""), file("b", ""), file("c", ""), file("d", "")}, limits: small, kind: ErrLimit, entry: "d", reason: "archive has 4 entries, more than the limit of 3"},
		{name: "implied dirs count", ents: []zent{file("a/b/c/d", "")}, limits: small, kind: ErrLimit, entry: "a/b/c/d", reason: "more than 3 files and directories"},
		{name: "per-file bytes", ents: []zent{{name: "big", body: zeros(601)}}, limits: small, kind: ErrLimit, entry: "big", reason: "per-file limit of 600 bytes"},
		{name: "total bytes", ents: []zent{{name: "a", body: zeros(500)}, {name: "b", body: zeros(501)}}, limits: small, kind: ErrLimit, entry: "b", reason: "total limit of 1000 bytes"},
		{name: "total counts symlink targets", ents: []zent{{name: "a", body: zeros(600)}, {name: "b", body: zeros(399)}, link("l", "aa")}, limits: small, kind: ErrLimit, entry: "l", reason: "total limit"},
		{name: "ratio bomb", ents: []zent{{name: "bomb", body: zeros(20 << 20)}}, kind: ErrLimit, entry: "bomb", reason: "expands more than 200 times"},
		{name: "bomb header claims huge", ents: []zent{{name: "bomb", body: zeros(2 << 20), lie: true, size: 1 << 40}}, limits: Limits{MaxFileBytes: 1 << 20}, kind: ErrLimit, entry: "bomb", reason: "per-file limit"},
		{name: "bomb header claims tiny", ents: []zent{{name: "bomb", body: zeros(20 << 20), lie: true, size: 100}}, kind: ErrCorrupt, entry: "bomb", reason: "invalid entry data or size"},
		{name: "header claims more than data", ents: []zent{{name: "short", body: []byte("abc"), lie: true, size: 1000}}, kind: ErrCorrupt, entry: "short", reason: "truncated"},

		// Corruption found while reading data.
		{name: "crc mismatch", ents: []zent{file("a", "1"), {name: "b", body: []byte("hello"), corruptCRC: true}}, kind: ErrCorrupt, entry: "b", reason: "CRC-32 mismatch"},
		{name: "crc mismatch symlink", ents: []zent{{name: "l", body: []byte("a"), mode: sIFLNK | 0o777, corruptCRC: true}}, kind: ErrCorrupt, entry: "l", reason: "CRC-32 mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sandbox, _, _, err := extractBytes(t, buildZip(t, tt.ents...), Options{Limits: tt.limits})
			requireRejected(t, sandbox, err, tt.kind, tt.entry)
			require.Contains(t, err.Error(), tt.reason)
		})
	}
}

func TestErrorMessage(t *testing.T) {
	t.Parallel()
	sandbox, _, _, err := extractBytes(t, buildZip(t, file("../../etc/passwd", "root::0:0")), Options{})
	requireRejected(t, sandbox, err, ErrUnsafePath, "../../etc/passwd")
	require.EqualError(t, err, `zip entry "../../etc/passwd": path escapes the destination`)
}

// TestCorruptArchive covers archives that archive/zip cannot even open, and damage to one
// entry's bytes.
func TestCorruptArchive(t *testing.T) {
	t.Parallel()
	good := buildZip(t, file("a", strings.Repeat("hello ", 100)), zent{name: "b", body: []byte("stored data"), store: true})
	cdOffset := bytes.Index(good, []byte("PK\x01\x02"))
	require.Positive(t, cdOffset)
	storedOffset := bytes.Index(good, []byte("stored data"))
	require.Positive(t, storedOffset)
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }

	tests := []struct {
		name  string
		data  []byte
		entry string
		is    error // an underlying error that must stay visible, or nil
	}{
		{name: "not a zip", data: []byte("this is not a zip archive at all"), entry: "-", is: zip.ErrFormat},
		{name: "empty", data: nil, entry: "-", is: zip.ErrFormat},
		{name: "truncated end", data: good[:len(good)-10], entry: "-"},
		{name: "truncated half", data: good[:len(good)/2], entry: "-"},
		{name: "bad central directory signature", data: mutate(func(b []byte) []byte { b[cdOffset+1] = 'X'; return b }), entry: "-", is: zip.ErrFormat},
		{name: "bad local header", data: mutate(func(b []byte) []byte { b[0] = 'X'; return b }), entry: "a", is: zip.ErrFormat},
		{name: "flipped stored byte", data: mutate(func(b []byte) []byte { b[storedOffset] ^= 0xff; return b }), entry: "b", is: zip.ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sandbox, _, _, err := extractBytes(t, tt.data, Options{})
			requireRejected(t, sandbox, err, ErrCorrupt, tt.entry)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
		})
	}
}

// dispatcherZip is a small AMS-layout dispatcher configuration with enabled_* symlinks.
func dispatcherZip(t testing.TB) []byte {
	return buildZip(t,
		dirMode("conf/", 0o755),
		fileMode("conf/httpd.conf", "ServerRoot /etc/httpd\n", 0o644),
		dirMode("conf.d/", 0o755),
		fileMode("conf.d/available_vhosts/a.vhost", "<VirtualHost *:80>\n</VirtualHost>\n", 0o644),
		fileMode("conf.d/available_vhosts/aem_publish.vhost", "# immutable\n", 0o644),
		link("conf.d/enabled_vhosts/a.vhost", "../available_vhosts/a.vhost"),
		fileMode("conf.d/dispatcher_vhost.conf", "# immutable\n", 0o644),
		fileMode("conf.dispatcher.d/available_farms/a.farm.any", "/publishfarm {}\n", 0o644),
		link("conf.dispatcher.d/enabled_farms/a.farm.any", "../available_farms/a.farm.any"),
		fileMode("conf.dispatcher.d/dispatcher.any", "$include \"enabled_farms/*.any\"\n", 0o644),
		fileMode("bin/check.sh", "#!/bin/sh\n", 0o755),
	)
}

func TestExtractDispatcherTree(t *testing.T) {
	t.Parallel()
	_, dest, res, err := extractBytes(t, dispatcherZip(t), Options{})
	require.NoError(t, err)
	require.Equal(t, Result{Files: 7, Dirs: 8, Symlinks: 2, Bytes: res.Bytes}, res)
	require.Positive(t, res.Bytes)

	got, err := os.ReadFile(filepath.Join(dest, "conf.d/enabled_vhosts/a.vhost"))
	require.NoError(t, err, "the in-tree symlink must resolve")
	require.Equal(t, "<VirtualHost *:80>\n</VirtualHost>\n", string(got))
	target, err := os.Readlink(filepath.Join(dest, "conf.d/enabled_vhosts/a.vhost"))
	require.NoError(t, err)
	require.Equal(t, "../available_vhosts/a.vhost", target)

	fi, err := os.Stat(dest)
	require.NoError(t, err)
	require.Equal(t, fs.ModeDir|0o755, fi.Mode(), "the destination itself")
	fi, err = os.Stat(filepath.Join(dest, "bin/check.sh"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o755), fi.Mode())
	fi, err = os.Stat(filepath.Join(dest, "conf.d/available_vhosts"))
	require.NoError(t, err)
	require.Equal(t, fs.ModeDir|0o755, fi.Mode(), "an implied directory")

	// No temporary directory next to the destination.
	entries, err := os.ReadDir(filepath.Dir(dest))
	require.NoError(t, err)
	require.Len(t, entries, 1)
	require.Equal(t, "out", entries[0].Name())
}

func TestModes(t *testing.T) {
	t.Parallel()
	data := buildZip(t,
		fileMode("setuid", "x", 0o4755),
		fileMode("setgid", "x", 0o2755),
		fileMode("sticky", "x", 0o1644),
		fileMode("world-writable", "x", 0o777),
		fileMode("private", "x", 0o600),
		fileMode("readonly", "x", 0o444),
		zent{name: "typeless", body: []byte("x"), mode: 0o640}, // permission bits without a type
		file("no-unix-mode", "x"),
		dirMode("d-setgid/", 0o2775),
		dirMode("d-readonly/", 0o555),
		dirMode("d-private/", 0o700),
		zent{name: "d-typeless/", mode: 0o750},
		dir("d-no-unix-mode/"),
		zent{name: "d-msdos", msdosAttrs: msdosDir},
		dirMode("d-no-slash", 0o750),
	)
	_, dest, res, err := extractBytes(t, data, Options{})
	require.NoError(t, err)
	require.Equal(t, 8, res.Files)
	require.Equal(t, 7, res.Dirs)
	want := map[string]fs.FileMode{
		"setuid":         0o755,
		"setgid":         0o755,
		"sticky":         0o644,
		"world-writable": 0o755,
		"private":        0o600,
		"readonly":       0o444,
		"typeless":       0o640,
		"no-unix-mode":   0o644,
		"d-setgid":       fs.ModeDir | 0o755,
		"d-readonly":     fs.ModeDir | 0o755, // owner-writable, see entryKind
		"d-private":      fs.ModeDir | 0o700,
		"d-typeless":     fs.ModeDir | 0o750,
		"d-no-unix-mode": fs.ModeDir | 0o755,
		"d-msdos":        fs.ModeDir | 0o755,
		"d-no-slash":     fs.ModeDir | 0o750,
	}
	for name, mode := range want {
		fi, err := os.Lstat(filepath.Join(dest, name))
		require.NoError(t, err, name)
		require.Equal(t, mode, fi.Mode(), name)
	}
}

func TestDirectoryOrder(t *testing.T) {
	t.Parallel()
	// Children before their directory entry, as some archivers write them.
	data := buildZip(t,
		fileMode("a/b/c", "c", 0o644),
		dirMode("a/b/", 0o750),
		dirMode("a/", 0o700),
		dir("a/b/e/"),
	)
	_, dest, res, err := extractBytes(t, data, Options{})
	require.NoError(t, err)
	require.Equal(t, Result{Files: 1, Dirs: 3, Bytes: 1}, res)
	for name, mode := range map[string]fs.FileMode{"a": fs.ModeDir | 0o700, "a/b": fs.ModeDir | 0o750, "a/b/e": fs.ModeDir | 0o755} {
		fi, err := os.Lstat(filepath.Join(dest, name))
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode(), name)
	}
}

func TestSymlinksAccepted(t *testing.T) {
	t.Parallel()
	data := buildZip(t,
		fileMode("available/a", "A", 0o644),
		link("enabled/a", "../available/a"),
		link("enabled/dangling", "../available/missing"), // dangling but inside the tree
		link("here", "."),
		link("x/root", ".."),
		link("x/self", "self"),              // a loop: harmless, the kernel stops it
		link("chain", "x/root/available/a"), // descends through another in-tree link
		link("x/deep", "../available/./a"),
	)
	_, dest, res, err := extractBytes(t, data, Options{})
	require.NoError(t, err)
	require.Equal(t, 1, res.Files)
	require.Equal(t, 7, res.Symlinks)
	for _, name := range []string{"enabled/a", "chain", "x/deep", "here/available/a"} {
		got, err := os.ReadFile(filepath.Join(dest, name))
		require.NoError(t, err, name)
		require.Equal(t, "A", string(got), name)
	}
	target, err := os.Readlink(filepath.Join(dest, "x/deep"))
	require.NoError(t, err)
	require.Equal(t, "../available/./a", target, "targets are stored verbatim")
}

func TestSkip(t *testing.T) {
	t.Parallel()
	immutable := map[string]bool{
		"conf/httpd.conf":                           true,
		"conf.d/dispatcher_vhost.conf":              true,
		"conf.d/available_vhosts/aem_publish.vhost": true,
		"conf.d/enabled_vhosts/a.vhost":             true, // a symlink can be skipped too
		"conf":                                      true, // an explicit directory that still has a written child? no: only httpd.conf, skipped
	}
	var asked []string
	_, dest, res, err := extractBytes(t, dispatcherZip(t), Options{Skip: func(name string) bool {
		asked = append(asked, name)
		return immutable[name]
	}})
	require.NoError(t, err)
	require.Equal(t, []string{"conf", "conf/httpd.conf", "conf.d/available_vhosts/aem_publish.vhost", "conf.d/enabled_vhosts/a.vhost", "conf.d/dispatcher_vhost.conf"}, res.Skipped)
	require.Contains(t, asked, "conf.d", "directories are asked without their trailing slash")
	require.Len(t, asked, 11)
	require.Equal(t, 4, res.Files)
	require.Equal(t, 1, res.Symlinks)
	for name := range immutable {
		_, err := os.Lstat(filepath.Join(dest, name))
		require.ErrorIs(t, err, fs.ErrNotExist, name)
	}
	// The directory of a skipped-only file is not created either; others are.
	_, err = os.Lstat(filepath.Join(dest, "conf.d/enabled_vhosts"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(filepath.Join(dest, "conf.d/available_vhosts/a.vhost"))
	require.NoError(t, err)
}

func TestSkipStillValidates(t *testing.T) {
	t.Parallel()
	data := buildZip(t, file("ok", "x"), file("../evil", "x"))
	sandbox, _, _, err := extractBytes(t, data, Options{Skip: func(string) bool { return true }})
	requireRejected(t, sandbox, err, ErrUnsafePath, "../evil")

	data = buildZip(t, link("l", "/"), file("l/x", "x"))
	sandbox, _, _, err = extractBytes(t, data, Options{Skip: func(name string) bool { return name == "l" }})
	requireRejected(t, sandbox, err, ErrUnsafePath, "l/x")
}

func TestSkippedDirectoryWithWrittenChild(t *testing.T) {
	t.Parallel()
	data := buildZip(t, dirMode("d/", 0o700), file("d/f", "x"))
	_, dest, res, err := extractBytes(t, data, Options{Skip: func(name string) bool { return name == "d" }})
	require.NoError(t, err)
	require.Equal(t, []string{"d"}, res.Skipped)
	fi, err := os.Stat(filepath.Join(dest, "d"))
	require.NoError(t, err)
	require.Equal(t, fs.ModeDir|0o755, fi.Mode(), "created with the default mode, not the skipped entry's")
}

func TestLimitsAreExact(t *testing.T) {
	t.Parallel()
	lim := Limits{MaxEntries: 2, MaxTotalBytes: 10, MaxFileBytes: 6}
	_, _, res, err := extractBytes(t, buildZip(t, file("a", "123456"), file("b", "7890")), Options{Limits: lim})
	require.NoError(t, err, "exactly at every limit is fine")
	require.Equal(t, int64(10), res.Bytes)

	// Ratio: a small archive of compressible data passes thanks to the allowance...
	_, _, _, err = extractBytes(t, buildZip(t, zent{name: "zeros", body: make([]byte, 4<<20)}), Options{})
	require.NoError(t, err)
	// ...and fails without it.
	sandbox, _, _, err := extractBytes(t, buildZip(t, zent{name: "zeros", body: make([]byte, 4<<20)}), Options{Limits: Limits{RatioAllowance: 1}})
	requireRejected(t, sandbox, err, ErrLimit, "zeros")
}

func TestDefaultLimits(t *testing.T) {
	t.Parallel()
	require.Equal(t, Limits{MaxEntries: 100_000, MaxTotalBytes: 1 << 30, MaxFileBytes: 256 << 20, MaxRatio: 200, RatioAllowance: 16 << 20}, DefaultLimits())
	require.Equal(t, DefaultLimits(), Limits{}.withDefaults())
	require.Equal(t, DefaultLimits(), Limits{MaxEntries: -1, MaxTotalBytes: -1, MaxFileBytes: -1, MaxRatio: -1, RatioAllowance: -1}.withDefaults())
	custom := Limits{MaxEntries: 1, MaxTotalBytes: 2, MaxFileBytes: 3, MaxRatio: 4, RatioAllowance: 5}
	require.Equal(t, custom, custom.withDefaults())
}

func TestEmptyArchive(t *testing.T) {
	t.Parallel()
	_, dest, res, err := extractBytes(t, buildZip(t), Options{})
	require.NoError(t, err)
	require.Equal(t, Result{}, res)
	entries, err := os.ReadDir(dest)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func TestExtractFromPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	archive := filepath.Join(dir, "dispatcher.zip")
	require.NoError(t, os.WriteFile(archive, dispatcherZip(t), 0o600))
	parent := filepath.Join(dir, "etc")
	require.NoError(t, os.Mkdir(parent, 0o755))
	dest := filepath.Join(parent, "httpd")

	res, err := Extract(archive, dest, Options{})
	require.NoError(t, err)
	require.Equal(t, 7, res.Files)
	_, err = os.Stat(filepath.Join(dest, "conf.d/enabled_vhosts/a.vhost"))
	require.NoError(t, err)

	// A second extraction must not touch the existing destination.
	require.NoError(t, os.WriteFile(filepath.Join(dest, "marker"), []byte("keep"), 0o644))
	_, err = Extract(archive, dest, Options{})
	require.ErrorIs(t, err, fs.ErrExist)
	got, err := os.ReadFile(filepath.Join(dest, "marker"))
	require.NoError(t, err)
	require.Equal(t, "keep", string(got))
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary directory left")

	// Even an empty directory at the destination is not replaced.
	empty := filepath.Join(parent, "empty")
	require.NoError(t, os.Mkdir(empty, 0o755))
	_, err = Extract(archive, empty, Options{})
	require.ErrorIs(t, err, fs.ErrExist)

	_, err = Extract(filepath.Join(dir, "missing.zip"), filepath.Join(parent, "x"), Options{})
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = Extract(archive, filepath.Join(dir, "no-such-parent", "x"), Options{})
	require.Error(t, err)
	_, err = Extract(dir, filepath.Join(parent, "y"), Options{})
	require.ErrorContains(t, err, "not a regular file")
}

func TestRenameNoReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	require.NoError(t, os.Mkdir(src, 0o755))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(empty, 0o755))
	require.ErrorIs(t, renameNoReplace(src, empty), fs.ErrExist, "rename(2) alone would replace an empty directory")
	require.ErrorIs(t, renameCheckThenReplace(src, empty), fs.ErrExist)
	require.NoError(t, renameNoReplace(src, filepath.Join(dir, "new")))
	require.NoError(t, renameCheckThenReplace(filepath.Join(dir, "new"), filepath.Join(dir, "newer")))
	_, err := os.Stat(filepath.Join(dir, "newer"))
	require.NoError(t, err)
}

func TestExtractToTemp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	archive := filepath.Join(dir, "a.zip")
	require.NoError(t, os.WriteFile(archive, dispatcherZip(t), 0o600))
	parent := filepath.Join(dir, "staging")
	require.NoError(t, os.Mkdir(parent, 0o755))

	tmp, res, err := ExtractToTemp(archive, parent, Options{})
	require.NoError(t, err)
	require.Equal(t, parent, filepath.Dir(tmp))
	require.True(t, strings.HasPrefix(filepath.Base(tmp), ".safezip-"), tmp)
	require.Equal(t, 2, res.Symlinks)
	fi, err := os.Stat(tmp)
	require.NoError(t, err)
	require.Equal(t, fs.ModeDir|0o755, fi.Mode())
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, "final")))
	_, err = os.Stat(filepath.Join(dir, "final/conf.dispatcher.d/enabled_farms/a.farm.any"))
	require.NoError(t, err)

	bad := filepath.Join(dir, "bad.zip")
	require.NoError(t, os.WriteFile(bad, buildZip(t, file("ok", "x"), link("l", "../../etc")), 0o600))
	tmp, res, err = ExtractToTemp(bad, parent, Options{})
	require.ErrorIs(t, err, ErrUnsafePath)
	require.Empty(t, tmp)
	require.Equal(t, Result{}, res)
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func TestSHA256(t *testing.T) {
	t.Parallel()
	data := dispatcherZip(t)
	sum := sha256.Sum256(data)
	good := hex.EncodeToString(sum[:])

	_, _, _, err := extractBytes(t, data, Options{SHA256: strings.ToUpper(good)})
	require.NoError(t, err)

	sum[0] ^= 1
	sandbox, _, _, err := extractBytes(t, data, Options{SHA256: hex.EncodeToString(sum[:])})
	requireRejected(t, sandbox, err, ErrDigest, "-")
	require.ErrorContains(t, err, "archive sha256 is "+good)

	// The digest is checked before parsing: garbage with the wrong digest is a digest error.
	sandbox, _, _, err = extractBytes(t, []byte("garbage"), Options{SHA256: good})
	requireRejected(t, sandbox, err, ErrDigest, "-")

	_, _, _, err = extractBytes(t, data, Options{SHA256: "abc"})
	require.ErrorContains(t, err, "not a hex SHA-256")
}

func TestErrorUnwrap(t *testing.T) {
	t.Parallel()
	e := &EntryError{Name: "a", Reason: "CRC-32 mismatch", Kind: ErrCorrupt, Err: zip.ErrChecksum}
	require.ErrorIs(t, e, ErrCorrupt)
	require.ErrorIs(t, e, zip.ErrChecksum)
	require.EqualError(t, e, `zip entry "a": CRC-32 mismatch: zip: checksum error`)
	io := &EntryError{Name: "b", Reason: "creating file", Err: fs.ErrPermission}
	require.ErrorIs(t, io, fs.ErrPermission)
	require.Nil(t, kindOf(io))
}
