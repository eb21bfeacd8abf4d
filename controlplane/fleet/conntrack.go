package fleet

import (
	"net"
	"sync"
)

// ConnTracker wraps a listener and remembers each accepted connection by
// its remote address, so the fleet can cut one agent's connection (missed
// heartbeats, a newer session, revocation) without spending a goroutine per
// stream waiting for a kick: a gRPC handler blocked in Recv only returns
// when its transport dies.
type ConnTracker struct {
	net.Listener
	mu    sync.Mutex
	conns map[string]net.Conn
}

// Track wraps ln.
func Track(ln net.Listener) *ConnTracker {
	return &ConnTracker{Listener: ln, conns: map[string]net.Conn{}}
}

// Accept implements net.Listener.
func (t *ConnTracker) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	t.conns[c.RemoteAddr().String()] = tc
	t.mu.Unlock()
	return tc, nil
}

// Close cuts the connection from remote; it reports whether one was found.
func (t *ConnTracker) CloseConn(remote string) bool {
	t.mu.Lock()
	c := t.conns[remote]
	t.mu.Unlock()
	if c == nil {
		return false
	}
	c.Close()
	return true
}

// Len is the number of open tracked connections.
func (t *ConnTracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

type trackedConn struct {
	net.Conn
	t    *ConnTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		if c.t.conns[c.RemoteAddr().String()] == c {
			delete(c.t.conns, c.RemoteAddr().String())
		}
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
