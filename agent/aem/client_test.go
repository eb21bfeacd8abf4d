package aem_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// upload uploads a built artifact through c.
func (e *env) upload(c *aem.Client, name, version, deps string) aempkg.ID {
	e.t.Helper()
	a := e.pkg(name, version, deps)
	id, err := aempkg.NewID("g", name, version)
	require.NoError(e.t, err)
	p, err := e.fetch.Fetch(context.Background(), a)
	require.NoError(e.t, err)
	stored, err := c.Upload(context.Background(), p, id.DownloadName())
	require.NoError(e.t, err)
	require.Equal(e.t, id.Path(), stored)
	return id
}

func TestClientUploadInstallList(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	ctx := context.Background()
	id := e.upload(c, "app", "1.0", "")

	l, err := c.List(ctx)
	require.NoError(t, err)
	info, ok := l.Find(id)
	require.True(t, ok)
	require.False(t, info.Installed(), "uploaded only: lastUnpackedBy is %q", info.LastUnpackedBy)
	require.Equal(t, "null", info.LastUnpackedBy)
	require.Empty(t, l.InstalledIDs())

	res, err := c.Install(ctx, id)
	require.NoError(t, err)
	require.Equal(t, aem.InstallResult{Msg: "Package installed", Requests: 1}, res)

	l, err = c.List(ctx)
	require.NoError(t, err)
	info, _ = l.Find(id)
	require.True(t, info.Installed())
	require.Equal(t, "admin", info.LastUnpackedBy)
	require.Equal(t, []aempkg.ID{id}, l.InstalledIDs())
	_, ok = l.Find(aempkg.ID{Group: "g", Name: "app", Version: aempkg.MustParseVersion("1.0.0")})
	require.False(t, ok, "1.0.0 is another package than 1.0 to AEM")

	st, err := c.InstallStatus(ctx)
	require.NoError(t, err)
	require.True(t, st.Finished)

	up := e.requests("upload", "g:app:1.0")
	require.Len(t, up, 1)
	require.Equal(t, "true", up[0].Params["force"])
}

func TestClientInstallFailureVerbatim(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	id := e.upload(c, "app", "1.0", "")
	e.fault(sim.Fault{Kind: sim.FaultInstallFailure, Package: id.String(), Message: "Unable to import: boom [x]"})
	_, err := c.Install(context.Background(), id)
	var ae *aem.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "Unable to import: boom [x]", ae.Msg)
	require.Equal(t, "install", ae.Op)
	require.Len(t, e.requests("install", ""), 1)

	// The real FileVault refusal, under strict dependency handling.
	dep := e.upload(c, "needs", "1.0", "g:app:1.0")
	_, err = c.Install(context.Background(), dep)
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "Refusing to install package g:needs:1.0. required dependencies missing: [g:app:1.0]", ae.Msg)
}

func TestClientRetries500ThenSucceeds(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "upload", Count: 2})
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "ls", Count: 1})
	id := e.upload(c, "app", "1.0", "")
	up := e.requests("upload", "")
	require.Len(t, up, 3)
	require.Equal(t, sim.OutcomeInjected500, up[0].Outcome)
	require.Equal(t, sim.OutcomeSuccess, up[2].Outcome)

	_, err := c.List(context.Background())
	require.NoError(t, err)
	require.Len(t, e.requests("ls", ""), 2)

	// A 500 on install may come after AEM did the work, so it is
	// reconciled like a lost answer; here it came before, so AEM lists the
	// package not installed and it is installed again, once.
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "install", Count: 1})
	res, err := c.Install(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, 2, res.Requests)
	require.False(t, res.Reconciled)
	inst := e.requests("install", "")
	require.Len(t, inst, 2)
	require.Empty(t, inst[0].Performed, "the first install was not carried out")
	e.requireInstalledOnce(id.String())
}

func TestClientInstall500AfterPerformedIsNotResent(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	id := e.upload(c, "app", "1.0", "")
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "install", Count: 1, After: true})
	res, err := c.Install(context.Background(), id)
	require.NoError(t, err)
	require.True(t, res.Reconciled)
	require.Equal(t, 1, res.Requests)
	require.Len(t, e.requests("install", ""), 1)
	e.requireInstalledOnce(id.String())
}

func TestClientDroppedUploadRetried(t *testing.T) {
	for _, after := range []bool{false, true} {
		e := newEnv(t)
		c := e.client()
		e.fault(sim.Fault{Kind: sim.FaultDrop, Cmd: "upload", Count: 1, After: after})
		e.upload(c, "app", "1.0", "")
		up := e.requests("upload", "")
		require.Len(t, up, 2, "after=%v", after)
		require.Equal(t, sim.OutcomeDropped, up[0].Outcome)
		require.Equal(t, sim.OutcomeSuccess, up[1].Outcome)
	}
}

// TestClientDroppedInstall: whether AEM carried the install out before the
// connection dropped or not, it ends installed exactly once, and the
// install is resent only when cmd=ls shows it was not carried out.
func TestClientDroppedInstall(t *testing.T) {
	for _, tc := range []struct {
		after        bool
		wantRequests int
	}{{after: true, wantRequests: 1}, {after: false, wantRequests: 2}} {
		e := newEnv(t)
		c := e.client()
		id := e.upload(c, "app", "1.0", "")
		e.fault(sim.Fault{Kind: sim.FaultDrop, Cmd: "install", Count: 1, After: tc.after})
		res, err := c.Install(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, tc.wantRequests, res.Requests, "after=%v", tc.after)
		require.Equal(t, tc.after, res.Reconciled)
		require.Len(t, e.requests("install", ""), tc.wantRequests)
		require.NotEmpty(t, e.requests("installstatus", ""), "reconciled through installstatus.jsp")
		e.requireInstalledOnce(id.String())
	}
}

// TestClientSlowInstallReconciled: the install outlasts the client's
// install timeout; AEM finishes it anyway. The client waits on
// installstatus.jsp, confirms with cmd=ls, and never sends a second install.
func TestClientSlowInstallReconciled(t *testing.T) {
	e := newEnv(t)
	e.cfg.InstallTimeout = yamlconf.Duration(150 * time.Millisecond)
	c := e.client()
	id := e.upload(c, "app", "1.0", "")
	e.fault(sim.Fault{Kind: sim.FaultSlowInstall, Package: id.String(), Delay: sim.Duration(600 * time.Millisecond)})

	res, err := c.Install(context.Background(), id)
	require.NoError(t, err)
	require.True(t, res.Reconciled)
	require.Equal(t, 1, res.Requests)
	require.Contains(t, res.Msg, "confirmed by cmd=ls")

	// The install is done (the client saw it in cmd=ls) a moment before
	// the simulator's handler finishes its log entry.
	var inst []sim.Request
	require.Eventually(t, func() bool {
		inst = e.requests("install", "")
		return len(inst) == 1 && inst[0].Outcome != sim.OutcomeInProgress
	}, 5*time.Second, 5*time.Millisecond)
	require.Len(t, e.requests("install", ""), 1, "no second install")
	require.True(t, inst[0].ClientGone, "the client gave up on the request")
	require.Equal(t, sim.OutcomeSuccess, inst[0].Performed)
	busy := 0
	for _, r := range e.requests("installstatus", "") {
		require.Equal(t, sim.OutcomeSuccess, r.Outcome)
		busy++
	}
	require.GreaterOrEqual(t, busy, 2, "installstatus.jsp was polled while AEM was busy")
	e.requireInstalledOnce(id.String())
}

// TestClientReconcileTimeout: an install that never finishes within the
// reconcile timeout is reported as unknown, not resent.
func TestClientReconcileTimeout(t *testing.T) {
	e := newEnv(t)
	e.cfg.InstallTimeout = yamlconf.Duration(50 * time.Millisecond)
	e.cfg.ReconcileTimeout = yamlconf.Duration(200 * time.Millisecond)
	c := e.client()
	id := e.upload(c, "app", "1.0", "")
	e.fault(sim.Fault{Kind: sim.FaultSlowInstall, Package: id.String(), Delay: sim.Duration(900 * time.Millisecond)})
	_, err := c.Install(context.Background(), id)
	require.ErrorContains(t, err, "could not be established")
	require.ErrorContains(t, err, "aem.reconcile_timeout")
	require.Len(t, e.requests("install", ""), 1)
}

func TestClientWrongCredentials(t *testing.T) {
	e := newEnv(t)
	e.cfg.Password = "wrong"
	c := e.client()
	_, err := c.List(context.Background())
	require.ErrorIs(t, err, aem.ErrUnauthorized)
	require.ErrorContains(t, err, "HTTP 401")
	require.ErrorContains(t, err, `user "admin"`)
	_, err = c.Install(context.Background(), aempkg.ID{Group: "g", Name: "x", Version: aempkg.MustParseVersion("1")})
	require.ErrorIs(t, err, aem.ErrUnauthorized)
	reqs := e.sim.Requests()
	require.Len(t, reqs, 2, "one request each, no retries, no reconciliation")
	for _, r := range reqs {
		require.Equal(t, sim.OutcomeUnauthorized, r.Outcome)
	}
}

func TestClientGivesUpAfterRetries(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "ls"})
	_, err := c.List(context.Background())
	var he *aem.HTTPError
	require.ErrorAs(t, err, &he)
	require.Equal(t, 500, he.StatusCode)
	require.ErrorContains(t, err, "gave up after 4 tries")
	require.Len(t, e.requests("ls", ""), 4, "the first try and retries.count=3 retries")
}

func TestClientConnectionRefusedRetried(t *testing.T) {
	e := newEnv(t)
	e.sim.Stop()
	c := e.client()
	start := time.Now()
	_, err := c.List(context.Background())
	var te *aem.TransportError
	require.ErrorAs(t, err, &te)
	require.ErrorContains(t, err, "gave up after 4 tries")
	require.Less(t, time.Since(start), 5*time.Second)
}

func TestClientStopsWhenContextEnds(t *testing.T) {
	e := newEnv(t)
	e.cfg.Retries = aem.Retries{Count: 50, BaseBackoff: yamlconf.Duration(time.Hour), MaxBackoff: yamlconf.Duration(time.Hour)}
	c := e.client()
	// Every backoff wait fires only when the test says so: the first
	// retry's timer is never released, and cancelling ends the wait.
	waiting := make(chan struct{}, 1)
	aem.SetAfter(c, func(time.Duration) <-chan time.Time {
		waiting <- struct{}{}
		return make(chan time.Time)
	})
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "ls"})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-waiting; cancel() }()
	_, err := c.List(ctx)
	require.ErrorContains(t, err, "HTTP 500")
	require.ErrorContains(t, err, "context canceled")
	require.Len(t, e.requests("ls", ""), 1)
}

// fakeAEM answers every request with one canned response, for answers the
// simulator does not give.
func fakeAEM(t *testing.T, status int, contentType, body string) *aem.Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status == http.StatusFound {
			w.Header().Set("Location", "/libs/granite/core/content/login.html")
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	c, err := aem.NewClient(&aem.Config{BaseURL: srv.URL, User: "admin", Password: "admin",
		Retries:      aem.Retries{Count: 1, BaseBackoff: yamlconf.Duration(time.Millisecond), MaxBackoff: yamlconf.Duration(time.Millisecond)},
		PollInterval: yamlconf.Duration(time.Millisecond), ReconcileTimeout: yamlconf.Duration(time.Second)}, testLogger(t, "aem-client"))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestClientParsesAnswers(t *testing.T) {
	ctx := context.Background()
	id := aempkg.ID{Group: "g", Name: "x", Version: aempkg.MustParseVersion("1")}
	upload := func(c *aem.Client) error {
		_, err := c.Upload(ctx, writeFile(t, "x.zip", "zip"), "x-1.zip")
		return err
	}

	t.Run("success false on HTTP 200 is AEM's failure", func(t *testing.T) {
		c := fakeAEM(t, 200, "application/json", `{"success":false,"msg":"Package already exists: g:x:1"}`)
		err := upload(c)
		var ae *aem.Error
		require.ErrorAs(t, err, &ae)
		require.Equal(t, "Package already exists: g:x:1", ae.Msg)
	})
	t.Run("a login page with HTTP 200 is not success", func(t *testing.T) {
		c := fakeAEM(t, 200, "text/html", "<html><body>AEM Sign In</body></html>")
		err := upload(c)
		var he *aem.HTTPError
		require.ErrorAs(t, err, &he)
		require.Contains(t, err.Error(), "not a Package Manager answer")
		require.Contains(t, err.Error(), "AEM Sign In")
		_, err = c.List(ctx)
		require.ErrorContains(t, err, "not a Package Manager listing")
	})
	t.Run("redirect is not followed", func(t *testing.T) {
		c := fakeAEM(t, http.StatusFound, "text/html", "")
		_, err := c.List(ctx)
		var he *aem.HTTPError
		require.ErrorAs(t, err, &he)
		require.Equal(t, http.StatusFound, he.StatusCode)
	})
	t.Run("403 is an auth failure", func(t *testing.T) {
		c := fakeAEM(t, http.StatusForbidden, "text/plain", "")
		require.ErrorIs(t, upload(c), aem.ErrUnauthorized)
	})
	t.Run("listing status 500 is AEM's failure", func(t *testing.T) {
		c := fakeAEM(t, 200, "text/xml", `<crx><response><data/><status code="500">Repository not ready</status></response></crx>`)
		_, err := c.List(ctx)
		var ae *aem.Error
		require.ErrorAs(t, err, &ae)
		require.Equal(t, "Repository not ready", ae.Msg)
	})
	t.Run("listing installed when lastUnpackedBy is neither empty nor null", func(t *testing.T) {
		c := fakeAEM(t, 200, "text/xml", `<?xml version="1.0" encoding="utf-8"?>
<crx version="1.4.1" user="admin" workspace="crx.default"><request><param name="cmd" value="ls"/></request>
<response><data><packages>
<package><group>g</group><name>a</name><version>1.0</version><downloadName>a-1.0.zip</downloadName><size>1234</size>
  <created>Tue, 25 Feb 2014 11:40:56 +0100</created><lastUnpacked>Tue, 25 Feb 2014 11:41:00 +0100</lastUnpacked><lastUnpackedBy>admin</lastUnpackedBy></package>
<package><group>g</group><name>b</name><version>1.0</version><lastUnpacked></lastUnpacked><lastUnpackedBy>null</lastUnpackedBy></package>
<package><group>g</group><name>c</name><version>1.0</version><lastUnpackedBy/></package>
<package><group>g</group><name>d</name><version>2</version><lastUnpackedBy> deployer </lastUnpackedBy></package>
</packages></data><status code="200">ok</status></response></crx>`)
		l, err := c.List(ctx)
		require.NoError(t, err)
		require.Len(t, l, 4)
		require.Equal(t, int64(1234), l[0].Size)
		var installed []string
		for _, id := range l.InstalledIDs() {
			installed = append(installed, id.String())
		}
		require.Equal(t, []string{"g:a:1.0", "g:d:2"}, installed)
	})
	t.Run("installstatus without status is not idle", func(t *testing.T) {
		c := fakeAEM(t, 200, "application/json", `{}`)
		_, err := c.InstallStatus(ctx)
		require.ErrorContains(t, err, "not an installstatus answer")
	})
	t.Run("unusable install answer is reconciled, not resent blindly", func(t *testing.T) {
		// The fake answers installstatus and ls with the same HTML, so
		// reconciliation cannot establish anything and says so.
		c := fakeAEM(t, 200, "text/html", "<html>proxy</html>")
		_, err := c.Install(ctx, id)
		require.ErrorContains(t, err, "could not be established")
	})
	t.Run("5xx is retried then reported", func(t *testing.T) {
		c := fakeAEM(t, http.StatusBadGateway, "text/html", "<html>Bad Gateway</html>")
		err := upload(c)
		var he *aem.HTTPError
		require.ErrorAs(t, err, &he)
		require.True(t, errors.As(err, &he) && he.StatusCode == 502)
		require.ErrorContains(t, err, "gave up after 2 tries")
	})
}

func TestClientPassesDependencyHandling(t *testing.T) {
	e := newEnv(t)
	e.cfg.DependencyHandling = "best_effort"
	c := e.client()
	id := e.upload(c, "app", "1.0", "g:absent:1.0")
	_, err := c.Install(context.Background(), id)
	require.NoError(t, err, "best_effort ignores the missing dependency that strict (the simulator's default here) refuses")
	inst := e.requests("install", "")
	require.Len(t, inst, 1)
	require.Equal(t, "best_effort", inst[0].Params["dependencyHandling"])

	e.cfg.DependencyHandling = ""
	c = e.client()
	id = e.upload(c, "other", "1.0", "")
	_, err = c.Install(context.Background(), id)
	require.NoError(t, err)
	_, sent := e.requests("install", "g:other:1.0")[0].Params["dependencyHandling"]
	require.False(t, sent, "not sent unless configured")
}
