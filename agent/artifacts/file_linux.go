package artifacts

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// maxWrite caps the bytes of one write to the partial file. Written in
// 64 KiB pieces, 1 GiB costs the page cache about two thirds of the CPU
// time it costs in 16 KiB pieces (the size of the received frames) and
// half or less of what it costs in 256 KiB pieces (the size of a chunk),
// measured on ext4 with Linux 6.18.
const maxWrite = 64 << 10

// writeData writes data to w in order. To a file it writes with writev,
// up to maxWrite bytes per call, without copying the pieces together.
func writeData(w io.Writer, data [][]byte) error {
	f, ok := w.(*os.File)
	if !ok {
		return writeEach(w, data)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return writeEach(w, data)
	}
	var iov [16]syscall.Iovec
	for len(data) > 0 {
		n, size := 0, 0
		for n < len(iov) && len(data) > 0 && (n == 0 || size+len(data[0]) <= maxWrite) {
			if b := data[0]; len(b) > 0 {
				iov[n].Base = &b[0]
				iov[n].SetLen(len(b))
				n, size = n+1, size+len(b)
			}
			data = data[1:]
		}
		if n == 0 {
			break
		}
		var wrote uintptr
		var errno syscall.Errno
		if err := rc.Write(func(fd uintptr) bool {
			for {
				wrote, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
				if errno != syscall.EINTR {
					return true
				}
			}
		}); err != nil {
			return err
		}
		if errno != 0 {
			return &os.PathError{Op: "writev", Path: f.Name(), Err: errno}
		}
		if int(wrote) < size { // short: write the rest the plain way
			rest := make([][]byte, 0, n)
			skip := int(wrote)
			for _, v := range iov[:n] {
				b := unsafe.Slice(v.Base, v.Len)
				if skip >= len(b) {
					skip -= len(b)
					continue
				}
				rest = append(rest, b[skip:])
				skip = 0
			}
			if err := writeEach(f, rest); err != nil {
				return err
			}
		}
	}
	return nil
}

// startWriteback asks the kernel to start writing bytes [off, off+n) of f
// to disk without waiting for it (sync_file_range SYNC_FILE_RANGE_WRITE),
// so that the fsync before the rename finds little left to do. Errors are
// ignored: the fsync still decides.
func startWriteback(f *os.File, off, n int64) {
	const syncFileRangeWrite = 2 // SYNC_FILE_RANGE_WRITE
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, fd, uintptr(off), uintptr(n), syncFileRangeWrite, 0, 0)
	})
}
