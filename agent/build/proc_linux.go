//go:build linux

package build

import (
	"os/exec"
	"syscall"
)

// setProcessGroup runs cmd in its own process group, kills the whole group
// when the command is cancelled (a timeout), and has the kernel kill the
// command if the agent dies, so an agent crash does not leave a build
// running next to the re-run of the same task. Under bwrap the command is
// bwrap itself, whose --die-with-parent takes the sandbox with it.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return killGroup(cmd) }
}

// killGroup kills what is left of cmd's process group: background
// processes a build started and did not wait for.
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
