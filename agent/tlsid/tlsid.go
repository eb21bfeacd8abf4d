// Package tlsid is the agent's TLS identity: its private key (generated on
// the host, never sent anywhere), its host certificate and the control
// plane's CA, stored 0600 in <data_dir>/tls; enrollment with a one-time join
// token against a server pinned by CA fingerprint; and renewal before
// expiry without a restart.
package tlsid

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/identity"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// ErrNotEnrolled means the data dir holds no certificate yet.
var ErrNotEnrolled = errors.New("not enrolled")

// Identity is the agent's key, certificate and CA. Safe for concurrent
// use: a renewal swaps the certificate under a lock and new connections
// pick it up through GetClientCertificate.
type Identity struct {
	dir  string
	host string
	ca   *x509.Certificate

	mu      sync.Mutex
	current tls.Certificate // mu
	pending crypto.Signer   // mu; key of a renewal in flight
}

func paths(dir string) (key, cert, ca string) {
	d := filepath.Join(dir, "tls")
	return filepath.Join(d, "agent.key"), filepath.Join(d, "agent.crt"), filepath.Join(d, "ca.crt")
}

// Load reads the identity from dataDir, or returns ErrNotEnrolled.
func Load(dataDir, host string) (*Identity, error) {
	kp, cp, cap := paths(dataDir)
	finishInterruptedWrite(kp, cp)
	if _, err := os.Stat(cp); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	key, err := identity.LoadKeyFile(kp)
	if err != nil {
		return nil, err
	}
	cert, err := identity.LoadCertFile(cp)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not match the key in %s; enroll again with a new join token", cp, kp)
	}
	ca, err := identity.LoadCertFile(cap)
	if err != nil {
		return nil, err
	}
	who, err := identity.FromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cp, err)
	}
	if who.Kind != identity.KindHost || who.Name != host {
		return nil, fmt.Errorf("%s is the certificate of %s, but this agent is configured as host %q", cp, who, host)
	}
	return &Identity{dir: dataDir, host: host, ca: ca, current: identity.TLSCert(cert, key)}, nil
}

// Leaf returns the current certificate.
func (i *Identity) Leaf() *x509.Certificate {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current.Leaf
}

// CA returns the control plane CA.
func (i *Identity) CA() *x509.Certificate { return i.ca }

// DialOption returns mutual-TLS transport credentials for server (host:port).
func (i *Identity) DialOption(server string) (grpc.DialOption, error) {
	host, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(i.ca)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			i.mu.Lock()
			defer i.mu.Unlock()
			c := i.current
			return &c, nil
		},
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// RenewAt is when the certificate should be replaced: at half its
// lifetime, leaving the other half to survive a server outage.
func (i *Identity) RenewAt() time.Time {
	l := i.Leaf()
	return l.NotBefore.Add(l.NotAfter.Sub(l.NotBefore) / 2)
}

// NewCSR starts a renewal with a fresh key, kept until Install.
func (i *Identity) NewCSR() ([]byte, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := identity.NewCSR(key, "host:"+i.host)
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	i.pending = key
	i.mu.Unlock()
	return csr, nil
}

// Install stores a renewed certificate for the pending key and switches
// new connections to it.
func (i *Identity) Install(certDER []byte) error {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if err := i.check(cert); err != nil {
		return err
	}
	i.mu.Lock()
	key := i.pending
	i.mu.Unlock()
	if key == nil {
		return errors.New("renewed certificate arrived without a renewal in flight")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return errors.New("renewed certificate is not for the key this agent generated")
	}
	if err := write(i.dir, key, cert, i.ca); err != nil {
		return err
	}
	i.mu.Lock()
	i.current, i.pending = identity.TLSCert(cert, key), nil
	i.mu.Unlock()
	return nil
}

func (i *Identity) check(cert *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(i.ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("certificate does not verify against the CA: %w", err)
	}
	who, err := identity.FromCert(cert)
	if err != nil {
		return err
	}
	if who.Kind != identity.KindHost || who.Name != i.host {
		return fmt.Errorf("server issued a certificate for %s, not host %q", who, i.host)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// finishInterruptedWrite completes a write that crashed between its two
// renames: a new key is in place and the new certificate still waits
// under its temp name.
func finishInterruptedWrite(kp, cp string) {
	newCert, err := identity.LoadCertFile(cp + ".new")
	if err != nil {
		return
	}
	if key, err := identity.LoadKeyFile(kp); err == nil && publicKeysEqual(newCert.PublicKey, key.Public()) {
		os.Rename(cp+".new", cp)
	}
}

// write stores key, cert and CA, each 0600. Both new files are complete
// on disk before either is renamed into place, and Load finishes a write
// that crashed between the two renames.
func write(dataDir string, key crypto.Signer, cert, ca *x509.Certificate) error {
	kp, cp, cap := paths(dataDir)
	keyPEM, err := identity.KeyPEM(key)
	if err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(cap, identity.CertPEM(ca), 0o600); err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(kp+".new", keyPEM, 0o600); err != nil {
		return err
	}
	if err := identity.WriteFileAtomic(cp+".new", identity.CertPEM(cert), 0o600); err != nil {
		return err
	}
	if err := os.Rename(kp+".new", kp); err != nil {
		return err
	}
	return os.Rename(cp+".new", cp)
}

// EnrollError is a refusal by the server that retrying cannot fix.
type EnrollError struct{ Msg string }

func (e *EnrollError) Error() string { return "enrollment refused: " + e.Msg }

// Enroll generates a key, proves it with a CSR and the join token to the
// server — checked by the pinned CA fingerprint, no trust on first use —
// and stores what comes back. Nothing is written unless it succeeds.
func Enroll(ctx context.Context, dataDir, server, host, token, fingerprint string) (*Identity, error) {
	if token == "" || fingerprint == "" {
		return nil, errors.New("enrollment needs join_token and ca_fingerprint (both printed by `deckctl tokens create --host HOST`)")
	}
	shost, _, err := net.SplitHostPort(server)
	if err != nil {
		return nil, err
	}
	tcfg, err := identity.PinnedCAConfig(fingerprint, shost)
	if err != nil {
		return nil, &EnrollError{Msg: err.Error()}
	}
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := identity.NewCSR(key, "host:"+host)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(server, grpc.WithTransportCredentials(credentials.NewTLS(tcfg)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := pb.NewEnrollServiceClient(conn).Enroll(ctx, &pb.EnrollRequest{HostId: host, Token: token, Csr: csr})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			switch st.Code() {
			case codes.PermissionDenied, codes.InvalidArgument, codes.NotFound:
				return nil, &EnrollError{Msg: st.Message()}
			case codes.Unavailable:
				if isPinError(st.Message()) {
					return nil, &EnrollError{Msg: st.Message()}
				}
			}
		}
		return nil, fmt.Errorf("enroll with %s: %w", server, err)
	}
	ca, err := x509.ParseCertificate(resp.GetCa())
	if err != nil {
		return nil, fmt.Errorf("enroll: CA certificate: %w", err)
	}
	if got, want := identity.Fingerprint(ca), mustNorm(fingerprint); got != want {
		return nil, &EnrollError{Msg: fmt.Sprintf("server returned a CA with fingerprint %s, not the pinned %s", got, want)}
	}
	cert, err := x509.ParseCertificate(resp.GetCertificate())
	if err != nil {
		return nil, fmt.Errorf("enroll: certificate: %w", err)
	}
	id := &Identity{dir: dataDir, host: host, ca: ca, pending: key}
	if err := id.check(cert); err != nil {
		return nil, &EnrollError{Msg: err.Error()}
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, &EnrollError{Msg: "issued certificate is not for this agent's key"}
	}
	if err := write(dataDir, key, cert, ca); err != nil {
		return nil, err
	}
	id.current, id.pending = identity.TLSCert(cert, key), nil
	return id, nil
}

func mustNorm(fp string) string {
	n, _ := identity.NormalizeFingerprint(fp)
	return n
}

func isPinError(msg string) bool {
	return containsAny(msg, "was told to trust", "cannot check the pinned CA fingerprint", "certificate")
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}
