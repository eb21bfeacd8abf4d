package build

import (
	"os"
	"path/filepath"
)

// bwrapPath is where Debian's bubblewrap package installs bwrap.
const bwrapPath = "/usr/bin/bwrap"

// findBwrap returns the bwrap binary, or "" when it is not installed.
func findBwrap() string {
	if st, err := os.Stat(bwrapPath); err == nil && !st.IsDir() {
		return bwrapPath
	}
	return ""
}

// systemDirs are bound read-only (or re-created as the same symlinks, on a
// merged-/usr system) so that shells, JDKs and build tools run.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcEntries are the parts of /etc a build needs: name resolution, TLS
// roots, users, the dynamic linker, Debian's alternatives (java, mvn) and
// JDK and Maven config. The rest of /etc (shadow, the agent's own config
// and keys) stays out of the sandbox.
var etcEntries = []string{
	"/etc/alternatives", "/etc/ssl", "/etc/ca-certificates", "/etc/ca-certificates.conf",
	"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/host.conf",
	"/etc/resolv.conf", "/etc/localtime", "/etc/timezone", "/etc/ld.so.cache", "/etc/ld.so.conf",
	"/etc/ld.so.conf.d", "/etc/mime.types", "/etc/os-release", "/etc/maven", "/etc/gitconfig",
}

// bwrapArgs builds the bubblewrap command line for one step. The sandbox
// sees the system directories and extraRO read-only, the workspace's
// src, home and tmp writable under /workspace, the step's cache directories writable at their
// own paths, a private
// /tmp, /proc and /dev, and nothing else: the root is an empty tmpfs that
// is made read-only last, so a write anywhere outside the workspace fails.
//
//   - --unshare-all: new user, pid, ipc, uts, cgroup and network
//     namespaces; --share-net undoes only the last, for a step with
//     network: true (a Maven build that downloads its dependencies).
//   - --cap-drop ALL: bwrap started by root keeps every capability by
//     default, and with CAP_SYS_ADMIN the build could remount the
//     read-only binds writable; without capabilities it cannot.
//   - --die-with-parent: the sandbox dies with the agent (and with the
//     bwrap process the agent kills on a timeout).
//   - --new-session: no access to a controlling terminal (TIOCSTI).
func bwrapArgs(bwrap string, s Step, ws workspace, extraRO []string) []string {
	args := []string{bwrap, "--unshare-all"}
	if s.Network {
		args = append(args, "--share-net")
	}
	args = append(args, "--die-with-parent", "--new-session", "--cap-drop", "ALL")
	for _, d := range systemDirs {
		st, err := os.Lstat(d)
		switch {
		case err != nil:
			continue
		case st.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(d); err == nil {
				args = append(args, "--symlink", target, d)
			}
		case st.IsDir():
			args = append(args, "--ro-bind", d, d)
		}
	}
	etc := append([]string(nil), etcEntries...)
	if java, err := filepath.Glob("/etc/java*"); err == nil {
		etc = append(etc, java...)
	}
	for _, e := range etc {
		args = append(args, "--ro-bind-try", e, e)
	}
	for _, p := range extraRO {
		args = append(args, "--ro-bind", p, p)
	}
	args = append(args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp")
	// The checkout, HOME and TMPDIR are bound one by one, not the
	// workspace root: build.json, which says the build succeeded, stays
	// out of the build's reach.
	view := ws.sandboxView()
	args = append(args, "--bind", ws.src, view.src, "--bind", ws.home, view.home, "--bind", ws.tmp, view.tmp)
	for _, d := range s.CacheDirs {
		args = append(args, "--bind", d, d)
	}
	args = append(args, "--remount-ro", "/", "--chdir", view.src, "--")
	return append(args, s.Command...)
}

// sandboxRoot is where the workspace appears inside the sandbox. A fixed
// path hides the host's layout (where the agent's data dir is) from the
// build, and keeps the workspace's host ancestors out of the sandbox: were
// the workspace bound at its own path under /tmp, its parents would sit on
// the sandbox's writable /tmp, and a write to the agent's data dir would
// look as if it had succeeded.
const sandboxRoot = "/workspace"

// sandboxView is the workspace as the sandboxed command sees it.
func (w workspace) sandboxView() workspace {
	return workspace{root: sandboxRoot, src: sandboxRoot + "/src", home: sandboxRoot + "/home", tmp: sandboxRoot + "/tmp"}
}
