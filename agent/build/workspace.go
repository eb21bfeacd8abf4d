package build

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// workspace is one build task's directory:
//
//	<workspace_dir>/ws-<task id>-<hash>/
//	  src/        the checkout; commands run here, artifacts are found here
//	  home/       HOME of the commands
//	  tmp/        TMPDIR of the commands
//	  build.json  written when the build succeeded (record)
type workspace struct {
	root, src, home, tmp string
}

func (b *Builder) workspaceFor(taskID string) workspace {
	root := filepath.Join(b.dir, workspaceName(taskID))
	return workspace{root: root, src: filepath.Join(root, "src"), home: filepath.Join(root, "home"), tmp: filepath.Join(root, "tmp")}
}

func (w workspace) recordPath() string { return filepath.Join(w.root, "build.json") }

// record is what build.json says about a finished build.
type record struct {
	TaskID     string    `json:"task_id"`
	Repository string    `json:"repository"`
	Branch     string    `json:"branch"`
	Profile    string    `json:"profile"`
	Commit     string    `json:"commit"`
	FinishedAt time.Time `json:"finished_at"`
}

// fresh removes whatever an earlier attempt of the same task left (a
// crash mid-build) and creates an empty workspace: a re-run starts from
// scratch, which is what makes Build idempotent.
func (w workspace) fresh() error {
	if err := removeTree(w.root); err != nil {
		return fmt.Errorf("remove the old workspace %s: %w", w.root, err)
	}
	for _, d := range []string{w.root, w.home, w.tmp} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("create workspace: %w", err)
		}
	}
	return nil
}

func (w workspace) writeRecord(r record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := w.recordPath() + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, w.recordPath())
}

// readRecord returns the record of a finished build; fs.ErrNotExist when
// the workspace does not exist or its build did not succeed.
func (w workspace) readRecord() (record, error) {
	var r record
	data, err := os.ReadFile(w.recordPath())
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%s: %w", w.recordPath(), err)
	}
	return r, nil
}

// errRemoving is returned by acquire for a workspace prune is removing.
var errRemoving = errors.New("the workspace is being removed (older than keep_workspaces)")

// acquire marks a workspace as in use so pruning leaves it alone; the
// returned function releases it. It fails for a workspace prune has
// claimed, which would otherwise vanish under the task.
func (b *Builder) acquire(name string) (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.removing[name] {
		return nil, errRemoving
	}
	b.active[name]++
	return func() {
		b.mu.Lock()
		if b.active[name]--; b.active[name] <= 0 {
			delete(b.active, name)
		}
		b.mu.Unlock()
	}, nil
}

// claim marks an unused workspace as being removed; false when a task
// uses it.
func (b *Builder) claim(name string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.active[name] > 0 || b.removing[name] {
		return false
	}
	b.removing[name] = true
	return true
}

func (b *Builder) unclaim(name string) {
	b.mu.Lock()
	delete(b.removing, name)
	b.mu.Unlock()
}

// prune removes workspaces not used for keep_workspaces: a build's
// workspace lives until the code scan of its execution is long done.
// Age is the last use (build.json is touched by each scan), or the
// directory's time for a build that never finished. Only directories
// named like workspaces are considered, and none in use.
func (b *Builder) prune(now time.Time) {
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			b.log.Warn("cannot list workspaces to prune", "dir", b.dir, "error", err)
		}
		return
	}
	keep := b.cfg.KeepWorkspaces.D()
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, workspacePrefix) {
			continue
		}
		if !b.claim(name) {
			continue
		}
		b.pruneOne(name, now, keep)
		b.unclaim(name)
	}
}

// pruneOne removes the workspace name if it is older than keep; the caller
// has claimed it.
func (b *Builder) pruneOne(name string, now time.Time, keep time.Duration) {
	root := filepath.Join(b.dir, name)
	st, err := os.Stat(filepath.Join(root, "build.json"))
	if err != nil {
		st, err = os.Stat(root)
	}
	if err != nil || now.Sub(st.ModTime()) < keep {
		return
	}
	if err := removeTree(root); err != nil {
		b.log.Warn("cannot remove an old workspace", "dir", root, "error", err)
		return
	}
	b.log.Info("removed an old workspace", "dir", root, "last_used", st.ModTime().Format(time.RFC3339))
}

// removeTree removes dir and everything under it, including read-only
// directories a build created (Go's module cache makes them 0555), which
// os.RemoveAll alone cannot empty unless it runs as root.
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
