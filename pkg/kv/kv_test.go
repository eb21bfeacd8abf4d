package kv

import (
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func backends(t *testing.T) map[string]Backend {
	b, err := OpenBolt(filepath.Join(t.TempDir(), "t.db"), "x")
	require.NoError(t, err)
	t.Cleanup(func() { b.Close() })
	return map[string]Backend{"bolt": b, "memory": NewMemory()}
}

func TestTxRollsBackOnError(t *testing.T) {
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			err := b.Update(func(tx Tx) error {
				require.NoError(t, tx.Put("x", "k", []byte("v")))
				return ErrDB
			})
			require.ErrorIs(t, err, ErrDB)
			require.NoError(t, b.View(func(tx Tx) error {
				require.Nil(t, tx.Get("x", "k"))
				return nil
			}))
		})
	}
}

func TestForEachPrefixOrderAndDelete(t *testing.T) {
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, b.Update(func(tx Tx) error {
				for _, k := range []string{"b/2", "a/1", "b/1", "c"} {
					require.NoError(t, tx.Put("x", k, []byte(k)))
				}
				return tx.Delete("x", "missing")
			}))
			var got []string
			require.NoError(t, b.View(func(tx Tx) error {
				return tx.ForEach("x", "b/", func(k string, v []byte) error {
					require.Equal(t, k, string(v))
					got = append(got, k)
					return nil
				})
			}))
			require.Equal(t, []string{"b/1", "b/2"}, got)
			require.NoError(t, b.Update(func(tx Tx) error { return tx.Delete("x", "b/1") }))
			got = nil
			require.NoError(t, b.Batch(func(tx Tx) error {
				return tx.ForEach("x", "", func(k string, _ []byte) error { got = append(got, k); return nil })
			}))
			require.Equal(t, []string{"a/1", "b/2", "c"}, got)
		})
	}
}

func TestReadOnlyViewRefusesWrites(t *testing.T) {
	for name, b := range backends(t) {
		t.Run(name, func(t *testing.T) {
			err := b.View(func(tx Tx) error { return tx.Put("x", "k", []byte("v")) })
			require.Error(t, err)
		})
	}
}

func TestOpenBoltReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	missing := filepath.Join(t.TempDir(), "none.db")
	_, err := OpenBoltReadOnly(missing, time.Second)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NoFileExists(t, missing, "a read-only open never creates the file")

	rw, err := OpenBolt(path, "x")
	require.NoError(t, err)
	require.NoError(t, rw.Update(func(tx Tx) error { return tx.Put("x", "k", []byte("v")) }))
	start := time.Now()
	_, err = OpenBoltReadOnly(path, 100*time.Millisecond)
	require.ErrorIs(t, err, ErrLocked, "held read-write by another opener")
	require.Less(t, time.Since(start), 5*time.Second)
	require.NoError(t, rw.Close())

	ro, err := OpenBoltReadOnly(path, time.Second)
	require.NoError(t, err)
	defer ro.Close()
	require.NoError(t, ro.View(func(tx Tx) error {
		require.Equal(t, []byte("v"), tx.Get("x", "k"))
		return nil
	}))
	require.Error(t, ro.Update(func(tx Tx) error { return tx.Put("x", "k", []byte("w")) }))
	require.Error(t, ro.Batch(func(tx Tx) error { return tx.Delete("x", "k") }))
}
