package lb_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755))
	return path
}

func TestCommandDriverRunsArgvWithoutShell(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	// One script for all ops, selected by DECKHAND_LB_OP, records its
	// argv so the test can see no shell re-split the arguments.
	ctl := script(t, dir, "lb-ctl", `
printf '%s|' "$@" > "$STATE_ARGS"
case "$DECKHAND_LB_OP" in
  detach) echo detached > "$1" ;;
  attach) echo in-service > "$1" ;;
  status) cat "$1"; echo "from $DECKHAND_LB_OP" ;;
esac
`)
	t.Setenv("STATE_ARGS", filepath.Join(dir, "args"))
	cfg := lb.CommandConfig{
		Detach: []string{ctl, state, "two words", "$HOME;rm -rf /"},
		Attach: []string{ctl, state},
		Status: []string{ctl, state},
	}
	d, err := lb.NewCommand(cfg, testLogger(t, "lb"))
	require.NoError(t, err)
	ctx := context.Background()

	require.NoError(t, d.Detach(ctx))
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	require.NoError(t, err)
	require.Equal(t, state+"|two words|$HOME;rm -rf /|", string(args), "arguments reach the program verbatim")
	st, err := d.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.Status{State: lb.StateDetached, Detail: "from status", Sessions: -1}, st)

	require.NoError(t, d.Attach(ctx))
	st, err = d.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateInService, st.State)
}

func TestCommandDriverFailureCarriesOutput(t *testing.T) {
	dir := t.TempDir()
	fail := script(t, dir, "fail", "echo 'pool member not found' >&2\necho 'on stdout'\nexit 3\n")
	ok := script(t, dir, "ok", "exit 0\n")
	d, err := lb.NewCommand(lb.CommandConfig{Detach: []string{fail, "x"}, Attach: []string{ok}}, testLogger(t, "lb"))
	require.NoError(t, err)

	err = d.Detach(context.Background())
	var ce *lb.CommandError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "detach", ce.Op)
	require.Equal(t, []string{fail, "x"}, ce.Argv)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 3, ee.ExitCode())
	require.Contains(t, err.Error(), "exit status 3")
	require.Contains(t, err.Error(), "pool member not found")
	require.Contains(t, err.Error(), "on stdout")
}

func TestCommandDriverTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	// sh -c starts a grandchild that would keep the output pipe open;
	// the driver must kill the whole group and return promptly.
	d, err := lb.NewCommand(lb.CommandConfig{
		Detach:  []string{"sh", "-c", `sleep 30 & echo $! > "$0"; echo started; wait`, pidFile},
		Attach:  []string{"true"},
		Timeout: yamlconf.Duration(300 * time.Millisecond),
	}, testLogger(t, "lb"))
	require.NoError(t, err)

	start := time.Now()
	err = d.Detach(context.Background())
	took := time.Since(start)
	require.ErrorIs(t, err, lb.ErrTimeout)
	require.ErrorContains(t, err, "after 300ms")
	require.ErrorContains(t, err, "started")
	require.Less(t, took, 2*time.Second, "must not wait for the grandchild's sleep")

	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid := strings.TrimSpace(string(b))
	require.Eventually(t, func() bool {
		// The killed grandchild is gone or a zombie awaiting its reaper.
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		return err != nil || strings.Contains(string(stat), ") Z ")
	}, 5*time.Second, 20*time.Millisecond, "grandchild sleep %s survived the timeout", pid)
}

func TestCommandDriverCallerContext(t *testing.T) {
	d, err := lb.NewCommand(lb.CommandConfig{Detach: []string{"sleep", "30"}, Attach: []string{"true"}}, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = d.Detach(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, errors.Is(err, lb.ErrTimeout), "the caller's deadline is not the driver's own timeout")
}

func TestCommandDriverStatus(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()

	d, err := lb.NewCommand(lb.CommandConfig{Detach: []string{"true"}, Attach: []string{"true"}}, nil)
	require.NoError(t, err)
	st, err := d.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateUnknown, st.State, "no status command configured")

	bogus := script(t, dir, "bogus", "echo maybe\n")
	d, err = lb.NewCommand(lb.CommandConfig{Detach: []string{"true"}, Attach: []string{"true"}, Status: []string{bogus}}, nil)
	require.NoError(t, err)
	_, err = d.Status(ctx)
	require.ErrorContains(t, err, `first line "maybe" is not a state`)

	failing := script(t, dir, "failing", "echo detached; exit 1\n")
	d, err = lb.NewCommand(lb.CommandConfig{Detach: []string{"true"}, Attach: []string{"true"}, Status: []string{failing}}, nil)
	require.NoError(t, err)
	_, err = d.Status(ctx)
	require.ErrorContains(t, err, "exit status 1", "a non-zero exit is an error even with a state word")
}
