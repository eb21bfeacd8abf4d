package dispatcher

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

// TestListBackupsFromFile reads the index the way `deckhand-agent backups
// list` does: read-only from the journal's file once the agent is gone,
// the same records ListBackups gives; refused quickly with ErrJournalLocked
// while a process holds the file; fs.ErrNotExist (and no file created)
// when the agent never ran there.
func TestListBackupsFromFile(t *testing.T) {
	e := newEnv(t, nil)
	e.useBolt()
	d := e.dispatcher()
	require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(nil))}, nil).Err())
	require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, nil).Err())
	want, err := ListBackups(e.cfg, e.j)
	require.NoError(t, err)
	require.Len(t, want, 2)
	db := filepath.Join(e.base, "data", journal.FileName)

	// The journal is open (as in a running agent): locked.
	start := time.Now()
	_, err = ListBackupsFromFile(e.cfg, db, 200*time.Millisecond)
	require.ErrorIs(t, err, ErrJournalLocked)
	require.Less(t, time.Since(start), 5*time.Second)

	require.NoError(t, e.j.Close())
	got, err := ListBackupsFromFile(e.cfg, db, time.Second)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, filepath.Join(e.cfg.BackupDir, got[0].ID), got[0].Path)
	require.Equal(t, OutcomeApplied, got[0].Outcome)
	require.True(t, !got[0].CreatedAt.Before(got[1].CreatedAt), "newest first")

	// The read-only open left nothing behind: the agent opens it again.
	j, err := journal.Open(filepath.Join(e.base, "data"))
	require.NoError(t, err)
	require.NoError(t, j.Close())

	missing := filepath.Join(t.TempDir(), journal.FileName)
	_, err = ListBackupsFromFile(e.cfg, missing, time.Second)
	require.True(t, errors.Is(err, fs.ErrNotExist), "got %v", err)
	require.NoFileExists(t, missing)
}
