// Package servertest starts a real control plane in-process on a loopback
// port with its state in t.TempDir(), for tests of anything that talks to
// it: agents, deckctl, the HTTP API. It speaks real mutual TLS unless a
// test asks for --dev-insecure.
package servertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultTopology is a small production environment.
const DefaultTopology = `
environments:
  - name: prod
    type: prod
    hosts:
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
`

// Options tune a test control plane.
type Options struct {
	// Topology is the environments part of the config (YAML).
	Topology string
	// Extra is appended to the config (YAML top-level keys).
	Extra             string
	HeartbeatInterval time.Duration
	DevInsecure       bool
	// Server adjusts the server options (clock, gates...).
	Server func(*server.Options)
}

// Control is a running test control plane.
type Control struct {
	t       testing.TB
	Opts    Options
	Config  *config.Config
	Server  *server.Server
	Addr    string
	cancel  context.CancelFunc
	done    chan struct{}
	running bool
}

// Start runs a control plane until the test ends.
func Start(t testing.TB, opts Options) *Control {
	t.Helper()
	if opts.Topology == "" {
		opts.Topology = DefaultTopology
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 100 * time.Millisecond
	}
	// Metrics on a free port: many test servers run at once.
	cfg, err := config.Parse("test.yaml", []byte("data_dir: "+t.TempDir()+"\nmetrics_listen: 127.0.0.1:0\n"+opts.Topology+"\n"+opts.Extra))
	require.NoError(t, err)
	cfg.HeartbeatInterval = yamlconf.Duration(opts.HeartbeatInterval)
	c := &Control{t: t, Opts: opts, Config: cfg}
	c.Start()
	t.Cleanup(c.Stop)
	return c
}

// Start (re)starts the server on the same address and data dir.
func (c *Control) Start() {
	c.t.Helper()
	addr := c.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old socket may linger a moment after a restart
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(c.t, err)
	c.Addr = ln.Addr().String()
	so := server.Options{Logger: testlog.New(c.t, "server"), Listener: ln, DevInsecure: c.Opts.DevInsecure}
	if c.Opts.Server != nil {
		c.Opts.Server(&so)
	}
	srv, err := server.New(c.Config, so)
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx)
	}()
	c.Server, c.cancel, c.done, c.running = srv, cancel, done, true
}

// Stop stops the server (idempotent).
func (c *Control) Stop() {
	if c.running {
		c.cancel()
		<-c.done
		c.running = false
	}
}

// Restart stops and starts the server: a new epoch on the same state.
func (c *Control) Restart() {
	c.Stop()
	c.Start()
}

// Credentials returns the first admin's credentials file contents.
func (c *Control) Credentials() *auth.Credentials {
	c.t.Helper()
	cr, err := auth.LoadCredentials(server.CredentialsFile(c.Config))
	require.NoError(c.t, err)
	return cr
}

// CredentialsPath is the first admin's credentials file.
func (c *Control) CredentialsPath() string { return server.CredentialsFile(c.Config) }

// TLSConfig verifies the server against its CA, optionally presenting cert.
func (c *Control) TLSConfig(cert *tls.Certificate) *tls.Config {
	ca := c.Server.PKI().CA()
	host, _, _ := net.SplitHostPort(c.Addr)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: host}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// AdminConn dials the admin API as the first admin (token over TLS), or
// plainly in dev-insecure mode.
func (c *Control) AdminConn() *grpc.ClientConn {
	return c.ConnWithToken(c.tokenOrEmpty())
}

func (c *Control) tokenOrEmpty() string {
	if c.Opts.DevInsecure {
		return ""
	}
	return c.Credentials().Token
}

// ConnWithToken dials with a bearer token (empty: none).
func (c *Control) ConnWithToken(token string) *grpc.ClientConn {
	c.t.Helper()
	var opts []grpc.DialOption
	if c.Opts.DevInsecure {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(c.TLSConfig(nil))))
		if token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
		}
	}
	conn, err := grpc.NewClient(c.Addr, opts...)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// HostCert issues a certificate for host straight from the CA (for raw
// stream tests that play an agent).
func (c *Control) HostCert(host string, lifetime time.Duration) tls.Certificate {
	c.t.Helper()
	key, err := identity.NewKey()
	require.NoError(c.t, err)
	csr, err := identity.NewCSR(key, host)
	require.NoError(c.t, err)
	der, err := c.Server.PKI().Renew(host, csr)
	require.NoError(c.t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(c.t, err)
	return identity.TLSCert(cert, key)
}

// HostConn dials as host with a CA-issued certificate.
func (c *Control) HostConn(host string) *grpc.ClientConn {
	c.t.Helper()
	var opt grpc.DialOption
	if c.Opts.DevInsecure {
		opt = grpc.WithTransportCredentials(insecure.NewCredentials())
	} else {
		cert := c.HostCert(host, time.Hour)
		opt = grpc.WithTransportCredentials(credentials.NewTLS(c.TLSConfig(&cert)))
	}
	conn, err := grpc.NewClient(c.Addr, opt)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// AgentConfig returns agent config YAML for host with its data in
// dataDir: with a fresh join token when the agent is not enrolled yet,
// fast reconnects, and extra appended.
func (c *Control) AgentConfig(host, dataDir, extra string) string {
	c.t.Helper()
	y := fmt.Sprintf("host_id: %s\nserver: %s\ndata_dir: %s\nmetrics_listen: 127.0.0.1:0\nreconnect:\n  stagger: 50ms\n  base_backoff: 50ms\n  max_backoff: 300ms\napachectl: [\"true\"]\n", host, c.Addr, dataDir)
	switch {
	case c.Opts.DevInsecure:
		y += "insecure: true\n"
	default:
		if _, err := os.Stat(filepath.Join(dataDir, "tls", "agent.crt")); err != nil {
			tok, _, err := c.Server.PKI().NewJoinToken(host, "test", time.Hour)
			require.NoError(c.t, err)
			y += fmt.Sprintf("join_token: %s\nca_fingerprint: %s\n", tok, c.Server.PKI().Fingerprint())
		}
	}
	return y + extra
}
