package clock

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFakeFiresInOrderWhenDue(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a := f.After(time.Hour)
	b := f.After(2 * time.Hour)
	require.Equal(t, 2, f.Waiters())
	next, ok := f.Next()
	require.True(t, ok)
	require.Equal(t, start.Add(time.Hour), next)
	f.Advance(59 * time.Minute)
	select {
	case <-a:
		t.Fatal("fired early")
	default:
	}
	f.Advance(time.Minute)
	require.Equal(t, start.Add(time.Hour), <-a)
	require.Equal(t, 1, f.Waiters())
	f.Set(start.Add(3 * time.Hour))
	require.Equal(t, start.Add(3*time.Hour), <-b)
	select {
	case v := <-f.After(0):
		require.Equal(t, start.Add(3*time.Hour), v)
	default:
		t.Fatal("After(0) must fire at once")
	}
}

func TestRealClock(t *testing.T) {
	var c Clock = Real{}
	require.WithinDuration(t, time.Now(), c.Now(), time.Second)
	<-c.After(time.Millisecond)
}
