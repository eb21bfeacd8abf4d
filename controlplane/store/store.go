// Package store owns the control plane's durable state: the server epoch,
// tasks and their results, and what is known about agents. Typed methods
// sit on a kv.Backend (bbolt by default), so a second backend (etcd, for HA)
// fits behind the same interface.
//
// Schema (bucket / key -> value), version 1:
//
//	meta/
//	  version            -> "1"
//	  epoch              -> decimal uint64, bumped at each server start
//	tasks/
//	  <task id>          -> Task (JSON; the spec in wire form)
//	results/
//	  <task id>          -> outcome (JSON; the result in wire form)
//	tasks_open/
//	  <host>\x00<id>     -> task kind; index of tasks without a result, per host
//	agents/
//	  <host id>          -> Agent (JSON)
//	join_tokens/
//	  <sha256 of token>  -> JoinToken (JSON; the token itself is never stored)
//	admins/
//	  <name>             -> Admin (JSON: roles)
//	admin_tokens/
//	  <sha256 of token>  -> AdminToken (JSON)
//	certs/
//	  <host>\x00<serial> -> IssuedCert (JSON), every certificate issued per host
//	revoked/
//	  <serial hex>       -> Revocation (JSON)
//	audit/
//	  <seq, 20 digits>   -> AuditEntry (JSON), append-only
//
// Changes to this schema bump SchemaVersion and add a migration step in
// migrate; nothing is ever rewritten silently.
package store

import (
	"encoding/json"
	"errors"

	"fmt"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// ErrNotFound is returned by getters when the key does not exist.
var ErrNotFound = kv.ErrNotFound

// Tx and Backend are the kv types the store is built on.
type (
	Tx      = kv.Tx
	Backend = kv.Backend
)

const (
	bucketMeta      = "meta"
	bucketTasks     = "tasks"
	bucketTasksOpen = "tasks_open"
	bucketResults   = "results"
	bucketAgents    = "agents"
	bucketJoin      = "join_tokens"
	bucketAdmins    = "admins"
	bucketAdminTok  = "admin_tokens"
	bucketCerts     = "certs"
	bucketRevoked   = "revoked"
	bucketAudit     = "audit"
)

// Buckets lists every bucket of the schema; Open creates them.
var Buckets = []string{bucketMeta, bucketTasks, bucketTasksOpen, bucketResults, bucketAgents,
	bucketJoin, bucketAdmins, bucketAdminTok, bucketCerts, bucketRevoked, bucketAudit}

// SchemaVersion is the schema this binary reads and writes.
const SchemaVersion = 1

// FileName is the bbolt file inside the server's data dir.
const FileName = "deckhand-server.db"

// Store is the typed view of the control plane's state. Safe for concurrent
// use; every method is one transaction.
type Store struct {
	b Backend
	// inflight counts concurrent batched writers: one alone commits at
	// once, several share a commit (see batch).
	inflight atomic.Int64
}

// batch runs fn as its own commit when it is the only writer in flight,
// and through the backend's Batch when others are (a fan-out's results, a
// crowd of agents reconnecting): a lone writer should not wait for company
// that is not coming, a crowd should share fsyncs.
func (s *Store) batch(fn func(Tx) error) error {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if n == 1 {
		return s.b.Update(fn)
	}
	return s.b.Batch(fn)
}

// Open opens the bbolt store in dataDir.
func Open(dataDir string) (*Store, error) {
	b, err := kv.OpenBolt(filepath.Join(dataDir, FileName), Buckets...)
	if err != nil {
		return nil, err
	}
	s, err := New(b)
	if err != nil {
		b.Close()
		return nil, err
	}
	return s, nil
}

// New wraps a Backend, initialising or migrating its schema.
func New(b Backend) (*Store, error) {
	s := &Store{b: b}
	if err := s.migrate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases the backend.
func (s *Store) Close() error { return s.b.Close() }

// Backend exposes the underlying backend for packages that own their own
// buckets (they must document them in their package).
func (s *Store) Backend() Backend { return s.b }

func (s *Store) migrate() error {
	return s.b.Update(func(tx Tx) error {
		raw := tx.Get(bucketMeta, "version")
		if raw == nil {
			return tx.Put(bucketMeta, "version", []byte(strconv.Itoa(SchemaVersion)))
		}
		v, err := strconv.Atoi(string(raw))
		if err != nil {
			return fmt.Errorf("store: schema version %q is not a number", raw)
		}
		if v > SchemaVersion {
			return fmt.Errorf("store: the data was written by a newer deckhand-server (schema %d); this binary knows schema %d at most", v, SchemaVersion)
		}
		// Future migrations run here in order, each in this transaction.
		return nil
	})
}

// Version returns the stored schema version.
func (s *Store) Version() (int, error) {
	var v int
	err := s.b.View(func(tx Tx) error {
		var err error
		v, err = strconv.Atoi(string(tx.Get(bucketMeta, "version")))
		return err
	})
	return v, err
}

// NextEpoch bumps and returns the server epoch. Called once per server
// start; every assignment carries it so an agent can tell a stale one.
func (s *Store) NextEpoch() (uint64, error) {
	var e uint64
	err := s.b.Update(func(tx Tx) error {
		cur := uint64(0)
		if raw := tx.Get(bucketMeta, "epoch"); raw != nil {
			var err error
			if cur, err = strconv.ParseUint(string(raw), 10, 64); err != nil {
				return fmt.Errorf("store: epoch %q is not a number", raw)
			}
		}
		e = cur + 1
		return tx.Put(bucketMeta, "epoch", []byte(strconv.FormatUint(e, 10)))
	})
	return e, err
}

// Task is a task as the control plane persisted it.
type Task struct {
	V           int       `json:"v"`
	ID          string    `json:"id"`
	HostID      string    `json:"host"`
	ExecutionID string    `json:"execution"`
	Step        string    `json:"step"`
	Kind        string    `json:"kind"`
	Epoch       uint64    `json:"epoch"` // the epoch it was created under
	CreatedAt   time.Time `json:"created_at"`
	// Spec is the task in wire form, exactly as sent.
	Spec []byte `json:"spec"`

	// The fields below come from the results bucket: a result is written
	// without rewriting the task record, which keeps a fan-out's thousands
	// of results cheap.
	Done       bool      `json:"-"`
	Status     string    `json:"-"`
	Result     []byte    `json:"-"` // wire form
	FinishedAt time.Time `json:"-"`
	// Duplicates counts results that arrived after the first one; they are
	// acked and dropped. Non-zero values are worth a look in a post-mortem.
	Duplicates int `json:"-"`
}

// outcome is a task's result record.
type outcome struct {
	V          int       `json:"v"`
	Status     string    `json:"status"`
	Result     []byte    `json:"result"`
	FinishedAt time.Time `json:"finished_at"`
	Duplicates int       `json:"duplicates,omitempty"`
}

// readTask decodes a task record and joins its outcome.
func readTask(tx Tx, id string) (Task, error) {
	raw := tx.Get(bucketTasks, id)
	if raw == nil {
		return Task{}, ErrNotFound
	}
	var t Task
	if err := json.Unmarshal(raw, &t); err != nil {
		return Task{}, fmt.Errorf("store: decode task %s: %w", id, err)
	}
	if raw := tx.Get(bucketResults, id); raw != nil {
		var o outcome
		if err := json.Unmarshal(raw, &o); err != nil {
			return Task{}, fmt.Errorf("store: decode result of %s: %w", id, err)
		}
		t.Done, t.Status, t.Result, t.FinishedAt, t.Duplicates = true, o.Status, o.Result, o.FinishedAt, o.Duplicates
	}
	return t, nil
}

func openKey(host, id string) string { return host + "\x00" + id }

// CreateTasks inserts each task that does not exist yet and returns, per
// input, the stored task and whether this call created it. An existing task
// with the same id is returned unchanged: re-planning is idempotent.
func (s *Store) CreateTasks(tasks []Task) ([]Task, []bool, error) {
	return s.CreateTasksWith(tasks, nil)
}

// CreateTasksWith is CreateTasks with extra writes of the caller's (a
// rollout step's start) in the same commit, so "step started" and "task
// created" are durable together with one fsync.
func (s *Store) CreateTasksWith(tasks []Task, extra func(Tx) error) ([]Task, []bool, error) {
	out := make([]Task, len(tasks))
	created := make([]bool, len(tasks))
	err := s.b.Update(func(tx Tx) error {
		if extra != nil {
			if err := extra(tx); err != nil {
				return err
			}
		}
		for i, t := range tasks {
			if t.ID == "" || t.HostID == "" {
				return fmt.Errorf("store: task needs an id and a host")
			}
			if tx.Get(bucketTasks, t.ID) != nil {
				cur, err := readTask(tx, t.ID)
				if err != nil {
					return err
				}
				out[i], created[i] = cur, false
				continue
			}
			t.V = 1
			raw, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := tx.Put(bucketTasks, t.ID, raw); err != nil {
				return err
			}
			if err := tx.Put(bucketTasksOpen, openKey(t.HostID, t.ID), []byte(t.Kind)); err != nil {
				return err
			}
			out[i], created[i] = t, true
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, created, nil
}

// Task returns one task, or ErrNotFound.
func (s *Store) Task(id string) (Task, error) {
	var t Task
	err := s.b.View(func(tx Tx) error {
		var err error
		t, err = readTask(tx, id)
		return err
	})
	return t, err
}

// OpenTasks lists the tasks of host that have no result yet, in id order.
func (s *Store) OpenTasks(host string) ([]Task, error) {
	var out []Task
	err := s.b.View(func(tx Tx) error {
		return tx.ForEach(bucketTasksOpen, host+"\x00", func(k string, _ []byte) error {
			id := k[len(host)+1:]
			t, err := readTask(tx, id)
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("store: open index names missing task %s", id)
			}
			if err != nil {
				return err
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// ErrWrongHost is returned by FinishTask when a host reports a result for
// a task that was assigned to another host.
var ErrWrongHost = errors.New("task belongs to another host")

// FinishTask records the result host reported for a task. first is true
// when this call stored it; a second result for the same task is counted as
// a duplicate and the first is kept. A result for an unknown task returns
// ErrNotFound; one from the wrong host, ErrWrongHost.
func (s *Store) FinishTask(id, host, status string, result []byte, at time.Time) (t Task, first bool, err error) {
	err = s.batch(func(tx Tx) error {
		first = false // Batch may run fn again
		t = Task{ID: id, HostID: host}
		if kind := tx.Get(bucketTasksOpen, openKey(host, id)); kind != nil {
			t.Kind = string(kind)
			// The common case, kept free of decoding: the task is open
			// and belongs to this host.
			first = true
			o := outcome{V: 1, Status: status, Result: result, FinishedAt: at}
			raw, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if err := tx.Put(bucketResults, id, raw); err != nil {
				return err
			}
			t.Done, t.Status, t.Result, t.FinishedAt = true, status, o.Result, at
			return tx.Delete(bucketTasksOpen, openKey(host, id))
		}
		cur, err := readTask(tx, id)
		if err != nil {
			return err
		}
		if cur.HostID != host {
			return ErrWrongHost
		}
		if !cur.Done {
			return fmt.Errorf("store: task %s is neither open nor finished", id)
		}
		t = cur
		t.Duplicates++
		raw, err := json.Marshal(outcome{V: 1, Status: t.Status, Result: t.Result, FinishedAt: t.FinishedAt, Duplicates: t.Duplicates})
		if err != nil {
			return err
		}
		return tx.Put(bucketResults, id, raw)
	})
	return t, first, err
}

// Agent is what the control plane remembers of an agent between sessions.
type Agent struct {
	V              int       `json:"v"`
	HostID         string    `json:"host"`
	Version        string    `json:"version"`
	BootID         string    `json:"boot_id,omitempty"`
	Address        string    `json:"address,omitempty"`
	FirstSeen      time.Time `json:"first_seen"`
	ConnectedAt    time.Time `json:"connected_at,omitzero"`
	LastHeartbeat  time.Time `json:"last_heartbeat,omitzero"`
	DisconnectedAt time.Time `json:"disconnected_at,omitzero"`
	Sessions       int       `json:"sessions"`
}

// PutAgent stores a. It uses a batched commit: agents connect in crowds.
func (s *Store) PutAgent(a Agent) error {
	a.V = 1
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.batch(func(tx Tx) error { return tx.Put(bucketAgents, a.HostID, raw) })
}

// Agent returns one agent record, or ErrNotFound.
func (s *Store) Agent(host string) (Agent, error) {
	var a Agent
	err := s.b.View(func(tx Tx) error {
		raw := tx.Get(bucketAgents, host)
		if raw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(raw, &a)
	})
	return a, err
}

// Agents returns every agent record, in host id order.
func (s *Store) Agents() ([]Agent, error) {
	var out []Agent
	err := s.b.View(func(tx Tx) error {
		return tx.ForEach(bucketAgents, "", func(_ string, v []byte) error {
			var a Agent
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}
