//go:build linux

package apache

import "syscall"

// sysProcAttr makes the kernel send SIGTERM to Apache's parent if the test
// binary dies before its cleanup runs, and puts Apache in its own process
// group so Stop can kill parent and workers together as a last resort.
// SIGTERM, not SIGKILL: a killed parent leaves its workers running,
// re-parented to init, while a terminated one stops them first.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
}
