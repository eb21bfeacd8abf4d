package dispatcher_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// Agents are child processes stopped by their tests; what is left
		// here would be the control plane's or a helper's goroutines.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/dispatcher: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}
