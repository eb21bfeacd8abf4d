package lb_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/stretchr/testify/require"
)

func TestWaitReadyPollsUntil200WithNewConnections(t *testing.T) {
	var probes, conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		switch n := probes.Add(1); {
		case n <= 2:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		case n == 3:
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusFound)
		default:
			fmt.Fprint(w, "OK")
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	require.NoError(t, lb.WaitReady(context.Background(), srv.URL+"/health", 10*time.Millisecond))
	require.EqualValues(t, 4, probes.Load(), "503, 503, 302 (not followed), then 200")
	require.EqualValues(t, 4, conns.Load(), "every probe must open a new connection")
}

func TestWaitReadyBoundedByContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := lb.WaitReady(ctx, srv.URL, 20*time.Millisecond)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "last: HTTP 503")
}

func TestWaitReadyConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err = lb.WaitReady(ctx, "http://"+addr+"/", 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "connection refused")
}

// fakeDriver records Attach calls.
type fakeDriver struct{ attached atomic.Int64 }

func (f *fakeDriver) Detach(context.Context) error { return nil }
func (f *fakeDriver) Attach(context.Context) error { f.attached.Add(1); return nil }
func (f *fakeDriver) Status(context.Context) (lb.Status, error) {
	return lb.Status{State: lb.StateUnknown, Sessions: -1}, nil
}

func TestAttachWhenReadyDoesNotAttachAnUnreadyHost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "no", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	d := &fakeDriver{}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := lb.AttachWhenReady(ctx, d, srv.URL, 10*time.Millisecond)
	require.ErrorContains(t, err, "not attaching")
	require.Zero(t, d.attached.Load())
}
