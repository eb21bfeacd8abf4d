package lb_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

func newHealthFile(t *testing.T, mod func(*lb.HealthFileConfig)) (*lb.HealthFile, string) {
	path := filepath.Join(t.TempDir(), "lb-health.html")
	cfg := lb.HealthFileConfig{
		Path:      path,
		DrainTime: yamlconf.Duration(50 * time.Millisecond),
		RiseTime:  yamlconf.Duration(30 * time.Millisecond),
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := lb.NewHealthFile(cfg, testLogger(t, "lb"))
	require.NoError(t, err)
	return d, path
}

func TestHealthFileAttachDetachStatus(t *testing.T) {
	d, path := newHealthFile(t, func(c *lb.HealthFileConfig) { c.Content = "deckhand up\n" })
	ctx := context.Background()

	st, err := d.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateDetached, st.State)
	require.Equal(t, -1, st.Sessions)

	start := time.Now()
	require.NoError(t, d.Attach(ctx))
	require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond, "attach waits rise_time")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "deckhand up\n", string(b))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm(), "the web server user must be able to read it")
	st, err = d.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateInService, st.State)

	// No temporary files are left next to it.
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1)

	start = time.Now()
	require.NoError(t, d.Detach(ctx))
	require.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond, "detach waits drain_time")
	require.NoFileExists(t, path)
	st, err = d.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateDetached, st.State)

	// Both are idempotent.
	require.NoError(t, d.Detach(ctx))
	require.NoError(t, d.Attach(ctx))
	require.NoError(t, d.Attach(ctx))
	require.FileExists(t, path)
}

func TestHealthFileDefaultsAndMode(t *testing.T) {
	d, path := newHealthFile(t, func(c *lb.HealthFileConfig) { c.Mode = 0o600 })
	require.NoError(t, d.Attach(context.Background()))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, lb.DefaultHealthFileContent, string(b))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

func TestHealthFileWaitsHonourContext(t *testing.T) {
	d, path := newHealthFile(t, func(c *lb.HealthFileConfig) {
		c.DrainTime = yamlconf.Duration(time.Hour)
		c.RiseTime = yamlconf.Duration(time.Hour)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := d.Attach(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "file is restored")
	require.FileExists(t, path)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = d.Detach(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "file is removed")
	require.NoFileExists(t, path)
}

func TestHealthFileErrors(t *testing.T) {
	ctx := context.Background()

	d, _ := newHealthFile(t, func(c *lb.HealthFileConfig) {
		c.Path = filepath.Join(t.TempDir(), "missing-dir", "health")
	})
	require.ErrorContains(t, d.Attach(ctx), "lb/healthfile: attach:")

	d, path := newHealthFile(t, nil)
	require.NoError(t, os.Mkdir(path, 0o755))
	st, err := d.Status(ctx)
	require.ErrorContains(t, err, "is not a regular file")
	require.Equal(t, lb.StateUnknown, st.State)
}
