// Package identity is Deckhand's TLS identity: the control plane's CA, the
// certificates it issues (server, agent hosts, admins), how a certificate
// names its holder (URI SAN spiffe://deckhand/host/<id> or
// spiffe://deckhand/admin/<name>), CA fingerprints for enrollment without
// trust-on-first-use, and 0600 key files.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Kind says what a certificate's holder is.
type Kind string

const (
	KindHost  Kind = "host"
	KindAdmin Kind = "admin"
)

// Principal is who a verified certificate names.
type Principal struct {
	Kind Kind
	Name string
}

func (p Principal) String() string { return string(p.Kind) + ":" + p.Name }

// URI returns the SAN URI for p.
func (p Principal) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: "deckhand", Path: "/" + string(p.Kind) + "/" + p.Name}
}

// ErrNoIdentity means the certificate carries no Deckhand identity.
var ErrNoIdentity = errors.New("certificate has no spiffe://deckhand/ identity")

// FromCert reads the principal from a certificate's URI SANs. Exactly one
// Deckhand URI must be present.
func FromCert(c *x509.Certificate) (Principal, error) {
	var found []Principal
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" || u.Host != "deckhand" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if len(parts) != 2 || parts[1] == "" {
			return Principal{}, fmt.Errorf("malformed identity %q", u)
		}
		k := Kind(parts[0])
		if k != KindHost && k != KindAdmin {
			return Principal{}, fmt.Errorf("unknown identity kind in %q", u)
		}
		found = append(found, Principal{Kind: k, Name: parts[1]})
	}
	switch len(found) {
	case 0:
		return Principal{}, ErrNoIdentity
	case 1:
		return found[0], nil
	}
	return Principal{}, fmt.Errorf("certificate names %d identities; one is allowed", len(found))
}

// Fingerprint is "sha256:" + hex of the certificate's DER bytes; enrollment
// pins the CA by it.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NormalizeFingerprint accepts "sha256:HEX", bare hex, and hex with colons.
func NormalizeFingerprint(s string) (string, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	v = strings.TrimPrefix(v, "sha256:")
	v = strings.ReplaceAll(v, ":", "")
	if len(v) != 64 {
		return "", fmt.Errorf("CA fingerprint %q: want sha256:<64 hex digits>", s)
	}
	if _, err := hex.DecodeString(v); err != nil {
		return "", fmt.Errorf("CA fingerprint %q: %v", s, err)
	}
	return "sha256:" + v, nil
}

// CA signs certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewKey returns a fresh ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewCA creates a self-signed CA valid for lifetime.
func NewCA(commonName string, lifetime time.Duration) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Deckhand"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: key}, nil
}

// Pool returns a pool holding the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueServer issues the server's TLS certificate for names (DNS names or
// IP addresses).
func (ca *CA) IssueServer(key crypto.PublicKey, names []string, lifetime time.Duration) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "deckhand-server"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(tmpl, key, lifetime)
}

// IssueClient issues a client certificate naming p.
func (ca *CA) IssueClient(key crypto.PublicKey, p Principal, lifetime time.Duration) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: p.String()},
		URIs:        []*url.URL{p.URI()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, key, lifetime)
}

func (ca *CA) issue(tmpl *x509.Certificate, key crypto.PublicKey, lifetime time.Duration) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = sn
	// A little slack for clocks that disagree by seconds; small against
	// short test lifetimes so "renew at half-life" stays meaningful.
	tmpl.NotBefore = now.Add(-min(time.Minute, lifetime/10))
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// VerifyCSR parses a DER certificate request and checks its signature:
// proof that the requester holds the private key.
func VerifyCSR(der []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

// NewCSR makes a DER certificate request for key.
func NewCSR(key crypto.Signer, commonName string) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: commonName}}, key)
}

// ---- files ----

// WriteFileAtomic writes data with mode through a temp file, fsync and
// rename, so a crash leaves the old file or the new one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// CertPEM encodes a certificate.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key (PKCS#8).
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM reads the first certificate in PEM data.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no CERTIFICATE block in PEM data")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// ParseKeyPEM reads a PKCS#8, EC or RSA private key.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block in key data")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("key is not a signing key")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key format")
}

// LoadCertFile reads a PEM certificate file.
func LoadCertFile(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadKeyFile reads a PEM key file and refuses one that others can read.
func LoadKeyFile(path string) (crypto.Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: key file mode is %04o; it must not be readable by group or others (chmod 600)", path, st.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadCA reads a CA certificate and key.
func LoadCA(certPath, keyPath string) (*CA, error) {
	c, err := LoadCertFile(certPath)
	if err != nil {
		return nil, err
	}
	if !c.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", certPath)
	}
	k, err := LoadKeyFile(keyPath)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: k}, nil
}

// TLSCert bundles a leaf, its chain and key for crypto/tls.
func TLSCert(leaf *x509.Certificate, key crypto.Signer, chain ...*x509.Certificate) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// PinnedCAConfig returns a client TLS config for talking to a server whose
// CA the client knows only by fingerprint: the server must present a chain
// whose root has that fingerprint and whose leaf it signed for serverName.
// This is what makes enrollment safe without trust on first use.
func PinnedCAConfig(fingerprint, serverName string) (*tls.Config, error) {
	want, err := NormalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pinned verification below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return errors.New("server sent no CA certificate with its own; cannot check the pinned CA fingerprint")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs[i] = c
			}
			root := certs[len(certs)-1]
			if got := Fingerprint(root); got != want {
				return fmt.Errorf("server CA fingerprint is %s, but this agent was told to trust %s: wrong server, or a wrong fingerprint in the config", got, want)
			}
			pool := x509.NewCertPool()
			pool.AddCert(root)
			inter := x509.NewCertPool()
			for _, c := range certs[1 : len(certs)-1] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{DNSName: serverName, Roots: pool, Intermediates: inter})
			return err
		},
	}, nil
}
