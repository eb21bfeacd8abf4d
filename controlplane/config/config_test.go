package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const good = `listen: 127.0.0.1:7443
data_dir: /tmp/x
heartbeat_interval: 2s
environments:
  - name: prod
    type: prod
    hosts:
      - id: author1
        role: author
      - id: publish1
        role: publish
        pair: 1
      - id: dispatcher1
        role: dispatcher
        pair: 1
`

func TestParseGood(t *testing.T) {
	c, err := Parse("s.yaml", []byte(good))
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, c.HeartbeatInterval.D())
	require.Len(t, c.Hosts(), 3)
	h, ok := c.Lookup("dispatcher1")
	require.True(t, ok)
	require.Equal(t, RoleDispatcher, h.Role)
	require.Equal(t, "prod", h.Env)
	require.Equal(t, EnvProd, h.EnvType)
	_, ok = c.Lookup("nope")
	require.False(t, ok)
}

func TestDefaults(t *testing.T) {
	c, err := Parse("s.yaml", []byte("data_dir: /d\n"))
	require.NoError(t, err)
	require.Equal(t, DefaultListen, c.Listen)
	require.Equal(t, DefaultHeartbeatInterval, c.HeartbeatInterval.D())
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"unknown top key", "data_dir: /d\nlissten: x\n", `s.yaml:2: unknown key "lissten" (did you mean "listen"?)`},
		{"unknown host key", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a\n        rol: author\n", `s.yaml:7: unknown key "rol"`},
		{"bad type", "data_dir: /d\nenvironments:\n  - name: e\n    type: production\n    hosts: [{id: a, role: author}]\n", `s.yaml:4: environment "e": type "production" is not one of dev, stage, prod`},
		{"bad role", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a\n        role: writer\n", `s.yaml:7: host "a": role "writer" is not one of author, publish, dispatcher`},
		{"pair not a number", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a\n        role: publish\n        pair: x\n", `s.yaml:8: "x" is not valid here: expected a whole number`},
		{"publish without pair", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a\n        role: publish\n", `s.yaml:6: host "a": a publish host needs pair`},
		{"author with pair", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a\n        role: author\n        pair: 1\n", `s.yaml:8: host "a": an author is not part`},
		{"duplicate host", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a\n        role: author\n      - id: a\n        role: author\n", `s.yaml:8: host "a" is declared twice`},
		{"incomplete pair", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: p\n        role: publish\n        pair: 1\n", `s.yaml:3: environment "e": pair 1 has only p`},
		{"two dispatchers in a pair", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - {id: d1, role: dispatcher, pair: 1}\n      - {id: d2, role: dispatcher, pair: 1}\n", `s.yaml:7: host "d2": pair 1 already has a dispatcher (d1)`},
		{"bad duration", "data_dir: /d\nheartbeat_interval: often\n", `s.yaml:2: "often" is not a duration`},
		{"missing data dir", "listen: 127.0.0.1:1\n", `s.yaml: data_dir is required`},
		{"bad listen", "data_dir: /d\nlisten: nowhere\n", `listen "nowhere" is not host:port`},
		{"skip lb in prod", "data_dir: /d\nenvironments:\n  - name: p\n    type: prod\n    skip_lb_changes: true\n    hosts: [{id: a, role: author}]\n", `s.yaml:5: environment "p": skip_lb_changes is only allowed for dev and stage`},
		{"relative flush path", "data_dir: /d\nenvironments:\n  - name: p\n    type: prod\n    flush_paths: [content/x]\n    hosts: [{id: a, role: author}]\n", `s.yaml:5: environment "p": flush_paths: cache path "content/x" must be absolute`},
		{"dotdot invalidate path", "data_dir: /d\nenvironments:\n  - name: p\n    type: prod\n    invalidate_paths: [/content/../etc]\n    hosts: [{id: a, role: author}]\n", `must not contain ..`},
		{"bad host id", "data_dir: /d\nenvironments:\n  - name: e\n    type: dev\n    hosts:\n      - id: a/b\n        role: author\n", `s.yaml:6: host id "a/b"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("s.yaml", []byte(tc.in))
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLoadFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "server.yaml")
	require.NoError(t, os.WriteFile(p, []byte(good+"    bogus: 1\n"), 0o600))
	_, err := Load(p)
	require.ErrorContains(t, err, p+":16: unknown key \"bogus\"")
	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorContains(t, err, "read config")
}

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load("../../packaging/deckhand-server.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, c.Hosts())
}
