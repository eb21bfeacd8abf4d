// Package agent assembles deckhand-agent: journal, task handlers, worker
// and the session to the control plane, in the order that keeps the host
// safe — interrupted tasks are repaired before the agent says Hello.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/version"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Options adjust an Agent beyond its config file (tests, dev mode).
type Options struct {
	Logger hclog.Logger
	// DialOptions replace the default transport credentials.
	DialOptions []grpc.DialOption
	// ExtraHandlers add or replace handlers by kind (tests).
	ExtraHandlers map[string]worker.Handler
	// WrapHandler lets tests observe or replace a handler by kind.
	WrapHandler func(kind string, h worker.Handler) worker.Handler
	// OnConnected is passed to the session.
	OnConnected func()
	// Hooks inject failures (tests only).
	Hooks session.Hooks
}

// Agent is one running deckhand-agent.
type Agent struct {
	cfg     *config.Config
	log     hclog.Logger
	journal *journal.Journal
	worker  *worker.Worker
	client  *session.Client
	fetcher *artifacts.GRPCFetcher
}

// Fetcher exposes the artifact downloader (tests).
func (a *Agent) Fetcher() *artifacts.GRPCFetcher { return a.fetcher }

// New opens the journal and builds the agent; it does not connect yet.
func New(cfg *config.Config, opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	j, err := journal.Open(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: log, journal: j}
	a.fetcher = &artifacts.GRPCFetcher{
		Dir:    filepath.Join(cfg.DataDir, "artifacts"),
		Conn:   func(ctx context.Context) (*grpc.ClientConn, error) { return a.client.Conn(ctx) },
		HostID: cfg.HostID,
		Logger: log.Named("artifacts"),
	}
	handlers, err := buildHandlers(deps{cfg: cfg, log: log, journal: j, fetcher: a.fetcher})
	if err != nil {
		j.Close()
		return nil, err
	}
	for k, h := range opts.ExtraHandlers {
		handlers[k] = h
	}
	if opts.WrapHandler != nil {
		for k, h := range handlers {
			handlers[k] = opts.WrapHandler(k, h)
		}
	}
	w := worker.New(worker.Config{Journal: j, Handlers: handlers, Logger: log})
	dial := opts.DialOptions
	if dial == nil {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	var onConn func(*pb.Welcome)
	if opts.OnConnected != nil {
		onConn = func(*pb.Welcome) { opts.OnConnected() }
	}
	c := session.New(session.Config{
		Server:       cfg.Server,
		HostID:       cfg.HostID,
		Version:      version.Version,
		BootID:       newBootID(),
		Capabilities: capabilities(handlers),
		DialOptions:  dial,
		BaseBackoff:  cfg.Reconnect.BaseBackoff.D(),
		MaxBackoff:   cfg.Reconnect.MaxBackoff.D(),
		Stagger:      cfg.Reconnect.Stagger.D(),
		Logger:       log,
		Journal:      j,
		Worker:       w,
		OnConnected:  onConn,
		Hooks:        opts.Hooks,
	})
	a.worker, a.client = w, c
	return a, nil
}

func capabilities(h map[string]worker.Handler) []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

func newBootID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Client exposes the session (connection state, artifact downloads).
func (a *Agent) Client() *session.Client { return a.client }

// Journal exposes the journal (tests, local commands).
func (a *Agent) Journal() *journal.Journal { return a.journal }

// Run recovers interrupted tasks, then keeps the session up until ctx ends.
// On return the worker is stopped and the journal closed.
func (a *Agent) Run(ctx context.Context) error {
	defer a.journal.Close()
	if n, err := a.journal.Prune(time.Now().Add(-a.cfg.JournalRetention.D())); err != nil {
		a.log.Warn("journal prune failed", "error", err)
	} else if n > 0 {
		a.log.Info("pruned old acknowledged tasks from the journal", "count", n)
	}
	if err := a.worker.Recover(ctx); err != nil {
		return fmt.Errorf("recover interrupted tasks: %w", err)
	}
	err := a.client.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if serr := a.worker.Shutdown(sctx); serr != nil {
		a.log.Warn("shutdown", "error", serr)
	}
	return err
}
