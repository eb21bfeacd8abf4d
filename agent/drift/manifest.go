package drift

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Entry types. Directories are not entries: a directory on its own is not
// config Apache reads, and the files below one are entries themselves.
// Devices, FIFOs and sockets are not config either and are skipped.
const (
	typeFile    = 'f'
	typeSymlink = 'l'
)

// entry is what the manifest knows about one file or symlink.
type entry struct {
	typ  byte
	perm fs.FileMode // permission bits of a regular file; 0 for symlinks (Linux ignores them)
	// hash is the hex sha256 of the content, or of the target string of a
	// symlink (links are never followed: a link pointing outside the tree
	// is drift in the link, not in what it points at). "" when unreadable.
	hash string
	// For files the agent cannot read (no hash), size and mtime stand in
	// for the content so a change is still noticed.
	unreadable bool
	size       int64
	mtime      int64
}

// same reports whether two entries describe the same config. mtime only
// counts when there is no hash: touch(1) is not drift.
func (e entry) same(o entry) bool {
	if e.typ != o.typ || e.perm != o.perm || e.hash != o.hash || e.unreadable != o.unreadable {
		return false
	}
	if e.unreadable {
		return e.size == o.size && e.mtime == o.mtime
	}
	return true
}

// manifest maps slash paths relative to the watched dir to entries.
type manifest map[string]entry

// errUnreadable wraps the reason a file's content could not be read.
type errUnreadable struct{ err error }

func (e errUnreadable) Error() string { return e.err.Error() }
func (e errUnreadable) Unwrap() error { return e.err }

// statPath describes abs as an entry. ok is false when nothing that is an
// entry is there: it does not exist (or vanished while we looked: an
// event can easily outlive its file), or it is a directory or a special
// file. A non-nil err is worth logging but ent is still usable (an
// unreadable file is reported by size and mtime).
func statPath(abs string) (ent entry, ok bool, err error) {
	fi, err := os.Lstat(abs)
	if err != nil {
		if gone(err) {
			return entry{}, false, nil
		}
		// Cannot even stat it (EACCES on the parent): we know nothing, so
		// treat it as absent rather than inventing a state for it.
		return entry{}, false, err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(abs)
		if err != nil {
			if gone(err) {
				return entry{}, false, nil
			}
			return entry{typ: typeSymlink, unreadable: true, size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true, errUnreadable{err}
		}
		return entry{typ: typeSymlink, hash: hashString(target)}, true, nil
	case fi.Mode().IsRegular():
		ent := entry{typ: typeFile, perm: fi.Mode().Perm(), size: fi.Size(), mtime: fi.ModTime().UnixNano()}
		h, err := hashFile(abs)
		if err != nil {
			if gone(err) {
				return entry{}, false, nil
			}
			ent.unreadable = true
			return ent, true, errUnreadable{err}
		}
		ent.hash = h
		// size and mtime are kept only for unreadable files; clearing
		// them keeps "same" honest about what it compares.
		ent.size, ent.mtime = 0, 0
		return ent, true, nil
	default:
		return entry{}, false, nil
	}
}

// hashFile streams the file through sha256: config trees sometimes carry
// large files (GeoIP databases, certificates bundles) and memory should
// not grow with them.
func hashFile(abs string) (string, error) {
	// O_NOFOLLOW: if the file was swapped for a symlink between Lstat and
	// here, fail instead of hashing what the link points at; the
	// accompanying fsnotify event re-examines the path.
	f, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func hashString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// gone reports errors meaning "there is nothing at this path (any more)".
// ELOOP comes from O_NOFOLLOW meeting a symlink that replaced the file.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP)
}

// walk lists every directory and entry below root (root itself included
// as dir ""), skipping ignored paths. Directories it cannot read are
// reported to onErr and skipped; their entries are unknown, not removed
// (they are simply absent from this manifest, which is the best we know).
// visitDir is called before a directory's contents are read, which is
// where the watcher adds its watch so nothing created meanwhile is missed;
// returning errStopWalk from it ends the walk.
func walk(root, start string, skip func(rel string) bool, visitDir func(rel string) error,
	onEntry func(rel string, e entry), onErr func(rel string, err error)) error {
	base := filepath.Join(root, filepath.FromSlash(start))
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		rel := relSlash(root, p)
		if err != nil {
			if gone(err) {
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if p == base && d == nil {
				return err
			}
			onErr(rel, err)
			if d != nil && d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if rel != "" && skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if visitDir != nil {
				if err := visitDir(rel); err != nil {
					if errors.Is(err, filepath.SkipDir) {
						return filepath.SkipDir
					}
					return err
				}
			}
			return nil
		}
		e, ok, serr := statPath(p)
		if serr != nil {
			onErr(rel, serr)
		}
		if ok {
			onEntry(rel, e)
		}
		return nil
	})
	if errors.Is(err, errStopWalk) {
		return nil
	}
	return err
}

// errStopWalk ends a walk early without it being an error (the watcher
// switched to scan mode half-way through adding watches).
var errStopWalk = errors.New("drift: stop walk")

// relSlash turns an absolute path below root into the slash form used in
// events ("" for root itself).
func relSlash(root, p string) string {
	if p == root {
		return ""
	}
	r, err := filepath.Rel(root, p)
	if err != nil {
		return filepath.ToSlash(p)
	}
	return filepath.ToSlash(r)
}
