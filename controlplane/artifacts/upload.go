package artifacts

import (
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// UploadReader turns the data messages of an upload into an io.Reader for
// the blob store. It enforces the size announced in the header: an upload
// that ends early or runs over fails the read, so the store discards its
// temp file instead of keeping a truncated zip under its own digest. A
// second header fails the read too.
type UploadReader struct {
	next func() (chunk []byte, header bool, err error)
	name string
	want int64
	got  int64
	buf  []byte
	eof  bool
}

// NewUploadReader reads the messages after an upload's header, which
// announced name and size. next returns the next message's data, whether
// it is a header instead, or the stream's error (io.EOF at its end):
// deckctl's pushes and builders' uploads share it.
func NewUploadReader(next func() (chunk []byte, header bool, err error), name string, size int64) *UploadReader {
	return &UploadReader{next: next, name: name, want: size}
}

func (u *UploadReader) Read(p []byte) (int, error) {
	for len(u.buf) == 0 {
		if u.eof {
			return 0, io.EOF
		}
		chunk, header, err := u.next()
		if errors.Is(err, io.EOF) {
			if u.got != u.want {
				return 0, status.Errorf(codes.InvalidArgument, "upload of %s ended after %d of the %d bytes announced; nothing was stored", u.name, u.got, u.want)
			}
			u.eof = true
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		if header {
			return 0, status.Errorf(codes.InvalidArgument, "upload of %s: a second header; one upload carries one file", u.name)
		}
		u.buf = chunk
		u.got += int64(len(u.buf))
		if u.got > u.want {
			return 0, status.Errorf(codes.InvalidArgument, "upload of %s is longer than the %d bytes announced; nothing was stored", u.name, u.want)
		}
	}
	n := copy(p, u.buf)
	u.buf = u.buf[n:]
	return n, nil
}
