//go:build linux

package apache

import "syscall"

// sysProcAttr makes the kernel kill Apache's parent if the test binary
// dies before its cleanup runs, and puts Apache in its own process group
// so Stop can kill parent and workers together as a last resort.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}
