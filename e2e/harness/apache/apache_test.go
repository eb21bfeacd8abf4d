package apache

import (
	"archive/zip"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServesReloadsAndStopsCleanly(t *testing.T) {
	in := Start(t, Config{})

	code, body, err := in.Get("/page")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "version 1\n", body)

	// The layout is the AMS one, with relative enabled_* links.
	target, err := os.Readlink(filepath.Join(in.Dir, "conf.d/enabled_vhosts/default.vhost"))
	require.NoError(t, err)
	require.Equal(t, "../available_vhosts/default.vhost", target)
	conf, err := os.ReadFile(in.ConfPath)
	require.NoError(t, err)
	require.Contains(t, string(conf), "Listen "+in.Addr)
	require.Contains(t, string(conf), "ServerRoot \""+in.Dir+"\"")

	// Workers (www-data) can read the docroot: no 403.
	code, _, err = in.Get("/index.html")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)

	// configtest argv: Syntax OK, exit 0.
	out, err := exec.Command(in.ConfigTestArgv()[0], in.ConfigTestArgv()[1:]...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "Syntax OK")

	// graceful argv reloads the changed rules.
	require.NoError(t, os.WriteFile(filepath.Join(in.Dir, "conf.d/rewrites/default_rewrite.rules"),
		[]byte("RewriteEngine On\nRewriteRule ^/page$ /v2.html [PT]\n"), 0o644))
	out, err = exec.Command(in.GracefulArgv()[0], in.GracefulArgv()[1:]...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Eventually(t, func() bool {
		_, body, err := in.Get("/page")
		return err == nil && body == "version 2\n"
	}, 10*time.Second, 20*time.Millisecond)

	// A syntax error: AH00526 naming the file and line, exit 1.
	bad := filepath.Join(in.Dir, "conf.d/rewrites/default_rewrite.rules")
	require.NoError(t, os.WriteFile(bad, []byte("RewriteEngine On\nBogusDirective x\n"), 0o644))
	out, err = exec.Command(in.ConfigTestArgv()[0], in.ConfigTestArgv()[1:]...).CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 1, ee.ExitCode())
	require.Contains(t, string(out), "AH00526: Syntax error on line 2 of "+bad+":")
	require.Contains(t, string(out), "Invalid command 'BogusDirective'")

	require.NotEmpty(t, in.Processes(), "parent and workers are running")
	pid := in.Pid()
	require.NoError(t, in.Stop())
	require.True(t, in.Exited())
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH)
	require.Empty(t, in.Processes(), "no apache process is left")
	require.NoError(t, in.Stop(), "Stop is idempotent")
}

func TestArtifactBuild(t *testing.T) {
	a := DefaultArtifact()
	a.Wrapper = "dispatcher"
	a.Modes = map[string]fs.FileMode{"conf.d/rewrites/default_rewrite.rules": 0o600}
	p, sha := a.Build(t)
	require.Len(t, sha, 64)
	zr, err := zip.OpenReader(p)
	require.NoError(t, err)
	defer zr.Close()
	got := map[string]*zip.File{}
	for _, f := range zr.File {
		got[f.Name] = f
	}
	require.Len(t, got, len(ManagedFiles())+len(ImmutableFiles())+1+len(ManagedSymlinks()))
	l := got["dispatcher/conf.d/enabled_vhosts/default.vhost"]
	require.NotNil(t, l)
	require.Equal(t, fs.ModeSymlink, l.Mode().Type())
	rc, err := l.Open()
	require.NoError(t, err)
	target, _ := io.ReadAll(rc)
	rc.Close()
	require.Equal(t, "../available_vhosts/default.vhost", string(target))
	require.Equal(t, fs.FileMode(0o600), got["dispatcher/conf.d/rewrites/default_rewrite.rules"].Mode().Perm())
	require.True(t, strings.HasSuffix(p, ".zip"))
}

// fakeTB records what Require asks of the test instead of stopping it.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }
func (f *fakeTB) Skipf(format string, args ...any)  { f.skip = fmt.Sprintf(format, args...) }

func TestRequireFailsOnlyWhenRealIsRequired(t *testing.T) {
	t.Setenv(BinaryEnv, "/nonexistent/apache2")

	t.Setenv(RequireRealEnv, "1")
	f := &fakeTB{TB: t}
	require.Empty(t, Require(f))
	require.Contains(t, f.fatal, "apache is required")
	require.Contains(t, f.fatal, "/nonexistent/apache2")
	require.Empty(t, f.skip)

	t.Setenv(RequireRealEnv, "")
	f = &fakeTB{TB: t}
	require.Empty(t, Require(f))
	require.Empty(t, f.fatal)
	require.Contains(t, f.skip, "apache not available")
}
