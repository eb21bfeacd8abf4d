// Package systemd_test runs the real deckhand-agent and deckhand-server
// binaries with a fake NOTIFY_SOCKET (a unixgram socket the test reads)
// and checks what they tell systemd: READY only after recovery, watchdog
// pings while the main loop is healthy and none when it is stuck, STOPPING
// on SIGTERM.
package systemd_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/stretchr/testify/require"
)

// notifySocket collects sd_notify datagrams with their arrival time.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []msg
}

type msg struct {
	at   time.Time
	text string
}

func listen(t *testing.T) *notifySocket {
	p := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	require.NoError(t, err)
	n := &notifySocket{path: p, conn: conn}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			for _, line := range strings.Split(string(buf[:k]), "\n") {
				if line != "" {
					n.msgs = append(n.msgs, msg{time.Now(), line})
				}
			}
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

func (n *notifySocket) find(prefix string) (msg, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.HasPrefix(m.text, prefix) {
			return m, true
		}
	}
	return msg{}, false
}

func (n *notifySocket) count(text string, since time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if m.text == text && !m.at.Before(since) {
			c++
		}
	}
	return c
}

func startAgent(t *testing.T, c *servertest.Control, n *notifySocket, failpoints string) (*exec.Cmd, string) {
	bin := topology.Binaries(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(c.AgentConfig("author1", filepath.Join(dir, "data"), "")), 0o600))
	fplog := filepath.Join(dir, "failpoints.log")
	cmd := exec.Command(filepath.Join(bin, "deckhand-agent"), "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=400000", "DECKHAND_FAILPOINTS="+failpoints, "DECKHAND_FAILPOINT_LOG="+fplog)
	out, err := os.Create(filepath.Join(dir, "agent.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("agent log:\n%s", b)
		}
	})
	return cmd, fplog
}

func TestAgentTellsSystemd(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	n := listen(t)
	start := time.Now()
	// Recovery is made slow on purpose: READY must wait for it.
	cmd, fplog := startAgent(t, c, n, "agent/recovering=sleep:1s")
	var ready msg
	require.Eventually(t, func() bool { var ok bool; ready, ok = n.find("READY=1"); return ok }, 20*time.Second, 10*time.Millisecond)
	require.GreaterOrEqual(t, ready.at.Sub(start), time.Second, "READY before recovery finished")
	hits, _ := os.ReadFile(fplog)
	require.Contains(t, string(hits), "agent/recovering", "the recovery point was passed before READY")

	require.Eventually(t, func() bool { return c.Server.Fleet().Online("author1") }, 10*time.Second, 10*time.Millisecond)
	_, ok := n.find("STATUS=connected to ")
	require.Eventually(t, func() bool { _, ok = n.find("STATUS=connected to "); return ok }, 5*time.Second, 10*time.Millisecond)
	since := time.Now()
	require.Eventually(t, func() bool { return n.count("WATCHDOG=1", since) >= 4 }, 5*time.Second, 20*time.Millisecond, "watchdog pings while healthy")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool { _, ok := n.find("STOPPING=1"); return ok }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, cmd.Wait(), "SIGTERM is a clean stop")
}

func TestStuckAgentLoopStopsTheWatchdog(t *testing.T) {
	c := servertest.Start(t, servertest.Options{})
	n := listen(t)
	// The session's heartbeat loop hangs at its first tick.
	startAgent(t, c, n, "session/heartbeat=hang")
	require.Eventually(t, func() bool { _, ok := n.find("READY=1"); return ok }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return c.Server.Fleet().Online("author1") }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // the ping for the last progress before the hang
	since := time.Now()
	time.Sleep(1500 * time.Millisecond) // several watchdog intervals
	require.Zero(t, n.count("WATCHDOG=1", since), "a stuck loop must stop the pings so systemd restarts the agent")
}

func TestServerTellsSystemd(t *testing.T) {
	bin := topology.Binaries(t)
	n := listen(t)
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(dir, "server.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %s\ndata_dir: %s\nheartbeat_interval: 200ms\nenvironments:\n  - name: e\n    type: dev\n    hosts: [{id: a1, role: author}]\n", addr, filepath.Join(dir, "data"))), 0o600))
	cmd := exec.Command(filepath.Join(bin, "deckhand-server"), "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+n.path, "WATCHDOG_USEC=400000")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	require.Eventually(t, func() bool { _, ok := n.find("READY=1"); return ok }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { _, ok := n.find("STATUS=serving on " + addr); return ok }, 5*time.Second, 10*time.Millisecond)
	since := time.Now()
	require.Eventually(t, func() bool { return n.count("WATCHDOG=1", since) >= 3 }, 5*time.Second, 20*time.Millisecond)

	// SIGHUP with a broken config is refused and the server keeps running.
	require.NoError(t, os.WriteFile(cfg, []byte("listen: nope\n"), 0o600))
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { _, ok := n.find("STATUS=reload refused"); return ok }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool { _, ok := n.find("STOPPING=1"); return ok }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, cmd.Wait())
}
