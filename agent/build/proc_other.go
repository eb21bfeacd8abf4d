//go:build !linux

package build

import "os/exec"

// setProcessGroup falls back to killing only the command on systems
// without Linux's process-group and parent-death controls; builders run on
// Linux.
func setProcessGroup(cmd *exec.Cmd) {}

func killGroup(cmd *exec.Cmd) error { return nil }
