package store

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/stretchr/testify/require"
)

// backends runs every Store test against each Backend implementation.
func backends(t *testing.T) map[string]func(t *testing.T) *Store {
	return map[string]func(t *testing.T) *Store{
		"bolt": func(t *testing.T) *Store {
			s, err := Open(t.TempDir())
			require.NoError(t, err)
			t.Cleanup(func() { s.Close() })
			return s
		},
		"memory": func(t *testing.T) *Store {
			s, err := New(kv.NewMemory())
			require.NoError(t, err)
			return s
		},
	}
}

func TestEpochIncreases(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			e1, err := s.NextEpoch()
			require.NoError(t, err)
			e2, err := s.NextEpoch()
			require.NoError(t, err)
			require.Equal(t, e1+1, e2)
		})
	}
}

func TestTaskLifecycle(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			now := time.Now().UTC()
			in := []Task{
				{ID: "e/s/h1", HostID: "h1", Kind: "host_facts", Spec: []byte{1}, CreatedAt: now},
				{ID: "e/s/h2", HostID: "h2", Kind: "host_facts", Spec: []byte{2}, CreatedAt: now},
			}
			got, created, err := s.CreateTasks(in)
			require.NoError(t, err)
			require.Equal(t, []bool{true, true}, created)
			require.Equal(t, "h1", got[0].HostID)

			// Re-creating is idempotent and returns the stored task.
			again := in[0]
			again.Spec = []byte{9}
			got, created, err = s.CreateTasks([]Task{again})
			require.NoError(t, err)
			require.Equal(t, []bool{false}, created)
			require.Equal(t, []byte{1}, got[0].Spec)

			open1, err := s.OpenTasks("h1")
			require.NoError(t, err)
			require.Len(t, open1, 1)
			require.Equal(t, "e/s/h1", open1[0].ID)

			tk, first, err := s.FinishTask("e/s/h1", "h1", "succeeded", []byte("r1"), now)
			require.NoError(t, err)
			require.True(t, first)
			require.True(t, tk.Done)

			// A second result is a duplicate; the first result stays.
			tk, first, err = s.FinishTask("e/s/h1", "h1", "failed", []byte("r2"), now)
			require.NoError(t, err)
			require.False(t, first)
			require.Equal(t, []byte("r1"), tk.Result)
			require.Equal(t, 1, tk.Duplicates)

			open1, err = s.OpenTasks("h1")
			require.NoError(t, err)
			require.Empty(t, open1)
			open2, err := s.OpenTasks("h2")
			require.NoError(t, err)
			require.Len(t, open2, 1)

			_, _, err = s.FinishTask("nope", "h1", "succeeded", nil, now)
			require.ErrorIs(t, err, ErrNotFound)
			_, _, err = s.FinishTask("e/s/h2", "h1", "succeeded", nil, now)
			require.ErrorIs(t, err, ErrWrongHost)
			_, err = s.Task("nope")
			require.ErrorIs(t, err, ErrNotFound)
		})
	}
}

func TestOpenTasksDoNotLeakAcrossHostPrefixes(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			_, _, err := s.CreateTasks([]Task{{ID: "a", HostID: "pub1"}, {ID: "b", HostID: "pub10"}})
			require.NoError(t, err)
			got, err := s.OpenTasks("pub1")
			require.NoError(t, err)
			require.Len(t, got, 1)
			require.Equal(t, "a", got[0].ID)
		})
	}
}

func TestConcurrentFinishCountsOneFirst(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			_, _, err := s.CreateTasks([]Task{{ID: "x", HostID: "h"}})
			require.NoError(t, err)
			var wg sync.WaitGroup
			var mu sync.Mutex
			firsts := 0
			for i := 0; i < 20; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, first, err := s.FinishTask("x", "h", "succeeded", []byte("r"), time.Now())
					require.NoError(t, err)
					if first {
						mu.Lock()
						firsts++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			require.Equal(t, 1, firsts)
			tk, err := s.Task("x")
			require.NoError(t, err)
			require.Equal(t, 19, tk.Duplicates)
		})
	}
}

func TestAgents(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			require.NoError(t, s.PutAgent(Agent{HostID: "b", Version: "1"}))
			require.NoError(t, s.PutAgent(Agent{HostID: "a", Version: "2"}))
			all, err := s.Agents()
			require.NoError(t, err)
			require.Len(t, all, 2)
			require.Equal(t, "a", all[0].HostID)
			a, err := s.Agent("b")
			require.NoError(t, err)
			require.Equal(t, "1", a.Version)
			_, err = s.Agent("zz")
			require.ErrorIs(t, err, ErrNotFound)
		})
	}
}

func TestBoltPersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	_, err = s.NextEpoch()
	require.NoError(t, err)
	_, _, err = s.CreateTasks([]Task{{ID: "t", HostID: "h"}})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	s, err = Open(dir)
	require.NoError(t, err)
	defer s.Close()
	e, err := s.NextEpoch()
	require.NoError(t, err)
	require.Equal(t, uint64(2), e)
	open, err := s.OpenTasks("h")
	require.NoError(t, err)
	require.Len(t, open, 1)
}

func TestBoltLockedByAnotherProcessSaysSo(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	require.NoError(t, err)
	defer s.Close()
	// bbolt's flock is per open file description, so a second open in the
	// same process contends like a second process would.
	_, err = kv.OpenBolt(filepath.Join(dir, FileName))
	require.ErrorContains(t, err, "is another deckhand process using")
}

func TestNewerSchemaRefused(t *testing.T) {
	b := kv.NewMemory()
	require.NoError(t, b.Update(func(tx Tx) error { return tx.Put(bucketMeta, "version", []byte("99")) }))
	_, err := New(b)
	require.ErrorContains(t, err, "newer deckhand-server (schema 99)")
}

func TestFailingBackendSurfacesErrors(t *testing.T) {
	_, err := New(kv.NewFailing())
	require.ErrorIs(t, err, kv.ErrDB)
	s := &Store{b: kv.NewFailing()}
	_, err = s.NextEpoch()
	require.ErrorIs(t, err, kv.ErrDB)
	_, _, err = s.CreateTasks([]Task{{ID: "a", HostID: "h"}})
	require.ErrorIs(t, err, kv.ErrDB)
	_, _, err = s.FinishTask("a", "h", "succeeded", nil, time.Now())
	require.ErrorIs(t, err, kv.ErrDB)
}
