package drift

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/require"
)

func errOverflowForTest() error { return fsnotify.ErrEventOverflow }

func TestGlob(t *testing.T) {
	imm, err := compile("Immutable", []string{"conf/httpd.conf", "conf.d/available_vhosts/aem_*.vhost", "conf.dispatcher.d/**/ams_*.any", "**/x.rules"}, false)
	require.NoError(t, err)
	for rel, want := range map[string]bool{
		"conf/httpd.conf":                               true,
		"conf/httpd.conf.bak":                           false,
		"x/conf/httpd.conf":                             false,
		"conf.d/available_vhosts/aem_publish.vhost":     true,
		"conf.d/available_vhosts/sub/aem_publish.vhost": false,
		"conf.dispatcher.d/ams_a.any":                   true,
		"conf.dispatcher.d/cache/ams_publish_cache.any": true,
		"conf.dispatcher.d/a/b/c/ams_x.any":             true,
		"conf.dispatcher.d/cache/site_cache.any":        false,
		"x.rules":                                       true,
		"conf.d/rewrites/x.rules":                       true,
		"conf":                                          false,
	} {
		require.Equal(t, want, imm.matchFull(rel), rel)
	}

	ign, err := compile("Ignore", []string{"*.swp", "/logs", "conf.d/tmp/**", ".git"}, true)
	require.NoError(t, err)
	for rel, want := range map[string]bool{
		"a.swp":              true,
		"conf.d/x/.a.swp":    true,
		"logs":               true,
		"logs/access_log":    true,
		"conf.d/logs/x.conf": false,
		"conf.d/tmp":         true, // "**" matches zero segments
		"conf.d/tmp/a/b":     true,
		"conf.d/tmpx":        false,
		".git/HEAD":          true,
		"conf.d/.git/HEAD":   true,
		"conf.d/a.conf":      false,
	} {
		require.Equal(t, want, ign.matchAny(rel), rel)
	}

	_, err = compile("Ignore", []string{"a/[b"}, true)
	require.Error(t, err)
	_, err = compile("Ignore", []string{"/"}, true)
	require.Error(t, err)
}

func TestStatPath(t *testing.T) {
	dir := t.TempDir()

	// Vanished (or never there): absent, not an error.
	_, ok, err := statPath(filepath.Join(dir, "nope"))
	require.False(t, ok)
	require.NoError(t, err)
	_, ok, err = statPath(filepath.Join(dir, "nope", "deeper"))
	require.False(t, ok)
	require.NoError(t, err)

	// Directories are not entries.
	_, ok, err = statPath(dir)
	require.False(t, ok)
	require.NoError(t, err)

	// Large file: streamed hash equals the one-shot hash.
	big := make([]byte, 5<<20+17)
	_, _ = rand.Read(big)
	p := filepath.Join(dir, "big.bin")
	require.NoError(t, os.WriteFile(p, big, 0o640))
	e, ok, err := statPath(p)
	require.NoError(t, err)
	require.True(t, ok)
	sum := sha256.Sum256(big)
	require.Equal(t, hex.EncodeToString(sum[:]), e.hash)
	require.Equal(t, os.FileMode(0o640), e.perm)

	// Symlinks: the target string, even dangling, never followed.
	l := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink("does/not/exist", l))
	e, ok, err = statPath(l)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, byte(typeSymlink), e.typ)
	require.Equal(t, sha("does/not/exist"), e.hash)

	// FIFOs and the like are not config.
	fifo := filepath.Join(dir, "fifo")
	if err := mkfifo(fifo); err == nil {
		_, ok, err = statPath(fifo)
		require.NoError(t, err)
		require.False(t, ok)
	}
}

func TestPickPartnerPrefersSameName(t *testing.T) {
	e := entry{typ: typeFile, hash: sha("same")}
	cands := []change{
		{rel: "b/a.conf", is: e},
		{rel: "b/x.conf", is: e},
		{rel: "b/y.conf", is: entry{typ: typeFile, hash: sha("other")}},
	}
	get := func(c change) entry { return c.is }
	require.Equal(t, 1, pickPartner("a/x.conf", e, cands, get))
	require.Equal(t, 0, pickPartner("a/z.conf", e, cands, get))
	require.Equal(t, -1, pickPartner("a/z.conf", entry{typ: typeSymlink, hash: sha("same")}, cands, get))
	require.Equal(t, -1, pickPartner("a/z.conf", entry{typ: typeFile, unreadable: true}, cands, get))
}
