package sim_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
)

func TestFaultInstallFailure(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	require.True(t, e.upload(pkgZip("g", "b", "1.0", ""), false).Success)

	// Through the HTTP control endpoint, for one package, once.
	e.postFaults(`{"kind":"install-failure","package":"g:a:1.0","message":"javax.jcr.RepositoryException: boom","count":1}`)
	resp, body := e.do(e.cmdReq("install", pkgPath("g", "a", "1.0"), nil))
	require.Equal(t, http.StatusOK, resp.StatusCode, "failures come with HTTP 200 like AEM")
	require.JSONEq(t, `{"success":false,"msg":"javax.jcr.RepositoryException: boom"}`, string(body))
	require.False(t, e.ls()["g:a:1.0"].installed())
	require.True(t, e.cmd("install", pkgPath("g", "b", "1.0"), nil).Success, "other packages are not affected")
	require.True(t, e.cmd("install", pkgPath("g", "a", "1.0"), nil).Success, "the count is used up")

	// Through the Go API, for any package, until removed.
	f, err := e.sim.AddFault(sim.Fault{Kind: sim.FaultInstallFailure})
	require.NoError(t, err)
	for i := 0; i < 2; i++ {
		r := e.cmd("install", pkgPath("g", "b", "1.0"), nil)
		require.False(t, r.Success)
		require.Equal(t, "simulated install failure", r.Msg)
	}
	require.True(t, e.sim.RemoveFault(f.ID))
	require.True(t, e.cmd("install", pkgPath("g", "b", "1.0"), nil).Success)
}

// A slow install outlasts the client's timeout but completes server-side;
// the client must reconcile with installstatus and cmd=ls.
func TestFaultSlowInstallOutlastsClient(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "slow", "1.0", ""), false).Success)
	e.postFaults(`{"kind":"slow-install","package":"g:slow:1.0","delay":"1500ms","count":1}`)

	req := e.cmdReq("install", pkgPath("g", "slow", "1.0"), nil)
	req.SetBasicAuth(user, password)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.client.Do(req.WithContext(ctx))
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// While it runs: not finished, with a count of items.
	finished, items := e.installStatus()
	require.False(t, finished)
	require.Positive(t, items)
	require.False(t, e.ls()["g:slow:1.0"].installed())

	require.Eventually(t, func() bool {
		done, _ := e.installStatus()
		return done && e.ls()["g:slow:1.0"].installed()
	}, 10*time.Second, 50*time.Millisecond)

	rec := e.lastRequest("install")
	require.True(t, rec.ClientGone)
	require.Equal(t, sim.OutcomeSuccess, rec.Performed)
	require.Equal(t, []string{"g:slow:1.0"}, rec.Installed)
	require.GreaterOrEqual(t, time.Duration(rec.Duration), 1500*time.Millisecond)
	require.Equal(t, map[string]int{"g:slow:1.0": 1}, e.sim.InstallCounts())
}

// A second install queues behind a slow one, and both are recorded: this is
// what a client that blindly retries causes, and what tests can catch.
func TestSlowInstallSerialisesInstalls(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	_, err := e.sim.AddFault(sim.Fault{Kind: sim.FaultSlowInstall, Delay: sim.Duration(500 * time.Millisecond), Count: 1})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := e.cmdReq("install", pkgPath("g", "a", "1.0"), nil)
			req.SetBasicAuth(user, password)
			resp, err := e.client.Do(req)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, map[string]int{"g:a:1.0": 2}, e.sim.InstallCounts())
	st, _ := e.sim.Package("g:a:1.0")
	require.Equal(t, 2, st.InstallCount)
}

func TestFaultHTTP500(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	e.postFaults(`{"kind":"http-500","cmd":"install","count":2}`)

	for i := 0; i < 2; i++ {
		resp, body := e.do(e.cmdReq("install", pkgPath("g", "a", "1.0"), nil))
		require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
		require.Contains(t, string(body), "Internal Server Error")
		require.False(t, e.ls()["g:a:1.0"].installed(), "listing is not affected and nothing was installed")
	}
	require.True(t, e.cmd("install", pkgPath("g", "a", "1.0"), nil).Success)
	rec := e.lastRequest("install")
	require.Equal(t, sim.OutcomeSuccess, rec.Outcome)

	reqs := e.requests()
	var injected int
	for _, r := range reqs {
		if r.Outcome == sim.OutcomeInjected500 {
			injected++
			require.Equal(t, http.StatusInternalServerError, r.Status)
			require.Empty(t, r.Performed, "a fault before the request means it was not carried out")
		}
	}
	require.Equal(t, 2, injected)
}

func TestFaultHTTP500AfterInstall(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	_, err := e.sim.AddFault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "install", Count: 1, After: true})
	require.NoError(t, err)
	resp, _ := e.do(e.cmdReq("install", pkgPath("g", "a", "1.0"), nil))
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.True(t, e.ls()["g:a:1.0"].installed(), "the install happened; only the answer was lost")
	rec := e.lastRequest("install")
	require.Equal(t, sim.OutcomeInjected500, rec.Outcome)
	require.Equal(t, sim.OutcomeSuccess, rec.Performed)
}

func TestFaultDrop(t *testing.T) {
	e := start(t, "")
	e.postFaults(`{"kind":"drop","cmd":"upload","count":1}`)
	req := e.uploadReq(pkgZip("g", "a", "1.0", ""), false)
	req.SetBasicAuth(user, password)
	resp, err := e.client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err, "the connection is closed without a response")
	require.True(t, isConnError(err), "unexpected error %v", err)
	require.Empty(t, e.ls(), "dropped before it was carried out")
	rec := e.lastRequest("upload")
	require.Equal(t, sim.OutcomeDropped, rec.Outcome)
	require.Zero(t, rec.Status)

	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success, "only the next one request")
}

func TestFaultDropAfterInstall(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	e.postFaults(`{"kind":"drop","cmd":"install","count":1,"after":true}`)
	req := e.cmdReq("install", pkgPath("g", "a", "1.0"), nil)
	req.SetBasicAuth(user, password)
	resp, err := e.client.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err)
	require.True(t, e.ls()["g:a:1.0"].installed())
	rec := e.lastRequest("install")
	require.Equal(t, sim.OutcomeDropped, rec.Outcome)
	require.Equal(t, sim.OutcomeSuccess, rec.Performed)
	require.Equal(t, []string{"g:a:1.0"}, rec.Installed)
}

func TestFaultCmdFilterAndAnyCmd(t *testing.T) {
	e := start(t, "")
	e.postFaults(`{"kind":"http-500","cmd":"installstatus","count":1}`)
	req, err := http.NewRequest(http.MethodGet, e.url("/crx/packmgr/installstatus.jsp"), nil)
	require.NoError(t, err)
	resp, _ := e.do(req)
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	finished, _ := e.installStatus()
	require.True(t, finished)

	// No cmd: the next request of any kind.
	e.postFaults(`{"kind":"http-500","count":1}`)
	req, err = http.NewRequest(http.MethodGet, e.url("/crx/packmgr/service.jsp?cmd=ls"), nil)
	require.NoError(t, err)
	resp, _ = e.do(req)
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.Empty(t, e.ls())
}

// Close cuts a slow install short; the install is still recorded.
func TestCloseFinishesSlowInstall(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir)
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	_, err := e.sim.AddFault(sim.Fault{Kind: sim.FaultSlowInstall, Delay: sim.Duration(time.Hour)})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := e.cmdReq("install", pkgPath("g", "a", "1.0"), nil)
		req.SetBasicAuth(user, password)
		if resp, err := e.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	require.Eventually(t, func() bool { f, _ := e.installStatus(); return !f }, 5*time.Second, 20*time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- e.sim.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not cut the slow install short")
	}
	<-done
	e.stop()

	e2 := start(t, dir)
	require.True(t, e2.ls()["g:a:1.0"].installed())
}

func isConnError(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "EOF") || strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}
