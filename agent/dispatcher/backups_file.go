package dispatcher

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrJournalLocked means another process holds the journal's database:
// normally the running agent, whose exclusive lock keeps readers out (a
// bbolt read-only open takes a shared lock and waits for it).
var ErrJournalLocked = errors.New("the journal is locked by another process")

// ListBackupsFromFile reads the backups index, newest first, from the
// agent journal's database file at dbPath without the agent, for
// `deckhand-agent backups list`. The file is opened read-only and never
// created or changed. When the agent holds the file, it gives up after
// timeout with an error matching ErrJournalLocked; a missing file is an
// error matching fs.ErrNotExist (the agent never ran with that data_dir).
func ListBackupsFromFile(cfg *Config, dbPath string, timeout time.Duration) ([]Backup, error) {
	// bbolt would create a missing file even read-only; a listing must not.
	if _, err := os.Stat(dbPath); err != nil {
		return nil, err
	}
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", dbPath, ErrJournalLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	defer db.Close()
	all, err := listBackups(roBolt{db})
	for i := range all {
		all[i].Path = filepath.Join(cfg.BackupDir, all[i].ID)
	}
	return all, err
}

// roBolt is a read-only kv.Backend over a bbolt database opened with
// ReadOnly (pkg/kv opens its files read-write, which needs the exclusive
// lock the running agent holds).
type roBolt struct{ db *bolt.DB }

var errReadOnly = errors.New("the journal is open read-only")

func (b roBolt) View(fn func(kv.Tx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(roTx{tx}) })
}
func (roBolt) Update(func(kv.Tx) error) error { return errReadOnly }
func (roBolt) Batch(func(kv.Tx) error) error  { return errReadOnly }
func (b roBolt) Close() error                 { return b.db.Close() }

type roTx struct{ tx *bolt.Tx }

func (t roTx) Get(bucket, key string) []byte {
	if bk := t.tx.Bucket([]byte(bucket)); bk != nil {
		return bk.Get([]byte(key))
	}
	return nil
}

func (roTx) Put(string, string, []byte) error { return errReadOnly }
func (roTx) Delete(string, string) error      { return errReadOnly }

func (t roTx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	bk := t.tx.Bucket([]byte(bucket))
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

var _ kv.Backend = roBolt{}
