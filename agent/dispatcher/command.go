package dispatcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// maxCommandOutput bounds the configtest/reload output kept. Apache's
// error output is a few lines; a runaway command must not fill memory.
const maxCommandOutput = 64 << 10

// cmdResult is one run of a configured command.
type cmdResult struct {
	// Output is stdout and stderr interleaved, exactly as written (up to
	// maxCommandOutput).
	Output string
	// Exit is the exit status, or -1 when the command did not run to an
	// exit (start failure, killed at the timeout).
	Exit int
	Took time.Duration
	// Err is nil when the command exited 0.
	Err error
}

// runCommand runs argv (from the agent's config, never from a task) in its
// own process group, killed whole at the timeout so "sh -c" wrappers do not
// leave children behind.
func runCommand(ctx context.Context, argv []string, timeout time.Duration) cmdResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out capBuffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A grandchild that escaped the group and holds the pipe must not
	// hang us past the kill.
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := cmdResult{Output: out.String(), Exit: -1, Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Exit = 0
	case ctx.Err() != nil:
		r.Err = fmt.Errorf("%q did not finish within %v: %w", argv, timeout, ctx.Err())
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
		r.Err = fmt.Errorf("%q: %w", argv, err)
	default:
		r.Err = fmt.Errorf("%q: %w", argv, err)
	}
	return r
}

// capBuffer keeps the first maxCommandOutput bytes; safe for the
// concurrent writes exec makes when stdout and stderr share it.
type capBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	truncated bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := maxCommandOutput - b.buf.Len()
	if room < len(p) {
		b.truncated = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.truncated {
		return b.buf.String() + "\n[output truncated]\n"
	}
	return b.buf.String()
}
