package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/pkg/netaddr"
)

// HTTPServer serves the HTTP API on its own listener (config http_listen).
// ListenHTTP binds it, Start serves, Stop ends it; the control plane calls
// Stop before it closes the store.
type HTTPServer struct {
	srv  *http.Server
	ln   net.Listener
	tls  bool
	log  hclog.Logger
	base context.CancelFunc

	mu      sync.Mutex
	started bool          // mu
	done    chan struct{} // closed when Serve returns; mu
}

// ListenHTTP binds addr. tlsCfg is the server's TLS config (the gRPC
// listener's: the control plane CA's certificate, client certificates
// verified when given); nil serves plain HTTP, which, like --dev-insecure
// gRPC, is refused unless addr is a loopback address.
func ListenHTTP(addr string, tlsCfg *tls.Config, h http.Handler, log hclog.Logger) (*HTTPServer, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if tlsCfg == nil && !netaddr.IsLoopback(addr) {
		return nil, fmt.Errorf("refusing plain HTTP on http_listen %s: --dev-insecure turns off TLS and authentication, so it is allowed only on a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http_listen %s: %w", addr, err)
	}
	if tlsCfg == nil && !netaddr.IsLoopback(ln.Addr().String()) {
		ln.Close()
		return nil, fmt.Errorf("refusing plain HTTP on %s: not a loopback address", ln.Addr())
	}
	log = log.Named("http")
	// base is every request's parent context: cancelling it ends the
	// long-lived SSE streams, which Shutdown would otherwise wait for.
	base, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		// ReadTimeout bounds reading a request; the server clears it once
		// the body is read, so it does not cut SSE streams. There is no
		// WriteTimeout for the same reason.
		ReadTimeout:    time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		BaseContext:    func(net.Listener) context.Context { return base },
		ErrorLog:       log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	return &HTTPServer{srv: srv, ln: ln, tls: tlsCfg != nil, log: log, base: cancel, done: make(chan struct{})}, nil
}

// Addr is the bound address.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// Start serves in the background until Stop.
func (s *HTTPServer) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started = true
	scheme := "https"
	if !s.tls {
		scheme = "http"
	}
	s.log.Info("HTTP API listening", "url", scheme+"://"+s.Addr()+"/api/programs")
	go func() {
		defer close(s.done)
		var err error
		if s.tls {
			// ServeTLS adds HTTP/2 to the config's protocols and uses its
			// certificate.
			err = s.srv.ServeTLS(s.ln, "", "")
		} else {
			err = s.srv.Serve(s.ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP API stopped", "error", err)
		}
	}()
}

// Stop ends open streams, lets running requests finish for up to five
// seconds, then closes everything. Safe to call more than once, and
// without Start.
func (s *HTTPServer) Stop() {
	s.base()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	s.ln.Close() // Shutdown does not know the listener when Start never ran
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		<-s.done
	}
}
