package failpoint

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHelperProcess is run as a child by the tests below.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") != "1" {
		t.Skip("helper")
	}
	for _, n := range []string{"a", "b", "a", "c/1", "c/2"} {
		Hit(n)
		os.Stdout.WriteString(n + "\n")
	}
	os.Exit(0)
}

func runChild(t *testing.T, spec string) (string, error, string) {
	log := filepath.Join(t.TempDir(), "hits")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", "DECKHAND_FAILPOINTS="+spec, "DECKHAND_FAILPOINT_LOG="+log)
	out, err := cmd.Output()
	hits, _ := os.ReadFile(log)
	return string(out), err, string(hits)
}

func TestKillAtNthHit(t *testing.T) {
	out, err, hits := runChild(t, "a=kill@2")
	require.Error(t, err, "the child should have been killed")
	require.Equal(t, "a\nb\n", out)
	require.Equal(t, "a\nb\na\n", hits)
}

func TestKillByPrefix(t *testing.T) {
	out, err, _ := runChild(t, "c/*=kill@2")
	require.Error(t, err)
	require.Equal(t, "a\nb\na\nc/1\n", out)
}

func TestLogOnly(t *testing.T) {
	out, err, hits := runChild(t, "")
	require.NoError(t, err)
	require.Equal(t, 5, strings.Count(out, "\n"))
	require.Equal(t, "a\nb\na\nc/1\nc/2\n", hits)
}

func TestSleepAction(t *testing.T) {
	start := time.Now()
	out, err, _ := runChild(t, "b=sleep:300ms")
	require.NoError(t, err)
	require.Equal(t, 5, strings.Count(out, "\n"))
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)
}
