package kv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// boltBackend is the default Backend: one bbolt file.
type boltBackend struct {
	db *bolt.DB
}

// OpenBolt opens (creating if needed) the bbolt file at path and creates
// the named buckets. Another process holding the file makes this fail after
// a short wait with an error that says so, instead of hanging.
func OpenBolt(path string, buckets ...string) (Backend, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: the file is locked: is another deckhand process using %s?", path, filepath.Dir(path))
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// Many agents report results at once; let bbolt group them into fewer
	// fsyncs.
	db.MaxBatchDelay = 5 * time.Millisecond
	db.MaxBatchSize = 2000
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	return &boltBackend{db: db}, nil
}

// ErrLocked means another process holds a bbolt file read-write (its
// exclusive lock keeps a read-only open waiting).
var ErrLocked = errors.New("the file is locked by another process")

// OpenBoltReadOnly opens an existing bbolt file for reading only, e.g. an
// agent's journal from a CLI while the agent is stopped. It never creates
// the file (a missing one is an error matching fs.ErrNotExist) nor writes
// it: Update and Batch fail. If another process holds the file it gives
// up after timeout with an error matching ErrLocked.
func OpenBoltReadOnly(path string, timeout time.Duration) (Backend, error) {
	// bbolt would create a missing file even read-only.
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &boltBackend{db: db}, nil
}

func (b *boltBackend) View(fn func(Tx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *boltBackend) Update(fn func(Tx) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *boltBackend) Batch(fn func(Tx) error) error {
	return b.db.Batch(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *boltBackend) Close() error { return b.db.Close() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(name string, create bool) (*bolt.Bucket, error) {
	bk := t.tx.Bucket([]byte(name))
	if bk == nil && create {
		return t.tx.CreateBucketIfNotExists([]byte(name))
	}
	return bk, nil
}

func (t boltTx) Get(bucket, key string) []byte {
	bk, _ := t.bucket(bucket, false)
	if bk == nil {
		return nil
	}
	return bk.Get([]byte(key))
}

func (t boltTx) Put(bucket, key string, value []byte) error {
	bk, err := t.bucket(bucket, true)
	if err != nil {
		return err
	}
	return bk.Put([]byte(key), value)
}

func (t boltTx) Delete(bucket, key string) error {
	bk, _ := t.bucket(bucket, false)
	if bk == nil {
		return nil
	}
	return bk.Delete([]byte(key))
}

func (t boltTx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	bk, _ := t.bucket(bucket, false)
	if bk == nil {
		return nil
	}
	c := bk.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}
