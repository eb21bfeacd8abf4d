package identity

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestIssueAndIdentify(t *testing.T) {
	ca, err := NewCA("test CA", time.Hour)
	require.NoError(t, err)
	key, err := NewKey()
	require.NoError(t, err)
	c, err := ca.IssueClient(key.Public(), Principal{Kind: KindHost, Name: "pub1"}, 10*time.Minute)
	require.NoError(t, err)
	p, err := FromCert(c)
	require.NoError(t, err)
	require.Equal(t, Principal{Kind: KindHost, Name: "pub1"}, p)
	_, err = c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(10*time.Minute), c.NotAfter, 5*time.Second)

	srv, err := ca.IssueServer(key.Public(), []string{"deckhand.example", "127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	_, err = FromCert(srv)
	require.ErrorIs(t, err, ErrNoIdentity)
	require.Equal(t, []string{"deckhand.example"}, srv.DNSNames)
	require.True(t, srv.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")))
}

func TestFingerprints(t *testing.T) {
	ca, err := NewCA("x", time.Hour)
	require.NoError(t, err)
	fp := Fingerprint(ca.Cert)
	require.Regexp(t, `^sha256:[0-9a-f]{64}$`, fp)
	n, err := NormalizeFingerprint(fp[7:])
	require.NoError(t, err)
	require.Equal(t, fp, n)
	_, err = NormalizeFingerprint("sha256:abc")
	require.ErrorContains(t, err, "want sha256:<64 hex digits>")
}

func TestCSR(t *testing.T) {
	key, err := NewKey()
	require.NoError(t, err)
	der, err := NewCSR(key, "h")
	require.NoError(t, err)
	csr, err := VerifyCSR(der)
	require.NoError(t, err)
	require.Equal(t, "h", csr.Subject.CommonName)
	der[len(der)-3] ^= 0xff
	_, err = VerifyCSR(der)
	require.Error(t, err)
}

func TestKeyFilesAre0600AndLooseOnesRefused(t *testing.T) {
	dir := t.TempDir()
	key, err := NewKey()
	require.NoError(t, err)
	pemKey, err := KeyPEM(key)
	require.NoError(t, err)
	p := filepath.Join(dir, "k.pem")
	require.NoError(t, WriteFileAtomic(p, pemKey, 0o600))
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	_, err = LoadKeyFile(p)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(p, 0o644))
	_, err = LoadKeyFile(p)
	require.ErrorContains(t, err, "must not be readable by group or others")
}

func TestPinnedCAConfig(t *testing.T) {
	ca, err := NewCA("pin", time.Hour)
	require.NoError(t, err)
	other, err := NewCA("other", time.Hour)
	require.NoError(t, err)
	key, err := NewKey()
	require.NoError(t, err)
	leaf, err := ca.IssueServer(key.Public(), []string{"127.0.0.1"}, time.Hour)
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{TLSCert(leaf, key, ca.Cert)}})
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(fp string) error {
		cfg, err := PinnedCAConfig(fp, "127.0.0.1")
		require.NoError(t, err)
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	require.NoError(t, dial(Fingerprint(ca.Cert)))
	err = dial(Fingerprint(other.Cert))
	require.ErrorContains(t, err, "but this agent was told to trust")
}
