package hostfacts

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/pkg/task"
)

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	rel := filepath.Join(dir, "os-release")
	require.NoError(t, os.WriteFile(rel, []byte("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"), 0o644))
	script := filepath.Join(dir, "fakectl")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho 'Server version: Apache/2.4.99 (Test)'\necho 'Server built: now'\n"), 0o755))
	h := &Handler{DataDir: dir, ApacheCtl: []string{script}, AgentVersion: "v1", OSRelease: rel}
	f, err := h.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, "Debian GNU/Linux 12 (bookworm)", f.OS)
	require.Equal(t, "Apache/2.4.99 (Test)", f.ApacheVersion)
	require.Empty(t, f.ApacheError)
	require.NotEmpty(t, f.Hostname)
	require.Contains(t, f.Kernel, "Linux")
	require.Greater(t, f.DataTotal, uint64(0))
	require.LessOrEqual(t, f.DataFreeBytes, f.DataTotal)
	require.Equal(t, "v1", f.AgentVersion)
}

func TestApacheMissingIsAFact(t *testing.T) {
	h := &Handler{ApacheCtl: []string{"/nonexistent/apachectl", "-v"}}
	f, err := h.Collect(context.Background())
	require.NoError(t, err)
	require.Empty(t, f.ApacheVersion)
	require.NotEmpty(t, f.ApacheError)
}

func TestApacheFailingCommandReported(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "badctl")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho broken >&2\nexit 3\n"), 0o755))
	v, problem := apacheVersion(context.Background(), []string{script})
	require.Empty(t, v)
	require.Contains(t, problem, "broken")
}

func TestRealApacheVersionWhenInstalled(t *testing.T) {
	if _, err := exec.LookPath("apache2ctl"); err != nil {
		if os.Getenv("DECKHAND_REQUIRE_REAL") == "1" {
			t.Fatal("apache2ctl is not installed and DECKHAND_REQUIRE_REAL=1")
		}
		t.Skip("apache2ctl not installed")
	}
	v, problem := apacheVersion(context.Background(), []string{"apache2ctl", "-v"})
	require.Empty(t, problem)
	require.Contains(t, v, "Apache/2.4")
}

func TestMissingDataDirIsAnError(t *testing.T) {
	h := &Handler{DataDir: "/nonexistent/dir", ApacheCtl: []string{"true"}}
	_, err := h.Collect(context.Background())
	require.ErrorContains(t, err, "statfs /nonexistent/dir")
}

func TestDispatcherBackupsAreFacts(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	list := []task.Backup{{ID: "bk-1", TaskID: "e/deploy/d1", Kind: "deploy", CreatedAt: at, Files: 12, Bytes: 3400, Outcome: "applied", Artifact: "abc"}}
	h := &Handler{ApacheCtl: []string{"/nonexistent/apachectl"}, Backups: func() ([]task.Backup, error) { return list, nil }}
	f, err := h.Collect(context.Background())
	require.NoError(t, err)
	require.Equal(t, list, f.Backups)
	require.Empty(t, f.BackupsError)

	// An unreadable index is reported in the facts; the facts still answer.
	h.Backups = func() ([]task.Backup, error) { return nil, errors.New("backups index has schema \"9\"") }
	f, err = h.Collect(context.Background())
	require.NoError(t, err)
	require.Empty(t, f.Backups)
	require.Equal(t, "backups index has schema \"9\"", f.BackupsError)
	require.NotEmpty(t, f.Hostname)

	// Agents without a dispatcher say nothing about backups.
	f, err = (&Handler{ApacheCtl: []string{"/nonexistent/apachectl"}}).Collect(context.Background())
	require.NoError(t, err)
	require.Nil(t, f.Backups)
	require.Empty(t, f.BackupsError)
}
