// Package backoff is the one retry-delay type Deckhand uses: exponential
// growth, full jitter, a cap, reset on success, and a context-aware wait with
// an injectable clock so tests never sleep.
package backoff

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff computes successive retry delays. The zero value is not usable;
// build one with New. Safe for concurrent use.
type Backoff struct {
	// Base is the first delay ceiling; each failure doubles it up to Max.
	Base time.Duration
	Max  time.Duration

	mu       sync.Mutex
	attempts int
	rand     func(n int64) int64
	// After is the timer used by Wait; tests replace it.
	After func(d time.Duration) <-chan time.Time
}

// New returns a backoff starting at base and capped at max. A max of zero
// means 30 s, the default cap for agent reconnects.
func New(base, max time.Duration) *Backoff {
	if base <= 0 {
		base = 250 * time.Millisecond
	}
	if max <= 0 {
		max = 30 * time.Second
	}
	if base > max {
		base = max
	}
	return &Backoff{Base: base, Max: max, rand: rand.Int64N, After: time.After}
}

// Next returns the delay before the next attempt and counts the failure.
// Full jitter: the delay is uniform in [0, min(Max, Base*2^attempts)], which
// spreads a crowd of clients that failed at the same instant.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	ceil := b.ceilingLocked()
	b.attempts++
	return time.Duration(b.rand(int64(ceil) + 1))
}

// ceilingLocked is the current upper bound; mu must be held.
func (b *Backoff) ceilingLocked() time.Duration {
	ceil := b.Base
	for i := 0; i < b.attempts && ceil < b.Max; i++ {
		ceil *= 2
	}
	if ceil > b.Max {
		ceil = b.Max
	}
	return ceil
}

// Reset forgets past failures; call it after a success.
func (b *Backoff) Reset() {
	b.mu.Lock()
	b.attempts = 0
	b.mu.Unlock()
}

// Attempts is the number of failures since the last Reset.
func (b *Backoff) Attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempts
}

// Wait sleeps for Next() or until ctx is done, whichever comes first.
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Next(), b.After)
}

// Jitter returns a uniform random duration in [0, max]; used to stagger the
// first reconnect after a server goes away so thousands of agents do not
// arrive in the same instant.
func Jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(max) + 1))
}

// Sleep waits d using after (time.After when nil), or returns ctx.Err()
// when ctx ends first.
func Sleep(ctx context.Context, d time.Duration, after func(time.Duration) <-chan time.Time) error {
	if d <= 0 {
		return ctx.Err()
	}
	if after == nil {
		after = time.After
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-after(d):
		return nil
	}
}
