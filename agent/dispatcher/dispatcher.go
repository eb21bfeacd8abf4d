package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/hashicorp/go-hclog"
)

// Dispatcher runs the dispatcher task kinds on one host. Deploy, restore
// and their recovery change the same tree, so they run one at a time
// (mu); cache flushes run freely.
type Dispatcher struct {
	cfg   *Config
	j     *journal.Journal
	fetch artifacts.Fetcher
	log   hclog.Logger
	now   func() time.Time

	mu sync.Mutex // held by deploy, restore and recovery for their whole run

	// hook, when set (tests), is called at every failpoint after
	// failpoint.Hit, to stop a task there as if the process died.
	hook func(name string)
	// noExchange forces the rename-based swap (tests of filesystems
	// without RENAME_EXCHANGE).
	noExchange bool
}

// New builds a Dispatcher. cfg must have been prepared (Config.Prepare);
// fetch may be nil on hosts that never deploy (then DispatcherDeploy
// fails with a clear error).
func New(cfg *Config, j *journal.Journal, fetch artifacts.Fetcher, log hclog.Logger) (*Dispatcher, error) {
	if cfg == nil || j == nil {
		return nil, errors.New("dispatcher: config and journal are required")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if st, err := os.Stat(cfg.HTTPDDir); err != nil {
		return nil, fmt.Errorf("dispatcher: httpd_dir: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("dispatcher: httpd_dir %s is not a directory", cfg.HTTPDDir)
	}
	d := &Dispatcher{cfg: cfg, j: j, fetch: fetch, log: log, now: time.Now}
	// At start-up: leftovers of tasks that are no longer open go now; those
	// of open (interrupted) tasks stay for their recovery.
	d.mu.Lock()
	d.cleanup()
	d.mu.Unlock()
	return d, nil
}

// Config returns the dispatcher's configuration.
func (d *Dispatcher) Config() *Config { return d.cfg }

// Handlers returns the worker handlers by task kind name. Deploy and
// restore also implement worker.Recoverer.
func (d *Dispatcher) Handlers() map[string]worker.Handler {
	return map[string]worker.Handler{
		task.DispatcherDeploy{}.Name():  &DeployHandler{d: d},
		task.DispatcherPrepare{}.Name(): &PrepareHandler{d: d},
		task.DispatcherRestore{}.Name(): &RestoreHandler{d: d},
		task.CacheFlush{}.Name():        &FlushHandler{d: d},
	}
}

// DeployHandler runs DispatcherDeploy tasks.
type DeployHandler struct{ d *Dispatcher }

// Run implements worker.Handler.
func (h *DeployHandler) Run(ctx context.Context, t *worker.Task) (any, error) {
	k, ok := t.Spec.Kind.(task.DispatcherDeploy)
	if !ok {
		return nil, fmt.Errorf("dispatcher: deploy handler got a %T task", t.Spec.Kind)
	}
	return h.d.deploy(ctx, t, k)
}

// Recover implements worker.Recoverer: it never resumes; it leaves the
// tree exactly old or exactly new and reports which.
func (h *DeployHandler) Recover(ctx context.Context, t *worker.Task) (any, error, bool) {
	out, err := h.d.recoverTask(ctx, t, "deployment")
	return out, err, false
}

// RestoreHandler runs DispatcherRestore tasks.
type RestoreHandler struct{ d *Dispatcher }

// Run implements worker.Handler.
func (h *RestoreHandler) Run(ctx context.Context, t *worker.Task) (any, error) {
	k, ok := t.Spec.Kind.(task.DispatcherRestore)
	if !ok {
		return nil, fmt.Errorf("dispatcher: restore handler got a %T task", t.Spec.Kind)
	}
	return h.d.restore(ctx, t, k)
}

// Recover implements worker.Recoverer, as DeployHandler.Recover.
func (h *RestoreHandler) Recover(ctx context.Context, t *worker.Task) (any, error, bool) {
	out, err := h.d.recoverTask(ctx, t, "restore")
	return out, err, false
}

// FlushHandler runs CacheFlush tasks.
type FlushHandler struct{ d *Dispatcher }

// Run implements worker.Handler.
func (h *FlushHandler) Run(ctx context.Context, t *worker.Task) (any, error) {
	k, ok := t.Spec.Kind.(task.CacheFlush)
	if !ok {
		return nil, fmt.Errorf("dispatcher: flush handler got a %T task", t.Spec.Kind)
	}
	return h.d.Flush(ctx, k)
}

var (
	_ worker.Recoverer = (*DeployHandler)(nil)
	_ worker.Recoverer = (*RestoreHandler)(nil)
)

// workDir is the task's own directory under WorkDir.
func (d *Dispatcher) workDir(taskID string) string {
	return filepath.Join(d.cfg.WorkDir, txID(taskID))
}

// cleanup removes what interrupted tasks left behind and no open task
// needs: work dirs (staging trees, directories moved aside) and
// unfinished or unindexed backup directories. mu must be held.
func (d *Dispatcher) cleanup() {
	keepWork, keepBackup := map[string]bool{}, map[string]bool{}
	open, err := d.j.List(journal.Running)
	if err != nil {
		d.log.Warn("cannot list open tasks; skipping cleanup", "error", err)
		return
	}
	for _, e := range open {
		if e.Kind == (task.DispatcherDeploy{}).Name() || e.Kind == (task.DispatcherRestore{}).Name() {
			keepWork[txID(e.ID)] = true
			keepBackup[BackupID(e.ID)] = true
			keepBackup[".tmp-"+BackupID(e.ID)] = true
		}
	}
	d.removeInterruptedPrepares()
	if ents, err := os.ReadDir(d.cfg.WorkDir); err == nil {
		for _, e := range ents {
			// Only our own names: work_dir may be shared by mistake.
			if keepWork[e.Name()] || !strings.HasPrefix(e.Name(), "tx-") {
				continue
			}
			p := filepath.Join(d.cfg.WorkDir, e.Name())
			if err := removeTree(p); err != nil {
				d.log.Warn("cannot remove a leftover work dir", "path", p, "error", err)
			} else {
				d.log.Info("removed a leftover work dir", "path", p)
			}
		}
	}
	indexed := map[string]bool{}
	all, err := listBackups(d.j.Backend())
	if err != nil {
		d.log.Warn("cannot read the backups index; leaving backup dirs alone", "error", err)
		return
	}
	for _, r := range all {
		indexed[r.ID] = true
	}
	if ents, err := os.ReadDir(d.cfg.BackupDir); err == nil {
		for _, e := range ents {
			n := e.Name()
			if indexed[n] || keepBackup[n] || !(strings.HasPrefix(n, "bk-") || strings.HasPrefix(n, ".tmp-bk-")) {
				continue
			}
			p := filepath.Join(d.cfg.BackupDir, n)
			if err := removeTree(p); err != nil {
				d.log.Warn("cannot remove an unindexed backup dir", "path", p, "error", err)
			} else {
				d.log.Info("removed an unfinished or unindexed backup dir", "path", p)
			}
		}
	}
}

// removeTree removes p and everything below it, clearing chattr +i/+a
// first: a work dir can hold the host's original immutable files after a
// swap.
func removeTree(p string) error {
	err := os.RemoveAll(p)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, de fs.DirEntry, err error) error {
		if err == nil && de.Type()&fs.ModeSymlink == 0 {
			_ = setImmutableAttr(q, false)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// ConfigTestError is a configtest that failed. Its message is the
// command's output verbatim (Apache's "AH00526: Syntax error on line N of
// FILE:" and the reason), which is what the task reports.
type ConfigTestError struct {
	Output string
	Exit   int
	// Restored says the previous config was put back (and reloaded).
	Restored bool
	// ReloadErr is set when the reload after restoring failed too.
	ReloadErr error
}

func (e *ConfigTestError) Error() string {
	s := e.Output
	if strings.TrimSpace(s) == "" {
		s = fmt.Sprintf("configtest exited with status %d and printed nothing", e.Exit)
	}
	if e.ReloadErr != nil {
		s += "\n(the previous config was restored, but reloading Apache with it failed: " + e.ReloadErr.Error() + ")"
	}
	return s
}
