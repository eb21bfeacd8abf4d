package haproxy

import "syscall"

// sysProcAttr makes the kernel kill HAProxy if the test binary dies before
// its cleanup runs, so a crashed or timed-out test leaves no HAProxy behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
