package dispatcher

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

func rules(v string) map[string]string {
	return map[string]string{"conf.d/rewrites/default_rewrite.rules": "RewriteEngine On\nRewriteRule ^/page$ /" + v + ".html [PT]\n"}
}

func TestRestoreDefaultAndNamed(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	initial := e.manifest()

	r1 := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v2")))}, nil)
	require.NoError(t, r1.Err())
	afterV2 := e.manifest()
	r2 := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v3")))}, nil)
	require.NoError(t, r2.Err())
	// A failed deployment is not "the most recent deployment" to undo.
	r3 := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/x.conf": "BOGUS\n"}))}, nil)
	require.Equal(t, task.StatusFailed, r3.Status)
	reloads := e.reloadCount()

	// Default: the backup taken before the most recent deployment that
	// went live (v3), i.e. the v2 tree.
	r := e.run(d, task.DispatcherRestore{}, nil)
	require.NoError(t, r.Err())
	out := dispOut(t, r)
	require.Equal(t, BackupID(r2.TaskID), out.BackupID)
	require.True(t, out.Restored)
	require.Equal(t, "Syntax OK\n", out.ConfigTest)
	require.Empty(t, afterV2.Diff(e.manifest()))
	require.Equal(t, reloads+1, e.reloadCount())

	// Named: the backup taken before the first deployment.
	r = e.run(d, task.DispatcherRestore{BackupID: BackupID(r1.TaskID)}, nil)
	require.NoError(t, r.Err())
	require.Empty(t, initial.Diff(e.manifest()), "exactly the original tree, orphan file included")
	require.Equal(t, hostHTTPDConf, e.read("conf/httpd.conf"))

	// Each restore took a safety backup of the tree it replaced.
	all, err := ListBackups(e.cfg, e.j)
	require.NoError(t, err)
	require.Len(t, all, 5)
	require.Equal(t, BackupKindRestore, all[0].Kind)
	require.Equal(t, BackupID(r1.TaskID), all[0].RestoredFrom)
	require.Equal(t, OutcomeApplied, all[0].Outcome)
	require.Equal(t, BackupID(r3.TaskID), all[2].ID)
	require.Equal(t, OutcomeRolledBack, all[2].Outcome)
	e.requireNoLeftovers()
}

func TestRestoreErrors(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	before := e.manifest()

	r := e.run(d, task.DispatcherRestore{}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "no deployment has gone live")

	r = e.run(d, task.DispatcherRestore{BackupID: "../../etc"}, nil)
	require.Contains(t, r.Error, `"../../etc" is not a backup id`)

	r = e.run(d, task.DispatcherRestore{BackupID: "bk-0000000000000000"}, nil)
	require.Contains(t, r.Error, "no backup bk-0000000000000000 on this host")

	// A damaged backup is refused before anything changes.
	dep := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v2")))}, nil)
	require.NoError(t, dep.Err())
	afterV2 := e.manifest()
	id := BackupID(dep.TaskID)
	require.NoError(t, os.WriteFile(filepath.Join(e.cfg.BackupDir, id, "tree", "conf.d", "orphan.conf"), []byte("tampered\n"), 0o644))
	r = e.run(d, task.DispatcherRestore{BackupID: id}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "backup "+id+" is damaged")
	require.Contains(t, r.Error, "changed conf.d/orphan.conf")
	require.Empty(t, afterV2.Diff(e.manifest()))
	require.NotEmpty(t, before.Diff(e.manifest()))

	// A restore whose config fails configtest is undone like a deployment.
	require.NoError(t, os.WriteFile(filepath.Join(e.cfg.BackupDir, id, "tree", "conf.d", "orphan.conf"), []byte("# a file no artifact has: a deploy must remove it\n"), 0o644))
	script := filepath.Join(e.base, "configtest.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\ntest -e \"$1/conf.d/orphan.conf\" && { echo 'AH00526: orphan is back' >&2; exit 1; }\necho 'Syntax OK'\n"), 0o755))
	r = e.run(d, task.DispatcherRestore{BackupID: id}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Equal(t, "AH00526: orphan is back\n", r.Error)
	out := dispOut(t, r)
	require.False(t, out.Restored, "the named backup did not go live")
	require.Equal(t, id, out.BackupID)
	require.Empty(t, afterV2.Diff(e.manifest()))
	e.requireNoLeftovers()
}

func TestBackupsPruneKeepsLastN(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BackupsKeep = 3 })
	d := e.dispatcher()
	var ids []string
	for _, v := range []string{"v1", "v2", "v3", "v2", "v1"} {
		r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules(v)))}, nil)
		require.NoError(t, r.Err())
		ids = append(ids, dispOut(t, r).BackupID)
	}
	all, err := ListBackups(e.cfg, e.j)
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, []string{ids[4], ids[3], ids[2]}, []string{all[0].ID, all[1].ID, all[2].ID}, "newest first")
	for _, id := range ids[:2] {
		require.NoDirExists(t, filepath.Join(e.cfg.BackupDir, id))
	}
	for _, b := range all {
		require.DirExists(t, b.Path)
		require.Equal(t, OutcomeApplied, b.Outcome)
		require.NotZero(t, b.Files)
		require.NotZero(t, b.Bytes)
		require.NotZero(t, b.CreatedAt)
	}
	// An orphan directory (a prune interrupted between index and files)
	// goes at the next task.
	orphan := filepath.Join(e.cfg.BackupDir, "bk-00000000000000aa")
	require.NoError(t, os.MkdirAll(orphan, 0o700))
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v3")))}, nil)
	require.NoError(t, r.Err())
	require.NoDirExists(t, orphan)
	e.requireNoLeftovers()
}

// TestBackupsIndexOnBolt: the index lives in the agent's bbolt journal
// (its bucket is created on first use) and survives a restart.
func TestBackupsIndexOnBolt(t *testing.T) {
	e := newEnv(t, nil)
	dataDir := t.TempDir()
	j, err := journal.Open(dataDir)
	require.NoError(t, err)
	e.j = j
	r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v2")))}, nil)
	require.NoError(t, r.Err())
	require.NoError(t, j.Close())

	j, err = journal.Open(dataDir)
	require.NoError(t, err)
	defer j.Close()
	all, err := ListBackups(e.cfg, j)
	require.NoError(t, err)
	require.Len(t, all, 1)
	require.Equal(t, BackupID(r.TaskID), all[0].ID)
	require.Equal(t, OutcomeApplied, all[0].Outcome)
}

// TestStartupCleanup: New removes what finished or unknown tasks left in
// the work and backup dirs, and nothing else.
func TestStartupCleanup(t *testing.T) {
	e := newEnv(t, nil)
	for _, p := range []string{filepath.Join(e.cfg.WorkDir, "tx-0123456789abcdef", "stage"), filepath.Join(e.cfg.BackupDir, ".tmp-bk-0123456789abcdef")} {
		require.NoError(t, os.MkdirAll(p, 0o700))
	}
	foreign := filepath.Join(e.cfg.WorkDir, "not-ours")
	require.NoError(t, os.MkdirAll(foreign, 0o700))
	e.dispatcher()
	require.NoDirExists(t, filepath.Join(e.cfg.WorkDir, "tx-0123456789abcdef"))
	require.NoDirExists(t, filepath.Join(e.cfg.BackupDir, ".tmp-bk-0123456789abcdef"))
	require.DirExists(t, foreign)
}
