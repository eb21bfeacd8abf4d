package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

// ErrNotFound is returned for a digest the store does not have.
var ErrNotFound = errors.New("artifact not found")

var digestPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidDigest reports whether d is a lower-case hex sha256.
func ValidDigest(d string) bool { return digestPattern.MatchString(d) }

// Blobs is a directory of content-addressed files. Safe for concurrent use:
// writers race only on the final rename, and identical content makes the
// race harmless.
type Blobs struct {
	dir string
}

// OpenBlobs opens (creating) the blob directory.
func OpenBlobs(dir string) (*Blobs, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	return &Blobs{dir: dir}, nil
}

func (b *Blobs) path(digest string) string {
	return filepath.Join(b.dir, "sha256", digest[:2], digest)
}

// Put streams r into the store and returns its digest and size. Content
// already present is not written twice.
func (b *Blobs) Put(r io.Reader) (digest string, size int64, err error) {
	digest, size, _, err = b.PutReport(r)
	return digest, size, err
}

// PutReport is Put that also says whether the content was already stored
// (existed): pushes report "already stored", and a refused upload removes
// only a blob it created. r is copied to a temp file as it is read, so
// memory use does not grow with the size of the content; an error from r
// discards the temp file and stores nothing.
func (b *Blobs) PutReport(r io.Reader) (digest string, size int64, existed bool, err error) {
	tmp, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, false, fmt.Errorf("artifact store: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	src := &sourceReader{r: r}
	size, err = io.Copy(io.MultiWriter(tmp, h), src)
	if err != nil {
		if src.err != nil {
			// The source's own error (an upload cut short, a size
			// mismatch) goes back as is: the caller knows what it means.
			return "", 0, false, src.err
		}
		return "", 0, false, fmt.Errorf("artifact store: write: %w", err)
	}
	digest = hex.EncodeToString(h.Sum(nil))
	final := b.path(digest)
	if st, err := os.Stat(final); err == nil && st.Size() == size {
		return digest, size, true, nil
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, false, fmt.Errorf("artifact store: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, false, err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", 0, false, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, false, fmt.Errorf("artifact store: %w", err)
	}
	tmp = nil
	if d, err := os.Open(filepath.Dir(final)); err == nil {
		d.Sync()
		d.Close()
	}
	return digest, size, false, nil
}

// Open returns the blob for reading and its size.
func (b *Blobs) Open(digest string) (*os.File, int64, error) {
	if !ValidDigest(digest) {
		return nil, 0, fmt.Errorf("%q is not a sha256 digest", digest)
	}
	f, err := os.Open(b.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("%s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// Has reports whether the blob exists.
func (b *Blobs) Has(digest string) bool {
	if !ValidDigest(digest) {
		return false
	}
	_, err := os.Stat(b.path(digest))
	return err == nil
}

// Path returns the blob's file path (for local readers such as the
// classifier); the file must not be modified.
func (b *Blobs) Path(digest string) (string, error) {
	if !b.Has(digest) {
		return "", fmt.Errorf("%s: %w", digest, ErrNotFound)
	}
	return b.path(digest), nil
}

// Remove deletes a blob; removing an absent blob is not an error. Callers
// must know nothing refers to it: the artifact push removes only a blob it
// has just created and refused.
func (b *Blobs) Remove(digest string) error {
	if !ValidDigest(digest) {
		return fmt.Errorf("%q is not a sha256 digest", digest)
	}
	if err := os.Remove(b.path(digest)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("artifact store: %w", err)
	}
	return nil
}

// sourceReader remembers the error of the reader Put copies from, so a
// failed read is told apart from a failed write to disk.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}
