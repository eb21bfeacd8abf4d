// Package simtest starts an in-process AEM Package Manager simulator for a
// test: a sim.Sim behind an httptest server on loopback, with its state in
// t.TempDir() and its log in the test log. Use it from client tests instead
// of running the aemsim binary.
package simtest

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
)

// Default credentials of a Server.
const (
	User     = "admin"
	Password = "admin"
)

// Server is a running simulator. The embedded *sim.Sim gives the Go API
// (faults, request log, package state).
type Server struct {
	*sim.Sim
	// URL is the base URL, e.g. http://127.0.0.1:41234.
	URL string
	// DataDir holds the state; Restart keeps it.
	DataDir string

	t    testing.TB
	cfg  sim.Config
	srv  *httptest.Server
	done bool
}

// New starts a simulator; opts may change the config (credentials,
// dependency handling, ...). It is stopped when the test ends.
func New(t testing.TB, opts ...func(*sim.Config)) *Server {
	t.Helper()
	cfg := sim.Config{
		User:     User,
		Password: Password,
		DataDir:  t.TempDir(),
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: "aemsim", Level: hclog.Trace, Output: logWriter{t},
		}),
	}
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{t: t, cfg: cfg, DataDir: cfg.DataDir}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	sm, err := sim.New(s.cfg)
	if err != nil {
		s.t.Fatalf("simtest: %v", err)
	}
	s.Sim = sm
	s.srv = httptest.NewServer(sm)
	s.URL = s.srv.URL
	s.done = false
}

// Stop closes the server and the simulator (waiting for requests in
// progress). Safe to call more than once.
func (s *Server) Stop() {
	if s.done {
		return
	}
	s.done = true
	s.srv.Close()
	if err := s.Sim.Close(); err != nil {
		s.t.Errorf("simtest: close: %v", err)
	}
}

// Restart stops the simulator and starts a new one on the same data
// directory, like an AEM restart. The URL changes; faults and the request
// log, which are not persistent, start empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
