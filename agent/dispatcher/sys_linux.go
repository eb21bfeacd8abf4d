//go:build linux

package dispatcher

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// exchange atomically swaps the directory entries a and b
// (renameat2 RENAME_EXCHANGE), so the live path never disappears. It
// returns errNoExchange when the filesystem does not support it.
func exchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoExchange
	}
	if err != nil {
		return &os.LinkError{Op: "exchange", Old: a, New: b, Err: err}
	}
	return nil
}

// renameNoReplace renames old to new and fails if new exists: a swap step
// must never silently replace a directory.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return renameCheckThenReplace(oldpath, newpath)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}

// syncFS makes everything written on the filesystem holding dir durable
// with one syncfs(2), far cheaper than an fsync per file for a tree of
// thousands of small config files.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

// Inode flags (linux/fs.h). x/sys/unix has the ioctl numbers but not these.
const (
	fsImmutableFL = 0x00000010 // chattr +i
	fsAppendFL    = 0x00000020 // chattr +a
)

// immutableAttr reports whether the file at p has chattr +i. Files that
// cannot be asked (symlinks, filesystems without inode flags) report false.
func immutableAttr(p string) bool {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	return err == nil && flags&fsImmutableFL != 0
}

// setImmutableAttr sets or clears chattr +i (and clears +a when clearing,
// so the file can be removed). Filesystems without inode flags are fine
// when clearing and an error when setting.
func setImmutableAttr(p string, on bool) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		if !on {
			return nil
		}
		return &os.PathError{Op: "get inode flags", Path: p, Err: err}
	}
	want := flags &^ (fsImmutableFL | fsAppendFL)
	if on {
		want = flags | fsImmutableFL
	}
	if want == flags {
		return nil
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(want)); err != nil {
		return &os.PathError{Op: "set inode flags", Path: p, Err: err}
	}
	return nil
}
