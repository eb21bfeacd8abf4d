package dispatcher

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// Bucket and keys of the backups index (see the package doc).
const (
	backupBucket        = "dispatcher_backups"
	backupSchemaKey     = "version"
	backupSchemaVersion = "1"
	backupKeyPrefix     = "backup/"
)

// Backup kinds and outcomes.
const (
	BackupKindDeploy  = "deploy"
	BackupKindRestore = "restore"

	OutcomePending     = "pending"     // the task is running
	OutcomeApplied     = "applied"     // the task's new config is live
	OutcomeRolledBack  = "rolled-back" // the task put this backup's config back
	OutcomeInterrupted = "interrupted" // the task stopped before changing the live tree
)

// Backup is one entry of the backups index: the config tree as it was
// before a deployment or restore task changed it.
type Backup struct {
	V      int    `json:"v"`
	ID     string `json:"id"`
	TaskID string `json:"task_id"`
	// Kind is the task that took it: "deploy" or "restore".
	Kind      string    `json:"kind"`
	CreatedAt time.Time `json:"created_at"`
	// Files counts files and symlinks; Bytes sums file sizes.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
	// Dirs are the managed dirs that existed.
	Dirs []string `json:"dirs"`
	// Outcome is what the task did: pending, applied, rolled-back or
	// interrupted.
	Outcome string `json:"outcome"`
	// Artifact is the sha256 of the artifact a deploy installed.
	Artifact string `json:"artifact,omitempty"`
	// RestoredFrom is the backup a restore task put back.
	RestoredFrom string `json:"restored_from,omitempty"`
	// Path is the backup's directory (filled by ListBackups, not stored).
	Path string `json:"-"`
}

// backupManifest is <backup_dir>/<id>/manifest.json.
type backupManifest struct {
	V         int       `json:"v"`
	ID        string    `json:"id"`
	TaskID    string    `json:"task_id"`
	CreatedAt time.Time `json:"created_at"`
	HTTPDDir  string    `json:"httpd_dir"`
	Dirs      []string  `json:"dirs"`
	Manifest
}

// BackupID is the id of the backup a task takes. It is derived from the
// task id, so a re-run of the task finds its backup instead of taking a
// second one of a tree it may already have changed.
func BackupID(taskID string) string {
	h := sha256.Sum256([]byte("backup\x00" + taskID))
	return "bk-" + hex.EncodeToString(h[:8])
}

// txID names a task's work dir.
func txID(taskID string) string {
	h := sha256.Sum256([]byte("tx\x00" + taskID))
	return "tx-" + hex.EncodeToString(h[:8])
}

// ListBackups returns the backups index, newest first, for
// `deckhand-agent backups list`. It reads only the journal's backend, so
// it works on a journal opened by the CLI while the agent is stopped.
func ListBackups(cfg *Config, j *journal.Journal) ([]Backup, error) {
	all, err := listBackups(j.Backend())
	for i := range all {
		all[i].Path = filepath.Join(cfg.BackupDir, all[i].ID)
	}
	return all, err
}

// TaskBackups is ListBackups in the shape HostFacts reports it.
func TaskBackups(cfg *Config, j *journal.Journal) ([]task.Backup, error) {
	all, err := ListBackups(cfg, j)
	out := make([]task.Backup, 0, len(all))
	for _, b := range all {
		out = append(out, task.Backup{ID: b.ID, TaskID: b.TaskID, Kind: b.Kind, CreatedAt: b.CreatedAt, Files: b.Files, Bytes: b.Bytes,
			Outcome: b.Outcome, Artifact: b.Artifact, RestoredFrom: b.RestoredFrom})
	}
	return out, err
}

func listBackups(b kv.Backend) ([]Backup, error) {
	var out []Backup
	err := b.View(func(tx kv.Tx) error {
		if v := tx.Get(backupBucket, backupSchemaKey); v != nil && string(v) != backupSchemaVersion {
			return fmt.Errorf("dispatcher backups index has schema %q; this agent reads %q", v, backupSchemaVersion)
		}
		return tx.ForEach(backupBucket, backupKeyPrefix, func(k string, v []byte) error {
			var r Backup
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("dispatcher backups index: %s: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	sort.SliceStable(out, func(a, b int) bool { return out[a].CreatedAt.After(out[b].CreatedAt) })
	return out, err
}

func (d *Dispatcher) getBackup(id string) (Backup, bool, error) {
	var r Backup
	found := false
	err := d.j.Backend().View(func(tx kv.Tx) error {
		v := tx.Get(backupBucket, backupKeyPrefix+id)
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &r)
	})
	return r, found, err
}

func (d *Dispatcher) putBackup(r Backup) error {
	r.V = 1
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return d.j.Backend().Update(func(tx kv.Tx) error {
		if err := tx.Put(backupBucket, backupSchemaKey, []byte(backupSchemaVersion)); err != nil {
			return err
		}
		return tx.Put(backupBucket, backupKeyPrefix+r.ID, raw)
	})
}

// setOutcome records what the task did with its backup; failure only
// costs accuracy of `backups list` and the default restore, so it is
// logged, not returned.
func (d *Dispatcher) setOutcome(id, outcome string) {
	if id == "" {
		return
	}
	r, ok, err := d.getBackup(id)
	if err == nil && ok && r.Outcome != outcome {
		r.Outcome = outcome
		err = d.putBackup(r)
	}
	if err != nil {
		d.log.Warn("cannot record the backup's outcome", "backup", id, "outcome", outcome, "error", err)
	}
}

func (d *Dispatcher) backupPath(id string) string { return filepath.Join(d.cfg.BackupDir, id) }

// takeBackup copies the live managed dirs to <backup_dir>/<id>/tree with
// a manifest, renames the finished copy into place and indexes it. A
// re-run of the same task returns the backup it already took.
func (d *Dispatcher) takeBackup(t *worker.Task, kind string, extra func(*Backup)) (Backup, error) {
	id := BackupID(t.Spec.ID)
	if r, ok, err := d.getBackup(id); err != nil {
		return Backup{}, err
	} else if ok {
		if _, err := os.Stat(filepath.Join(d.backupPath(id), "manifest.json")); err == nil {
			d.log.Info("re-run: using the backup this task already took", "backup", id)
			return r, nil
		}
	}
	final, tmp := d.backupPath(id), filepath.Join(d.cfg.BackupDir, ".tmp-"+id)
	if err := os.MkdirAll(d.cfg.BackupDir, 0o700); err != nil {
		return Backup{}, err
	}
	// Without an index record neither is a finished backup.
	if err := removeTree(tmp); err != nil {
		return Backup{}, err
	}
	if err := removeTree(final); err != nil {
		return Backup{}, err
	}
	start := time.Now()
	if err := os.MkdirAll(filepath.Join(tmp, "tree"), 0o700); err != nil {
		return Backup{}, err
	}
	// Hard links, not copies: creating an inode per file is what a backup
	// of thousands of files costs, and the live tree that shares them is
	// renamed away by the swap and deleted at commit. When the live tree
	// stays (rollback, abort), commit and abort unshare the backup.
	cp := newCopier(d.cfg.HTTPDDir, filepath.Join(tmp, "tree"))
	cp.link = true
	var dirs []string
	for _, dir := range d.cfg.ManagedDirs {
		if _, err := os.Lstat(filepath.Join(d.cfg.HTTPDDir, dir)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		dirs = append(dirs, dir)
		if err := cp.tree(dir, nil); err != nil {
			return Backup{}, fmt.Errorf("back up %s: %w", dir, err)
		}
	}
	m, err := cp.finish()
	if err != nil {
		return Backup{}, fmt.Errorf("back up: %w", err)
	}
	now := d.now().UTC()
	bm := backupManifest{V: 1, ID: id, TaskID: t.Spec.ID, CreatedAt: now, HTTPDDir: d.cfg.HTTPDDir, Dirs: dirs, Manifest: *m}
	raw, err := json.MarshalIndent(bm, "", " ")
	if err != nil {
		return Backup{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest.json"), raw, 0o600); err != nil {
		return Backup{}, err
	}
	if err := syncFS(tmp); err != nil {
		return Backup{}, err
	}
	d.hit(FPBackupCopied)
	if err := renameNoReplace(tmp, final); err != nil {
		return Backup{}, err
	}
	if err := syncDir(d.cfg.BackupDir); err != nil {
		return Backup{}, err
	}
	d.hit(FPBackupRenamed)
	r := Backup{ID: id, TaskID: t.Spec.ID, Kind: kind, CreatedAt: now, Files: m.Files(), Bytes: m.Bytes(), Dirs: dirs, Outcome: OutcomePending}
	if extra != nil {
		extra(&r)
	}
	if err := d.putBackup(r); err != nil {
		return Backup{}, fmt.Errorf("index backup %s: %w", id, err)
	}
	d.log.Info("backed up the config tree", "backup", id, "files", r.Files, "bytes", r.Bytes, "took", time.Since(start))
	d.hit(FPAfterBackup)
	return r, nil
}

// unshareBackup gives backup id files of its own. A backup's files are
// hard links to the live tree it was taken of (takeBackup); when that tree
// stays live — a rollback put it back, or the task ended before the swap —
// an in-place edit of the live config would change the backup too. Each
// file of the backup still linked elsewhere is copied into
// <backup>/.unshare, the copies are made durable, then each is renamed
// over its file: at every moment every name holds complete, identical
// content, so a crash leaves a valid backup and a re-run finishes the job.
// A failure is returned for the log: the backup is still valid, only
// shared.
func (d *Dispatcher) unshareBackup(id string) error {
	if id == "" {
		return nil
	}
	root := filepath.Join(d.backupPath(id), "tree")
	tmp := filepath.Join(d.backupPath(id), ".unshare")
	if err := removeTree(tmp); err != nil {
		return err
	}
	var shared []string
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return filepath.SkipDir
			}
			return err
		}
		if !de.Type().IsRegular() {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			shared = append(shared, p)
		}
		return nil
	})
	if err != nil || len(shared) == 0 {
		return err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	c := &copier{asRoot: os.Geteuid() == 0}
	copies := make([]string, len(shared))
	for i, p := range shared {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		q := filepath.Join(tmp, strconv.Itoa(i))
		if _, _, err := copyFile(p, q); err != nil {
			return err
		}
		if err := c.chown(q, fi); err != nil {
			return err
		}
		if err := os.Chmod(q, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
		copies[i] = q
	}
	if err := syncFS(tmp); err != nil {
		return err
	}
	for i, p := range shared {
		if err := os.Rename(copies[i], p); err != nil {
			return err
		}
	}
	if err := syncFS(root); err != nil {
		return err
	}
	d.log.Info("the backup no longer shares files with the live tree", "backup", id, "files", len(shared))
	return removeTree(tmp)
}

// dropUnindexedBackup removes what an interrupted takeBackup of this task
// left: the temporary copy, or a finished copy that never got its index
// record. An indexed backup is kept: it is a good copy of a tree that did
// not change.
func (d *Dispatcher) dropUnindexedBackup(taskID string) {
	id := BackupID(taskID)
	_ = removeTree(filepath.Join(d.cfg.BackupDir, ".tmp-"+id))
	if _, ok, err := d.getBackup(id); err == nil && !ok {
		_ = removeTree(d.backupPath(id))
	}
}

// loadBackup reads a backup's manifest and checks the copy against it, so
// a damaged backup is refused before anything is restored from it.
func (d *Dispatcher) loadBackup(r Backup) (*backupManifest, error) {
	raw, err := os.ReadFile(filepath.Join(d.backupPath(r.ID), "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", r.ID, err)
	}
	var bm backupManifest
	if err := json.Unmarshal(raw, &bm); err != nil {
		return nil, fmt.Errorf("backup %s: manifest: %w", r.ID, err)
	}
	have, err := TreeManifest(filepath.Join(d.backupPath(r.ID), "tree"), bm.Dirs)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", r.ID, err)
	}
	if diff := bm.Manifest.Diff(have); len(diff) > 0 {
		if len(diff) > 10 {
			diff = append(diff[:10], fmt.Sprintf("... and %d more", len(diff)-10))
		}
		return nil, fmt.Errorf("backup %s is damaged (it no longer matches its manifest): %s", r.ID, strings.Join(diff, "; "))
	}
	return &bm, nil
}

// prune deletes the oldest backups beyond backups_keep. The index record
// goes first, so a listed backup always has its files; a crash between the
// two leaves an unindexed directory that cleanup removes.
func (d *Dispatcher) prune() {
	all, err := listBackups(d.j.Backend())
	if err != nil {
		d.log.Warn("cannot list backups to prune", "error", err)
		return
	}
	for i := d.cfg.BackupsKeep; i < len(all); i++ {
		r := all[i]
		err := d.j.Backend().Update(func(tx kv.Tx) error { return tx.Delete(backupBucket, backupKeyPrefix+r.ID) })
		if err != nil {
			d.log.Warn("cannot prune backup", "backup", r.ID, "error", err)
			return
		}
		d.hit(FPPruneAfterIndex)
		if err := removeTree(d.backupPath(r.ID)); err != nil {
			d.log.Warn("backup unindexed but its files remain; they go at the next cleanup", "backup", r.ID, "error", err)
			continue
		}
		d.log.Info("pruned old backup", "backup", r.ID, "created_at", r.CreatedAt, "keep", d.cfg.BackupsKeep)
	}
}

// defaultRestoreTarget is the backup taken by the most recent deployment
// that went live: the config from before that deployment.
func (d *Dispatcher) defaultRestoreTarget() (Backup, error) {
	all, err := listBackups(d.j.Backend())
	if err != nil {
		return Backup{}, err
	}
	for _, r := range all {
		if r.Kind == BackupKindDeploy && r.Outcome == OutcomeApplied {
			return r, nil
		}
	}
	return Backup{}, errors.New("no deployment has gone live since the oldest kept backup, so there is no default backup to restore; name one (see `deckhand-agent backups list`)")
}
