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
	"time"
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
	// unknown marks a file whose content as of the last rebase is not
	// known: it changed after the rebase took its stat and before its
	// content could be hashed (see rebuild). It equals nothing, so
	// whatever the file holds now is reported (with Before ""); it is
	// also the placeholder while the hash is pending.
	unknown bool
}

// same reports whether two entries describe the same config. mtime only
// counts when there is no hash: touch(1) is not drift.
func (e entry) same(o entry) bool {
	if e.unknown || o.unknown {
		return false
	}
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
	ent, _, ok, err = statPathModTime(abs)
	return ent, ok, err
}

// statPathModTime is statPath that also returns the file system's
// modification time of what it described (zero when ok is false), which
// the entry itself does not keep for readable files.
func statPathModTime(abs string) (ent entry, mod time.Time, ok bool, err error) {
	fi, err := os.Lstat(abs)
	if err == nil {
		mod = fi.ModTime()
	}
	ent, ok, err = describe(abs, fi, err)
	if !ok {
		mod = time.Time{}
	}
	return ent, mod, ok, err
}

func describe(abs string, fi fs.FileInfo, err error) (ent entry, ok bool, _ error) {
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
	f, err := openFile(abs)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return hashReader(f)
}

// openFile opens a regular file for hashing. O_NOFOLLOW: if the file was
// swapped for a symlink since it was looked at, fail (ELOOP, "gone")
// instead of hashing what the link points at; the accompanying fsnotify
// event re-examines the path. O_NONBLOCK: a FIFO swapped in does not
// block.
func openFile(abs string) (*os.File, error) {
	return os.OpenFile(abs, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

func hashReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fileStat is what lstat says of a regular file: enough to tell that it
// was not changed since. Writing, truncating, chmod, chown, linking or
// renaming a file sets its ctime to the current time, and nothing in user
// space can set a ctime back; replacing the file changes dev/ino. The one
// blind spot is a change within the timestamp granularity of the last
// one, which can leave every field equal: see racy.
type fileStat struct {
	dev, ino     uint64
	mode         uint32
	size         int64
	mtime, ctime int64 // ns since the epoch
}

// Timestamp granularity bounds for racy. ctime comes from the kernel's
// coarse clock (one tick: 1-10 ms) or, on filesystems with whole-second
// timestamps, is truncated to the second (or two, vfat).
const (
	racyWindow       = 50 * time.Millisecond
	racyWindowCoarse = 2*time.Second + racyWindow
)

// racy reports whether a file's stat, taken at now, cannot vouch for
// its content from now on: its last change is so recent that a change
// right after now could get the same ctime (the "racy clean" problem git
// solves the same way). Such files are hashed while the snapshot is taken.
// A file whose ctime has no sub-second part is assumed to be on a
// filesystem with whole-second timestamps.
func racy(st fileStat, now time.Time) bool {
	w := racyWindow
	if st.ctime%int64(time.Second) == 0 {
		w = racyWindowCoarse
	}
	return st.ctime > now.Add(-w).UnixNano()
}

// snapshotPath describes abs for a rebase at now, reading contents only
// where it must: a symlink's target (one readlink) and a regular file
// that is racy or whose stat cannot be used (not Linux). For every other
// regular file it returns a placeholder entry (unknown) and its stat, with
// later set: hashUnchanged hashes it off the caller's path. ok and err
// are as for statPath.
func snapshotPath(abs string, now time.Time) (ent entry, st fileStat, later, ok bool, err error) {
	fi, err := os.Lstat(abs)
	if err != nil {
		if gone(err) {
			return entry{}, st, false, false, nil
		}
		return entry{}, st, false, false, err
	}
	if !fi.Mode().IsRegular() {
		ent, ok, err = statPath(abs)
		return ent, st, false, ok, err
	}
	st, usable := fileStatOf(fi)
	if !usable {
		ent, ok, err = statPath(abs)
		return ent, st, false, ok, err
	}
	if racy(st, now) {
		ent, err = hashUnchanged(abs, st)
		return ent, st, false, true, err
	}
	return entry{typ: typeFile, perm: fi.Mode().Perm(), unknown: true}, st, true, true, nil
}

// hashUnchanged hashes the regular file at abs if it still is what st
// describes, checking the open file's stat before and after reading it.
// A file changed, replaced or removed since st gives an unknown entry: its
// content as of st is lost, and whatever it holds now is somebody's change
// (the fsnotify event for it, or the next scan, reports it). A file that
// cannot be read gives an unreadable entry (size and mtime of st) and the
// error, as in statPath.
func hashUnchanged(abs string, st fileStat) (entry, error) {
	perm := fs.FileMode(st.mode).Perm()
	changed := entry{typ: typeFile, perm: perm, unknown: true}
	f, err := openFile(abs)
	if err != nil {
		if gone(err) {
			return changed, nil
		}
		return entry{typ: typeFile, perm: perm, unreadable: true, size: st.size, mtime: st.mtime}, errUnreadable{err}
	}
	defer f.Close()
	if !sameStat(f, st) {
		return changed, nil
	}
	h, err := hashReader(f)
	if err != nil {
		return entry{typ: typeFile, perm: perm, unreadable: true, size: st.size, mtime: st.mtime}, errUnreadable{err}
	}
	if !sameStat(f, st) {
		return changed, nil
	}
	return entry{typ: typeFile, perm: perm, hash: h}, nil
}

func sameStat(f *os.File, st fileStat) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	now, ok := fileStatOf(fi)
	return ok && now == st
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

// walk lists every directory and file below root (root itself included
// as dir ""), skipping ignored paths. Directories it cannot read are
// reported to onErr and skipped; their entries are unknown, not removed
// (they are simply absent from this manifest, which is the best we know).
// visitDir is called before a directory's contents are read, which is
// where the watcher adds its watch so nothing created meanwhile is missed;
// returning errStopWalk from it ends the walk. onEntry gets every regular
// file and symlink (by the directory's listing: it may be gone by now)
// and reads nothing itself: callers that need an entry use statPath.
func walk(root, start string, skip func(rel string) bool, visitDir func(rel string) error,
	onEntry func(rel, abs string), onErr func(rel string, err error)) error {
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
		if t := d.Type(); t.IsRegular() || t&fs.ModeSymlink != 0 {
			onEntry(rel, p)
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
