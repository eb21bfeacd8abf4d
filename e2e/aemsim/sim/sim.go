// Package sim simulates the CRX Package Manager of one AEM instance (author
// or publish) well enough for Deckhand's end-to-end tests: the JSON service
// (/crx/packmgr/service/.json), the legacy service.jsp (listing and one-shot
// upload+install), installstatus.jsp, Basic auth, FileVault's dependency
// handling on install and uninstall, durable state in a data directory, and
// fault injection plus a request log for tests (under /_sim/).
//
// It owns no AEM content: "installing" a package records who installed which
// package when; nothing from jcr_root is applied anywhere.
//
// Response shapes follow /work/shared/AEM-APIS.md section 1 and FileVault's
// sources; messages taken verbatim from FileVault are marked as such, the
// others are our best reading and marked unverified.
package sim

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
)

// Dependency handling modes, FileVault's DependencyHandling.
const (
	// DepIgnore installs without looking at dependencies.
	DepIgnore = "ignore"
	// DepBestEffort installs uploaded-but-uninstalled dependencies first and
	// ignores missing ones.
	DepBestEffort = "best_effort"
	// DepRequired installs uploaded-but-uninstalled dependencies first and
	// refuses when a dependency is not even uploaded.
	DepRequired = "required"
	// DepStrict refuses unless every dependency is already installed.
	DepStrict = "strict"
)

// Config configures a Sim.
type Config struct {
	// User and Password are the only credentials accepted (Basic auth). Required.
	User     string
	Password string
	// DataDir holds the state and the uploaded packages. Required; created
	// if missing. Two Sims must not share one.
	DataDir string
	// Logger receives one line per request and every state change; nil discards.
	Logger hclog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxUploadBytes bounds one uploaded package; 0 means 1 GiB.
	MaxUploadBytes int64
	// CRXVersion is reported in the version attribute of service.jsp
	// responses; empty means "1.6.13" (an arbitrary recent-looking value).
	CRXVersion string
	// DependencyHandling is the default for installs and uninstalls (a
	// request may override it with the dependencyHandling parameter); empty
	// means DepRequired, which the brief names as AEM's behaviour.
	DependencyHandling string
}

// Sim is one simulated AEM instance. It is an http.Handler; create it with
// New and stop it with Close. All methods are safe for concurrent use.
type Sim struct {
	cfg   Config
	log   hclog.Logger
	store *store

	// installMu serialises installs and uninstalls, as the Package Manager
	// does, so a second install queues behind a slow one.
	installMu sync.Mutex

	mu       sync.Mutex // guards everything below
	progress *progress  // the install running now, nil when idle
	faults   []Fault
	nextID   int64
	requests []*Request
	nextSeq  int64

	inflight  sync.WaitGroup // ServeHTTP calls in progress
	closing   chan struct{}  // closed by Close
	closeOne  sync.Once
	storeOnce sync.Once
}

// progress is what installstatus.jsp reports while an install runs.
type progress struct {
	pkg   aempkg.ID
	items int
}

// New loads (or creates) the state in cfg.DataDir and returns a Sim ready to serve.
func New(cfg Config) (*Sim, error) {
	if cfg.User == "" || cfg.Password == "" {
		return nil, errors.New("aemsim: user and password are required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("aemsim: a data directory is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = 1 << 30
	}
	if cfg.CRXVersion == "" {
		cfg.CRXVersion = "1.6.13"
	}
	if cfg.DependencyHandling == "" {
		cfg.DependencyHandling = DepRequired
	}
	if _, err := parseDependencyHandling(cfg.DependencyHandling); err != nil {
		return nil, fmt.Errorf("aemsim: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("aemsim: %w", err)
	}
	st, err := openStore(cfg.DataDir, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("aemsim: %w", err)
	}
	s := &Sim{
		cfg:     cfg,
		log:     cfg.Logger,
		store:   st,
		closing: make(chan struct{}),
	}
	s.log.Info("aemsim ready", "data", cfg.DataDir, "packages", len(st.entries), "dependency_handling", cfg.DependencyHandling)
	return s, nil
}

// Close makes slow installs finish their delay at once (the install still
// completes and is recorded), waits for requests in progress and releases
// the data directory. The Sim answers 503 afterwards.
func (s *Sim) Close() error {
	// Closed under s.mu: ServeHTTP checks closed() and calls inflight.Add
	// under s.mu, so no Add can slip in after Wait has started.
	s.mu.Lock()
	s.closeOne.Do(func() { close(s.closing) })
	s.mu.Unlock()
	s.inflight.Wait()
	var err error
	s.storeOnce.Do(func() { err = s.store.close() })
	return err
}

func (s *Sim) closed() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// authenticate checks Basic credentials in constant time and returns the user.
func (s *Sim) authenticate(r *http.Request) (string, bool) {
	u, p, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	uok := subtle.ConstantTimeCompare([]byte(u), []byte(s.cfg.User)) == 1
	pok := subtle.ConstantTimeCompare([]byte(p), []byte(s.cfg.Password)) == 1
	return u, uok && pok
}

func parseDependencyHandling(v string) (string, error) {
	switch h := strings.ToLower(v); h {
	case DepIgnore, DepBestEffort, DepRequired, DepStrict:
		return h, nil
	case "best-effort", "besteffort":
		return DepBestEffort, nil
	}
	return "", fmt.Errorf("unknown dependency handling %q (want ignore, best_effort, required or strict)", v)
}
