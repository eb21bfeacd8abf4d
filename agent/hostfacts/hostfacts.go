// Package hostfacts answers HostFacts tasks: what this host is (name, OS,
// kernel), whether Apache answers and which version, and how much room the
// agent's data dir has. The pipeline's Validation step reads these.
package hostfacts

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"golang.org/x/sys/unix"
)

// Handler collects facts. The zero value works with defaults.
type Handler struct {
	DataDir string
	// ApacheCtl is the version command; empty tries apachectl -v, then
	// apache2ctl -v.
	ApacheCtl    []string
	AgentVersion string
	// OSRelease is the os-release file; default /etc/os-release.
	OSRelease string
	// Backups lists the host's dispatcher config backups (dispatcher
	// agents); nil elsewhere. An error is reported in the facts, not as
	// the task's failure: the rest of the facts still answer.
	Backups func() ([]task.Backup, error)
}

// Run implements worker.Handler.
func (h *Handler) Run(ctx context.Context, _ *worker.Task) (any, error) {
	return h.Collect(ctx)
}

// Collect gathers the facts. Missing Apache is a fact, not an error.
func (h *Handler) Collect(ctx context.Context) (*task.Facts, error) {
	f := &task.Facts{Arch: runtime.GOARCH, AgentVersion: h.AgentVersion, CollectedAt: time.Now().UTC()}
	var err error
	if f.Hostname, err = os.Hostname(); err != nil {
		return nil, err
	}
	f.OS = osName(h.OSRelease)
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	if h.DataDir != "" {
		var st unix.Statfs_t
		if err := unix.Statfs(h.DataDir, &st); err != nil {
			return nil, &os.PathError{Op: "statfs", Path: h.DataDir, Err: err}
		}
		f.DataFreeBytes = st.Bavail * uint64(st.Bsize)
		f.DataTotal = st.Blocks * uint64(st.Bsize)
	}
	f.ApacheVersion, f.ApacheError = apacheVersion(ctx, h.ApacheCtl)
	if h.Backups != nil {
		if f.Backups, err = h.Backups(); err != nil {
			f.BackupsError = err.Error()
		}
	}
	return f, nil
}

func osName(path string) string {
	if path == "" {
		path = "/etc/os-release"
	}
	fh, err := os.Open(path)
	if err != nil {
		return runtime.GOOS
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return runtime.GOOS
}

// apacheVersion runs the version command with a short timeout and returns
// the "Server version:" line, or why there is none.
func apacheVersion(ctx context.Context, argv []string) (version, problem string) {
	candidates := [][]string{argv}
	if len(argv) == 0 {
		candidates = [][]string{{"apachectl", "-v"}, {"apache2ctl", "-v"}}
	}
	var lastErr error
	for _, c := range candidates {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(cctx, c[0], c[1:]...).CombinedOutput()
		cancel()
		if err != nil {
			lastErr = err
			if errors.Is(err, exec.ErrNotFound) {
				continue
			}
			return "", strings.TrimSpace(c[0] + ": " + err.Error() + ": " + firstLine(string(out)))
		}
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Server version:"); ok {
				return strings.TrimSpace(v), ""
			}
		}
		return firstLine(string(out)), ""
	}
	if lastErr != nil {
		return "", "apache not found: " + lastErr.Error()
	}
	return "", "no apache version command"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
