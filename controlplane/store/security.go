package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// HashSecret is how tokens are keyed: only their sha256 is stored, so a
// copy of the data dir does not hand out working tokens.
func HashSecret(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// JoinToken is a one-time enrollment token as stored (hashed).
type JoinToken struct {
	V         int       `json:"v"`
	Host      string    `json:"host"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
}

// Errors of ConsumeJoinToken; each is safe to show to the enrolling agent.
var (
	ErrTokenUnknown   = errors.New("join token is not known to this server")
	ErrTokenUsed      = errors.New("join token was already used")
	ErrTokenExpired   = errors.New("join token has expired")
	ErrTokenWrongHost = errors.New("join token was issued for another host")
)

// PutJoinToken stores a new token under its hash.
func (s *Store) PutJoinToken(token string, t JoinToken) error {
	t.V = 1
	raw, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return s.b.Update(func(tx Tx) error { return tx.Put(bucketJoin, HashSecret(token), raw) })
}

// ConsumeJoinToken checks a token for host and, only if every check
// passes, marks it used — in one transaction, so two agents racing with
// one token cannot both enroll. A refused token is left as it was.
func (s *Store) ConsumeJoinToken(token, host string, now time.Time) (JoinToken, error) {
	var t JoinToken
	err := s.b.Update(func(tx Tx) error {
		key := HashSecret(token)
		raw := tx.Get(bucketJoin, key)
		if raw == nil {
			return ErrTokenUnknown
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		switch {
		case !t.UsedAt.IsZero():
			return fmt.Errorf("%w (at %s)", ErrTokenUsed, t.UsedAt.UTC().Format(time.RFC3339))
		case !now.Before(t.ExpiresAt):
			return fmt.Errorf("%w (at %s)", ErrTokenExpired, t.ExpiresAt.UTC().Format(time.RFC3339))
		case t.Host != host:
			return fmt.Errorf("%w (%q, not %q)", ErrTokenWrongHost, t.Host, host)
		}
		t.UsedAt = now
		raw, err := json.Marshal(t)
		if err != nil {
			return err
		}
		return tx.Put(bucketJoin, key, raw)
	})
	return t, err
}

// Admin is an operator and their roles.
type Admin struct {
	V         int       `json:"v"`
	Name      string    `json:"name"`
	Roles     []string  `json:"roles"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
}

// AdminToken maps a bearer token (hashed) to an admin.
type AdminToken struct {
	V         int       `json:"v"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// PutAdmin creates or updates an admin and, when token is not empty, adds
// a bearer token for them.
func (s *Store) PutAdmin(a Admin, token string) error {
	a.V = 1
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.b.Update(func(tx Tx) error {
		if err := tx.Put(bucketAdmins, a.Name, raw); err != nil {
			return err
		}
		if token == "" {
			return nil
		}
		traw, err := json.Marshal(AdminToken{V: 1, Name: a.Name, CreatedAt: a.CreatedAt})
		if err != nil {
			return err
		}
		return tx.Put(bucketAdminTok, HashSecret(token), traw)
	})
}

// Admin returns one admin, or ErrNotFound.
func (s *Store) Admin(name string) (Admin, error) {
	var a Admin
	err := s.b.View(func(tx Tx) error {
		raw := tx.Get(bucketAdmins, name)
		if raw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(raw, &a)
	})
	return a, err
}

// AdminByToken resolves a bearer token, or ErrNotFound.
func (s *Store) AdminByToken(token string) (Admin, error) {
	var a Admin
	err := s.b.View(func(tx Tx) error {
		raw := tx.Get(bucketAdminTok, HashSecret(token))
		if raw == nil {
			return ErrNotFound
		}
		var t AdminToken
		if err := json.Unmarshal(raw, &t); err != nil {
			return err
		}
		araw := tx.Get(bucketAdmins, t.Name)
		if araw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(araw, &a)
	})
	return a, err
}

// AdminCount is the number of admins (zero on a fresh data dir).
func (s *Store) AdminCount() (int, error) {
	n := 0
	err := s.b.View(func(tx Tx) error {
		return tx.ForEach(bucketAdmins, "", func(string, []byte) error { n++; return nil })
	})
	return n, err
}

// IssuedCert records a certificate issued to a host.
type IssuedCert struct {
	V        int       `json:"v"`
	Host     string    `json:"host"`
	Serial   string    `json:"serial"`
	IssuedAt time.Time `json:"issued_at"`
	NotAfter time.Time `json:"not_after"`
	Reason   string    `json:"reason"` // enroll | renew
}

// PutIssuedCert records an issued host certificate.
func (s *Store) PutIssuedCert(c IssuedCert) error {
	c.V = 1
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return s.b.Update(func(tx Tx) error { return tx.Put(bucketCerts, c.Host+"\x00"+c.Serial, raw) })
}

// Revocation says a certificate serial is refused.
type Revocation struct {
	V         int       `json:"v"`
	Serial    string    `json:"serial"`
	Host      string    `json:"host"`
	RevokedAt time.Time `json:"revoked_at"`
	By        string    `json:"by"`
	Reason    string    `json:"reason,omitempty"`
}

// RevokeHost revokes every certificate issued to host so far and returns
// their serials. Certificates issued later (after a new enrollment) are
// not affected.
func (s *Store) RevokeHost(host, by, reason string, at time.Time) ([]string, error) {
	var serials []string
	err := s.b.Update(func(tx Tx) error {
		serials = nil
		err := tx.ForEach(bucketCerts, host+"\x00", func(k string, _ []byte) error {
			serials = append(serials, k[len(host)+1:])
			return nil
		})
		if err != nil {
			return err
		}
		for _, sn := range serials {
			raw, err := json.Marshal(Revocation{V: 1, Serial: sn, Host: host, RevokedAt: at, By: by, Reason: reason})
			if err != nil {
				return err
			}
			if err := tx.Put(bucketRevoked, sn, raw); err != nil {
				return err
			}
		}
		return nil
	})
	return serials, err
}

// RevokedSerials returns every revoked serial.
func (s *Store) RevokedSerials() (map[string]Revocation, error) {
	out := map[string]Revocation{}
	err := s.b.View(func(tx Tx) error {
		return tx.ForEach(bucketRevoked, "", func(k string, v []byte) error {
			var r Revocation
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out[k] = r
			return nil
		})
	})
	return out, err
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	V      int       `json:"v"`
	Seq    uint64    `json:"seq"`
	At     time.Time `json:"at"`
	Who    string    `json:"who"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Result string    `json:"result"` // "ok" or the error
	Detail string    `json:"detail,omitempty"`
}

// AppendAudit appends e with the next sequence number.
func (s *Store) AppendAudit(e AuditEntry) (uint64, error) {
	e.V = 1
	err := s.b.Update(func(tx Tx) error {
		var last uint64
		if raw := tx.Get(bucketMeta, "audit_seq"); raw != nil {
			v, err := strconv.ParseUint(string(raw), 10, 64)
			if err != nil {
				return err
			}
			last = v
		}
		e.Seq = last + 1
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := tx.Put(bucketAudit, fmt.Sprintf("%020d", e.Seq), raw); err != nil {
			return err
		}
		return tx.Put(bucketMeta, "audit_seq", []byte(strconv.FormatUint(e.Seq, 10)))
	})
	return e.Seq, err
}

// Audit returns entries at or after since, oldest first, at most limit
// (0: all) — the newest ones when the limit cuts.
func (s *Store) Audit(since time.Time, limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.b.View(func(tx Tx) error {
		return tx.ForEach(bucketAudit, "", func(_ string, v []byte) error {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if !e.At.Before(since) {
				out = append(out, e)
			}
			return nil
		})
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, err
}
