package lb_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

func TestNewSelectsDriverByKind(t *testing.T) {
	d, err := lb.New(lb.Config{Kind: "haproxy", HAProxy: &lb.HAProxyConfig{Socket: "/run/haproxy/admin.sock", Backend: "be", Server: "d1"}}, nil)
	require.NoError(t, err)
	require.IsType(t, &lb.HAProxy{}, d)

	d, err = lb.New(lb.Config{Kind: "healthfile", HealthFile: &lb.HealthFileConfig{
		Path: "/var/www/html/lb-health.html", DrainTime: yamlconf.Duration(time.Second), RiseTime: yamlconf.Duration(time.Second),
	}}, nil)
	require.NoError(t, err)
	require.IsType(t, &lb.HealthFile{}, d)

	d, err = lb.New(lb.Config{Kind: "command", Command: &lb.CommandConfig{Detach: []string{"true"}, Attach: []string{"/bin/true"}}}, nil)
	require.NoError(t, err)
	require.IsType(t, &lb.Command{}, d)
}

func TestConfigValidationErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  lb.Config
		want []string
	}{
		{"no kind", lb.Config{}, []string{"lb: kind is required"}},
		{"unknown kind", lb.Config{Kind: "f5"}, []string{`unknown kind "f5"`}},
		{"missing section", lb.Config{Kind: "haproxy"}, []string{`kind is "haproxy" but the "haproxy" section is missing`}},
		{"extra section", lb.Config{
			Kind:       "haproxy",
			HAProxy:    &lb.HAProxyConfig{Socket: "/s", Backend: "be", Server: "d1"},
			HealthFile: &lb.HealthFileConfig{},
		}, []string{`kind is "haproxy" but a "healthfile" section is also set`}},
		{"haproxy all wrong at once", lb.Config{Kind: "haproxy", HAProxy: &lb.HAProxyConfig{
			Socket:    "relative.sock",
			Backend:   "be;show info",
			UpTimeout: yamlconf.Duration(-time.Second),
		}}, []string{
			`haproxy.socket must be an absolute path, got "relative.sock"`,
			`haproxy.backend "be;show info" is not a valid HAProxy name`,
			"haproxy.server is required",
			"haproxy.up_timeout must not be negative (got -1s)",
		}},
		{"haproxy missing socket", lb.Config{Kind: "haproxy", HAProxy: &lb.HAProxyConfig{Backend: "be", Server: "d1"}},
			[]string{"haproxy.socket is required"}},
		{"haproxy socket too long", lb.Config{Kind: "haproxy", HAProxy: &lb.HAProxyConfig{
			Socket: "/" + strings.Repeat("x", 120), Backend: "be", Server: "d1",
		}}, []string{"longer than a unix socket path may be"}},
		{"healthfile", lb.Config{Kind: "healthfile", HealthFile: &lb.HealthFileConfig{Path: "health", Mode: 0o4755}}, []string{
			`healthfile.path must be an absolute path, got "health"`,
			"healthfile.mode",
			"healthfile.drain_time must be > 0",
			"healthfile.rise_time must be > 0",
		}},
		{"command", lb.Config{Kind: "command", Command: &lb.CommandConfig{
			Attach: []string{"/nonexistent/lb-ctl"},
			Status: []string{""},
		}}, []string{
			"command.detach is required",
			`command.attach: exec: "/nonexistent/lb-ctl"`,
			"command.status: the program (first element) is empty",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			_, err = lb.New(tc.cfg, nil)
			require.Error(t, err, "New must refuse what Validate refuses")
		})
	}
}

func TestConfigDecodesFromYAML(t *testing.T) {
	// The agent's config file embeds lb.Config; durations are strings.
	var cfg struct {
		LB lb.Config `yaml:"lb"`
	}
	err := yamlconf.Decode("agent.yaml", []byte(`
lb:
  kind: haproxy
  haproxy:
    socket: /run/haproxy/admin.sock
    backend: dispatchers
    server: disp1
    drain_timeout: 45s
    up_timeout: 20s
    poll_interval: 250ms
`), &cfg)
	require.NoError(t, err)
	require.Equal(t, lb.HAProxyConfig{
		Socket: "/run/haproxy/admin.sock", Backend: "dispatchers", Server: "disp1",
		DrainTimeout: yamlconf.Duration(45 * time.Second), UpTimeout: yamlconf.Duration(20 * time.Second),
		PollInterval: yamlconf.Duration(250 * time.Millisecond),
	}, *cfg.LB.HAProxy)
	require.NoError(t, cfg.LB.Validate())

	cfg.LB = lb.Config{}
	err = yamlconf.Decode("agent.yaml", []byte("lb:\n  kind: healthfile\n  healthfile:\n    path: /var/www/h\n    mode: 0640\n    drain_time: 5s\n    rise_time: 2s\n"), &cfg)
	require.NoError(t, err)
	require.Equal(t, lb.HealthFileConfig{
		Path: "/var/www/h", Mode: 0o640, DrainTime: yamlconf.Duration(5 * time.Second), RiseTime: yamlconf.Duration(2 * time.Second),
	}, *cfg.LB.HealthFile)

	err = yamlconf.Decode("agent.yaml", []byte("lb:\n  kind: healthfile\n  healthfile:\n    path: /var/www/h\n    drain_tme: 5s\n"), &cfg)
	require.ErrorContains(t, err, `unknown key "drain_tme" (did you mean "drain_time"?)`)
}

// TestHAProxyCommandTimeout needs no HAProxy: a socket that accepts and
// never answers stands for a hung load balancer.
func TestHAProxyCommandTimeout(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()

	d, err := lb.NewHAProxy(lb.HAProxyConfig{
		Socket: sock, Backend: "be", Server: "d1", CommandTimeout: yamlconf.Duration(200 * time.Millisecond),
	}, testLogger(t, "lb"))
	require.NoError(t, err)
	start := time.Now()
	_, err = d.Status(context.Background())
	require.ErrorIs(t, err, lb.ErrTimeout)
	require.ErrorContains(t, err, "no answer within command_timeout 200ms")
	require.Less(t, time.Since(start), 2*time.Second)
}
