package deckctl_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/deckhand-dev/deckhand/controlplane/deckctl"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// plPty opens a pseudo-terminal: deckctl writes to the slave (a terminal,
// so watch redraws the screen), the test reads what it wrote from the
// master.
func plPty(t *testing.T) (slave *os.File, output func() string) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(t, err)
	var mu sync.Mutex
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			k, err := m.Read(b)
			mu.Lock()
			buf.Write(b[:k])
			mu.Unlock()
			if err != nil { // EIO once the slave is closed
				return
			}
		}
	}()
	closed := false
	closeAll := func() {
		if !closed {
			closed = true
			s.Close()
			<-done
			m.Close()
		}
	}
	t.Cleanup(closeAll)
	return s, func() string {
		closeAll()
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

// TestDeckctlWatchRedrawsOnATerminal: on a terminal, watch redraws the
// execution screen (breadcrumb, three phases, steps) on every event.
func TestDeckctlWatchRedrawsOnATerminal(t *testing.T) {
	f := plSetup(t, "        approval: true\n")
	f.as("deployer", "pipeline", "create-execution", "wknd/main")
	tty, output := plPty(t)
	var errOut bytes.Buffer
	code := deckctl.Execute([]string{"--credentials", f.creds["viewer"], "execution", "watch", "-p", "wknd/main", "--until-waiting"}, tty, &errOut)
	require.Equal(t, 0, code, errOut.String())
	e, err := f.c.Server.Pipelines().Current("wknd", "main")
	require.NoError(t, err)
	require.Equal(t, pipeline.StepWaiting, plStepOf(e, pipeline.ActionApproval).Status)
	out := strings.ReplaceAll(output(), "\r\n", "\n")
	frames := strings.Split(out, "\x1b[H\x1b[2J")[1:]
	require.NotEmpty(t, frames, "the screen is redrawn: %q", out)
	for _, fr := range frames {
		require.True(t, strings.HasPrefix(fr, "wknd › main › Execution 1 (NORMAL)\n"), fr)
		for _, ph := range []string{"\nStage Deployment\n", "\nStage Testing\n", "\nProduction Deployment\n"} {
			require.Contains(t, fr, ph)
		}
	}
	last := frames[len(frames)-1]
	require.Regexp(t, `(?m)^  7\s+Application for Approval\s+WAITING\s+`, last)
	require.Contains(t, last, "waiting for approver; answer: deckctl execution advance approve|reject -p wknd/main")
	require.Contains(t, last, "step 7 (Application for Approval) is waiting for approver")
}
