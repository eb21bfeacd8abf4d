// Package artifacts owns the control plane's content-addressed artifact
// store: blobs named by their sha256 under <data_dir>/artifacts, written
// once through a temp file, fsync and rename, so a blob that exists is
// always complete. Classification and artifact sets are recorded in the
// store by the rollout layer.
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
	tmp, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("artifact store: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), r)
	if err != nil {
		return "", 0, fmt.Errorf("artifact store: write: %w", err)
	}
	digest = hex.EncodeToString(h.Sum(nil))
	final := b.path(digest)
	if st, err := os.Stat(final); err == nil && st.Size() == size {
		return digest, size, nil
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("artifact store: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, err
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", 0, fmt.Errorf("artifact store: %w", err)
	}
	tmp = nil
	if d, err := os.Open(filepath.Dir(final)); err == nil {
		d.Sync()
		d.Close()
	}
	return digest, size, nil
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
