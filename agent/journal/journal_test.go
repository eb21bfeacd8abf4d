package journal

import (
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/stretchr/testify/require"
)

func journals(t *testing.T) map[string]func(t *testing.T) *Journal {
	return map[string]func(t *testing.T) *Journal{
		"bolt": func(t *testing.T) *Journal {
			j, err := Open(t.TempDir())
			require.NoError(t, err)
			t.Cleanup(func() { j.Close() })
			return j
		},
		"memory": func(t *testing.T) *Journal {
			j, err := New(kv.NewMemory())
			require.NoError(t, err)
			return j
		},
	}
}

func TestLifecycle(t *testing.T) {
	for name, open := range journals(t) {
		t.Run(name, func(t *testing.T) {
			j := open(t)
			e, created, err := j.Begin("t1", "host_facts", []byte{1, 2}, 7)
			require.NoError(t, err)
			require.True(t, created)
			require.Equal(t, Running, e.State)
			require.Equal(t, uint64(7), e.Epoch)

			// A re-sent task is recognised and nothing changes.
			e, created, err = j.Begin("t1", "host_facts", []byte{9}, 8)
			require.NoError(t, err)
			require.False(t, created)
			require.Equal(t, []byte{1, 2}, e.Spec)

			e, err = j.StartAttempt("t1")
			require.NoError(t, err)
			require.Equal(t, 1, e.Attempts)
			_, err = j.AddMark("t1", "backup", []byte("b1"))
			require.NoError(t, err)
			e, err = j.AddMark("t1", "extract", nil)
			require.NoError(t, err)
			require.True(t, e.Has("backup"))
			m, ok := e.Mark("backup")
			require.True(t, ok)
			require.Equal(t, []byte("b1"), m.Data)
			require.False(t, e.Has("reload"))

			require.ErrorContains(t, j.Ack("t1"), "no result yet")

			held, err := j.List(Running, Finished)
			require.NoError(t, err)
			require.Len(t, held, 1)

			e, err = j.Finish("t1", "succeeded", []byte("r"))
			require.NoError(t, err)
			require.Equal(t, Finished, e.State)
			// The first result wins.
			e, err = j.Finish("t1", "failed", []byte("other"))
			require.NoError(t, err)
			require.Equal(t, []byte("r"), e.Result)
			_, err = j.AddMark("t1", "late", nil)
			require.Error(t, err)

			require.NoError(t, j.Ack("t1"))
			require.NoError(t, j.Ack("t1"))
			e, err = j.Get("t1")
			require.NoError(t, err)
			require.Equal(t, Acked, e.State)
			held, err = j.List(Running, Finished)
			require.NoError(t, err)
			require.Empty(t, held)

			n, err := j.Prune(time.Now().Add(time.Hour))
			require.NoError(t, err)
			require.Equal(t, 1, n)
			_, err = j.Get("t1")
			require.ErrorIs(t, err, ErrNotFound)
			require.ErrorIs(t, j.Ack("nope"), ErrNotFound)
		})
	}
}

func TestObserveEpoch(t *testing.T) {
	for name, open := range journals(t) {
		t.Run(name, func(t *testing.T) {
			j := open(t)
			prev, err := j.ObserveEpoch(3)
			require.NoError(t, err)
			require.Equal(t, uint64(0), prev)
			prev, err = j.ObserveEpoch(2)
			require.NoError(t, err)
			require.Equal(t, uint64(3), prev)
			prev, err = j.ObserveEpoch(5)
			require.NoError(t, err)
			require.Equal(t, uint64(3), prev)
		})
	}
}

func TestSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir)
	require.NoError(t, err)
	_, _, err = j.Begin("a", "host_facts", nil, 1)
	require.NoError(t, err)
	_, err = j.Finish("a", "succeeded", []byte("r"))
	require.NoError(t, err)
	require.NoError(t, j.Close())

	j, err = Open(dir)
	require.NoError(t, err)
	defer j.Close()
	e, err := j.Get("a")
	require.NoError(t, err)
	require.Equal(t, Finished, e.State)
	require.Equal(t, []byte("r"), e.Result)
}

func TestFailingDisk(t *testing.T) {
	_, err := New(kv.NewFailing())
	require.ErrorIs(t, err, kv.ErrDB)
	j := &Journal{b: kv.NewFailing(), now: time.Now}
	_, _, err = j.Begin("a", "k", nil, 1)
	require.ErrorIs(t, err, kv.ErrDB)
	_, err = j.Finish("a", "succeeded", nil)
	require.ErrorIs(t, err, kv.ErrDB)
}

func TestDriftQueue(t *testing.T) {
	for name, open := range journals(t) {
		t.Run(name, func(t *testing.T) {
			j := open(t)
			id1, err := j.AddDrift(func(id string) ([]byte, error) { return []byte("r-" + id), nil })
			require.NoError(t, err)
			id2, err := j.AddDrift(func(id string) ([]byte, error) { return []byte("r-" + id), nil })
			require.NoError(t, err)
			require.Less(t, id1, id2)
			p, err := j.PendingDrift()
			require.NoError(t, err)
			require.Equal(t, []DriftEntry{{ID: id1, Report: []byte("r-" + id1)}, {ID: id2, Report: []byte("r-" + id2)}}, p)
			require.NoError(t, j.AckDrift(id1))
			require.NoError(t, j.AckDrift("unknown"))
			p, err = j.PendingDrift()
			require.NoError(t, err)
			require.Len(t, p, 1)
		})
	}
}
