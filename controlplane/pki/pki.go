// Package pki owns the control plane's certificate authority: creating it
// on first start (or loading the operator's), the server's own TLS
// certificate, enrollment of agents with one-time join tokens, renewal of
// host certificates over the authenticated stream, and revocation.
package pki

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

// Config is the TLS part of the server config.
type Config struct {
	DataDir string
	// CACert and CAKey name an operator-supplied CA; empty: create one in
	// <data_dir>/ca on first start.
	CACert, CAKey string
	// ServerNames go into the server certificate (DNS names or IPs).
	ServerNames []string
	// HostCertLifetime is the lifetime of agent certificates (default 30 days).
	HostCertLifetime time.Duration
	// ServerAddress is what the token command tells agents to connect to.
	ServerAddress string
	Logger        hclog.Logger
	// Disconnect cuts a host's live stream (revocation).
	Disconnect func(host, why string) bool
	// Hosts says whether a host id is declared.
	IsDeclared func(host string) bool
}

// DefaultHostCertLifetime is the seed value for agent certificates.
const DefaultHostCertLifetime = 30 * 24 * time.Hour

// PKI issues and checks certificates. Safe for concurrent use.
type PKI struct {
	cfg   Config
	st    *store.Store
	ca    *identity.CA
	log   hclog.Logger
	serve tls.Certificate

	mu      sync.RWMutex
	revoked map[string]store.Revocation // serial -> revocation; mu
}

// Open loads or creates the CA and issues the server's certificate.
func Open(cfg Config, st *store.Store) (*PKI, error) {
	if cfg.HostCertLifetime <= 0 {
		cfg.HostCertLifetime = DefaultHostCertLifetime
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	p := &PKI{cfg: cfg, st: st, log: cfg.Logger.Named("pki")}
	var err error
	if cfg.CACert != "" || cfg.CAKey != "" {
		if cfg.CACert == "" || cfg.CAKey == "" {
			return nil, errors.New("tls: ca_cert and ca_key must be given together")
		}
		if p.ca, err = identity.LoadCA(cfg.CACert, cfg.CAKey); err != nil {
			return nil, fmt.Errorf("tls: operator CA: %w", err)
		}
	} else if p.ca, err = loadOrCreateCA(filepath.Join(cfg.DataDir, "ca"), p.log); err != nil {
		return nil, err
	}
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	leaf, err := p.ca.IssueServer(key.Public(), cfg.ServerNames, 365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("tls: issue the server certificate: %w", err)
	}
	// The chain includes the CA so an enrolling agent can check it against
	// the fingerprint it was given.
	p.serve = identity.TLSCert(leaf, key, p.ca.Cert)
	rev, err := st.RevokedSerials()
	if err != nil {
		return nil, err
	}
	p.revoked = rev
	return p, nil
}

func loadOrCreateCA(dir string, log hclog.Logger) (*identity.CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if _, err := os.Stat(certPath); err == nil {
		return identity.LoadCA(certPath, keyPath)
	}
	ca, err := identity.NewCA("Deckhand control plane CA", 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	keyPEM, err := identity.KeyPEM(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := identity.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("tls: write CA key: %w", err)
	}
	if err := identity.WriteFileAtomic(certPath, identity.CertPEM(ca.Cert), 0o644); err != nil {
		return nil, fmt.Errorf("tls: write CA certificate: %w", err)
	}
	log.Info("created the control plane CA", "cert", certPath, "fingerprint", identity.Fingerprint(ca.Cert))
	return ca, nil
}

// CA returns the CA.
func (p *PKI) CA() *identity.CA { return p.ca }

// Fingerprint is the CA's pin for enrollment.
func (p *PKI) Fingerprint() string { return identity.Fingerprint(p.ca.Cert) }

// ServerTLS is the gRPC listener's TLS config: client certificates are
// verified when given (enrollment comes without one), and every other call
// requires one.
func (p *PKI) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{p.serve},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    p.ca.Pool(),
	}
}

// ErrRevoked means the certificate was revoked.
var ErrRevoked = errors.New("certificate revoked")

// Peer returns the verified principal of a call's client certificate.
func (p *PKI) Peer(ctx context.Context) (identity.Principal, *x509.Certificate, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return identity.Principal{}, nil, errors.New("no peer information")
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return identity.Principal{}, nil, errors.New("the connection is not TLS")
	}
	if len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return identity.Principal{}, nil, errors.New("no client certificate: this call needs one issued by the control plane CA")
	}
	leaf := ti.State.VerifiedChains[0][0]
	who, err := identity.FromCert(leaf)
	if err != nil {
		return identity.Principal{}, nil, err
	}
	sn := leaf.SerialNumber.Text(16)
	p.mu.RLock()
	r, revoked := p.revoked[sn]
	p.mu.RUnlock()
	if revoked {
		return who, leaf, fmt.Errorf("%w: the certificate of %s was revoked at %s", ErrRevoked, who, r.RevokedAt.UTC().Format(time.RFC3339))
	}
	return who, leaf, nil
}

// PeerTLS is Peer for the HTTP API, which has the connection state
// (r.TLS) instead of a gRPC peer: the verified principal of the client
// certificate, refused when revoked. A nil state or no verified chain is
// an error.
func (p *PKI) PeerTLS(cs *tls.ConnectionState) (identity.Principal, *x509.Certificate, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return identity.Principal{}, nil, errors.New("no client certificate issued by the control plane CA")
	}
	leaf := cs.VerifiedChains[0][0]
	who, err := identity.FromCert(leaf)
	if err != nil {
		return identity.Principal{}, nil, err
	}
	p.mu.RLock()
	r, revoked := p.revoked[leaf.SerialNumber.Text(16)]
	p.mu.RUnlock()
	if revoked {
		return who, leaf, fmt.Errorf("%w: the certificate of %s was revoked at %s", ErrRevoked, who, r.RevokedAt.UTC().Format(time.RFC3339))
	}
	return who, leaf, nil
}

// AuthenticateHost is the fleet's Authenticate: the host id comes only
// from a verified, unrevoked host certificate.
func (p *PKI) AuthenticateHost(ctx context.Context) (string, error) {
	who, _, err := p.Peer(ctx)
	if err != nil {
		return "", err
	}
	if who.Kind != identity.KindHost {
		return "", fmt.Errorf("certificate of %s is not a host certificate", who)
	}
	return who.Name, nil
}

// NewJoinToken creates a one-time token for host.
func (p *PKI) NewJoinToken(host, by string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, err
	}
	tok := "dhj_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	now := time.Now().UTC()
	exp := now.Add(ttl)
	if err := p.st.PutJoinToken(tok, store.JoinToken{Host: host, CreatedAt: now, CreatedBy: by, ExpiresAt: exp}); err != nil {
		return "", time.Time{}, err
	}
	return tok, exp, nil
}

// EnrollServer implements pb.EnrollServiceServer.
type EnrollServer struct {
	pb.UnimplementedEnrollServiceServer
	P *PKI
	// Audit records each enrollment attempt.
	Audit func(who, action, target, result, detail string)
}

// Enroll checks the CSR and the token (in that order: a malformed request
// does not use the token up), then issues the host certificate.
func (e *EnrollServer) Enroll(ctx context.Context, req *pb.EnrollRequest) (*pb.EnrollResponse, error) {
	host := req.GetHostId()
	remote := ""
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		remote = pr.Addr.String()
	}
	fail := func(code codes.Code, msg string) error {
		e.P.log.Warn("enrollment refused", "host", host, "remote", remote, "reason", msg)
		if e.Audit != nil {
			e.Audit("agent@"+remote, "enroll", host, "refused: "+msg, "")
		}
		return status.Error(code, msg)
	}
	if host == "" {
		return nil, fail(codes.InvalidArgument, "host_id is required")
	}
	if e.P.cfg.IsDeclared != nil && !e.P.cfg.IsDeclared(host) {
		return nil, fail(codes.PermissionDenied, fmt.Sprintf("host %q is not declared in the server config", host))
	}
	csr, err := identity.VerifyCSR(req.GetCsr())
	if err != nil {
		return nil, fail(codes.InvalidArgument, err.Error())
	}
	if _, err := e.P.st.ConsumeJoinToken(req.GetToken(), host, time.Now().UTC()); err != nil {
		switch {
		case errors.Is(err, store.ErrTokenUnknown), errors.Is(err, store.ErrTokenUsed), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenWrongHost):
			return nil, fail(codes.PermissionDenied, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "check token: %v", err)
	}
	cert, err := e.P.issueHost(host, csr, "enroll")
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issue certificate: %v", err)
	}
	e.P.log.Info("agent enrolled", "host", host, "remote", remote, "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter.Format(time.RFC3339))
	if e.Audit != nil {
		e.Audit("agent@"+remote, "enroll", host, "ok", "serial "+cert.SerialNumber.Text(16))
	}
	return &pb.EnrollResponse{Certificate: cert.Raw, Ca: e.P.ca.Cert.Raw}, nil
}

func (p *PKI) issueHost(host string, csr *x509.CertificateRequest, reason string) (*x509.Certificate, error) {
	cert, err := p.ca.IssueClient(csr.PublicKey, identity.Principal{Kind: identity.KindHost, Name: host}, p.cfg.HostCertLifetime)
	if err != nil {
		return nil, err
	}
	if err := p.st.PutIssuedCert(store.IssuedCert{Host: host, Serial: cert.SerialNumber.Text(16), IssuedAt: time.Now().UTC(), NotAfter: cert.NotAfter, Reason: reason}); err != nil {
		return nil, err
	}
	return cert, nil
}

// Renew issues a fresh certificate for host (already authenticated by its
// stream) from a CSR. Implements the fleet's renewal hook.
func (p *PKI) Renew(host string, csrDER []byte) ([]byte, error) {
	csr, err := identity.VerifyCSR(csrDER)
	if err != nil {
		return nil, err
	}
	cert, err := p.issueHost(host, csr, "renew")
	if err != nil {
		return nil, err
	}
	p.log.Info("renewed host certificate", "host", host, "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter.Format(time.RFC3339))
	return cert.Raw, nil
}

// IssueAdmin signs an admin's CSR.
func (p *PKI) IssueAdmin(name string, csrDER []byte, lifetime time.Duration) (*x509.Certificate, error) {
	csr, err := identity.VerifyCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		lifetime = 90 * 24 * time.Hour
	}
	return p.ca.IssueClient(csr.PublicKey, identity.Principal{Kind: identity.KindAdmin, Name: name}, lifetime)
}

// Revoke refuses every certificate issued to host so far and cuts its
// stream.
func (p *PKI) Revoke(host, by, reason string) (wasConnected bool, err error) {
	now := time.Now().UTC()
	serials, err := p.st.RevokeHost(host, by, reason, now)
	if err != nil {
		return false, err
	}
	p.mu.Lock()
	for _, sn := range serials {
		p.revoked[sn] = store.Revocation{Serial: sn, Host: host, RevokedAt: now, By: by, Reason: reason}
	}
	p.mu.Unlock()
	if p.cfg.Disconnect != nil {
		wasConnected = p.cfg.Disconnect(host, "certificate revoked")
	}
	p.log.Warn("revoked host certificates", "host", host, "serials", len(serials), "by", by, "reason", reason)
	return wasConnected, nil
}

// DefaultServerNames is used when the config names none: the listen host
// (unless it is a wildcard), this machine's hostname, and loopback.
func DefaultServerNames(listen string) []string {
	names := []string{"localhost", "127.0.0.1", "::1"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
		names = append(names, h)
	}
	if hn, err := os.Hostname(); err == nil {
		names = append(names, hn)
	}
	return names
}
