package dispatcher

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

// inode returns a file's inode number and link count.
func inode(t *testing.T, p string) (uint64, uint64) {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return st.Ino, uint64(st.Nlink)
}

// backupFiles lists the regular files of a backup's tree, relative.
func backupFiles(t *testing.T, e *env, id string) []string {
	t.Helper()
	root := filepath.Join(e.cfg.BackupDir, id, "tree")
	var out []string
	require.NoError(t, filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		require.NoError(t, err)
		if de.Type().IsRegular() {
			r, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(r))
		}
		return nil
	}))
	require.NotEmpty(t, out)
	return out
}

// TestBackupIsHardLinksUntilTheSwap: a backup's files are hard links to
// the live ones (no inode created per file), except files chattr +i
// where the filesystem has it (copied); after a deployment goes live the
// old tree is gone and the backup's files have no other name.
func TestBackupIsHardLinksUntilTheSwap(t *testing.T) {
	e := newEnv(t, nil)
	e.useBolt()
	flagged := ""
	if p := filepath.Join(e.httpd, "conf/httpd.conf"); setImmutableAttr(p, true) == nil && immutableAttr(p) {
		flagged = "conf/httpd.conf"
	}
	d := e.dispatcher()
	hook := newCrashHook(FPAfterBackup, 1)
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, hook)
	require.Nil(t, r)
	bk, err := listBackups(e.j.Backend())
	require.NoError(t, err)
	require.Len(t, bk, 1)
	for _, rel := range backupFiles(t, e, bk[0].ID) {
		live, _ := inode(t, filepath.Join(e.httpd, rel))
		got, _ := inode(t, filepath.Join(e.cfg.BackupDir, bk[0].ID, "tree", rel))
		if rel == flagged {
			require.NotEqual(t, live, got, "%s is chattr +i: it cannot be linked and is copied", rel)
		} else {
			require.Equal(t, live, got, "%s is a hard link to the live file", rel)
		}
	}
	// Recovery (the task never reached the plan) keeps the live tree and
	// unshares the backup.
	res := e.restart(nil)
	require.Len(t, res, 1)
	for _, rel := range backupFiles(t, e, bk[0].ID) {
		_, n := inode(t, filepath.Join(e.cfg.BackupDir, bk[0].ID, "tree", rel))
		require.EqualValues(t, 1, n, "%s still shares its inode with the live tree", rel)
	}
	got, ok, err := d.getBackup(bk[0].ID)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = e.dispatcher().loadBackup(got)
	require.NoError(t, err)

	// A deployment that goes live: the old tree is deleted at commit, the
	// backup's links are the only names of those files.
	d = e.dispatcher()
	require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, nil).Err())
	bk, err = listBackups(e.j.Backend())
	require.NoError(t, err)
	require.Equal(t, OutcomeApplied, bk[0].Outcome)
	for _, rel := range backupFiles(t, e, bk[0].ID) {
		_, n := inode(t, filepath.Join(e.cfg.BackupDir, bk[0].ID, "tree", rel))
		require.EqualValues(t, 1, n, rel)
	}
	if flagged != "" {
		require.NoError(t, setImmutableAttr(filepath.Join(e.httpd, flagged), false))
	}
}

// TestRolledBackBackupIsUnshared: when configtest fails, the old tree —
// the one the backup links to — goes live again; the backup then gets
// files of its own, so editing the live config in place leaves the backup
// intact and restorable.
func TestRolledBackBackupIsUnshared(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": "RewriteEngine On\nBOGUS here\n"}))}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	bk, err := ListBackups(e.cfg, e.j)
	require.NoError(t, err)
	require.Equal(t, OutcomeRolledBack, bk[0].Outcome)
	for _, rel := range backupFiles(t, e, bk[0].ID) {
		live, _ := inode(t, filepath.Join(e.httpd, rel))
		got, n := inode(t, filepath.Join(e.cfg.BackupDir, bk[0].ID, "tree", rel))
		require.NotEqual(t, live, got, rel)
		require.EqualValues(t, 1, n, rel)
	}
	require.NoDirExists(t, filepath.Join(e.cfg.BackupDir, bk[0].ID, ".unshare"))
	// An in-place edit of the live config (an append, as `echo >>` does).
	f, err := os.OpenFile(filepath.Join(e.httpd, "conf.d/rewrites/default_rewrite.rules"), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString("# edited by hand\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = d.loadBackup(bk[0])
	require.NoError(t, err, "the backup is intact")
	r = e.run(d, task.DispatcherRestore{BackupID: bk[0].ID}, nil)
	require.NoError(t, r.Err())
	require.NotContains(t, e.read("conf.d/rewrites/default_rewrite.rules"), "edited by hand")
	e.requireNoLeftovers()
}

// TestUnshareIsResumable: unsharing interrupted after some files were
// replaced leaves a valid backup, and the next run finishes it.
func TestUnshareIsResumable(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	hook := newCrashHook(FPAfterBackup, 1)
	require.Nil(t, e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(nil))}, hook))
	bk, err := listBackups(e.j.Backend())
	require.NoError(t, err)
	files := backupFiles(t, e, bk[0].ID)
	require.Greater(t, len(files), 2)
	// Half done by hand, with a leftover temporary dir.
	tree := filepath.Join(e.cfg.BackupDir, bk[0].ID, "tree")
	p := filepath.Join(tree, filepath.FromSlash(files[0]))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p+".new", b, 0o644))
	require.NoError(t, os.Rename(p+".new", p))
	require.NoError(t, os.MkdirAll(filepath.Join(e.cfg.BackupDir, bk[0].ID, ".unshare"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(e.cfg.BackupDir, bk[0].ID, ".unshare", "0"), []byte("partial"), 0o600))
	_, err = d.loadBackup(bk[0])
	require.NoError(t, err, "valid while half unshared")
	require.NoError(t, d.unshareBackup(bk[0].ID))
	for _, rel := range files {
		_, n := inode(t, filepath.Join(tree, rel))
		require.EqualValues(t, 1, n, rel)
	}
	require.NoDirExists(t, filepath.Join(e.cfg.BackupDir, bk[0].ID, ".unshare"))
	_, err = d.loadBackup(bk[0])
	require.NoError(t, err)
}
