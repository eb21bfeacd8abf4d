package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	c, err := Parse("a.yaml", []byte("host_id: d1\nserver: 127.0.0.1:7443\ndata_dir: /d\nreconnect:\n  stagger: 1s\n"))
	require.NoError(t, err)
	require.Equal(t, time.Second, c.Reconnect.Stagger.D())
	require.Equal(t, 30*time.Second, c.Reconnect.MaxBackoff.D())
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"server: a:1\ndata_dir: /d\n", "a.yaml: host_id is required"},
		{"host_id: x\ndata_dir: /d\n", "server is required"},
		{"host_id: x\nserver: nope\ndata_dir: /d\n", `server "nope" is not host:port`},
		{"host_id: x\nserver: a:1\n", "data_dir is required"},
		{"host_id: x\nserver: a:1\ndata_dir: /d\nreconnect:\n  stager: 1s\n", `a.yaml:5: unknown key "stager" (did you mean "stagger"?)`},
		{"host_id: x y\nserver: a:1\ndata_dir: /d\n", `host_id "x y"`},
	} {
		_, err := Parse("a.yaml", []byte(tc.in))
		require.ErrorContains(t, err, tc.want)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	_, err := Load("../../packaging/deckhand-agent.yaml")
	require.NoError(t, err)
}
