package build

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

const (
	// maxLineBytes cuts a single log line: a minified file printed by a
	// build must not become one giant progress message.
	maxLineBytes = 4 << 10
	// tailLines and tailBytes bound the log tail kept for the result.
	tailLines = 60
	tailBytes = 16 << 10
	// errorTailLines is how much of the tail goes into an error message.
	errorTailLines = 20
)

// logSink turns a command's combined output into progress lines: it
// streams each line through logf until max bytes have been streamed, then
// says once that the rest is not streamed, and always keeps the last lines
// for the result. Lines are made valid UTF-8 because they travel in
// protobuf strings. Safe for concurrent use.
type logSink struct {
	logf func(format string, args ...any)
	max  int64

	mu        sync.Mutex
	partial   []byte   // mu
	sent      int64    // mu
	truncated bool     // mu
	tail      []string // mu; ring of at most tailLines
}

func newLogSink(logf func(string, ...any), max int64) *logSink {
	return &logSink{logf: logf, max: max}
}

// Write implements io.Writer.
func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) > maxLineBytes {
				l.line(l.partial)
				l.partial = l.partial[:0]
			}
			break
		}
		if len(l.partial) > 0 {
			l.partial = append(l.partial, p[:i]...)
			l.line(l.partial)
			l.partial = l.partial[:0]
		} else {
			l.line(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

// Printf adds a line of our own (clone, upload) to the log.
func (l *logSink) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.line([]byte(fmt.Sprintf(format, args...)))
}

// Close flushes a last line without a newline.
func (l *logSink) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(l.partial)
		l.partial = nil
	}
}

// line handles one line; mu must be held.
func (l *logSink) line(b []byte) {
	if len(b) > maxLineBytes {
		b = b[:maxLineBytes]
	}
	s := strings.ToValidUTF8(strings.TrimSuffix(string(b), "\r"), "\uFFFD")
	if len(l.tail) == tailLines {
		copy(l.tail, l.tail[1:])
		l.tail = l.tail[:tailLines-1]
	}
	l.tail = append(l.tail, s)
	if l.sent+int64(len(s))+1 > l.max {
		if !l.truncated {
			l.truncated = true
			l.logf("[deckhand] the log is longer than max_log_bytes (%d); the rest is not streamed, its last lines are in the result", l.max)
		}
		return
	}
	l.sent += int64(len(s)) + 1
	l.logf("%s", s)
}

// Tail returns up to n of the last lines, at most tailBytes long.
func (l *logSink) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.tail
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := strings.Join(lines, "\n")
	if len(s) > tailBytes {
		s = strings.ToValidUTF8(s[len(s)-tailBytes:], "")
	}
	return s
}
