// Package agent assembles deckhand-agent: journal, task handlers, worker
// and the session to the control plane, in the order that keeps the host
// safe — interrupted tasks are repaired before the agent says Hello.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/drift"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/agent/tlsid"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/backoff"
	"github.com/deckhand-dev/deckhand/pkg/failpoint"
	"github.com/deckhand-dev/deckhand/pkg/metrics"
	"github.com/deckhand-dev/deckhand/pkg/task"
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
	// OnConnected and OnDisconnected report the session's state (systemd
	// status lines).
	OnConnected    func(server string)
	OnDisconnected func(err error)
	// OnReady is called once interrupted tasks are repaired, before the
	// first connection (systemd READY=1).
	OnReady func()
	// Alive is the session loop's proof of life (systemd watchdog).
	Alive func()
	// Hooks inject failures (tests only).
	Hooks session.Hooks
}

// Agent is one running deckhand-agent.
type Agent struct {
	cfg     *config.Config
	opts    Options
	log     hclog.Logger
	journal *journal.Journal
	worker  *worker.Worker
	client  *session.Client
	fetcher *artifacts.GRPCFetcher
	// identity is loaded (or enrolled) by Run before the first dial; nil
	// in insecure mode.
	identity *tlsid.Identity
	usesTLS  bool
	drift    *driftQueue
	// driftWatch watches the dispatcher's config tree (nil without one).
	driftWatch *drift.Watcher
	metrics    *metrics.Agent
	metricsAt  atomic.Value // string
}

// MetricsAddr is where /metrics is served ("" when off or not bound).
func (a *Agent) MetricsAddr() string {
	at, _ := a.metricsAt.Load().(string)
	return at
}

// agentRenewer gives the session the identity Run loads later.
type agentRenewer struct{ a *Agent }

func (r agentRenewer) RenewAt() time.Time        { return r.a.identity.RenewAt() }
func (r agentRenewer) NewCSR() ([]byte, error)   { return r.a.identity.NewCSR() }
func (r agentRenewer) Install(cert []byte) error { return r.a.identity.Install(cert) }

// Running is the number of tasks executing now.
func (a *Agent) Running() int { return a.worker.Running() }

// Identity returns the TLS identity (nil before Run, or in insecure mode).
func (a *Agent) Identity() *tlsid.Identity { return a.identity }

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
	a := &Agent{cfg: cfg, opts: opts, log: log, journal: j, drift: newDriftQueue(j, log.Named("drift"))}
	a.fetcher = &artifacts.GRPCFetcher{
		Dir:    filepath.Join(cfg.DataDir, "artifacts"),
		Conn:   func(ctx context.Context) (*grpc.ClientConn, error) { return a.client.Conn(ctx) },
		HostID: cfg.HostID,
		Logger: log.Named("artifacts"),
	}
	handlers, err := buildHandlers(deps{cfg: cfg, log: log, journal: j, fetcher: a.fetcher, conn: a.fetcher.Conn})
	if err != nil {
		j.Close()
		return nil, err
	}
	if cfg.Dispatcher != nil {
		dw, err := a.newDriftWatcher()
		if err != nil {
			j.Close()
			return nil, fmt.Errorf("drift watcher: %w", err)
		}
		a.driftWatch = dw
		for _, k := range []string{task.DispatcherDeploy{}.Name(), task.DispatcherRestore{}.Name()} {
			if h, ok := handlers[k]; ok {
				handlers[k] = silence(h, dw)
			}
		}
	}
	for k, h := range opts.ExtraHandlers {
		handlers[k] = h
	}
	if opts.WrapHandler != nil {
		for k, h := range handlers {
			handlers[k] = opts.WrapHandler(k, h)
		}
	}
	a.metrics = metrics.NewAgent(func() float64 {
		st, err := os.Stat(filepath.Join(cfg.DataDir, journal.FileName))
		if err != nil {
			return 0
		}
		return float64(st.Size())
	}, func() bool { return a.client != nil && a.client.Connected() })
	w := worker.New(worker.Config{Journal: j, Handlers: handlers, Logger: log, OnFinish: func(kind string, r *task.Result) {
		a.metrics.Task(kind, r.Status.String(), r.FinishedAt.Sub(r.StartedAt), r.FinishedAt)
	}})
	dial := opts.DialOptions
	var creds func() (grpc.DialOption, error)
	var renewer session.Renewer
	switch {
	case dial != nil:
	case cfg.Insecure:
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	default:
		creds = func() (grpc.DialOption, error) {
			if a.identity == nil {
				return nil, errors.New("no TLS identity loaded")
			}
			return a.identity.DialOption(cfg.Server)
		}
		renewer = agentRenewer{a}
	}
	var onConn func(*pb.Welcome)
	if opts.OnConnected != nil {
		onConn = func(*pb.Welcome) { opts.OnConnected(cfg.Server) }
	}
	c := session.New(session.Config{
		Server:         cfg.Server,
		HostID:         cfg.HostID,
		Version:        version.Version,
		BootID:         newBootID(),
		Capabilities:   capabilities(handlers),
		DialOptions:    dial,
		BaseBackoff:    cfg.Reconnect.BaseBackoff.D(),
		MaxBackoff:     cfg.Reconnect.MaxBackoff.D(),
		Stagger:        cfg.Reconnect.Stagger.D(),
		Logger:         log,
		Journal:        j,
		Worker:         w,
		OnConnected:    onConn,
		OnDisconnected: opts.OnDisconnected,
		Alive:          opts.Alive,
		Hooks:          opts.Hooks,
		Credentials:    creds,
		Renewer:        renewer,
		Drift:          a.drift,
	})
	a.worker, a.client, a.usesTLS = w, c, creds != nil
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
	if a.cfg.MetricsListen != "off" {
		at, _ := metrics.Serve(ctx, a.cfg.MetricsListen, a.metrics.Reg, a.log.Named("metrics"))
		a.metricsAt.Store(at)
	}
	failpoint.Hit("agent/recovering")
	if err := a.worker.Recover(ctx); err != nil {
		return fmt.Errorf("recover interrupted tasks: %w", err)
	}
	if a.driftWatch != nil {
		dctx, stopDrift := context.WithCancel(ctx)
		driftDone := make(chan struct{})
		go func() {
			defer close(driftDone)
			if err := a.driftWatch.Run(dctx); err != nil {
				a.log.Error("drift watcher stopped", "error", err)
			}
		}()
		defer func() { stopDrift(); <-driftDone }()
	}
	if a.opts.OnReady != nil {
		a.opts.OnReady()
	}
	if a.usesTLS {
		if err := a.loadIdentity(ctx); err != nil {
			a.worker.Shutdown(context.Background())
			return err
		}
	}
	err := a.client.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if serr := a.worker.Shutdown(sctx); serr != nil {
		a.log.Warn("shutdown", "error", serr)
	}
	return err
}

// loadIdentity loads the agent's certificate, or enrolls with the join
// token when there is none yet. Transient failures are retried; a refusal
// ends the agent with the server's reason.
func (a *Agent) loadIdentity(ctx context.Context) error {
	id, err := tlsid.Load(a.cfg.DataDir, a.cfg.HostID)
	if err == nil {
		a.identity = id
		a.log.Info("loaded the agent certificate", "expires", id.Leaf().NotAfter.Format(time.RFC3339), "renews_at", id.RenewAt().Format(time.RFC3339))
		return nil
	}
	if !errors.Is(err, tlsid.ErrNotEnrolled) {
		return fmt.Errorf("TLS identity: %w", err)
	}
	if a.cfg.JoinToken == "" {
		return &session.FatalError{Err: fmt.Errorf("this agent is not enrolled: set join_token and ca_fingerprint in %s (from `deckctl tokens create --host %s`)", a.cfg.File, a.cfg.HostID)}
	}
	bo := backoff.New(a.cfg.Reconnect.BaseBackoff.D(), a.cfg.Reconnect.MaxBackoff.D())
	for {
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		id, err := tlsid.Enroll(ectx, a.cfg.DataDir, a.cfg.Server, a.cfg.HostID, a.cfg.JoinToken, a.cfg.CAFingerprint)
		cancel()
		if err == nil {
			a.identity = id
			a.log.Info("enrolled with the control plane; the join token is used up and can be removed from the config", "expires", id.Leaf().NotAfter.Format(time.RFC3339))
			return nil
		}
		var refused *tlsid.EnrollError
		if errors.As(err, &refused) {
			a.log.Error("enrollment refused", "reason", refused.Msg)
			return &session.FatalError{Err: err}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := bo.Next()
		a.log.Warn("cannot enroll yet; retrying", "error", err, "in", wait.Round(time.Millisecond))
		if backoff.Sleep(ctx, wait, nil) != nil {
			return ctx.Err()
		}
	}
}
