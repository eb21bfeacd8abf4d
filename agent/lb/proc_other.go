//go:build !unix

package lb

import "os/exec"

// setProcessGroup is a no-op without unix process groups; cancellation
// kills only the direct child (exec's default).
func setProcessGroup(cmd *exec.Cmd) {}
