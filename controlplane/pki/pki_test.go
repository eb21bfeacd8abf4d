package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

type fixture struct {
	t      *testing.T
	dir    string
	st     *store.Store
	p      *PKI
	audit  []string
	cut    []string
	enroll *EnrollServer
}

func open(t *testing.T, dir string, cfg Config) *fixture {
	t.Helper()
	st, err := store.Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, dir: dir, st: st}
	cfg.DataDir = dir
	cfg.ServerNames = []string{"localhost", "127.0.0.1"}
	cfg.IsDeclared = func(h string) bool { return h == "disp1" || h == "author1" }
	cfg.Disconnect = func(host, why string) bool { f.cut = append(f.cut, host+": "+why); return true }
	f.p, err = Open(cfg, st)
	require.NoError(t, err)
	f.enroll = &EnrollServer{P: f.p, Audit: func(who, action, target, result, detail string) {
		f.audit = append(f.audit, action+" "+target+" "+result)
	}}
	return f
}

// csr makes a key and a CSR for it, as an enrolling agent does.
func csr(t *testing.T) ([]byte, *x509.CertificateRequest) {
	t.Helper()
	key, err := identity.NewKey()
	require.NoError(t, err)
	der, err := identity.NewCSR(key, "agent")
	require.NoError(t, err)
	parsed, err := x509.ParseCertificateRequest(der)
	require.NoError(t, err)
	return der, parsed
}

func (f *fixture) enrollHost(host, token string) (*x509.Certificate, error) {
	der, _ := csr(f.t)
	resp, err := f.enroll.Enroll(context.Background(), &pb.EnrollRequest{HostId: host, Token: token, Csr: der})
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(resp.GetCertificate())
	require.NoError(f.t, err)
	return cert, nil
}

func requireCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "%v", err)
	require.Contains(t, status.Convert(err).Message(), msg)
}

func verified(cert *x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}
}

func TestCreatedCAIsPrivateAndReusedAtTheNextStart(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir, Config{})
	fi, err := os.Stat(filepath.Join(dir, "ca", "ca.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the CA key is readable by its owner only")
	first := f.p.Fingerprint()
	require.NoError(t, f.st.Close())

	g := open(t, dir, Config{})
	require.Equal(t, first, g.p.Fingerprint(), "a restart keeps the CA the agents pinned")
}

func TestOperatorCA(t *testing.T) {
	ca, err := identity.NewCA("operator CA", time.Hour)
	require.NoError(t, err)
	dir := t.TempDir()
	keyPEM, err := identity.KeyPEM(ca.Key)
	require.NoError(t, err)
	certPath, keyPath := filepath.Join(dir, "op.crt"), filepath.Join(dir, "op.key")
	require.NoError(t, os.WriteFile(certPath, identity.CertPEM(ca.Cert), 0o644))
	require.NoError(t, os.WriteFile(keyPath, keyPEM, 0o600))

	f := open(t, t.TempDir(), Config{CACert: certPath, CAKey: keyPath})
	require.Equal(t, identity.Fingerprint(ca.Cert), f.p.Fingerprint())
	_, err = os.Stat(filepath.Join(f.dir, "ca"))
	require.True(t, os.IsNotExist(err), "no CA of its own is created next to an operator's")

	st, err := store.Open(t.TempDir())
	require.NoError(t, err)
	defer st.Close()
	_, err = Open(Config{DataDir: t.TempDir(), CACert: certPath}, st)
	require.ErrorContains(t, err, "ca_cert and ca_key must be given together")
	_, err = Open(Config{DataDir: t.TempDir(), CACert: certPath, CAKey: filepath.Join(dir, "missing.key")}, st)
	require.ErrorContains(t, err, "operator CA")
}

func TestEnrollIssuesTheTokensHostOnce(t *testing.T) {
	f := open(t, t.TempDir(), Config{HostCertLifetime: 48 * time.Hour})
	tok, exp, err := f.p.NewJoinToken("disp1", "admin:alice", 0)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Hour), exp, time.Minute, "default token TTL is one hour")

	cert, err := f.enrollHost("disp1", tok)
	require.NoError(t, err)
	who, err := identity.FromCert(cert)
	require.NoError(t, err)
	require.Equal(t, identity.Principal{Kind: identity.KindHost, Name: "disp1"}, who)
	require.WithinDuration(t, time.Now().Add(48*time.Hour), cert.NotAfter, 5*time.Minute)
	_, err = cert.Verify(x509.VerifyOptions{Roots: f.p.CA().Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err, "the certificate chains to the CA as a client certificate")

	_, err = f.enrollHost("disp1", tok)
	requireCode(t, err, codes.PermissionDenied, store.ErrTokenUsed.Error())
	require.Len(t, f.audit, 2)
	require.Equal(t, "enroll disp1 ok", f.audit[0])
	require.Contains(t, f.audit[1], "enroll disp1 refused: "+store.ErrTokenUsed.Error(), "the refusal is audited")
}

func TestEnrollRefusals(t *testing.T) {
	f := open(t, t.TempDir(), Config{})
	tok, _, err := f.p.NewJoinToken("disp1", "admin:alice", time.Hour)
	require.NoError(t, err)

	// A malformed request does not use the token up.
	_, err = f.enroll.Enroll(context.Background(), &pb.EnrollRequest{HostId: "disp1", Token: tok, Csr: []byte("not a CSR")})
	requireCode(t, err, codes.InvalidArgument, "")
	_, err = f.enrollHost("", tok)
	requireCode(t, err, codes.InvalidArgument, "host_id is required")

	_, err = f.enrollHost("ghost", tok)
	requireCode(t, err, codes.PermissionDenied, `host "ghost" is not declared`)
	_, err = f.enrollHost("author1", tok)
	requireCode(t, err, codes.PermissionDenied, store.ErrTokenWrongHost.Error())
	_, err = f.enrollHost("disp1", "dhj_guessed")
	requireCode(t, err, codes.PermissionDenied, store.ErrTokenUnknown.Error())

	expired := "dhj_expired"
	past := time.Now().Add(-2 * time.Hour).UTC()
	require.NoError(t, f.st.PutJoinToken(expired, store.JoinToken{Host: "disp1", CreatedAt: past, CreatedBy: "admin:alice", ExpiresAt: past.Add(time.Hour)}))
	_, err = f.enrollHost("disp1", expired)
	requireCode(t, err, codes.PermissionDenied, store.ErrTokenExpired.Error())

	// After all that, the token still works for its host.
	_, err = f.enrollHost("disp1", tok)
	require.NoError(t, err)
}

func TestRevokedCertificateIsRefusedAlsoAfterARestart(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir, Config{})
	tok, _, err := f.p.NewJoinToken("disp1", "admin:alice", time.Hour)
	require.NoError(t, err)
	cert, err := f.enrollHost("disp1", tok)
	require.NoError(t, err)
	der, _ := csr(t)
	renewedDER, err := f.p.Renew("disp1", der)
	require.NoError(t, err)
	renewed, err := x509.ParseCertificate(renewedDER)
	require.NoError(t, err)
	require.NotEqual(t, cert.SerialNumber, renewed.SerialNumber)

	for _, c := range []*x509.Certificate{cert, renewed} {
		who, _, err := f.p.PeerTLS(verified(c))
		require.NoError(t, err)
		require.Equal(t, "disp1", who.Name)
	}

	connected, err := f.p.Revoke("disp1", "admin:alice", "host retired")
	require.NoError(t, err)
	require.True(t, connected)
	require.Equal(t, []string{"disp1: certificate revoked"}, f.cut, "the live stream is cut at once")
	for _, c := range []*x509.Certificate{cert, renewed} {
		_, _, err = f.p.PeerTLS(verified(c))
		require.ErrorIs(t, err, ErrRevoked, "every certificate issued to the host so far")
	}
	require.NoError(t, f.st.Close())

	g := open(t, dir, Config{})
	_, _, err = g.p.PeerTLS(verified(renewed))
	require.ErrorIs(t, err, ErrRevoked, "revocation survives a restart")
	// The gRPC side refuses it the same way.
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: *verified(cert)}})
	_, err = g.p.AuthenticateHost(ctx)
	require.ErrorIs(t, err, ErrRevoked)

	// A host re-enrolled with a new token gets a certificate that works.
	tok, _, err = g.p.NewJoinToken("disp1", "admin:alice", time.Hour)
	require.NoError(t, err)
	fresh, err := g.enrollHost("disp1", tok)
	require.NoError(t, err)
	ctx = peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: *verified(fresh)}})
	host, err := g.p.AuthenticateHost(ctx)
	require.NoError(t, err)
	require.Equal(t, "disp1", host)
}

func TestAuthenticateHostTakesTheIdOnlyFromAHostCertificate(t *testing.T) {
	f := open(t, t.TempDir(), Config{})
	der, _ := csr(t)
	admin, err := f.p.IssueAdmin("alice", der, 0)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(90*24*time.Hour), admin.NotAfter, 5*time.Minute, "admin certificates default to 90 days")

	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: *verified(admin)}})
	_, err = f.p.AuthenticateHost(ctx)
	require.ErrorContains(t, err, "is not a host certificate")

	_, err = f.p.AuthenticateHost(peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}}))
	require.ErrorContains(t, err, "no client certificate")
	_, err = f.p.AuthenticateHost(context.Background())
	require.ErrorContains(t, err, "no peer information")
	_, _, err = f.p.PeerTLS(nil)
	require.ErrorContains(t, err, "no client certificate")

	_, err = f.p.Renew("disp1", []byte("junk"))
	require.Error(t, err)
	_, err = f.p.IssueAdmin("alice", []byte("junk"), 0)
	require.Error(t, err)
}

// TestServerTLSHandshake runs real TLS handshakes against ServerTLS: a
// certificate from the CA is verified and identifies its host, a client
// without one gets through the handshake (enrollment) with no verified
// chain, and one from another CA is refused.
func TestServerTLSHandshake(t *testing.T) {
	f := open(t, t.TempDir(), Config{})
	tok, _, err := f.p.NewJoinToken("author1", "admin:alice", time.Hour)
	require.NoError(t, err)
	key, err := identity.NewKey()
	require.NoError(t, err)
	der, err := identity.NewCSR(key, "agent")
	require.NoError(t, err)
	resp, err := f.enroll.Enroll(context.Background(), &pb.EnrollRequest{HostId: "author1", Token: tok, Csr: der})
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(resp.GetCertificate())
	require.NoError(t, err)

	other, err := identity.NewCA("someone else's CA", time.Hour)
	require.NoError(t, err)
	foreign, err := other.IssueClient(key.Public(), identity.Principal{Kind: identity.KindHost, Name: "author1"}, time.Hour)
	require.NoError(t, err)

	handshake := func(client []tls.Certificate) (*tls.ConnectionState, error) {
		clientConf, err := identity.PinnedCAConfig(f.p.Fingerprint(), "localhost")
		require.NoError(t, err)
		if len(client) > 0 {
			// Sent whatever the server says it accepts (Go's client
			// would otherwise keep a foreign certificate to itself).
			clientConf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &client[0], nil }
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		srv := tls.Server(a, f.p.ServerTLS())
		cli := tls.Client(b, clientConf)
		_ = a.SetDeadline(time.Now().Add(10 * time.Second))
		_ = b.SetDeadline(time.Now().Add(10 * time.Second))
		errc := make(chan error, 1)
		go func() {
			err := cli.Handshake()
			errc <- err
			if err == nil {
				// Take the server's session tickets: net.Pipe has no buffer.
				_, _ = io.Copy(io.Discard, cli)
			}
		}()
		serr := srv.Handshake()
		if serr != nil {
			// Unblock the client, whose handshake may wait on the pipe.
			a.Close()
		}
		cerr := <-errc
		if serr != nil {
			return nil, serr
		}
		if cerr != nil {
			return nil, cerr
		}
		cs := srv.ConnectionState()
		require.Equal(t, uint16(tls.VersionTLS13), cs.Version)
		return &cs, nil
	}

	cs, err := handshake([]tls.Certificate{identity.TLSCert(leaf, key)})
	require.NoError(t, err)
	who, _, err := f.p.PeerTLS(cs)
	require.NoError(t, err)
	require.Equal(t, identity.Principal{Kind: identity.KindHost, Name: "author1"}, who)

	cs, err = handshake(nil)
	require.NoError(t, err, "enrollment connects without a client certificate")
	_, _, err = f.p.PeerTLS(cs)
	require.ErrorContains(t, err, "no client certificate")

	_, err = handshake([]tls.Certificate{identity.TLSCert(foreign, key)})
	var unknown x509.UnknownAuthorityError
	require.True(t, errors.As(err, &unknown), "a certificate from another CA is refused in the handshake: %v", err)
}

func TestDefaultServerNames(t *testing.T) {
	hn, err := os.Hostname()
	require.NoError(t, err)
	require.Equal(t, []string{"localhost", "127.0.0.1", "::1", "cp1.example", hn}, DefaultServerNames("cp1.example:7443"))
	for _, wildcard := range []string{"0.0.0.0:7443", "[::]:7443", ":7443"} {
		require.Equal(t, []string{"localhost", "127.0.0.1", "::1", hn}, DefaultServerNames(wildcard), wildcard)
	}
}
