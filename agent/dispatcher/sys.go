package dispatcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// errNoExchange means the filesystem cannot swap two paths atomically.
var errNoExchange = errors.New("atomic exchange not supported")

func renameCheckThenReplace(oldpath, newpath string) error {
	if _, err := os.Lstat(newpath); err == nil {
		return fmt.Errorf("rename %s %s: %w", oldpath, newpath, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Rename(oldpath, newpath)
}

// identity is what tells two directories apart across renames and agent
// restarts: the device and inode number.
type identity struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (id identity) zero() bool { return id == identity{} }

// identityOf returns p's identity, or the zero identity when p does not
// exist.
func identityOf(p string) (identity, error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return identity{}, nil
	}
	if err != nil {
		return identity{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return identity{}, fmt.Errorf("%s: no inode information on this platform", p)
	}
	return identity{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}, nil
}

// syncDir fsyncs a directory so renames in it are durable.
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
