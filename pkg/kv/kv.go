// Package kv is the transactional key-value layer under both durable
// stores: the control plane's store and the agent's journal. bbolt is the
// default Backend; an in-memory one runs the same test suites, and a failing
// one lets tests check how callers behave when the disk does. The interface
// is small on purpose so an etcd implementation can sit behind it later.
package kv

import (
	"errors"
)

// ErrNotFound is returned by typed getters built on a Backend when the key
// does not exist.
var ErrNotFound = errors.New("not found")

// Backend is a transactional, ordered key-value store with flat buckets.
// Implementations: bolt (default), memory (tests), errDB (tests of failure
// handling). A Backend must make an Update durable before it returns.
type Backend interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed when fn returns
	// nil and rolled back otherwise.
	Update(fn func(Tx) error) error
	// Batch is Update for many concurrent small writers: calls may be
	// coalesced into one commit, and fn may run more than once, so it must
	// be idempotent and must not have side effects outside the Tx.
	Batch(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Values returned by Get and ForEach are only valid
// inside the transaction; copy them to keep them.
type Tx interface {
	// Get returns nil when the key is absent.
	Get(bucket, key string) []byte
	Put(bucket, key string, value []byte) error
	// Delete of an absent key is not an error.
	Delete(bucket, key string) error
	// ForEach visits keys with the given prefix in byte order; returning an
	// error from fn stops the walk and returns that error.
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
}
