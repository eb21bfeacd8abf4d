package dispatcher

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
)

// Entry types in a Manifest.
const (
	TypeDir     = "dir"
	TypeFile    = "file"
	TypeSymlink = "symlink"
	TypeOther   = "other" // device, FIFO, socket: recorded, never copied
)

// ManifestEntry is one filesystem object of a config tree.
type ManifestEntry struct {
	// Path is slash-separated and relative to the httpd dir, e.g.
	// "conf.d/enabled_vhosts/site.vhost".
	Path string `json:"path"`
	Type string `json:"type"`
	// Mode is the permission bits in octal, e.g. "0644".
	Mode   string `json:"mode"`
	Size   int64  `json:"size,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	// Target is a symlink's target, as stored.
	Target string `json:"target,omitempty"`
}

// Manifest describes a config tree: the managed dirs present and every
// object below them, sorted by path. Two trees are the same config when
// their manifests are equal (mtimes and owners are not compared).
type Manifest struct {
	Entries []ManifestEntry `json:"entries"`
}

// Files counts regular files and symlinks.
func (m *Manifest) Files() int {
	n := 0
	for _, e := range m.Entries {
		if e.Type == TypeFile || e.Type == TypeSymlink {
			n++
		}
	}
	return n
}

// Bytes sums the sizes of regular files.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, e := range m.Entries {
		n += e.Size
	}
	return n
}

// Lookup returns the entry for p.
func (m *Manifest) Lookup(p string) (ManifestEntry, bool) {
	i := sort.Search(len(m.Entries), func(i int) bool { return m.Entries[i].Path >= p })
	if i < len(m.Entries) && m.Entries[i].Path == p {
		return m.Entries[i], true
	}
	return ManifestEntry{}, false
}

// Diff lists, in words, how o differs from m; empty means equal.
func (m *Manifest) Diff(o *Manifest) []string {
	var out []string
	a, b := map[string]ManifestEntry{}, map[string]ManifestEntry{}
	for _, e := range m.Entries {
		a[e.Path] = e
	}
	for _, e := range o.Entries {
		b[e.Path] = e
	}
	for _, e := range m.Entries {
		f, ok := b[e.Path]
		switch {
		case !ok:
			out = append(out, "missing "+e.Path)
		case f != e:
			out = append(out, fmt.Sprintf("changed %s: %+v -> %+v", e.Path, e, f))
		}
	}
	for _, e := range o.Entries {
		if _, ok := a[e.Path]; !ok {
			out = append(out, "extra "+e.Path)
		}
	}
	return out
}

// TreeManifest describes the managed dirs below root (the httpd dir, a
// staging tree or a backup's tree). Absent dirs are left out.
func TreeManifest(root string, dirs []string) (*Manifest, error) {
	m := &Manifest{}
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && p == filepath.Join(root, d) {
					return filepath.SkipDir
				}
				return err
			}
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			fi, err := de.Info()
			if err != nil {
				return err
			}
			e, err := describe(p, filepath.ToSlash(rel), fi)
			if err != nil {
				return err
			}
			m.Entries = append(m.Entries, e)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(m.Entries, func(i, j int) bool { return m.Entries[i].Path < m.Entries[j].Path })
	return m, nil
}

// describe builds the entry for the object at p (hashing a file).
func describe(p, rel string, fi fs.FileInfo) (ManifestEntry, error) {
	e := ManifestEntry{Path: rel, Mode: fmtMode(fi.Mode())}
	switch {
	case fi.IsDir():
		e.Type = TypeDir
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = TypeSymlink
		t, err := os.Readlink(p)
		if err != nil {
			return e, err
		}
		e.Target = t
		e.Mode = ""
	case fi.Mode().IsRegular():
		e.Type = TypeFile
		f, err := os.Open(p)
		if err != nil {
			return e, err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return e, err
		}
		e.Size, e.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	default:
		e.Type = TypeOther
	}
	return e, nil
}

func fmtMode(m fs.FileMode) string {
	perm := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	return fmt.Sprintf("%04o", perm)
}

func parseMode(s string) fs.FileMode {
	v, _ := strconv.ParseUint(s, 8, 32)
	m := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// copier copies parts of one config tree into another, preserving modes,
// symlinks and (as root) owners, and records a manifest of what it wrote.
// It never follows a symlink: links are copied as links.
type copier struct {
	src, dst string
	m        Manifest
	dirModes []dirMode // applied after the copy, deepest first
	asRoot   bool
	// link makes each regular file a hard link to its source instead of a
	// copy, for backups of the live tree (see takeBackup); a file that
	// cannot be linked (chattr +i or +a, another filesystem, too many
	// links) is copied. Never for trees that go live: the live tree and a
	// backup must not share files.
	link bool
}

type dirMode struct {
	path string
	mode fs.FileMode
}

func newCopier(src, dst string) *copier {
	return &copier{src: src, dst: dst, asRoot: os.Geteuid() == 0}
}

// tree copies src/rel (a directory, with everything below it) unless
// skip says otherwise for an entry; skip may be nil.
func (c *copier) tree(rel string, skip func(rel string) bool) error {
	return filepath.WalkDir(filepath.Join(c.src, filepath.FromSlash(rel)), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, err := filepath.Rel(c.src, p)
		if err != nil {
			return err
		}
		r = filepath.ToSlash(r)
		if skip != nil && !de.IsDir() && skip(r) {
			return nil
		}
		return c.one(r)
	})
}

// one copies the single object src/rel, creating its parent directories
// with the modes they have in src.
func (c *copier) one(rel string) error {
	if err := c.parents(rel); err != nil {
		return err
	}
	sp, dp := filepath.Join(c.src, filepath.FromSlash(rel)), filepath.Join(c.dst, filepath.FromSlash(rel))
	fi, err := os.Lstat(sp)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		if err := os.Mkdir(dp, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		c.dirModes = append(c.dirModes, dirMode{dp, fi.Mode()})
		c.m.Entries = append(c.m.Entries, ManifestEntry{Path: rel, Type: TypeDir, Mode: fmtMode(fi.Mode())})
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(sp)
		if err != nil {
			return err
		}
		if err := os.Symlink(t, dp); err != nil {
			return err
		}
		c.m.Entries = append(c.m.Entries, ManifestEntry{Path: rel, Type: TypeSymlink, Target: t})
	case fi.Mode().IsRegular():
		if c.link {
			size, sum, err := linkFile(sp, dp)
			if err == nil {
				// Same inode: mode and owner are the source's already.
				c.m.Entries = append(c.m.Entries, ManifestEntry{Path: rel, Type: TypeFile, Mode: fmtMode(fi.Mode()), Size: size, SHA256: sum})
				return nil
			}
			if !errors.Is(err, errNoLink) {
				return err
			}
			if errors.Is(err, syscall.EXDEV) {
				c.link = false // another filesystem: no file will link
			}
		}
		size, sum, err := copyFile(sp, dp)
		if err != nil {
			return err
		}
		if err := c.chown(dp, fi); err != nil {
			return err
		}
		// After the chown, which clears set-id bits.
		if err := os.Chmod(dp, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		c.m.Entries = append(c.m.Entries, ManifestEntry{Path: rel, Type: TypeFile, Mode: fmtMode(fi.Mode()), Size: size, SHA256: sum})
		return nil
	default:
		return fmt.Errorf("%s: cannot copy a %s", sp, fi.Mode().Type())
	}
	return c.chown(dp, fi)
}

// chown gives dp the owner of fi when running as root (otherwise the
// copy belongs to us, which is all we can do).
func (c *copier) chown(dp string, fi fs.FileInfo) error {
	if !c.asRoot {
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return os.Lchown(dp, int(st.Uid), int(st.Gid))
	}
	return nil
}

// parents creates the missing parent directories of rel in dst.
func (c *copier) parents(rel string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(c.dst, filepath.FromSlash(dir))); err == nil {
		return nil
	}
	if err := c.parents(dir); err != nil {
		return err
	}
	return c.one(dir)
}

// finish applies directory modes (deepest first, so a read-only directory
// does not stop its own filling) and sorts the manifest.
func (c *copier) finish() (*Manifest, error) {
	for i := len(c.dirModes) - 1; i >= 0; i-- {
		if err := os.Chmod(c.dirModes[i].path, c.dirModes[i].mode); err != nil {
			return nil, err
		}
	}
	sort.Slice(c.m.Entries, func(i, j int) bool { return c.m.Entries[i].Path < c.m.Entries[j].Path })
	return &c.m, nil
}

// errNoLink means a file cannot be hard-linked and must be copied.
var errNoLink = errors.New("cannot hard-link")

// linkFile makes dst a hard link to src and hashes the content. Files the
// kernel refuses to link (EPERM for chattr +i/+a, EXDEV across
// filesystems, EMLINK) give an error matching errNoLink (and the errno).
func linkFile(src, dst string) (int64, string, error) {
	if err := os.Link(src, dst); err != nil {
		for _, e := range []error{syscall.EPERM, syscall.EXDEV, syscall.EMLINK, syscall.EACCES, syscall.ENOTSUP} {
			if errors.Is(err, e) {
				return 0, "", fmt.Errorf("%w: %w", errNoLink, err)
			}
		}
		return 0, "", err
	}
	f, err := os.Open(dst)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// copyFile copies a regular file, hashing it on the way. The copy has
// mode 0600 until the caller sets the real one.
func copyFile(src, dst string) (int64, string, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
