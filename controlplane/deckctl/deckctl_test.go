package deckctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/controlplane/deckctl"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/stretchr/testify/require"
)

func startServer(t *testing.T) (*servertest.Control, string) {
	c := servertest.Start(t, servertest.Options{Topology: `
environments:
  - name: stage
    type: stage
    hosts:
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
`, HeartbeatInterval: 200 * time.Millisecond})
	return c, c.Addr
}

func run(args ...string) (string, string, int) {
	var out, errOut bytes.Buffer
	code := deckctl.Execute(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

func TestAgentsListAndFacts(t *testing.T) {
	c, _ := startServer(t)
	creds := c.CredentialsPath()
	acfg, err := agentconfig.Parse("a.yaml", []byte(c.AgentConfig("author1", t.TempDir(), "")))
	require.NoError(t, err)
	a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, "agent")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool { return c.Server.Fleet().Online("author1") }, 10*time.Second, 10*time.Millisecond)

	out, stderr, code := run("--credentials", creds, "agents", "list")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4)
	require.Regexp(t, `^HOST\s+ENV\s+ROLE\s+PAIR\s+STATE\s+LAST HEARTBEAT\s+VERSION$`, lines[0])
	require.Regexp(t, `^author1\s+stage \(stage\)\s+author\s+-\s+online\s+`, lines[1])
	require.Regexp(t, `^publish1\s+stage \(stage\)\s+publish\s+1\s+never\s+-\s+-$`, lines[2])

	out, stderr, code = run("--credentials", creds, "agents", "list", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var agents []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &agents))
	require.Len(t, agents, 3)
	require.Equal(t, "author1", agents[0]["host"])
	require.Equal(t, true, agents[0]["online"])
	require.Contains(t, agents[0], "last_heartbeat")
	require.Equal(t, "never", agents[1]["state"])

	out, stderr, code = run("--credentials", creds, "agents", "facts", "author1", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var facts map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &facts))
	require.NotEmpty(t, facts["hostname"])
	require.NotZero(t, facts["data_dir_total_bytes"])

	out, stderr, code = run("--credentials", creds, "agents", "facts", "author1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, out, "hostname:")
	require.Contains(t, out, "data dir free:")
}

func TestErrorsAreOneLineAndNonZero(t *testing.T) {
	c, addr := startServer(t)
	creds := c.CredentialsPath()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--credentials", creds, "agents", "facts", "publish1"}, `deckctl: host "publish1": its agent has never connected`},
		{[]string{"--credentials", creds, "agents", "facts", "ghost"}, `deckctl: host "ghost" is not declared in the server config`},
		{[]string{"--credentials", creds, "agents", "list", "--env", "nope"}, `deckctl: environment "nope" is not declared`},
		{[]string{"--credentials", creds, "agents", "list", "-o", "yaml"}, `deckctl: -o "yaml": use table or json`},
		{[]string{"--credentials", creds, "--server", "127.0.0.1:1", "--timeout", "2s", "agents", "list"}, `deckctl: cannot reach the server`},
		{[]string{"--server", addr, "agents", "list"}, `deckctl: no CA to verify the server`},
		{[]string{"--server", addr, "--insecure", "agents", "list"}, `deckctl: cannot reach the server`},
		{[]string{"--server", "10.1.2.3:7443", "--insecure", "agents", "list"}, `deckctl: --insecure is only for a --dev-insecure server on a loopback address`},
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
