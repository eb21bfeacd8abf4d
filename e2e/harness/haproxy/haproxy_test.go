package haproxy

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartServesAndStopsCleanly(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from d1")
	}))
	defer be.Close()

	inst := Start(t, Config{
		Servers:   []Server{{Name: "d1", Addr: be.Listener.Addr().String()}},
		CheckPath: "/health",
	})
	cfg, err := os.ReadFile(inst.ConfigPath)
	require.NoError(t, err)
	require.Contains(t, string(cfg), "stats socket "+inst.Socket+" mode 600 level admin")
	require.Contains(t, string(cfg), "option httpchk GET /health")
	require.Contains(t, string(cfg), "server d1 "+be.Listener.Addr().String()+" check inter 200ms rise 2 fall 2")

	inst.WaitStatus(t, "d1", "UP", 5*time.Second)
	st := inst.Stat(t, "d1")
	require.Equal(t, be.Listener.Addr().String(), st.Fields["addr"])
	require.Equal(t, 0, st.Scur)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(inst.URL + "/")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "hello from d1", string(body))

	inst.SetState(t, "d1", "maint")
	require.Equal(t, "MAINT", inst.Status(t, "d1"))
	out := inst.Command(t, "set server be/nope state maint")
	require.Equal(t, "No such server.", strings.TrimSpace(out))

	pid := inst.Pid()
	require.NoError(t, inst.Stop())
	require.True(t, inst.Exited())
	// The child was waited for, so the pid no longer exists at all.
	require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH)
	_, err = inst.command("show info")
	require.Error(t, err, "runtime API must be gone after Stop")
	require.NoError(t, inst.Stop(), "Stop is idempotent")
}

func TestParseServerStat(t *testing.T) {
	out := "# pxname,svname,qcur,qmax,scur,smax,status,\n" +
		"fe,FRONTEND,,,0,0,OPEN,\n" +
		"be,d1,0,0,3,4,UP 1/2,\n" +
		"be,BACKEND,0,0,3,4,UP,\n\n"
	st, err := parseServerStat(out, "be", "d1")
	require.NoError(t, err)
	require.Equal(t, "UP 1/2", st.Status)
	require.Equal(t, 3, st.Scur)

	_, err = parseServerStat(out, "be", "d9")
	require.ErrorContains(t, err, "no row for be/d9")
	_, err = parseServerStat("No such proxy.\n\n", "be", "d1")
	require.ErrorContains(t, err, "No such proxy.")
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
	t.Setenv(BinaryEnv, "/nonexistent/haproxy")

	t.Setenv(RequireRealEnv, "1")
	f := &fakeTB{TB: t}
	require.Empty(t, Require(f))
	require.Contains(t, f.fatal, "haproxy is required")
	require.Contains(t, f.fatal, "/nonexistent/haproxy")
	require.Empty(t, f.skip)

	t.Setenv(RequireRealEnv, "")
	f = &fakeTB{TB: t}
	require.Empty(t, Require(f))
	require.Empty(t, f.fatal)
	require.Contains(t, f.skip, "haproxy not available")
}
