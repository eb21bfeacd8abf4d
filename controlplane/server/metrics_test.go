package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/stretchr/testify/require"
)

func scrape(t *testing.T, addr string) string {
	require.NotEmpty(t, addr, "metrics endpoint not bound")
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func TestMetrics(t *testing.T) {
	c := newCluster(t)
	r := c.startAgent("publish1", t.TempDir(), session.Hooks{})
	c.waitOnline("publish1")
	res, err := c.Server.Fleet().Run(ctxT(t), factsSpec(t, "m1", "publish1"))
	require.NoError(t, err)
	require.NoError(t, res.Err())

	var server string
	require.Eventually(t, func() bool { return c.Server.MetricsAddr() != "" }, 5*time.Second, 10*time.Millisecond)
	server = scrape(t, c.Server.MetricsAddr())
	for _, want := range []string{
		`deckhand_agents{state="online"} 1`,
		`deckhand_agents{state="never"} 2`,
		`deckhand_tasks_total{kind="host_facts",outcome="succeeded"} 1`,
		`deckhand_agent_sessions_total{kind="first"} 1`,
		`deckhand_executions_running 0`,
		`go_goroutines`,
	} {
		require.Contains(t, server, want)
	}

	require.Eventually(t, func() bool { return r.a.MetricsAddr() != "" }, 5*time.Second, 10*time.Millisecond)
	agent := scrape(t, r.a.MetricsAddr())
	require.Contains(t, agent, `deckhand_agent_task_duration_seconds_count{kind="host_facts",status="succeeded"} 1`)
	require.Contains(t, agent, `deckhand_agent_connected 1`)
	require.Regexp(t, `deckhand_agent_journal_bytes [1-9]`, agent)

	// A reconnect counts as one.
	require.True(t, c.Server.Fleet().Disconnect("publish1", "test"))
	require.Eventually(t, func() bool {
		return strings.Contains(scrape(t, c.Server.MetricsAddr()), `deckhand_agent_sessions_total{kind="reconnect"} 1`)
	}, 10*time.Second, 50*time.Millisecond)
}
