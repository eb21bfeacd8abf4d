package kv

import (
	"errors"
	"sort"
	"strings"
	"sync"
)

// memBackend keeps everything in maps. It exists so the Store test suite
// runs against more than one implementation, and for benchmarks that must
// not measure the disk.
type memBackend struct {
	mu     sync.RWMutex
	data   map[string]map[string][]byte
	closed bool
}

// NewMemory returns an empty in-memory Backend.
func NewMemory() Backend {
	return &memBackend{data: map[string]map[string][]byte{}}
}

var errClosed = errors.New("store is closed")

func (m *memBackend) View(fn func(Tx) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return errClosed
	}
	return fn(&memTx{m: m, readOnly: true})
}

func (m *memBackend) Update(fn func(Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	tx := &memTx{m: m, writes: map[string]map[string][]byte{}}
	if err := fn(tx); err != nil {
		return err
	}
	for b, kv := range tx.writes {
		if m.data[b] == nil {
			m.data[b] = map[string][]byte{}
		}
		for k, v := range kv {
			if v == nil {
				delete(m.data[b], k)
			} else {
				m.data[b][k] = v
			}
		}
	}
	return nil
}

func (m *memBackend) Batch(fn func(Tx) error) error { return m.Update(fn) }

func (m *memBackend) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// memTx overlays its writes on the committed data; a nil value in writes is
// a deletion.
type memTx struct {
	m        *memBackend
	readOnly bool
	writes   map[string]map[string][]byte
}

var errReadOnly = errors.New("write in a read-only transaction")

func (t *memTx) Get(bucket, key string) []byte {
	if w, ok := t.writes[bucket][key]; ok {
		return w
	}
	return t.m.data[bucket][key]
}

func (t *memTx) Put(bucket, key string, value []byte) error {
	if t.readOnly {
		return errReadOnly
	}
	if t.writes[bucket] == nil {
		t.writes[bucket] = map[string][]byte{}
	}
	t.writes[bucket][key] = append([]byte{}, value...)
	return nil
}

func (t *memTx) Delete(bucket, key string) error {
	if t.readOnly {
		return errReadOnly
	}
	if t.writes[bucket] == nil {
		t.writes[bucket] = map[string][]byte{}
	}
	t.writes[bucket][key] = nil
	return nil
}

func (t *memTx) ForEach(bucket, prefix string, fn func(string, []byte) error) error {
	keys := map[string]bool{}
	for k := range t.m.data[bucket] {
		if strings.HasPrefix(k, prefix) {
			keys[k] = true
		}
	}
	for k := range t.writes[bucket] {
		if strings.HasPrefix(k, prefix) {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		v := t.Get(bucket, k)
		if v == nil {
			continue
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// ErrDB is what the failing backend returns from every call.
var ErrDB = errors.New("store: injected disk failure")

type errBackend struct{}

// NewFailing returns a Backend whose every call fails with ErrDB: tests use
// it to check how callers behave when the disk does.
func NewFailing() Backend { return errBackend{} }

func (errBackend) View(func(Tx) error) error   { return ErrDB }
func (errBackend) Update(func(Tx) error) error { return ErrDB }
func (errBackend) Batch(func(Tx) error) error  { return ErrDB }
func (errBackend) Close() error                { return nil }
