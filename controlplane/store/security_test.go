package store

import (
	"errors"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/stretchr/testify/require"
)

func TestJoinTokens(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			now := time.Now()
			require.NoError(t, s.PutJoinToken("tok", JoinToken{Host: "h1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
			require.NoError(t, s.b.View(func(tx Tx) error {
				return tx.ForEach(bucketJoin, "", func(k string, v []byte) error {
					require.NotContains(t, k+string(v), "tok\"", "the token must not be stored in clear")
					require.Equal(t, HashSecret("tok"), k)
					return nil
				})
			}))
			_, err := s.ConsumeJoinToken("nope", "h1", now)
			require.ErrorIs(t, err, ErrTokenUnknown)
			_, err = s.ConsumeJoinToken("tok", "h2", now)
			require.ErrorIs(t, err, ErrTokenWrongHost)
			_, err = s.ConsumeJoinToken("tok", "h1", now.Add(2*time.Hour))
			require.ErrorIs(t, err, ErrTokenExpired)
			// The refusals above did not use the token up.
			_, err = s.ConsumeJoinToken("tok", "h1", now)
			require.NoError(t, err)
			_, err = s.ConsumeJoinToken("tok", "h1", now)
			require.ErrorIs(t, err, ErrTokenUsed)
		})
	}
}

func TestAdminsAndTokens(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			n, err := s.AdminCount()
			require.NoError(t, err)
			require.Zero(t, n)
			require.NoError(t, s.PutAdmin(Admin{Name: "ann", Roles: []string{"viewer"}}, "secret"))
			a, err := s.AdminByToken("secret")
			require.NoError(t, err)
			require.Equal(t, "ann", a.Name)
			_, err = s.AdminByToken("wrong")
			require.ErrorIs(t, err, ErrNotFound)
			require.NoError(t, s.PutAdmin(Admin{Name: "ann", Roles: []string{"admin"}}, ""))
			a, err = s.AdminByToken("secret")
			require.NoError(t, err)
			require.Equal(t, []string{"admin"}, a.Roles)
		})
	}
}

func TestRevokeHostOnlyRevokesIssuedCerts(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			require.NoError(t, s.PutIssuedCert(IssuedCert{Host: "h", Serial: "1"}))
			require.NoError(t, s.PutIssuedCert(IssuedCert{Host: "h", Serial: "2"}))
			require.NoError(t, s.PutIssuedCert(IssuedCert{Host: "hh", Serial: "3"}))
			sns, err := s.RevokeHost("h", "admin", "lost laptop", time.Now())
			require.NoError(t, err)
			require.ElementsMatch(t, []string{"1", "2"}, sns)
			require.NoError(t, s.PutIssuedCert(IssuedCert{Host: "h", Serial: "4"}))
			rev, err := s.RevokedSerials()
			require.NoError(t, err)
			require.Len(t, rev, 2)
			require.Contains(t, rev, "1")
			require.NotContains(t, rev, "4")
		})
	}
}

func TestAudit(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			base := time.Now()
			for i := 0; i < 5; i++ {
				seq, err := s.AppendAudit(AuditEntry{At: base.Add(time.Duration(i) * time.Minute), Who: "ann", Action: "x", Result: "ok"})
				require.NoError(t, err)
				require.Equal(t, uint64(i+1), seq)
			}
			all, err := s.Audit(time.Time{}, 0)
			require.NoError(t, err)
			require.Len(t, all, 5)
			recent, err := s.Audit(base.Add(3*time.Minute), 0)
			require.NoError(t, err)
			require.Len(t, recent, 2)
			last2, err := s.Audit(time.Time{}, 2)
			require.NoError(t, err)
			require.Equal(t, uint64(5), last2[1].Seq)
		})
	}
	bad := &Store{b: kv.NewFailing()}
	_, err := bad.AppendAudit(AuditEntry{})
	require.True(t, errors.Is(err, kv.ErrDB))
}

func TestDriftRecords(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			recs := []DriftRecord{{Path: "conf.d/a.conf", Kind: "modified", Severity: "normal"}, {Path: "conf/httpd.conf", Kind: "modified", Severity: "high"}}
			require.NoError(t, s.AddDrift("d1", "r1", recs))
			require.NoError(t, s.AddDrift("d1", "r1", recs), "a re-sent report is stored once")
			require.NoError(t, s.AddDrift("d2", "r1", recs[:1]))
			got, err := s.Drift("d1", false)
			require.NoError(t, err)
			require.Len(t, got, 2)
			require.Equal(t, "high", got[1].Severity)
			n, err := s.ResolveDrift("d1", "dep/pair1.deploy.d1/d1")
			require.NoError(t, err)
			require.Equal(t, 2, n)
			got, err = s.Drift("d1", false)
			require.NoError(t, err)
			require.Empty(t, got)
			got, err = s.Drift("", true)
			require.NoError(t, err)
			require.Len(t, got, 3)
		})
	}
}
