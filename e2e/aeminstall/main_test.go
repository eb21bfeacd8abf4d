package aeminstall_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// agentBin is the deckhand-agent binary every test runs.
var agentBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if p := os.Getenv("DECKHAND_AGENT_BIN"); p != "" {
		agentBin = p
	} else {
		dir, err := os.MkdirTemp("", "deckhand-e2e-aeminstall-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		agentBin = filepath.Join(dir, "deckhand-agent")
		args := []string{"build", "-o", agentBin}
		if raceEnabled {
			// The agent is where the concurrency under test lives; a race
			// it hits in this end-to-end run should fail the run.
			args = append(args, "-race")
		}
		args = append(args, "github.com/deckhand-dev/deckhand/agent/cmd/deckhand-agent")
		start := time.Now()
		build := exec.Command("go", args...)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "aeminstall: building deckhand-agent:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "aeminstall: built deckhand-agent (race=%v) in %v\n", raceEnabled, time.Since(start).Round(time.Millisecond))
	}
	code := m.Run()
	if code == 0 {
		// Every agent is a child process stopped by its test; what is left
		// here would be the control plane's or the simulators' goroutines.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "aeminstall: leaked goroutines:", err)
			return 1
		}
	}
	return code
}
