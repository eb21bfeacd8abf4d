package deckctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/deckctl"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/stretchr/testify/require"
)

func startServer(t *testing.T) (*server.Server, string) {
	cfg, err := config.Parse("t.yaml", []byte("data_dir: "+t.TempDir()+`
heartbeat_interval: 200ms
environments:
  - name: stage
    type: stage
    hosts:
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
`))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := server.New(cfg, server.Options{Logger: testlog.New(t, "server"), Listener: ln})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, ln.Addr().String()
}

func run(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := deckctl.Execute(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestAgentsListAndFacts(t *testing.T) {
	srv, addr := startServer(t)
	acfg, err := agentconfig.Parse("a.yaml", []byte(fmt.Sprintf("host_id: author1\nserver: %s\ndata_dir: %s\napachectl: [true]\n", addr, t.TempDir())))
	require.NoError(t, err)
	a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, "agent")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return srv.Fleet().Online("author1") }, 10*time.Second, 10*time.Millisecond)

	out, stderr, code := run("--server", addr, "agents", "list")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4)
	require.Regexp(t, `^HOST\s+ENV\s+ROLE\s+PAIR\s+STATE\s+LAST HEARTBEAT\s+VERSION$`, lines[0])
	require.Regexp(t, `^author1\s+stage \(stage\)\s+author\s+-\s+online\s+`, lines[1])
	require.Regexp(t, `^publish1\s+stage \(stage\)\s+publish\s+1\s+never\s+-\s+-$`, lines[2])

	out, stderr, code = run("--server", addr, "agents", "list", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var agents []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &agents))
	require.Len(t, agents, 3)
	require.Equal(t, "author1", agents[0]["host"])
	require.Equal(t, true, agents[0]["online"])
	require.Contains(t, agents[0], "last_heartbeat")
	require.Equal(t, "never", agents[1]["state"])

	out, stderr, code = run("--server", addr, "agents", "facts", "author1", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var facts map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &facts))
	require.NotEmpty(t, facts["hostname"])
	require.NotZero(t, facts["data_dir_total_bytes"])

	out, stderr, code = run("--server", addr, "agents", "facts", "author1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "hostname:")
	require.Contains(t, out, "data dir free:")
}

func TestErrorsAreOneLineAndNonZero(t *testing.T) {
	_, addr := startServer(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--server", addr, "agents", "facts", "publish1"}, `deckctl: host "publish1": its agent has never connected`},
		{[]string{"--server", addr, "agents", "facts", "ghost"}, `deckctl: host "ghost" is not declared in the server config`},
		{[]string{"--server", addr, "agents", "list", "--env", "nope"}, `deckctl: environment "nope" is not declared`},
		{[]string{"--server", addr, "agents", "list", "-o", "yaml"}, `deckctl: -o "yaml": use table or json`},
		{[]string{"--server", "127.0.0.1:1", "--timeout", "2s", "agents", "list"}, `deckctl: cannot reach the server`},
		{[]string{"agents", "facts"}, `deckctl: accepts 1 arg(s), received 0`},
		{[]string{"bogus"}, `deckctl: unknown command "bogus"`},
	}
	for _, tc := range cases {
		out, stderr, code := run(tc.args...)
		require.Equal(t, 1, code, "args %v", tc.args)
		require.Empty(t, out)
		require.True(t, strings.HasPrefix(stderr, tc.want), "got %q want prefix %q", stderr, tc.want)
		require.Equal(t, 1, strings.Count(stderr, "\n"), "error must be one line: %q", stderr)
	}
}
