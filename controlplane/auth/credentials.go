package auth

import (
	"fmt"

	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"go.yaml.in/yaml/v3"
)

// Credentials is what deckctl needs to reach and authenticate to a server:
// the file the server writes for its first admin, and the format of
// `deckctl --credentials FILE`.
type Credentials struct {
	Server        string `yaml:"server"`
	Name          string `yaml:"name,omitempty"`
	Token         string `yaml:"token,omitempty"`
	CAFingerprint string `yaml:"ca_fingerprint,omitempty"`
	// CA is the control plane CA certificate in PEM, used to verify the
	// server.
	CA string `yaml:"ca,omitempty"`
	// Cert and Key name an admin client certificate and key instead of a
	// token.
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
}

// LoadCredentials reads a credentials file; it must not be readable by
// others since it holds a token.
func LoadCredentials(path string) (*Credentials, error) {
	var c Credentials
	if err := yamlconf.DecodeFile(path, &c); err != nil {
		return nil, err
	}
	if c.Token == "" && c.Cert == "" {
		return nil, fmt.Errorf("%s: neither token nor cert is set", path)
	}
	if c.CA != "" {
		if _, err := identity.ParseCertPEM([]byte(c.CA)); err != nil {
			return nil, fmt.Errorf("%s: ca: %w", path, err)
		}
	}
	return &c, nil
}

// WriteCredentials writes c to path with mode 0600.
func WriteCredentials(path string, c *Credentials) error {
	body, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	head := "# deckctl credentials. Keep this file private (mode 0600): the token\n# acts with the roles of its admin. Use: deckctl --credentials THIS_FILE ...\n"
	return identity.WriteFileAtomic(path, append([]byte(head), body...), 0o600)
}
