package dispatcher

import (
	"path/filepath"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
)

// ErrJournalLocked means another process holds the journal's database:
// normally the running agent, whose exclusive lock keeps readers out (a
// bbolt read-only open takes a shared lock and waits for it).
var ErrJournalLocked = kv.ErrLocked

// ListBackupsFromFile reads the backups index, newest first, from the
// agent journal's database file at dbPath without the agent, for
// `deckhand-agent backups list`. The file is opened read-only and never
// created or changed. When the agent holds the file, it gives up after
// timeout with an error matching ErrJournalLocked; a missing file is an
// error matching fs.ErrNotExist (the agent never ran with that data_dir).
func ListBackupsFromFile(cfg *Config, dbPath string, timeout time.Duration) ([]Backup, error) {
	b, err := kv.OpenBoltReadOnly(dbPath, timeout)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	all, err := listBackups(b)
	for i := range all {
		all[i].Path = filepath.Join(cfg.BackupDir, all[i].ID)
	}
	return all, err
}
