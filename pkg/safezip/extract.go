package safezip

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// copyBufSize is the streaming buffer: large enough for few syscalls per file, small enough
// that extraction never holds much of an entry in memory.
const copyBufSize = 64 << 10

// node is one path of the tree the archive describes: an entry, or a directory implied by
// entry paths.
type node struct {
	kind nodeKind
	perm fs.FileMode
	// entry is the raw name of the entry that created or first implied the node, for errors.
	entry string
	// explicit is true when an entry of the archive names this node (false: implied dir).
	explicit bool
	// create is true when the node is written: a non-skipped entry, or a directory that a
	// non-skipped entry lies in. Set on a directory, it is set on all its ancestors.
	create bool
}

// item is a file or symlink entry to write.
type item struct {
	f    *zip.File
	name string // cleaned
	kind nodeKind
	perm fs.FileMode
}

// plan is the validated content of an archive, built from the central directory before
// anything is written.
type plan struct {
	nodes   map[string]*node
	items   []item // files and symlinks to write, in archive order
	skipped []string
	lim     Limits
}

// makePlan validates every entry name and type and the shape of the tree (duplicates,
// paths through symlinks or files, entry count). Content is not read yet.
func makePlan(zr *zip.Reader, opts Options) (*plan, error) {
	lim := opts.Limits
	if len(zr.File) > lim.MaxEntries {
		return nil, entryErr(zr.File[lim.MaxEntries].Name, ErrLimit,
			"archive has %d entries, more than the limit of %d", len(zr.File), lim.MaxEntries)
	}
	p := &plan{nodes: make(map[string]*node, len(zr.File)), lim: lim}
	for _, f := range zr.File {
		name, err := cleanName(f.Name)
		if err != nil {
			return nil, err
		}
		kind, perm, err := entryKind(f)
		if err != nil {
			return nil, err
		}
		skip := opts.Skip != nil && opts.Skip(name)
		if err := p.addParents(f.Name, name, !skip); err != nil {
			return nil, err
		}
		if err := p.addNode(f.Name, name, kind, perm, !skip); err != nil {
			return nil, err
		}
		switch {
		case skip:
			p.skipped = append(p.skipped, name)
		case kind != kindDir:
			p.items = append(p.items, item{f: f, name: name, kind: kind, perm: perm})
		}
	}
	return p, nil
}

// addParents records the directories that the entry raw (cleaned: name) lies in, from the
// deepest up, and refuses a path through a symlink or a file. It stops at the first directory
// already known to be created, whose ancestors were checked when it was recorded; this keeps
// the work per entry proportional to the new directories it implies.
func (p *plan) addParents(raw, name string, create bool) error {
	for i := strings.LastIndexByte(name, '/'); i > 0; i = strings.LastIndexByte(name[:i], '/') {
		dir := name[:i]
		n, ok := p.nodes[dir]
		if !ok {
			if len(p.nodes) >= p.lim.MaxEntries {
				return entryErr(raw, ErrLimit, "archive would create more than %d files and directories", p.lim.MaxEntries)
			}
			p.nodes[dir] = &node{kind: kindDir, perm: defaultDirPerm, entry: raw, create: create}
			continue
		}
		switch n.kind {
		case kindSymlink:
			// Never write through a symlink, even one that stays inside the tree: the
			// checks on this entry's path would no longer describe where it lands.
			return entryErr(raw, ErrUnsafePath, "path passes through the symlink entry %q", n.entry)
		case kindFile:
			return entryErr(raw, ErrUnsafePath, "parent %q is the regular file entry %q", dir, n.entry)
		}
		if n.create || !create {
			return nil
		}
		n.create = true
	}
	return nil
}

// addNode records the entry itself and refuses duplicates. An explicit directory entry may
// follow the entries that implied it (archivers list directories in any order).
func (p *plan) addNode(raw, name string, kind nodeKind, perm fs.FileMode, create bool) error {
	n, ok := p.nodes[name]
	if !ok {
		if len(p.nodes) >= p.lim.MaxEntries {
			return entryErr(raw, ErrLimit, "archive would create more than %d files and directories", p.lim.MaxEntries)
		}
		if !create && kind == kindDir {
			// A skipped directory entry keeps the default mode; see Options.Skip.
			perm = defaultDirPerm
		}
		p.nodes[name] = &node{kind: kind, perm: perm, entry: raw, explicit: true, create: create}
		return nil
	}
	switch {
	case n.explicit:
		return entryErr(raw, ErrUnsafePath, "duplicate of entry %q", n.entry)
	case kind != kindDir:
		return entryErr(raw, ErrUnsafePath, "%s with the same path as the directory implied by entry %q", kind, n.entry)
	}
	n.explicit = true
	if create {
		n.perm = perm
		n.create = true
	}
	return nil
}

// fsync is f.Sync; tests replace it to count the per-file syncs.
var fsync = func(f *os.File) error { return f.Sync() }

// writer writes a plan into a directory through an os.Root.
type writer struct {
	root    *os.Root
	lim     Limits
	size    int64 // of the whole archive, the denominator of the ratio limit
	buf     []byte
	written int64
	res     Result
}

// writeTree writes the plan into dir, which is empty: directories first (parents before
// children), then files, then symlinks, so that no file is ever opened through a symlink
// created from the archive; then it sets directory modes from the deepest up, ending with dir
// itself, which gets mode 0o755; then it makes the whole tree durable (see syncTree). Where
// perFileSync is set instead, every file and directory is fsynced as it is finished.
func writeTree(dir string, p *plan, size int64, lim Limits) (Result, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Result{}, fmt.Errorf("safezip: %w", err)
	}
	defer root.Close()
	w := &writer{root: root, lim: lim, size: size, buf: make([]byte, copyBufSize)}

	var dirs []string
	for name, n := range p.nodes {
		if n.kind == kindDir && n.create {
			dirs = append(dirs, name)
		}
	}
	// A path sorts after its prefixes, so parents come before their children.
	slices.Sort(dirs)
	for _, d := range dirs {
		// 0o700 while extracting: nobody else needs to see a half-written tree.
		if err := root.Mkdir(d, 0o700); err != nil {
			return Result{}, &EntryError{Name: p.nodes[d].entry, Reason: fmt.Sprintf("creating directory %q", d), Err: err}
		}
	}
	w.res.Dirs = len(dirs)
	for _, it := range p.items {
		if it.kind == kindFile {
			if err := w.writeFile(it); err != nil {
				return Result{}, err
			}
		}
	}
	for _, it := range p.items {
		if it.kind == kindSymlink {
			if err := w.writeSymlink(it); err != nil {
				return Result{}, err
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		n := p.nodes[dirs[i]]
		if err := w.finishDir(dirs[i], n.perm); err != nil {
			return Result{}, &EntryError{Name: n.entry, Reason: fmt.Sprintf("finishing directory %q", dirs[i]), Err: err}
		}
	}
	if err := w.finishDir(".", 0o755); err != nil {
		return Result{}, fmt.Errorf("safezip: finishing %s: %w", dir, err)
	}
	if !perFileSync {
		if err := syncTree(dir); err != nil {
			return Result{}, fmt.Errorf("safezip: making the extracted tree durable: %w", err)
		}
	}
	w.res.Bytes = w.written
	w.res.Skipped = p.skipped
	return w.res, nil
}

// finishDir sets a directory's final mode through its descriptor (and fsyncs it where
// perFileSync is set).
func (w *writer) finishDir(name string, perm fs.FileMode) error {
	d, err := w.root.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	fi, err := d.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		// Cannot happen: only this extraction writes into the private temporary directory.
		return errors.New("not a directory any more")
	}
	if err := d.Chmod(perm); err != nil {
		return err
	}
	if perFileSync {
		if err := fsync(d); err != nil {
			return err
		}
	}
	return d.Close()
}

// writeFile streams one regular file entry to disk, enforcing the byte limits, then sets its
// mode (and fsyncs it where perFileSync is set).
func (w *writer) writeFile(it item) error {
	rc, err := it.f.Open()
	if err != nil {
		return readErr(it.f, err)
	}
	defer rc.Close()
	// O_EXCL: the file must be new; os.Root also never follows a symlink in the last
	// component with O_CREATE|O_EXCL.
	out, err := w.root.OpenFile(it.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return &EntryError{Name: it.f.Name, Reason: "creating file", Err: err}
	}
	defer out.Close()
	var n int64
	for {
		k, rerr := rc.Read(w.buf)
		if k > 0 {
			if err := w.count(it.f, n, int64(k)); err != nil {
				return err
			}
			if _, err := out.Write(w.buf[:k]); err != nil {
				return &EntryError{Name: it.f.Name, Reason: "writing file", Err: err}
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return readErr(it.f, rerr)
		}
	}
	if err := out.Chmod(it.perm); err != nil {
		return &EntryError{Name: it.f.Name, Reason: "setting file mode", Err: err}
	}
	if perFileSync {
		if err := fsync(out); err != nil {
			return &EntryError{Name: it.f.Name, Reason: "syncing file", Err: err}
		}
	}
	if err := out.Close(); err != nil {
		return &EntryError{Name: it.f.Name, Reason: "closing file", Err: err}
	}
	w.res.Files++
	return nil
}

// count admits k more bytes of the entry f, of which n were already written, or returns
// the limit error. It runs before the bytes are written, so no limit is ever exceeded on disk.
func (w *writer) count(f *zip.File, n, k int64) error {
	if n+k > w.lim.MaxFileBytes {
		return entryErr(f.Name, ErrLimit, "entry is larger than the per-file limit of %d bytes", w.lim.MaxFileBytes)
	}
	total := w.written + k
	if total > w.lim.MaxTotalBytes {
		return entryErr(f.Name, ErrLimit, "archive expands to more than the total limit of %d bytes", w.lim.MaxTotalBytes)
	}
	if total > w.lim.RatioAllowance && float64(total) > w.lim.MaxRatio*float64(w.size) {
		return entryErr(f.Name, ErrLimit, "archive of %d bytes expands more than %g times (compression bomb?)", w.size, w.lim.MaxRatio)
	}
	w.written = total
	return nil
}

// writeSymlink reads a symlink entry's target from its content, validates it and creates
// the link.
func (w *writer) writeSymlink(it item) error {
	rc, err := it.f.Open()
	if err != nil {
		return readErr(it.f, err)
	}
	defer rc.Close()
	// Read one byte more than allowed to detect an over-long target, and up to EOF so that
	// archive/zip verifies the CRC and size.
	target, err := io.ReadAll(io.LimitReader(rc, maxNameLen+1))
	if err != nil {
		return readErr(it.f, err)
	}
	if len(target) > maxNameLen {
		return entryErr(it.f.Name, ErrLimit, "symlink target is longer than %d bytes", maxNameLen)
	}
	if err := w.count(it.f, 0, int64(len(target))); err != nil {
		return err
	}
	if err := checkLinkTarget(it.f.Name, it.name, string(target)); err != nil {
		return err
	}
	if err := w.root.Symlink(string(target), it.name); err != nil {
		return &EntryError{Name: it.f.Name, Reason: "creating symlink", Err: err}
	}
	w.res.Symlinks++
	return nil
}

// readErr classifies an error reading an entry's data: every failure to decode what the
// archive says is ErrCorrupt, keeping the zip error (zip.ErrChecksum, zip.ErrFormat...)
// visible to errors.Is.
func readErr(f *zip.File, err error) error {
	reason := "reading entry data"
	switch {
	case errors.Is(err, zip.ErrChecksum):
		reason = "CRC-32 mismatch"
	case errors.Is(err, zip.ErrAlgorithm):
		return &EntryError{Name: f.Name, Kind: ErrUnsupported, Reason: "unsupported compression method", Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF):
		reason = "data is truncated or shorter than the header says"
	case errors.Is(err, zip.ErrFormat):
		reason = "invalid entry data or size"
	}
	return &EntryError{Name: f.Name, Kind: ErrCorrupt, Reason: reason, Err: err}
}
