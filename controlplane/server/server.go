// Package server assembles deckhand-server: store, epoch, fleet, gRPC
// services, and their lifecycle. cmd/deckhand-server is a thin wrapper;
// tests start the same thing in-process on a loopback port.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/deckhand-dev/deckhand/controlplane/api"
	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/fleet"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/deckhand-dev/deckhand/controlplane/pki"
	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/clock"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/metrics"
	"github.com/deckhand-dev/deckhand/pkg/netaddr"
	"github.com/deckhand-dev/deckhand/pkg/version"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

// KeepaliveEnforcement is the server's policy for client pings; agents'
// session.ClientKeepalive stays inside it.
var KeepaliveEnforcement = keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}

// KeepaliveParams: the server pings a silent connection after 30 s and
// closes it when the ping is not answered in 10 s, so a half-open agent
// stream is also noticed on this side.
var KeepaliveParams = keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}

// Options adjust a Server beyond its config file.
type Options struct {
	Logger hclog.Logger
	// Listener, when set, is used instead of listening on cfg.Listen.
	Listener net.Listener
	// GRPCOptions are added to the gRPC server's options (credentials).
	GRPCOptions []grpc.ServerOption
	// DevInsecure serves without TLS and treats every caller as an admin
	// and every Hello as truthful. Only allowed on a loopback address.
	DevInsecure bool
	// MissedHeartbeats overrides the fleet's default of 3.
	MissedHeartbeats int
	// Sets resolves artifact sets for deployments (tests; the server's own
	// artifact store is used when nil).
	Sets api.SetResolver
	// Clock drives pipeline waits (schedules, 7-day timeouts); tests pass
	// a fake one. Default: the wall clock.
	Clock clock.Clock
	// Gates evaluates pipeline gates (default: the built-in gates).
	Gates pipeline.Gates
	// Alive is called on every fleet supervision tick (systemd watchdog).
	Alive func()
	// GitCheck checks a pipeline's branch (default: git ls-remote).
	GitCheck func(ctx context.Context, repo, branch string) error
}

// Server is one running control plane.
type Server struct {
	cfg       *config.Config
	log       hclog.Logger
	store     *store.Store
	blobs     *artifacts.Blobs
	fleet     *fleet.Fleet
	grpc      *grpc.Server
	ln        *fleet.ConnTracker
	epoch     uint64
	pki       *pki.PKI
	authz     *auth.Authorizer
	rollouts  *rollout.Manager
	pipelines *pipeline.Manager
	metrics   *metrics.Server
	metricsAt atomic.Value // string
	stopped   sync.Once
	// web serves the HTTP API; nil when http_listen is not set.
	web *api.HTTPServer
}

// MetricsAddr is where /metrics is served ("" when off or not bound).
func (s *Server) MetricsAddr() string {
	at, _ := s.metricsAt.Load().(string)
	return at
}

// Pipelines exposes the pipeline executions.
func (s *Server) Pipelines() *pipeline.Manager { return s.pipelines }

// Rollouts exposes the deployment manager.
func (s *Server) Rollouts() *rollout.Manager { return s.rollouts }

// PKI exposes the CA (nil in --dev-insecure mode).
func (s *Server) PKI() *pki.PKI { return s.pki }

// New opens state and builds the services; Serve starts them.
func New(cfg *config.Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	st, err := store.Open(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	epoch, err := st.NextEpoch()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("bump epoch: %w", err)
	}
	blobs, err := artifacts.OpenBlobs(filepath.Join(cfg.DataDir, "artifacts"))
	if err != nil {
		st.Close()
		return nil, err
	}
	ln := opts.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.Listen)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
		}
	}
	addr := ln.Addr().String()
	if opts.DevInsecure && !netaddr.IsLoopback(addr) {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("refusing --dev-insecure on %s: it turns off TLS and authentication, so it is allowed only on a loopback address", addr)
	}
	var fl *fleet.Fleet
	var ca *pki.PKI
	if !opts.DevInsecure {
		names := cfg.TLS.ServerNames
		if len(names) == 0 {
			names = pki.DefaultServerNames(addr)
		}
		ca, err = pki.Open(pki.Config{
			DataDir: cfg.DataDir, CACert: cfg.TLS.CACert, CAKey: cfg.TLS.CAKey, ServerNames: names,
			HostCertLifetime: cfg.TLS.HostCertLifetime.D(), ServerAddress: addr, Logger: log,
			Disconnect: func(host, why string) bool { return fl.Disconnect(host, why) },
			IsDeclared: func(host string) bool { _, ok := cfg.Lookup(host); return ok },
		}, st)
		if err != nil {
			ln.Close()
			st.Close()
			return nil, err
		}
	}
	authz := &auth.Authorizer{Store: st, PKI: ca, Insecure: opts.DevInsecure, Logger: log.Named("auth")}
	// Metrics read the fleet and the pipelines at scrape time; both exist
	// by the time anything scrapes.
	var pipelines *pipeline.Manager
	mets := metrics.NewServer(func() (on, off, never int) {
		all, _ := fl.Agents()
		for _, a := range all {
			switch a.State {
			case "online":
				on++
			case "offline":
				off++
			default:
				never++
			}
		}
		return
	}, func() int { return pipelines.Running() })
	fcfg := fleet.Config{
		Store: st, Hosts: cfg, Epoch: epoch, Blobs: blobs, HeartbeatInterval: cfg.HeartbeatInterval.D(),
		MissedHeartbeats: opts.MissedHeartbeats, Logger: log, ServerVersion: version.Version,
		Sets: artifacts.NewSets(blobs, st.Backend()), Tick: opts.Alive, Metrics: mets,
	}
	if ca != nil {
		fcfg.Authenticate, fcfg.Renew = ca.AuthenticateHost, ca.Renew
	}
	tracker := fleet.Track(ln)
	fcfg.Tracker = tracker
	fl, err = fleet.New(fcfg)
	if err != nil {
		tracker.Close()
		st.Close()
		return nil, err
	}
	gopts := append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(KeepaliveEnforcement),
		grpc.KeepaliveParams(KeepaliveParams),
		// Ten thousand mostly idle streams: keep per-connection buffers
		// small and give the write buffer back when idle.
		grpc.SharedWriteBuffer(true),
		// Stop waits for stream handlers, so none writes to a closed store.
		grpc.WaitForHandlers(true),
		grpc.ReadBufferSize(8 << 10),
		// With a shared write buffer only connections that are writing
		// hold one. 64 KiB lets an artifact download go out in full
		// 16 KiB TLS records, several per flush, instead of one 8 KiB
		// record per write call.
		grpc.WriteBufferSize(64 << 10),
		// Artifact chunks go out without being copied (fleet.Codec).
		grpc.ForceServerCodecV2(fleet.Codec{}),
		grpc.ChainUnaryInterceptor(authz.Unary()),
		grpc.ChainStreamInterceptor(authz.Stream()),
	}, opts.GRPCOptions...)
	if ca != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(ca.ServerTLS())))
	}
	gs := grpc.NewServer(gopts...)
	pb.RegisterAgentServiceServer(gs, fl)
	rollouts := rollout.NewManager(st.Backend(), fl, log)
	rollouts.Metrics = mets
	artSets := artifacts.NewSets(blobs, st.Backend())
	sets := opts.Sets
	if sets == nil {
		sets = SetResolver(artSets)
	}
	pipelines = pipeline.New(pipeline.Deps{
		Metrics: mets,
		Backend: st.Backend(), Config: cfg, Fleet: fl, Rollouts: rollouts,
		Artifacts: pipelineArtifacts{resolve: sets, sets: artSets}, Gates: opts.Gates, Clock: opts.Clock, GitCheck: opts.GitCheck, Logger: log,
		Drift: func(host string) ([]pipeline.DriftNote, error) {
			recs, err := st.Drift(host, false)
			out := make([]pipeline.DriftNote, 0, len(recs))
			for _, r := range recs {
				out = append(out, pipeline.DriftNote{Path: r.Path, Kind: r.Kind, Severity: r.Severity, At: r.At})
			}
			return out, err
		},
	})
	pb.RegisterAdminServiceServer(gs, &api.Admin{Fleet: fl, Store: st, Hosts: cfg, PKI: ca, ServerAddress: addr, Config: cfg, Rollouts: rollouts, Sets: sets, Pipelines: pipelines})
	pb.RegisterArtifactServiceServer(gs, artifacts.NewService(artifacts.NewSets(blobs, st.Backend()), authz.Record))
	pb.RegisterPipelineServiceServer(gs, api.NewPipelines(pipelines, cfg))
	if ca != nil {
		pb.RegisterEnrollServiceServer(gs, &pki.EnrollServer{P: ca, Audit: authz.Record})
		if err := bootstrapAdmin(cfg, st, ca, addr, log); err != nil {
			tracker.Close()
			st.Close()
			return nil, err
		}
		log.Info("server ready", "listen", addr, "epoch", epoch, "config", cfg.String(), "version", version.Version, "ca_fingerprint", ca.Fingerprint())
	} else {
		log.Warn("server ready in --dev-insecure mode: no TLS, no authentication; for local demos only", "listen", addr, "epoch", epoch, "config", cfg.String(), "version", version.Version)
	}
	var web *api.HTTPServer
	if cfg.HTTPListen != "" {
		var tc *tls.Config // nil: plain HTTP, --dev-insecure only (loopback checked by ListenHTTP)
		if ca != nil {
			tc = ca.ServerTLS()
		}
		h := &api.HTTP{Pipelines: pipelines, Config: cfg, Auth: authz, Logger: log}
		if web, err = api.ListenHTTP(cfg.HTTPListen, tc, h, log); err != nil {
			tracker.Close()
			st.Close()
			return nil, err
		}
	}
	return &Server{cfg: cfg, log: log, store: st, blobs: blobs, fleet: fl, grpc: gs, ln: tracker, epoch: epoch, pki: ca, authz: authz, rollouts: rollouts, pipelines: pipelines, metrics: mets, web: web}, nil
}

// CredentialsFile is where the first admin's credentials are written.
func CredentialsFile(cfg *config.Config) string {
	if cfg.AdminCredentialsFile != "" {
		return cfg.AdminCredentialsFile
	}
	return filepath.Join(cfg.DataDir, "admin-credentials.yaml")
}

// bootstrapAdmin creates the first admin on a fresh data dir and writes
// its credentials to a 0600 file whose path is logged once.
func bootstrapAdmin(cfg *config.Config, st *store.Store, ca *pki.PKI, addr string, log hclog.Logger) error {
	n, err := st.AdminCount()
	if err != nil || n > 0 {
		return err
	}
	tok, err := api.NewAdminToken()
	if err != nil {
		return err
	}
	if err := st.PutAdmin(store.Admin{Name: "admin", Roles: []string{string(auth.Admin)}, CreatedAt: time.Now().UTC(), CreatedBy: "bootstrap"}, tok); err != nil {
		return err
	}
	path := CredentialsFile(cfg)
	err = auth.WriteCredentials(path, &auth.Credentials{
		Server: addr, Name: "admin", Token: tok, CAFingerprint: ca.Fingerprint(), CA: string(identity.CertPEM(ca.CA().Cert)),
	})
	if err != nil {
		return fmt.Errorf("write the first admin's credentials: %w", err)
	}
	log.Info("first start: wrote the admin credentials; use them with deckctl --credentials and keep them private", "path", path)
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// HTTPAddr is the address of the HTTP API, "" when it is off.
func (s *Server) HTTPAddr() string {
	if s.web == nil {
		return ""
	}
	return s.web.Addr()
}

// Fleet exposes the fleet (later layers, tests).
func (s *Server) Fleet() *fleet.Fleet { return s.fleet }

// Store exposes the store (tests).
func (s *Server) Store() *store.Store { return s.store }

// Blobs exposes the artifact store.
func (s *Server) Blobs() *artifacts.Blobs { return s.blobs }

// Epoch is this start's epoch.
func (s *Server) Epoch() uint64 { return s.epoch }

// Serve runs until ctx ends, then stops everything and closes the store.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.fleet.Supervise(ctx)
	}()
	if s.cfg.MetricsListen != "off" {
		at, _ := metrics.Serve(ctx, s.cfg.MetricsListen, s.metrics.Reg, s.log.Named("metrics"))
		s.metricsAt.Store(at)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.ln) }()
	if s.web != nil {
		s.web.Start()
	}
	if err := s.rollouts.Resume(); err != nil {
		s.log.Error("cannot resume deployments", "error", err)
	}
	if err := s.pipelines.Resume(); err != nil {
		s.log.Error("cannot resume pipeline executions", "error", err)
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			err = nil
		}
	}
	cancel()
	s.Stop()
	wg.Wait()
	return err
}

// Stop closes every stream and the store. Agents reconnect to the next
// server start; nothing in flight is lost because tasks are persisted
// before they are sent.
func (s *Server) Stop() {
	s.stopped.Do(func() {
		// Runners first: they stop without touching persisted state and
		// resume at the next start.
		if s.web != nil {
			s.web.Stop() // before the runners and the store it reads
		}
		s.pipelines.Shutdown()
		s.rollouts.Shutdown()
		s.grpc.Stop()
		if err := s.store.Close(); err != nil {
			s.log.Error("close store", "error", err)
		}
		s.log.Info("server stopped")
	})
}

// SetResolver adapts the artifact store's sets to what a rollout ships.
func SetResolver(sets *artifacts.Sets) api.SetResolver {
	return func(id string) (rollout.Artifacts, error) {
		set, err := sets.Get(id)
		if err != nil {
			return rollout.Artifacts{}, err
		}
		var out rollout.Artifacts
		for _, p := range set.Packages {
			out.Packages = append(out.Packages, p.Ref())
		}
		if set.Dispatcher != nil {
			ref := set.Dispatcher.Ref()
			out.Dispatcher = &ref
		}
		return out, nil
	}
}

// pipelineArtifacts gives pipelines the artifact store.
type pipelineArtifacts struct {
	resolve api.SetResolver
	sets    *artifacts.Sets
}

func (p pipelineArtifacts) Resolve(id string) (rollout.Artifacts, error) { return p.resolve(id) }

func (p pipelineArtifacts) CreateSet(version string, digests []string, by string) (string, error) {
	set, _, err := p.sets.Create(version, digests, by)
	return set.ID, err
}
