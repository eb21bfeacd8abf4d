package dispatcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

var backupIDPattern = regexp.MustCompile(`^bk-[0-9a-f]{16}$`)

// restore puts a backup's config back: the named one, or by default the
// one taken before the most recent deployment that went live. It goes
// through the same staged swap, configtest and reload as a deployment,
// and takes a backup of the current tree first, so a restore can be
// undone too. The host's current immutable files are kept, as in a
// deployment.
func (d *Dispatcher) restore(ctx context.Context, t *worker.Task, k task.DispatcherRestore) (any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.Entry().Has(markPlan) {
		return d.recoverLocked(ctx, t, "restore")
	}
	d.cleanup()
	start := time.Now()
	var src Backup
	if k.BackupID == "" {
		var err error
		if src, err = d.defaultRestoreTarget(); err != nil {
			return nil, err
		}
	} else {
		if !backupIDPattern.MatchString(k.BackupID) {
			return nil, fmt.Errorf("%q is not a backup id (they look like bk-0123456789abcdef; see `deckhand-agent backups list`)", k.BackupID)
		}
		r, ok, err := d.getBackup(k.BackupID)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("no backup %s on this host (pruned, or taken on another host?); see `deckhand-agent backups list`", k.BackupID)
		}
		src = r
	}
	out := &task.DispatcherOutput{BackupID: src.ID}
	log := d.log.With("task", t.Spec.ID, "backup", src.ID)
	bm, err := d.loadBackup(src)
	if err != nil {
		return out, err
	}
	work := d.workDir(t.Spec.ID)
	if err := removeTree(work); err != nil {
		return out, err
	}
	stage := filepath.Join(work, "stage")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return out, err
	}
	cp := newCopier(filepath.Join(d.backupPath(src.ID), "tree"), stage)
	for _, dir := range bm.Dirs {
		if err := cp.tree(dir, d.cfg.IsImmutable); err != nil {
			d.abort(work, "")
			return out, fmt.Errorf("stage backup %s: %w", src.ID, err)
		}
	}
	m, err := cp.finish()
	if err != nil {
		d.abort(work, "")
		return out, err
	}
	flagged, err := d.addHostImmutable(stage)
	if err != nil {
		d.abort(work, "")
		return out, fmt.Errorf("stage the host's immutable files: %w", err)
	}
	if err := syncFS(work); err != nil {
		d.abort(work, "")
		return out, err
	}
	out.Files = m.Files()
	d.hit(FPRestoreAfterStage)
	b, err := d.takeBackup(t, BackupKindRestore, func(b *Backup) { b.RestoredFrom = src.ID })
	if err != nil {
		d.abort(work, "")
		return out, fmt.Errorf("back up the current config: %w; nothing on the host was changed", err)
	}
	if err := d.mark(t, markBackup, []byte(b.ID)); err != nil {
		d.abort(work, b.ID)
		return out, fmt.Errorf("journal: %w; nothing on the host was changed", err)
	}
	p, err := d.makePlan("restore", work, stage)
	if err != nil {
		d.abort(work, b.ID)
		return out, fmt.Errorf("%w; nothing on the host was changed", err)
	}
	p.BackupID, p.RestoredFrom, p.Files, p.Flagged = b.ID, src.ID, out.Files, flagged
	o, err := d.apply(ctx, t, p, out)
	if err == nil {
		o.Restored = true
		log.Info("backup restored", "files", out.Files, "safety_backup", b.ID, "took", time.Since(start))
	}
	return o, err
}
