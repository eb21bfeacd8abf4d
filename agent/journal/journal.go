// Package journal is the agent's durable memory: every task it received,
// written before any work starts, the progress marks its handler passed,
// and its result until the control plane acks it. It is what lets an agent
// restart, or lose its stream, without repeating or losing a step.
//
// Schema (bucket / key -> value), version 1, in <data_dir>/deckhand-agent.db:
//
//	meta/
//	  version        -> "1"
//	  max_epoch      -> highest server epoch seen (decimal)
//	tasks/
//	  <task id>      -> Entry (JSON; spec and result in wire form)
//	drift/
//	  <id, 20 digits> -> a drift report in wire form, until the server acks it
//
// Other agent packages (dispatcher backups) add buckets of their own
// through Backend and document them where they are defined.
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
)

// SchemaVersion is the journal schema this binary reads and writes.
const SchemaVersion = 1

// FileName is the bbolt file inside the agent's data dir.
const FileName = "deckhand-agent.db"

const (
	bucketMeta  = "meta"
	bucketTasks = "tasks"
	bucketDrift = "drift"
)

// ErrNotFound is returned when a task is not in the journal.
var ErrNotFound = kv.ErrNotFound

// State is where a task is in its life on this agent.
type State string

const (
	// Running: received and journaled; work started or about to.
	Running State = "running"
	// Finished: the result is journaled and not yet acked by the server.
	Finished State = "finished"
	// Acked: the server stored the result. The entry is kept (until
	// pruned) so a re-sent task is answered from here, not run again.
	Acked State = "acked"
)

// Mark is one progress mark a handler journaled.
type Mark struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
	Data []byte    `json:"data,omitempty"`
}

// Entry is one task in the journal.
type Entry struct {
	V          int       `json:"v"`
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	Spec       []byte    `json:"spec"` // wire form, as received
	State      State     `json:"state"`
	ReceivedAt time.Time `json:"received_at"`
	Epoch      uint64    `json:"epoch"`
	Attempts   int       `json:"attempts"`
	Marks      []Mark    `json:"marks,omitempty"`
	Status     string    `json:"status,omitempty"`
	Result     []byte    `json:"result,omitempty"` // wire form
	FinishedAt time.Time `json:"finished_at,omitzero"`
	AckedAt    time.Time `json:"acked_at,omitzero"`
}

// Has reports whether the entry has a mark with the given name.
func (e Entry) Has(mark string) bool {
	_, ok := e.Mark(mark)
	return ok
}

// Mark returns the last mark with the given name.
func (e Entry) Mark(name string) (Mark, bool) {
	for i := len(e.Marks) - 1; i >= 0; i-- {
		if e.Marks[i].Name == name {
			return e.Marks[i], true
		}
	}
	return Mark{}, false
}

// Journal is safe for concurrent use.
type Journal struct {
	b   kv.Backend
	now func() time.Time
}

// Open opens the journal in dataDir.
func Open(dataDir string, extraBuckets ...string) (*Journal, error) {
	b, err := kv.OpenBolt(filepath.Join(dataDir, FileName), append([]string{bucketMeta, bucketTasks}, extraBuckets...)...)
	if err != nil {
		return nil, err
	}
	j, err := New(b)
	if err != nil {
		b.Close()
		return nil, err
	}
	return j, nil
}

// New wraps a backend, initialising or checking its schema.
func New(b kv.Backend) (*Journal, error) {
	j := &Journal{b: b, now: time.Now}
	err := b.Update(func(tx kv.Tx) error {
		raw := tx.Get(bucketMeta, "version")
		if raw == nil {
			return tx.Put(bucketMeta, "version", []byte(strconv.Itoa(SchemaVersion)))
		}
		v, err := strconv.Atoi(string(raw))
		if err != nil {
			return fmt.Errorf("journal: schema version %q is not a number", raw)
		}
		if v > SchemaVersion {
			return fmt.Errorf("journal: written by a newer deckhand-agent (schema %d); this binary knows schema %d at most", v, SchemaVersion)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// Backend exposes the kv backend for agent packages with their own buckets.
func (j *Journal) Backend() kv.Backend { return j.b }

// Close closes the backend.
func (j *Journal) Close() error { return j.b.Close() }

func get(tx kv.Tx, id string) (Entry, error) {
	raw := tx.Get(bucketTasks, id)
	if raw == nil {
		return Entry{}, ErrNotFound
	}
	var e Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return Entry{}, fmt.Errorf("journal: decode task %s: %w", id, err)
	}
	return e, nil
}

func put(tx kv.Tx, e Entry) error {
	e.V = 1
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return tx.Put(bucketTasks, e.ID, raw)
}

// update applies fn to the entry id in one transaction.
func (j *Journal) update(id string, fn func(*Entry) error) (Entry, error) {
	var out Entry
	err := j.b.Update(func(tx kv.Tx) error {
		e, err := get(tx, id)
		if err != nil {
			return err
		}
		if err := fn(&e); err != nil {
			return err
		}
		out = e
		return put(tx, e)
	})
	return out, err
}

// Begin journals a received task. If the id is already journaled, the
// stored entry is returned with created=false and nothing changes: that is
// how a re-sent task is recognised.
func (j *Journal) Begin(id, kind string, spec []byte, epoch uint64) (e Entry, created bool, err error) {
	return j.begin(id, kind, spec, epoch, false)
}

// BeginAttempt is Begin followed by StartAttempt in one commit, for a task
// whose work starts right away: one fsync fewer on every task's path.
func (j *Journal) BeginAttempt(id, kind string, spec []byte, epoch uint64) (e Entry, created bool, err error) {
	return j.begin(id, kind, spec, epoch, true)
}

func (j *Journal) begin(id, kind string, spec []byte, epoch uint64, attempt bool) (e Entry, created bool, err error) {
	if id == "" {
		return Entry{}, false, errors.New("journal: task without id")
	}
	err = j.b.Update(func(tx kv.Tx) error {
		cur, err := get(tx, id)
		if err == nil {
			e, created = cur, false
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		e = Entry{ID: id, Kind: kind, Spec: append([]byte{}, spec...), State: Running, ReceivedAt: j.now().UTC(), Epoch: epoch}
		if attempt {
			e.Attempts = 1
		}
		created = true
		return put(tx, e)
	})
	return e, created, err
}

// StartAttempt counts one more start of the task's work and returns the
// entry. Attempts above 1 mean an earlier run was interrupted.
func (j *Journal) StartAttempt(id string) (Entry, error) {
	return j.update(id, func(e *Entry) error {
		if e.State != Running {
			return fmt.Errorf("journal: task %s is %s, not running", id, e.State)
		}
		e.Attempts++
		return nil
	})
}

// AddMark journals a progress mark; it is durable when AddMark returns.
func (j *Journal) AddMark(id, name string, data []byte) (Entry, error) {
	return j.update(id, func(e *Entry) error {
		if e.State != Running {
			return fmt.Errorf("journal: task %s is %s; no marks after the result", id, e.State)
		}
		e.Marks = append(e.Marks, Mark{Name: name, At: j.now().UTC(), Data: append([]byte(nil), data...)})
		return nil
	})
}

// Finish journals the task's result. A task that already has one keeps it
// (the first result wins) and that stored entry is returned.
func (j *Journal) Finish(id, status string, result []byte) (Entry, error) {
	return j.update(id, func(e *Entry) error {
		if e.State != Running {
			return nil
		}
		e.State, e.Status, e.Result, e.FinishedAt = Finished, status, append([]byte{}, result...), j.now().UTC()
		return nil
	})
}

// Ack records that the server stored the result. Acking an unknown or a
// still-running task is an error; acking twice is not.
func (j *Journal) Ack(id string) error {
	_, err := j.update(id, func(e *Entry) error {
		switch e.State {
		case Acked:
			return nil
		case Running:
			return fmt.Errorf("journal: ack for task %s that has no result yet", id)
		}
		e.State, e.AckedAt = Acked, j.now().UTC()
		return nil
	})
	return err
}

// Get returns one entry or ErrNotFound.
func (j *Journal) Get(id string) (Entry, error) {
	var e Entry
	err := j.b.View(func(tx kv.Tx) error {
		var err error
		e, err = get(tx, id)
		return err
	})
	return e, err
}

// List returns entries in the given states (all when none given), oldest
// first.
func (j *Journal) List(states ...State) ([]Entry, error) {
	want := map[State]bool{}
	for _, s := range states {
		want[s] = true
	}
	var out []Entry
	err := j.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketTasks, "", func(k string, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("journal: decode task %s: %w", k, err)
			}
			if len(want) == 0 || want[e.State] {
				out = append(out, e)
			}
			return nil
		})
	})
	sort.SliceStable(out, func(a, b int) bool { return out[a].ReceivedAt.Before(out[b].ReceivedAt) })
	return out, err
}

// Prune deletes acked entries acked before cutoff and returns how many.
func (j *Journal) Prune(cutoff time.Time) (int, error) {
	n := 0
	err := j.b.Update(func(tx kv.Tx) error {
		n = 0
		var del []string
		err := tx.ForEach(bucketTasks, "", func(k string, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.State == Acked && e.AckedAt.Before(cutoff) {
				del = append(del, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range del {
			if err := tx.Delete(bucketTasks, k); err != nil {
				return err
			}
		}
		n = len(del)
		return nil
	})
	return n, err
}

// ObserveEpoch records a server epoch and returns the highest seen before
// this call.
func (j *Journal) ObserveEpoch(epoch uint64) (prev uint64, err error) {
	err = j.b.Update(func(tx kv.Tx) error {
		prev = 0
		if raw := tx.Get(bucketMeta, "max_epoch"); raw != nil {
			var perr error
			if prev, perr = strconv.ParseUint(string(raw), 10, 64); perr != nil {
				return fmt.Errorf("journal: max_epoch %q is not a number", raw)
			}
		}
		if epoch > prev {
			return tx.Put(bucketMeta, "max_epoch", []byte(strconv.FormatUint(epoch, 10)))
		}
		return nil
	})
	return prev, err
}

// AddDrift journals a drift report; build is given the report's id and
// returns its encoded form. Durable when AddDrift returns.
func (j *Journal) AddDrift(build func(id string) ([]byte, error)) (string, error) {
	var id string
	err := j.b.Update(func(tx kv.Tx) error {
		n := uint64(0)
		if raw := tx.Get(bucketMeta, "drift_seq"); raw != nil {
			v, err := strconv.ParseUint(string(raw), 10, 64)
			if err != nil {
				return err
			}
			n = v
		}
		n++
		id = fmt.Sprintf("%020d", n)
		raw, err := build(id)
		if err != nil {
			return err
		}
		if err := tx.Put(bucketDrift, id, raw); err != nil {
			return err
		}
		return tx.Put(bucketMeta, "drift_seq", []byte(strconv.FormatUint(n, 10)))
	})
	return id, err
}

// DriftEntry is a journaled drift report.
type DriftEntry struct {
	ID     string
	Report []byte
}

// PendingDrift lists drift reports the server has not acked, oldest first.
func (j *Journal) PendingDrift() ([]DriftEntry, error) {
	var out []DriftEntry
	err := j.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketDrift, "", func(k string, v []byte) error {
			out = append(out, DriftEntry{ID: k, Report: append([]byte(nil), v...)})
			return nil
		})
	})
	return out, err
}

// AckDrift forgets an acked report; unknown ids are not an error.
func (j *Journal) AckDrift(id string) error {
	return j.b.Update(func(tx kv.Tx) error { return tx.Delete(bucketDrift, id) })
}
