package store

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testdata/schema-v1.db was written by the first released schema. Every
// later schema must open it (migrating) and read what it holds.
// Regenerate only for a new schema version: DECKHAND_WRITE_TESTDATA=1.
func TestOpensSchemaV1(t *testing.T) {
	src := filepath.Join("testdata", "schema-v1.db")
	if os.Getenv("DECKHAND_WRITE_TESTDATA") == "1" {
		dir := t.TempDir()
		s, err := Open(dir)
		require.NoError(t, err)
		_, err = s.NextEpoch()
		require.NoError(t, err)
		_, _, err = s.CreateTasks([]Task{{ID: "d1/pair1.deploy.d1/d1", HostID: "d1", Kind: "dispatcher_deploy", Spec: []byte{1, 2, 3}, CreatedAt: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}})
		require.NoError(t, err)
		_, _, err = s.FinishTask("d1/pair1.deploy.d1/d1", "d1", "succeeded", []byte{9}, time.Date(2026, 11, 27, 0, 1, 0, 0, time.UTC))
		require.NoError(t, err)
		require.NoError(t, s.PutAgent(Agent{HostID: "d1", Version: "v1"}))
		require.NoError(t, s.Close())
		copyFile(t, filepath.Join(dir, FileName), src)
	}
	dir := t.TempDir()
	copyFile(t, src, filepath.Join(dir, FileName))
	s, err := Open(dir)
	require.NoError(t, err)
	defer s.Close()
	v, err := s.Version()
	require.NoError(t, err)
	require.Equal(t, SchemaVersion, v)
	tk, err := s.Task("d1/pair1.deploy.d1/d1")
	require.NoError(t, err)
	require.True(t, tk.Done)
	require.Equal(t, []byte{9}, tk.Result)
	require.Equal(t, "dispatcher_deploy", tk.Kind)
	a, err := s.Agent("d1")
	require.NoError(t, err)
	require.Equal(t, "v1", a.Version)
	e, err := s.NextEpoch()
	require.NoError(t, err)
	require.Equal(t, uint64(2), e)
}

func copyFile(t *testing.T, from, to string) {
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	require.NoError(t, os.MkdirAll(filepath.Dir(to), 0o700))
	out, err := os.Create(to)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
