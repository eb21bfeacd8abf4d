package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// plan is what a task journals (mark "plan") before it renames anything:
// enough to finish or undo the swap after a crash at any point. Each
// managed dir is known by the identity (device, inode) of its old and new
// directory, so recovery can tell which one is live whatever rename was
// the last to complete.
type plan struct {
	// What is "deployment" or "restore", for messages.
	What string `json:"what"`
	// Work is the task's work dir; Stage holds the new managed dirs before
	// the swap; Aside receives live dirs when RENAME_EXCHANGE is not
	// available.
	Work  string    `json:"work"`
	Stage string    `json:"stage"`
	Aside string    `json:"aside"`
	Dirs  []planDir `json:"dirs"`
	// Flagged are immutable files (relative paths) that had chattr +i on
	// the host; the new tree's copies get it at commit.
	Flagged      []string `json:"flagged,omitempty"`
	BackupID     string   `json:"backup_id"`
	RestoredFrom string   `json:"restored_from,omitempty"`
	Files        int      `json:"files"`
	Ignored      []string `json:"ignored,omitempty"`
}

// planDir is one managed dir; a zero identity means absent on that side.
type planDir struct {
	Name string   `json:"name"`
	Old  identity `json:"old"`
	New  identity `json:"new"`
}

// rollbackInfo is the data of the "rollback" mark: why the old tree comes
// back. It carries the configtest output so a recovery can still report it
// verbatim.
type rollbackInfo struct {
	// Cause is "configtest", "reload", "error" or "interrupted".
	Cause  string `json:"cause"`
	Output string `json:"output,omitempty"`
	Exit   int    `json:"exit,omitempty"`
	Error  string `json:"error,omitempty"`
}

// mark journals a mark between its two failpoints.
func (d *Dispatcher) mark(t *worker.Task, name string, data []byte) error {
	d.hit("dispatcher/before-mark-" + name)
	if err := t.Mark(name, data); err != nil {
		return err
	}
	d.hit("dispatcher/after-mark-" + name)
	return nil
}

// hasAfter reports whether the last mark b comes after the last mark a
// (or b exists and a does not).
func hasAfter(e journal.Entry, a, b string) bool {
	ia, ib := -1, -1
	for i, m := range e.Marks {
		switch m.Name {
		case a:
			ia = i
		case b:
			ib = i
		}
	}
	return ib >= 0 && ib > ia
}

// makePlan records the identities of the live and staged managed dirs and
// checks that every rename of the swap stays on one filesystem.
func (d *Dispatcher) makePlan(what, work, stage string) (*plan, error) {
	p := &plan{What: what, Work: work, Stage: stage, Aside: filepath.Join(work, "aside")}
	wid, err := identityOf(work)
	if err != nil {
		return nil, err
	}
	for _, name := range d.cfg.ManagedDirs {
		live := filepath.Join(d.cfg.HTTPDDir, name)
		oldID, err := identityOf(live)
		if err != nil {
			return nil, err
		}
		newID, err := identityOf(filepath.Join(stage, name))
		if err != nil {
			return nil, err
		}
		if oldID.zero() && newID.zero() {
			continue
		}
		if !oldID.zero() && oldID.Dev != wid.Dev {
			return nil, fmt.Errorf("%s is on another filesystem than the work dir %s; the config swap is a rename and needs both on one filesystem (set dispatcher.work_dir)", live, d.cfg.WorkDir)
		}
		if oldID.zero() {
			if hid, err := identityOf(d.cfg.HTTPDDir); err != nil {
				return nil, err
			} else if hid.Dev != wid.Dev {
				return nil, fmt.Errorf("%s is on another filesystem than the work dir %s (set dispatcher.work_dir)", d.cfg.HTTPDDir, d.cfg.WorkDir)
			}
		}
		p.Dirs = append(p.Dirs, planDir{Name: name, Old: oldID, New: newID})
	}
	if err := os.MkdirAll(p.Aside, 0o700); err != nil {
		return nil, err
	}
	if err := syncDir(work); err != nil {
		return nil, err
	}
	return p, nil
}

// settle makes every managed dir of the plan hold the wanted side (new
// when forward, old otherwise). It is idempotent and works from any state
// a crash can leave, because it looks at which identity is where rather
// than remembering what it did. It returns the dirs it moved.
func (d *Dispatcher) settle(p *plan, forward bool, fp string) ([]string, error) {
	var moved []string
	for _, pd := range p.Dirs {
		want := pd.Old
		if forward {
			want = pd.New
		}
		changed, err := d.settleDir(p, pd, want, fp)
		if err != nil {
			return moved, err
		}
		if changed {
			moved = append(moved, pd.Name)
		}
	}
	return moved, nil
}

func (d *Dispatcher) settleDir(p *plan, pd planDir, want identity, fp string) (bool, error) {
	live := filepath.Join(d.cfg.HTTPDDir, pd.Name)
	slots := []string{filepath.Join(p.Stage, pd.Name), filepath.Join(p.Aside, pd.Name)}
	changed := false
	for step := 0; step < 4; step++ {
		cur, err := identityOf(live)
		if err != nil {
			return changed, err
		}
		if cur == want {
			return changed, nil
		}
		if !cur.zero() && cur != pd.Old && cur != pd.New {
			return changed, fmt.Errorf("%s is neither the previous nor the new directory of this %s (changed by something else?); not touching it", live, p.What)
		}
		src := ""
		if !want.zero() {
			for _, s := range slots {
				id, err := identityOf(s)
				if err != nil {
					return changed, err
				}
				if id == want {
					src = s
				}
			}
			if src == "" {
				return changed, fmt.Errorf("the directory that belongs at %s is no longer in %s", live, p.Work)
			}
		}
		changed = true
		switch {
		case !cur.zero() && src != "" && !d.noExchange:
			d.hit(fp + "before-rename")
			err := exchange(src, live)
			if errors.Is(err, errNoExchange) {
				d.noExchange = true // this filesystem cannot; use renames from now on
				continue
			}
			if err != nil {
				return changed, err
			}
			if err := syncDirs(d.cfg.HTTPDDir, filepath.Dir(src)); err != nil {
				return changed, err
			}
			d.hit(fp + "after-rename")
		case !cur.zero():
			free := ""
			for _, s := range slots {
				if id, err := identityOf(s); err != nil {
					return changed, err
				} else if id.zero() {
					free = s
					break
				}
			}
			if free == "" {
				return changed, fmt.Errorf("no free place in %s to move %s aside", p.Work, live)
			}
			d.hit(fp + "before-rename")
			if err := renameNoReplace(live, free); err != nil {
				return changed, err
			}
			if err := syncDirs(d.cfg.HTTPDDir, filepath.Dir(free)); err != nil {
				return changed, err
			}
			d.hit(fp + "after-rename")
		default:
			d.hit(fp + "before-rename")
			if err := renameNoReplace(src, live); err != nil {
				return changed, err
			}
			if err := syncDirs(d.cfg.HTTPDDir, filepath.Dir(src)); err != nil {
				return changed, err
			}
			d.hit(fp + "after-rename")
		}
	}
	return changed, fmt.Errorf("%s did not settle after 4 renames", live)
}

func syncDirs(dirs ...string) error {
	for _, dir := range dirs {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

const (
	fpSwap     = "dispatcher/swap/"
	fpRollback = "dispatcher/rollback/"
	fpRecover  = "dispatcher/recover/"
)

// apply swaps the staged tree in, runs configtest and either reloads or
// puts the old tree back. From the "plan" mark on, it ignores ctx
// cancellation (commands keep their own timeout): stopping halfway would
// only hand the work to recovery.
func (d *Dispatcher) apply(ctx context.Context, t *worker.Task, p *plan, out *task.DispatcherOutput) (*task.DispatcherOutput, error) {
	ctx = context.WithoutCancel(ctx)
	raw, err := json.Marshal(p)
	if err != nil {
		return out, err
	}
	if err := d.mark(t, markPlan, raw); err != nil {
		d.abort(p.Work, p.BackupID)
		return out, fmt.Errorf("journal: %w; nothing on the host was changed", err)
	}
	if _, err := d.settle(p, true, fpSwap); err != nil {
		return d.rollback(ctx, t, p, out, rollbackInfo{Cause: "error", Error: err.Error()}, fpRollback)
	}
	if err := d.mark(t, markSwapped, nil); err != nil {
		return d.rollback(ctx, t, p, out, rollbackInfo{Cause: "error", Error: err.Error()}, fpRollback)
	}
	d.hit(FPBeforeConfigTest)
	res := runCommand(ctx, d.cfg.ConfigTest, d.cfg.CommandTimeout.D())
	d.hit(FPAfterConfigTest)
	out.ConfigTest = res.Output
	if res.Err != nil {
		d.log.Warn("configtest failed; restoring the previous config", "exit", res.Exit, "output", res.Output, "error", res.Err)
		return d.rollback(ctx, t, p, out, rollbackInfo{Cause: "configtest", Output: res.Output, Exit: res.Exit, Error: res.Err.Error()}, fpRollback)
	}
	d.log.Info("configtest passed", "took", res.Took, "output", strings.TrimSpace(res.Output))
	if err := d.mark(t, markConfigTestOK, []byte(res.Output)); err != nil {
		return d.rollback(ctx, t, p, out, rollbackInfo{Cause: "error", Error: err.Error()}, fpRollback)
	}
	return d.finishForward(ctx, t, p, out, fpRollback)
}

// finishForward reloads Apache with the new (tested) tree and commits, or
// rolls back when the reload fails.
func (d *Dispatcher) finishForward(ctx context.Context, t *worker.Task, p *plan, out *task.DispatcherOutput, fp string) (*task.DispatcherOutput, error) {
	if !hasAfter(t.Entry(), markConfigTestOK, markReloaded) {
		r := d.reload(ctx)
		if r.Err != nil {
			return d.rollback(ctx, t, p, out, rollbackInfo{Cause: "reload", Output: r.Output, Exit: r.Exit, Error: r.Err.Error()}, fp)
		}
		if err := d.mark(t, markReloaded, nil); err != nil {
			d.log.Warn("reloaded, but could not journal it; a recovery would reload again", "error", err)
		}
	}
	d.commit(t, p, true)
	return out, nil
}

func (d *Dispatcher) reload(ctx context.Context) cmdResult {
	d.hit(FPBeforeReload)
	r := runCommand(ctx, d.cfg.Reload, d.cfg.CommandTimeout.D())
	d.hit(FPAfterReload)
	if r.Err != nil {
		d.log.Error("reload failed", "exit", r.Exit, "output", r.Output, "error", r.Err)
	} else {
		d.log.Info("apache reloaded", "took", r.Took)
	}
	return r
}

// commit ends a task whose outcome is settled: chattr +i goes back on the
// new copies of immutable files (forward only), the work dir goes, the
// backup index records the outcome and old backups are pruned. Every step
// is idempotent, so a recovery may repeat it.
func (d *Dispatcher) commit(t *worker.Task, p *plan, forward bool) {
	if forward {
		for _, rel := range p.Flagged {
			if err := setImmutableAttr(filepath.Join(d.cfg.HTTPDDir, filepath.FromSlash(rel)), true); err != nil {
				d.log.Warn("cannot set chattr +i again on an immutable file", "path", rel, "error", err)
			}
		}
	}
	d.hit(FPCommitAfterAttrs)
	if err := removeTree(p.Work); err != nil {
		d.log.Warn("cannot remove the work dir; it goes at the next cleanup", "path", p.Work, "error", err)
	}
	d.hit(FPCommitAfterCleanup)
	if !forward {
		// The backed-up tree is live again: it must not share files
		// with the backup.
		if err := d.unshareBackup(p.BackupID); err != nil {
			d.log.Warn("the backup still shares files with the live tree; an in-place edit of the live config would show as damage of the backup", "backup", p.BackupID, "error", err)
		}
		d.hit(FPCommitAfterUnshare)
	}
	if err := d.mark(t, markCommitted, nil); err != nil {
		d.log.Warn("cannot journal the commit", "error", err)
	}
	if forward {
		d.setOutcome(p.BackupID, OutcomeApplied)
	} else {
		d.setOutcome(p.BackupID, OutcomeRolledBack)
	}
	d.prune()
}

// abort ends a task that failed before the live tree changed. The live
// tree stays, so its backup (if one was taken) stops sharing files with it.
func (d *Dispatcher) abort(work, backupID string) {
	if err := removeTree(work); err != nil {
		d.log.Warn("cannot remove the work dir; it goes at the next cleanup", "path", work, "error", err)
	}
	if err := d.unshareBackup(backupID); err != nil {
		d.log.Warn("the backup still shares files with the live tree; an in-place edit of the live config would show as damage of the backup", "backup", backupID, "error", err)
	}
	d.setOutcome(backupID, OutcomeInterrupted)
}

// rollback puts the old tree back, reloads and reports why. It is also
// recovery's way back, so every step checks the journal first.
func (d *Dispatcher) rollback(ctx context.Context, t *worker.Task, p *plan, out *task.DispatcherOutput, info rollbackInfo, fp string) (*task.DispatcherOutput, error) {
	if !t.Entry().Has(markRollback) {
		raw, _ := json.Marshal(info)
		if err := d.mark(t, markRollback, raw); err != nil {
			d.log.Warn("cannot journal the rollback decision; rolling back anyway", "error", err)
		}
	}
	moved, err := d.settle(p, false, fp)
	if err != nil {
		d.log.Error("cannot put the previous config back", "error", err, "backup", p.BackupID)
		return out, fmt.Errorf("%s failed (%s) and the previous config could not be put back: %v; the live tree may be incomplete: restore backup %s with a DispatcherRestore task",
			p.What, info.summary(), err, p.BackupID)
	}
	if len(moved) > 0 {
		d.log.Info("previous config is back", "dirs", moved)
	}
	if !hasAfter(t.Entry(), markRollback, markRolledBack) {
		if err := d.mark(t, markRolledBack, nil); err != nil {
			d.log.Warn("cannot journal the rollback", "error", err)
		}
	}
	var reloadErr error
	if !hasAfter(t.Entry(), markRolledBack, markReloaded) {
		if r := d.reload(ctx); r.Err != nil {
			reloadErr = fmt.Errorf("%v: %s", r.Err, strings.TrimSpace(r.Output))
		} else if err := d.mark(t, markReloaded, nil); err != nil {
			d.log.Warn("cannot journal the reload", "error", err)
		}
	}
	d.commit(t, p, false)
	// For a deployment, Restored means its previous config is back; for a
	// restore it means the named backup went live, which it did not.
	out.Restored = p.RestoredFrom == ""
	switch info.Cause {
	case "configtest":
		out.ConfigTest = info.Output
		return out, &ConfigTestError{Output: info.Output, Exit: info.Exit, Restored: true, ReloadErr: reloadErr}
	case "reload":
		msg := fmt.Sprintf("the new config passed configtest but reloading Apache failed (%s); the previous config was put back", info.Error)
		if strings.TrimSpace(info.Output) != "" {
			msg += ". Reload output:\n" + info.Output
		}
		if reloadErr != nil {
			msg += "\nReloading the previous config failed too: " + reloadErr.Error()
		}
		return out, errors.New(msg)
	default:
		msg := fmt.Sprintf("%s failed: %s; the previous config was put back", p.What, info.summary())
		if reloadErr != nil {
			msg += ", but reloading Apache with it failed: " + reloadErr.Error()
		} else {
			msg += " and Apache reloaded"
		}
		return out, errors.New(msg)
	}
}

func (i rollbackInfo) summary() string {
	switch i.Cause {
	case "interrupted":
		return "the agent stopped after the config swap had begun and before configtest passed"
	case "configtest":
		return "configtest failed"
	case "reload":
		return "reload failed: " + i.Error
	}
	return i.Error
}

// recoverTask is the Recoverer of deploy and restore tasks. From the
// journal marks it decides the direction and brings the tree there:
//
//	no "plan"                        nothing live changed: drop the work dir
//	"rollback", or no "configtest-ok" put the old tree back, reload
//	"configtest-ok" and no "rollback" keep the new tree, reload if not done, commit
func (d *Dispatcher) recoverTask(ctx context.Context, t *worker.Task, what string) (*task.DispatcherOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.recoverLocked(ctx, t, what)
}

func (d *Dispatcher) recoverLocked(ctx context.Context, t *worker.Task, what string) (*task.DispatcherOutput, error) {
	ctx = context.WithoutCancel(ctx)
	d.cleanup()
	e := t.Entry()
	out := &task.DispatcherOutput{}
	if m, ok := e.Mark(markBackup); ok {
		out.BackupID = string(m.Data)
	}
	pm, ok := e.Mark(markPlan)
	if !ok {
		if out.BackupID == "" {
			// Stopped between indexing the backup and journaling it: the
			// record is there (pending) and must say how the task ended.
			if _, indexed, err := d.getBackup(BackupID(t.Spec.ID)); err == nil && indexed {
				out.BackupID = BackupID(t.Spec.ID)
			}
		}
		d.abort(d.workDir(t.Spec.ID), out.BackupID)
		d.dropUnindexedBackup(t.Spec.ID)
		last := "start"
		if n := len(e.Marks); n > 0 {
			last = e.Marks[n-1].Name
		}
		out.Recovery = fmt.Sprintf("the agent stopped during the %s before the live config was changed (last mark: %s); nothing to undo, Apache not reloaded", what, last)
		d.log.Warn("recovered an interrupted task", "task", t.Spec.ID, "recovery", out.Recovery)
		return out, fmt.Errorf("dispatcher %s interrupted by an agent restart before the live config was changed; the host keeps its previous config", what)
	}
	var p plan
	if err := json.Unmarshal(pm.Data, &p); err != nil {
		return out, fmt.Errorf("journal: unreadable %s plan: %w", what, err)
	}
	out.BackupID, out.Files, out.Ignored = p.BackupID, p.Files, p.Ignored
	if p.RestoredFrom != "" {
		out.BackupID = p.RestoredFrom
	}
	back := e.Has(markRollback) || !e.Has(markConfigTestOK)
	if back {
		info := rollbackInfo{Cause: "interrupted"}
		if rb, ok := e.Mark(markRollback); ok {
			_ = json.Unmarshal(rb.Data, &info)
		}
		// What the stopped run had already done, for an accurate report: a
		// run that finished its rollback but was stopped (SIGTERM) before
		// the worker journaled its result leaves nothing to do.
		committed := hasAfter(e, markRollback, markCommitted)
		reloaded := hasAfter(e, markRolledBack, markReloaded)
		o, err := d.rollback(ctx, t, &p, out, info, fpRecover)
		switch {
		case committed:
			o.Recovery = fmt.Sprintf("the agent stopped after the %s had put the previous config back (%s) and reloaded Apache; recovery only reported it", what, info.summary())
		case reloaded:
			o.Recovery = fmt.Sprintf("the agent stopped after the %s had put the previous config back (%s) and reloaded Apache; recovery finished the cleanup", what, info.summary())
		default:
			o.Recovery = fmt.Sprintf("the agent stopped during the %s (%s); recovery put the previous config back and reloaded Apache", what, info.summary())
		}
		if err != nil && strings.Contains(err.Error(), "could not be put back") {
			o.Recovery = "the agent stopped during the " + what + " and recovery could not put the previous config back: " + err.Error()
		}
		d.log.Warn("recovered an interrupted task", "task", t.Spec.ID, "recovery", o.Recovery, "error", err)
		return o, err
	}
	if _, err := d.settle(&p, true, fpRecover); err != nil {
		return d.rollback(ctx, t, &p, out, rollbackInfo{Cause: "error", Error: err.Error()}, fpRecover)
	}
	if m, ok := e.Mark(markConfigTestOK); ok {
		out.ConfigTest = string(m.Data)
	}
	reloaded := hasAfter(e, markConfigTestOK, markReloaded)
	o, err := d.finishForward(ctx, t, &p, out, fpRecover)
	if err != nil {
		o.Recovery = fmt.Sprintf("the agent stopped during the %s after the new config passed configtest; reloading it failed, so recovery put the previous config back", what)
	} else if reloaded {
		o.Recovery = fmt.Sprintf("the agent stopped during the %s after the new config was live and reloaded; recovery finished the cleanup", what)
	} else {
		o.Recovery = fmt.Sprintf("the agent stopped during the %s after the new config passed configtest; recovery kept it and reloaded Apache", what)
	}
	if p.RestoredFrom != "" && err == nil {
		o.Restored = true
	}
	d.log.Warn("recovered an interrupted task", "task", t.Spec.ID, "recovery", o.Recovery, "error", err)
	return o, err
}
