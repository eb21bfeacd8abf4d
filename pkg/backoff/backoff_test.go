package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNextGrowsAndCaps(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	// Replace the random source with "always the maximum" to read the ceilings.
	b.rand = func(n int64) int64 { return n - 1 }
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b.Next())
	}
	require.Equal(t, []time.Duration{
		100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second,
	}, got)
	b.Reset()
	require.Equal(t, 100*time.Millisecond, b.Next())
}

func TestFullJitterStaysInRange(t *testing.T) {
	b := New(10*time.Millisecond, 80*time.Millisecond)
	seenLow := false
	for i := 0; i < 2000; i++ {
		if i%8 == 0 {
			b.Reset()
		}
		ceil := b.ceilingLocked()
		d := b.Next()
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, ceil)
		if d < ceil/4 {
			seenLow = true
		}
	}
	require.True(t, seenLow, "full jitter must produce delays well below the ceiling")
}

func TestDefaultCapIs30s(t *testing.T) {
	b := New(time.Second, 0)
	require.Equal(t, 30*time.Second, b.Max)
}

func TestWaitHonoursContextAndFakeTimer(t *testing.T) {
	b := New(time.Hour, time.Hour)
	fired := make(chan time.Time, 1)
	var asked time.Duration
	b.After = func(d time.Duration) <-chan time.Time { asked = d; return fired }
	b.rand = func(n int64) int64 { return n - 1 }
	fired <- time.Now()
	require.NoError(t, b.Wait(context.Background()))
	require.Equal(t, time.Hour, asked)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, b.Wait(ctx), context.Canceled)
}

func TestJitterBounds(t *testing.T) {
	require.Equal(t, time.Duration(0), Jitter(0))
	for i := 0; i < 1000; i++ {
		d := Jitter(time.Second)
		require.True(t, d >= 0 && d <= time.Second)
	}
}
