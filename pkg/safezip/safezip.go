// Package safezip owns turning an untrusted zip archive (an AEM content package, a dispatcher
// configuration artifact) into a directory tree on local disk. Both the control plane and the
// agent extract archives only through this package.
//
// What it guarantees, whatever the archive holds:
//
//   - Nothing is created outside the destination: every entry name must be a clean, local,
//     slash-separated path (filepath.IsLocal, no "..", NUL, backslash, empty or absolute names),
//     names are unique even after cleaning, and every write goes through an [os.Root].
//   - Only regular files, directories and relative symbolic links that resolve inside the tree
//     are created. Devices, FIFOs, sockets, unknown types, absolute links, escaping links and any
//     entry whose path passes through a symlink of the archive are rejected. Symlinks are created
//     after every file, so no write can ever go through one. Zip has no hardlink type and this
//     package never creates hardlinks.
//   - Permissions are masked with 0o755: no setuid, setgid, sticky or group/other write.
//     Directories are also always owner-rwx (so the tree can be filled and later removed
//     without a chmod pass); without a Unix mode in the archive, files get 0o644 and
//     directories 0o755. Modes are applied exactly, whatever the process umask.
//   - Limits on entry count, total bytes, bytes per file and the expansion ratio are enforced
//     on the bytes actually decompressed, never on the sizes the headers claim.
//   - The tree is built in a fresh temporary directory next to the destination (same
//     filesystem) and made durable before anything is renamed into place: on Linux by one
//     syncfs(2) of that filesystem once the whole tree is written (an fsync per file costs
//     seconds for a few thousand files), elsewhere by an fsync of every file and directory.
//     Then the directory is renamed into place. On any error the temporary directory is
//     removed and the destination is untouched.
//
// Errors are classified: a problem with an entry is an [*EntryError] naming the entry, and
// every error caused by the archive's content matches one of [ErrUnsafePath],
// [ErrUnsupported], [ErrLimit], [ErrCorrupt] or [ErrDigest] with errors.Is. Other errors come
// from the local filesystem (an existing destination matches fs.ErrExist) or from invalid
// [Options].
//
// Verifying where an archive comes from is the caller's job; [Options.SHA256] lets it be done
// here, before the archive is parsed.
package safezip

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Error kinds. Match them with errors.Is; the message of the error that carries them says
// which entry and why.
var (
	// ErrUnsafePath reports an entry name that could place data outside the destination or is
	// ambiguous: absolute, "..", NUL, backslash, empty, duplicate (also after cleaning, or a
	// file and a directory with the same name), or a path through a symlink; also a symlink
	// whose target is absolute or leaves the tree.
	ErrUnsafePath = errors.New("unsafe path")
	// ErrUnsupported reports an entry this package refuses to create: a device, FIFO, socket
	// or unknown file type, an encrypted entry, or a compression method other than Store and
	// Deflate.
	ErrUnsupported = errors.New("unsupported entry")
	// ErrLimit reports that the archive exceeds one of the [Limits].
	ErrLimit = errors.New("limit exceeded")
	// ErrCorrupt reports an archive that cannot be read: bad or truncated central directory,
	// bad local header, truncated or undecodable data, CRC mismatch, sizes that do not match
	// the data.
	ErrCorrupt = errors.New("corrupt archive")
	// ErrDigest reports that the archive's SHA-256 is not [Options.SHA256].
	ErrDigest = errors.New("archive sha256 mismatch")
)

// EntryError reports a problem with one archive entry. Error() reads like
// `zip entry "../../etc/passwd": path escapes the destination`.
type EntryError struct {
	// Name is the entry name exactly as stored in the archive.
	Name string
	// Reason says what is wrong, in words.
	Reason string
	// Kind is one of the Err* kinds of this package, or nil when the entry failed because
	// of the local filesystem (disk full, permission denied...); then Err says why.
	Kind error
	// Err is the underlying error, or nil.
	Err error
}

// Error implements error.
func (e *EntryError) Error() string {
	msg := fmt.Sprintf("zip entry %q: %s", e.Name, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns Kind and Err (whichever are set) so errors.Is sees both the kind and the
// underlying cause such as zip.ErrChecksum.
func (e *EntryError) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Limits bounds what one archive may create. A zero or negative field means the default of
// [DefaultLimits], so the zero Limits is safe; there is deliberately no way to disable a limit.
type Limits struct {
	// MaxEntries bounds the filesystem objects created: archive entries plus the directories
	// their paths imply without an entry of their own. Default 100,000 (a dispatcher
	// configuration has a few hundred to a few thousand files).
	MaxEntries int
	// MaxTotalBytes bounds the bytes decompressed from all entries (file contents and symlink
	// targets). Default 1 GiB.
	MaxTotalBytes int64
	// MaxFileBytes bounds the bytes decompressed from one entry. Default 256 MiB.
	MaxFileBytes int64
	// MaxRatio bounds the bytes decompressed from all entries divided by the size of the whole
	// archive, once more than RatioAllowance bytes have been decompressed. Default 200 (text
	// configuration compresses about 5-10 times; zip bombs reach 1000 and more).
	MaxRatio float64
	// RatioAllowance is how many bytes may be decompressed before MaxRatio applies, so that a
	// small archive of highly compressible files (a megabyte of padding, a file of zeros) is
	// fine. Default 16 MiB.
	RatioAllowance int64
}

// Default limit values; see the fields of [Limits] for why they are what they are.
const (
	DefaultMaxEntries     = 100_000
	DefaultMaxTotalBytes  = 1 << 30
	DefaultMaxFileBytes   = 256 << 20
	DefaultMaxRatio       = 200
	DefaultRatioAllowance = 16 << 20
)

// DefaultLimits returns the limits used for zero fields of [Limits].
func DefaultLimits() Limits {
	return Limits{
		MaxEntries:     DefaultMaxEntries,
		MaxTotalBytes:  DefaultMaxTotalBytes,
		MaxFileBytes:   DefaultMaxFileBytes,
		MaxRatio:       DefaultMaxRatio,
		RatioAllowance: DefaultRatioAllowance,
	}
}

// withDefaults replaces zero, negative and NaN fields by their defaults.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = d.MaxTotalBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = d.MaxFileBytes
	}
	if !(l.MaxRatio > 0) || math.IsInf(l.MaxRatio, 0) {
		l.MaxRatio = d.MaxRatio
	}
	if l.RatioAllowance <= 0 {
		l.RatioAllowance = d.RatioAllowance
	}
	return l
}

// Options configures one extraction. The zero Options uses [DefaultLimits], writes every entry
// and does not check a digest.
type Options struct {
	// Limits bounds the archive; zero fields mean the defaults.
	Limits Limits
	// Skip, if not nil, reports entries not to write, e.g. the dispatcher's immutable files
	// that the host keeps. It is called once per entry with the cleaned slash-separated name
	// ("conf/httpd.conf", directories without the trailing slash). Skipped entries are still
	// validated (a malicious name fails the archive even if skipped) and are listed in
	// [Result.Skipped]. Skip applies to single entries: a skipped directory is still created,
	// with mode 0o755, when a written entry lies inside it.
	Skip func(name string) bool
	// SHA256, if not empty, is the hex SHA-256 the whole archive must have. It is checked
	// before the archive is parsed, so an archive that is not the expected artifact never
	// reaches the zip parser.
	SHA256 string
}

// Result describes a successful extraction.
type Result struct {
	// Files, Dirs and Symlinks count what was created. Dirs includes directories implied by
	// entry paths and excludes the destination itself.
	Files, Dirs, Symlinks int
	// Bytes is the number of bytes decompressed and written (file contents and symlink
	// targets).
	Bytes int64
	// Skipped lists, in archive order, the cleaned names of the entries Options.Skip skipped.
	Skipped []string
}

// Extract extracts the zip archive at archivePath into dest, which must not exist yet. The
// tree is built and made durable (synced) in a temporary sibling of dest and then renamed to
// dest; the parent directory is fsynced after the rename. On error dest does not exist and no
// temporary directory is left behind (unless the process dies, see [ExtractToTemp]).
func Extract(archivePath, dest string, opts Options) (Result, error) {
	f, size, err := openArchive(archivePath)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	return ExtractReader(f, size, dest, opts)
}

// ExtractToTemp extracts the zip archive at archivePath into a new directory created inside
// parent (so on the same filesystem as anything else in parent) and returns its path. The
// directory and everything in it are durable (synced) and the directory has mode 0o755. The caller
// owns it: it renames it into place (and fsyncs parent) or removes it. On error nothing is
// left in parent.
//
// The temporary directory's name starts with ".safezip-"; a process that dies while
// extracting leaves such a directory behind for its caller to clean up at startup.
func ExtractToTemp(archivePath, parent string, opts Options) (dir string, res Result, err error) {
	f, size, err := openArchive(archivePath)
	if err != nil {
		return "", Result{}, err
	}
	defer f.Close()
	return ExtractReaderToTemp(f, size, parent, opts)
}

// ExtractReader is [Extract] for an archive held in r, which has size bytes.
func ExtractReader(r io.ReaderAt, size int64, dest string, opts Options) (Result, error) {
	dest = filepath.Clean(dest)
	if _, err := os.Lstat(dest); err == nil {
		return Result{}, fmt.Errorf("safezip: destination %s: %w", dest, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("safezip: destination: %w", err)
	}
	parent, base := filepath.Split(dest)
	if parent == "" {
		parent = "."
	}
	tmp, res, err := extractToTemp(r, size, parent, "."+base+".safezip-*", opts)
	if err != nil {
		return Result{}, err
	}
	if err := renameNoReplace(tmp, dest); err != nil {
		os.RemoveAll(tmp)
		return Result{}, fmt.Errorf("safezip: moving the extracted tree into place: %w", err)
	}
	// The rename is only durable once the parent directory is synced. If that fails we
	// cannot promise the tree survives a crash, so undo it: dest did not exist before.
	if err := syncDir(parent); err != nil {
		os.RemoveAll(dest)
		return Result{}, fmt.Errorf("safezip: syncing %s after the rename: %w", parent, err)
	}
	return res, nil
}

// ExtractReaderToTemp is [ExtractToTemp] for an archive held in r, which has size bytes.
func ExtractReaderToTemp(r io.ReaderAt, size int64, parent string, opts Options) (dir string, res Result, err error) {
	return extractToTemp(r, size, parent, ".safezip-*", opts)
}

// openArchive opens the archive file and returns its size.
func openArchive(path string) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("safezip: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("safezip: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("safezip: archive %s is not a regular file", path)
	}
	return f, fi.Size(), nil
}

// checkDigest compares the SHA-256 of the whole archive with want (hex).
func checkDigest(r io.ReaderAt, size int64, want string) error {
	want = strings.ToLower(strings.TrimSpace(want))
	if len(want) != 2*sha256.Size {
		return fmt.Errorf("safezip: Options.SHA256 %q is not a hex SHA-256", want)
	}
	if _, err := hex.DecodeString(want); err != nil {
		return fmt.Errorf("safezip: Options.SHA256 %q is not a hex SHA-256", want)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		return fmt.Errorf("safezip: reading the archive to check its sha256: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("safezip: archive sha256 is %s, want %s: %w", got, want, ErrDigest)
	}
	return nil
}

// extractToTemp checks the digest, parses the archive, and extracts it into a new directory
// of parent named after pattern (see os.MkdirTemp). On error the directory is removed.
func extractToTemp(r io.ReaderAt, size int64, parent, pattern string, opts Options) (string, Result, error) {
	if opts.SHA256 != "" {
		if err := checkDigest(r, size, opts.SHA256); err != nil {
			return "", Result{}, err
		}
	}
	zr, err := zip.NewReader(r, size)
	// zip.ErrInsecurePath (GODEBUG zipinsecurepath=0) comes with a usable reader; our own
	// checks are stricter and name the entry, so carry on and let them report it.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return "", Result{}, fmt.Errorf("safezip: reading the zip central directory: %w: %w", ErrCorrupt, err)
	}
	opts.Limits = opts.Limits.withDefaults()
	p, err := makePlan(zr, opts)
	if err != nil {
		return "", Result{}, err
	}
	tmp, err := os.MkdirTemp(parent, pattern)
	if err != nil {
		return "", Result{}, fmt.Errorf("safezip: creating the temporary directory: %w", err)
	}
	res, err := writeTree(tmp, p, size, opts.Limits)
	if err != nil {
		os.RemoveAll(tmp)
		return "", Result{}, err
	}
	return tmp, res, nil
}

// syncDir fsyncs a directory so that the entries created or renamed in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
