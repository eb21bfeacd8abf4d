package safezip

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// zent describes one entry of a test archive. The builder writes entries raw, so headers can
// say anything: wrong sizes, wrong CRC, any mode, flags or method.
type zent struct {
	name string
	body []byte
	// mode is the Unix mode including the type bits (0o100644, 0o120777...), stored with the
	// Unix creator. 0 stores no Unix mode at all (creator MS-DOS), like Windows archivers.
	mode uint32
	// msdosAttrs goes into the low byte of the external attributes.
	msdosAttrs uint32
	store      bool
	// method, if non-zero, is recorded in the header instead of the real one.
	method uint16
	flags  uint16
	// size, if lie is set, is recorded as the uncompressed size instead of len(body).
	size       uint64
	lie        bool
	corruptCRC bool
}

func file(name, body string) zent { return zent{name: name, body: []byte(body)} }

func fileMode(name, body string, mode uint32) zent {
	return zent{name: name, body: []byte(body), mode: sIFREG | mode}
}

func dir(name string) zent { return zent{name: name} }

func dirMode(name string, mode uint32) zent { return zent{name: name, mode: sIFDIR | mode} }

func link(name, target string) zent {
	return zent{name: name, body: []byte(target), mode: sIFLNK | 0o777}
}

func typed(name string, typ uint32) zent { return zent{name: name, mode: typ | 0o644} }

// buildZip returns a zip archive of the entries, in order.
func buildZip(tb testing.TB, ents ...zent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range ents {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Deflate, Flags: e.flags}
		if e.store || (strings.HasSuffix(e.name, "/") && len(e.body) == 0) {
			// archive/zip refuses data, even an empty deflate stream, for directory names.
			fh.Method = zip.Store
		}
		if e.mode != 0 {
			fh.CreatorVersion = creatorUnix<<8 | 20
			fh.ExternalAttrs = e.mode << 16
		}
		fh.ExternalAttrs |= e.msdosAttrs
		data := e.body
		if fh.Method == zip.Deflate {
			var c bytes.Buffer
			fw, err := flate.NewWriter(&c, flate.BestCompression)
			require.NoError(tb, err)
			_, err = fw.Write(e.body)
			require.NoError(tb, err)
			require.NoError(tb, fw.Close())
			data = c.Bytes()
		}
		fh.CRC32 = crc32.ChecksumIEEE(e.body)
		if e.corruptCRC {
			fh.CRC32 ^= 0xdeadbeef
		}
		fh.CompressedSize64 = uint64(len(data))
		fh.UncompressedSize64 = uint64(len(e.body))
		if e.lie {
			fh.UncompressedSize64 = e.size
		}
		if e.method != 0 {
			fh.Method = e.method
		}
		w, err := zw.CreateRaw(fh)
		require.NoError(tb, err)
		if len(data) > 0 {
			_, err = w.Write(data)
			require.NoError(tb, err)
		}
	}
	require.NoError(tb, zw.Close())
	return buf.Bytes()
}

// extractBytes extracts data into dest "out" of a fresh sandbox directory and returns both.
func extractBytes(tb testing.TB, data []byte, opts Options) (sandbox, dest string, res Result, err error) {
	tb.Helper()
	sandbox = tb.TempDir()
	dest = filepath.Join(sandbox, "out")
	res, err = ExtractReader(bytes.NewReader(data), int64(len(data)), dest, opts)
	return sandbox, dest, res, err
}

// requireRejected asserts that err has the kind, names the entry (unless entry is "-": an
// archive-level error), and that nothing was left in the sandbox: no destination, no
// temporary directory.
func requireRejected(tb testing.TB, sandbox string, err, kind error, entry string) {
	tb.Helper()
	require.Error(tb, err)
	require.ErrorIs(tb, err, kind, "error: %v", err)
	if entry != "-" {
		var ee *EntryError
		require.ErrorAs(tb, err, &ee, "error: %v", err)
		require.Equal(tb, entry, ee.Name, "error: %v", err)
		require.Contains(tb, err.Error(), "zip entry ")
	}
	left, rerr := os.ReadDir(sandbox)
	require.NoError(tb, rerr)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	require.Empty(tb, names, "the sandbox must be empty after a rejection")
}

// kindOf returns which kind of this package err matches, or nil.
func kindOf(err error) error {
	for _, k := range []error{ErrUnsafePath, ErrUnsupported, ErrLimit, ErrCorrupt, ErrDigest} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
