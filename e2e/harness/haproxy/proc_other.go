//go:build !linux

package haproxy

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; Stop on t.Cleanup
// is the only guard there.
func sysProcAttr() *syscall.SysProcAttr { return nil }
