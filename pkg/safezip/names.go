package safezip

import (
	"archive/zip"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
)

// maxNameLen bounds entry names and symlink targets. It is Linux's PATH_MAX; it also keeps
// the per-entry work of the duplicate and parent checks small.
const maxNameLen = 4096

// maxComponentLen bounds one component of an entry name: NAME_MAX of Linux filesystems, so
// the error names the entry instead of coming back as ENAMETOOLONG from the kernel.
const maxComponentLen = 255

// Unix file type bits as stored in the upper 16 bits of a zip entry's external attributes.
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

// Creator systems (upper byte of CreatorVersion) whose external attributes carry a Unix mode.
const (
	creatorUnix  = 3
	creatorMacOS = 19
)

// msdosDir is the MS-DOS directory attribute in the low byte of the external attributes.
const msdosDir = 0x10

// Default permissions when an entry carries no Unix mode.
const (
	defaultFilePerm fs.FileMode = 0o644
	defaultDirPerm  fs.FileMode = 0o755
)

// nodeKind is what an entry (or an implied parent directory) becomes on disk.
type nodeKind uint8

const (
	kindDir nodeKind = iota + 1
	kindFile
	kindSymlink
)

func (k nodeKind) String() string {
	switch k {
	case kindDir:
		return "directory"
	case kindFile:
		return "regular file"
	case kindSymlink:
		return "symlink"
	}
	return "unknown"
}

func entryErr(name string, kind error, format string, args ...any) *EntryError {
	return &EntryError{Name: name, Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// cleanName validates a raw entry name and returns it cleaned (slash-separated, no trailing
// slash, no "." or empty components), which is the key used to detect duplicates.
func cleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", entryErr(raw, ErrUnsafePath, "empty name")
	case len(raw) > maxNameLen:
		return "", entryErr(raw, ErrLimit, "name is longer than %d bytes", maxNameLen)
	case strings.IndexByte(raw, 0) >= 0:
		return "", entryErr(raw, ErrUnsafePath, "name contains a NUL byte")
	case strings.IndexByte(raw, '\\') >= 0:
		// A backslash is a separator on Windows and a plain character on Unix: the same
		// archive would produce different trees, so refuse it everywhere.
		return "", entryErr(raw, ErrUnsafePath, "name contains a backslash")
	case strings.HasPrefix(raw, "/"):
		return "", entryErr(raw, ErrUnsafePath, "absolute path")
	}
	clean := path.Clean(raw)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", entryErr(raw, ErrUnsafePath, "path escapes the destination")
	}
	for _, c := range strings.Split(raw, "/") {
		if c == ".." {
			// "a/../b" stays inside, but ".." in a name is never legitimate and would be
			// resolved by the kernel through whatever "a" is.
			return "", entryErr(raw, ErrUnsafePath, `path contains a ".." component`)
		}
		if len(c) > maxComponentLen {
			return "", entryErr(raw, ErrLimit, "path component is longer than %d bytes", maxComponentLen)
		}
	}
	if !filepath.IsLocal(filepath.FromSlash(raw)) {
		// Only reachable on Windows (volume names, reserved names like NUL or COM1).
		return "", entryErr(raw, ErrUnsafePath, "path is not local to the destination")
	}
	if clean == "." {
		return "", entryErr(raw, ErrUnsafePath, "name refers to the destination directory itself")
	}
	return clean, nil
}

// entryKind decides what the entry becomes and with which permissions. Permissions are
// masked with 0o755 (no setuid, setgid, sticky, group or other write). Directories are also
// made owner-rwx (0o700) so that the extraction can create their children and a later
// deployment can remove or replace the tree without a chmod pass. Without a Unix mode files
// get 0o644 and directories 0o755.
func entryKind(f *zip.File) (nodeKind, fs.FileMode, error) {
	hasSlash := strings.HasSuffix(f.Name, "/")
	var unixMode uint32
	if c := f.CreatorVersion >> 8; c == creatorUnix || c == creatorMacOS {
		unixMode = f.ExternalAttrs >> 16
	}
	if f.Flags&0x1 != 0 {
		return 0, 0, entryErr(f.Name, ErrUnsupported, "encrypted entries are not supported")
	}

	var kind nodeKind
	switch unixMode & sIFMT {
	case 0:
		// No Unix type (non-Unix creator, or a writer that stores only permission bits):
		// the name and the MS-DOS attribute decide.
		kind = kindFile
		if hasSlash || (unixMode == 0 && f.ExternalAttrs&msdosDir != 0) {
			kind = kindDir
		}
	case sIFREG:
		kind = kindFile
		if hasSlash {
			// archive/zip treats a name ending in "/" as a directory whatever the mode.
			kind = kindDir
		}
	case sIFDIR:
		kind = kindDir
	case sIFLNK:
		if hasSlash {
			return 0, 0, entryErr(f.Name, ErrUnsupported, "symlink entry with a directory name")
		}
		kind = kindSymlink
	case sIFCHR:
		return 0, 0, entryErr(f.Name, ErrUnsupported, "character devices are not supported")
	case sIFBLK:
		return 0, 0, entryErr(f.Name, ErrUnsupported, "block devices are not supported")
	case sIFIFO:
		return 0, 0, entryErr(f.Name, ErrUnsupported, "FIFOs are not supported")
	case sIFSOCK:
		return 0, 0, entryErr(f.Name, ErrUnsupported, "sockets are not supported")
	default:
		return 0, 0, entryErr(f.Name, ErrUnsupported, "unknown file type %#o", unixMode&sIFMT)
	}

	if kind != kindDir && f.Method != zip.Store && f.Method != zip.Deflate {
		return 0, 0, entryErr(f.Name, ErrUnsupported, "unsupported compression method %d", f.Method)
	}

	perm := fs.FileMode(unixMode & 0o755)
	switch {
	case kind == kindDir && unixMode == 0:
		perm = defaultDirPerm
	case kind == kindDir:
		perm |= 0o700
	case kind == kindFile && unixMode == 0:
		perm = defaultFilePerm
	}
	return kind, perm, nil
}

// checkLinkTarget validates the target of the symlink entry raw whose cleaned name is name.
//
// A target may only be relative, with all its ".." components leading ("../../a/b"), and may
// not climb above the destination from the link's directory. Because entry paths never pass
// through a symlink, the link's directory is a real directory, so the leading ".." reach a
// real ancestor inside the tree; from there the target only descends, and every symlink it
// descends through obeys the same rule, so the resolved path stays inside the tree however the
// links chain. A ".." after a normal component is refused because the kernel resolves it
// after following that component, which may itself be a symlink: "x/s -> .." plus
// "t -> x/s/../.." looks local lexically but resolves above the tree.
func checkLinkTarget(raw, name, target string) error {
	switch {
	case target == "":
		return entryErr(raw, ErrUnsafePath, "empty symlink target")
	case strings.IndexByte(target, 0) >= 0:
		return entryErr(raw, ErrUnsafePath, "symlink target contains a NUL byte")
	case strings.IndexByte(target, '\\') >= 0:
		return entryErr(raw, ErrUnsafePath, "symlink target %q contains a backslash", target)
	case strings.HasPrefix(target, "/") || filepath.IsAbs(filepath.FromSlash(target)):
		return entryErr(raw, ErrUnsafePath, "absolute symlink target %q", target)
	}
	ups, descended := 0, false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if descended {
				return entryErr(raw, ErrUnsafePath, `symlink target %q has ".." after a path component`, target)
			}
			ups++
		default:
			descended = true
		}
	}
	depth := strings.Count(name, "/") // directories between the destination and the link
	if ups > depth {
		return entryErr(raw, ErrUnsafePath, "symlink target %q escapes the destination", target)
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved != "." && !filepath.IsLocal(filepath.FromSlash(resolved)) {
		return entryErr(raw, ErrUnsafePath, "symlink target %q is not local to the destination", target)
	}
	return nil
}
