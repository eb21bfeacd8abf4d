package aem_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// TestInstallsInDependencyOrder gives the handler a chain
// (base <- core <- api <- ui), a fan-out (conf-a/b/c on base) and a fan-in
// (all on ui and the confs) in scrambled order, against an AEM in strict
// mode that refuses any install whose dependencies are not installed yet.
func TestInstallsInDependencyOrder(t *testing.T) {
	e := newEnv(t)
	arts := []task.Artifact{
		e.pkg("all", "1.0", "g:ui:1.0,g:conf-a,g:conf-b,g:conf-c"),
		e.pkg("ui", "1.0", "g:api:1.0,g:core:1.0"),
		e.pkg("conf-c", "1.0", "g:base:1.0"),
		e.pkg("api", "1.0", "g:core:1.0"),
		e.pkg("conf-a", "1.0", "g:base:1.0"),
		e.pkg("core", "1.0", "g:base:[1.0,2.0)"),
		e.pkg("conf-b", "1.0", "g:base:1.0"),
		e.pkg("base", "1.0", ""),
	}
	r, out := e.run(e.handler(), arts...)
	require.NoError(t, r.Err())

	// aempkg.Order is deterministic: of the packages whose dependencies
	// are placed, the earliest in the task goes next.
	want := []string{"g:base:1.0", "g:conf-c:1.0", "g:conf-a:1.0", "g:core:1.0", "g:api:1.0", "g:ui:1.0", "g:conf-b:1.0", "g:all:1.0"}
	order := e.installed()
	require.Equal(t, want, order, "install order from AEM's request log")
	for _, dep := range [][2]string{
		{"g:base:1.0", "g:core:1.0"}, {"g:core:1.0", "g:api:1.0"}, {"g:api:1.0", "g:ui:1.0"},
		{"g:base:1.0", "g:conf-a:1.0"}, {"g:base:1.0", "g:conf-b:1.0"}, {"g:base:1.0", "g:conf-c:1.0"},
		{"g:ui:1.0", "g:all:1.0"}, {"g:conf-b:1.0", "g:all:1.0"},
	} {
		require.Less(t, indexOf(t, order, dep[0]), indexOf(t, order, dep[1]), "%s must be installed before %s", dep[0], dep[1])
	}
	// Each install request installed exactly its own package: AEM never
	// had to pull a dependency in.
	for _, req := range e.requests("install", "") {
		require.Equal(t, []string{req.Package}, req.Installed)
	}
	e.requireInstalledOnce(want...)

	var got []string
	for _, p := range out.Packages {
		got = append(got, p.ID)
		require.Equal(t, aem.StatusInstalled, p.Status, p.ID)
		require.Equal(t, "Package installed", p.Message, "AEM's message")
		require.NotEmpty(t, p.SHA256)
		require.Positive(t, p.Took)
	}
	require.Equal(t, want, got, "outcomes are listed in install order")
	for _, id := range want {
		st, ok := e.sim.Package(id)
		require.True(t, ok)
		require.True(t, st.Installed(), id)
	}
}

func TestSkipsInstalledPackages(t *testing.T) {
	e := newEnv(t)
	base := e.pkg("base", "1.0", "")
	app := e.pkg("app", "1.0", "g:base:1.0")
	r, _ := e.run(e.handler(), base)
	require.NoError(t, r.Err())
	e.sim.ResetRequests()

	r, out := e.run(e.handler(), base, app)
	require.NoError(t, r.Err())
	require.Equal(t, []string{"g:base:1.0=skipped", "g:app:1.0=installed"}, statuses(out))
	require.Equal(t, "already installed", out.Packages[0].Message)
	require.Empty(t, e.requests("upload", "g:base:1.0"), "an installed package is not uploaded again (a forced upload would forget it is installed)")
	require.Empty(t, e.requests("install", "g:base:1.0"))
	e.requireInstalledOnce("g:app:1.0")
}

// TestInstallFailureIsFinalAndVerbatim: AEM's success:false stops the
// task; the message is AEM's, word for word; later packages are not
// attempted and not listed.
func TestInstallFailureIsFinalAndVerbatim(t *testing.T) {
	e := newEnv(t)
	const msg = "javax.jcr.nodetype.ConstraintViolationException: OakConstraint0001: /apps/app/x[[nt:folder]]: No matching property definition: foo = bar"
	e.fault(sim.Fault{Kind: sim.FaultInstallFailure, Package: "g:app:1.0", Message: msg})
	arts := []task.Artifact{e.pkg("base", "1.0", ""), e.pkg("app", "1.0", "g:base:1.0"), e.pkg("site", "1.0", "g:app:1.0"), e.pkg("extra", "1.0", "g:base:1.0")}

	r, out := e.run(e.handler(), arts...)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "g:app:1.0")
	require.Contains(t, r.Error, msg)
	require.Contains(t, r.Error, "2 later packages not attempted")
	require.Equal(t, []string{"g:base:1.0=installed", "g:app:1.0=failed"}, statuses(out))
	require.Equal(t, msg, out.Packages[1].Message)
	require.Len(t, e.requests("install", "g:app:1.0"), 1, "success:false is final: not retried")
	require.Empty(t, e.requests("upload", "g:site:1.0"))
	require.Empty(t, e.requests("upload", "g:extra:1.0"))
	e.requireInstalledOnce("g:base:1.0")
}

func TestUnsatisfiableDependencyRefusedBeforeAnyUpload(t *testing.T) {
	e := newEnv(t)
	r, out := e.run(e.handler(),
		e.pkg("base", "1.0", ""),
		e.pkg("app", "1.0", "g:base:[2.0,3.0)"),
		e.pkg("other", "1.0", "acme:missing:1.0"))
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "refusing to install any package")
	require.Contains(t, r.Error, "g:app:1.0 requires g:base:[2.0,3.0)")
	require.Contains(t, r.Error, "g:other:1.0 requires acme:missing:1.0")
	require.Empty(t, out.Packages)
	for _, req := range e.sim.Requests() {
		require.Equal(t, "ls", req.Cmd, "only the listing may be asked for before the refusal")
	}
}

func TestCycleRefusedBeforeAnyUpload(t *testing.T) {
	e := newEnv(t)
	r, _ := e.run(e.handler(),
		e.pkg("base", "1.0", ""),
		e.pkg("a", "1.0", "g:b:1.0,g:base:1.0"),
		e.pkg("b", "1.0", "g:a:1.0"))
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "package dependency cycle: g:a:1.0 -> g:b:1.0 -> g:a:1.0")
	for _, req := range e.sim.Requests() {
		require.Equal(t, "ls", req.Cmd)
	}
	require.Empty(t, e.sim.InstallCounts())
}

// TestDependencyInstalledOnAEMOnly: a dependency outside the task that the
// instance has installed satisfies the order check.
func TestDependencyInstalledOnAEMOnly(t *testing.T) {
	e := newEnv(t)
	r, _ := e.run(e.handler(), e.pkg("base", "1.2", ""))
	require.NoError(t, r.Err())
	r, out := e.run(e.handler(), e.pkg("app", "1.0", "g:base:[1.0,2.0)"))
	require.NoError(t, r.Err())
	require.Equal(t, []string{"g:app:1.0=installed"}, statuses(out))
}

func TestSupersededAndDuplicateArtifacts(t *testing.T) {
	e := newEnv(t)
	old := e.pkg("app", "1.0", "")
	newer := e.pkg("app", "1.1", "")
	r, out := e.run(e.handler(), old, newer, newer)
	require.NoError(t, r.Err())
	require.Equal(t, []string{"g:app:1.1=installed", "g:app:1.0=skipped", "g:app:1.1=skipped"}, statuses(out))
	require.Contains(t, out.Packages[1].Message, "superseded by g:app:1.1")
	require.Contains(t, out.Packages[2].Message, "listed twice")
	e.requireInstalledOnce("g:app:1.1")
}

func TestRetriesAndReconcileThroughTheHandler(t *testing.T) {
	e := newEnv(t)
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "upload", Count: 1})
	e.fault(sim.Fault{Kind: sim.FaultDrop, Cmd: "install", Count: 1, After: true})
	e.fault(sim.Fault{Kind: sim.FaultHTTP500, Cmd: "ls", Count: 2})
	r, out := e.run(e.handler(), e.pkg("base", "1.0", ""), e.pkg("app", "1.0", "g:base:1.0"))
	require.NoError(t, r.Err())
	require.Equal(t, []string{"g:base:1.0=installed", "g:app:1.0=installed"}, statuses(out))
	require.Contains(t, out.Packages[0].Message, "confirmed by cmd=ls")
	require.Len(t, e.requests("install", "g:base:1.0"), 1, "a dropped install answer is reconciled, never resent")
	e.requireInstalledOnce("g:base:1.0", "g:app:1.0")
}

func TestWrongCredentialsFailFast(t *testing.T) {
	e := newEnv(t)
	e.cfg.Password = "wrong"
	start := time.Now()
	r, _ := e.run(e.handler(), e.pkg("base", "1.0", ""))
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "HTTP 401")
	require.Contains(t, r.Error, `user "admin"`)
	require.Contains(t, r.Error, "aem.password")
	require.Len(t, e.sim.Requests(), 1, "a 401 is not retried")
	require.Less(t, time.Since(start), 5*time.Second)
}

// crashAgent runs a task on a first agent whose handler "dies" at a
// failpoint for one package: the hook shuts the worker down and returns
// once the task's context is cancelled, so the handler does nothing more,
// and the journal keeps the task as running with the marks it made. It
// returns the journal for the next agent.
func crashAgent(t *testing.T, e *env, point, pkgID string, arts []task.Artifact) *journal.Journal {
	j := newJournal(t)
	h := e.handler()
	a := newAgent(t, j, h)
	died := make(chan error, 1)
	aem.SetHook(h, func(ctx context.Context, p string, id aempkg.ID) error {
		if p != point || id.String() != pkgID {
			return nil
		}
		go func() { died <- a.w.Shutdown(context.Background()) }()
		<-ctx.Done()
		return errors.New("killed")
	})
	a.submit("t1", arts...)
	select {
	case err := <-died:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the handler never reached the crash point")
	}
	en, err := j.Get("t1")
	require.NoError(t, err)
	require.Equal(t, journal.Running, en.State, "an interrupted task stays running in the journal")
	return j
}

// resume starts a second agent on the same journal, as deckhand-agent does
// after a restart, and returns the task's result.
func resume(t *testing.T, e *env, j *journal.Journal) (*task.Result, *task.PackageInstallOutput) {
	a := newAgent(t, j, e.handler())
	require.NoError(t, a.w.Recover(context.Background()))
	return a.result("t1")
}

func TestCrashResumesWithoutInstallingTwice(t *testing.T) {
	for _, tc := range []struct {
		name, point string
		// bMsg is how package b is reported after the restart.
		bMsg string
	}{
		{"after b is journaled installed", aem.FailpointAfterMark, "installed and verified by attempt 1 of this task"},
		{"after b is installed, before it is journaled", aem.FailpointAfterInstall, "installed by an interrupted earlier attempt of this task; verified with cmd=ls"},
		{"after b is uploaded, before it is installed", aem.FailpointAfterUpload, "Package installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			arts := []task.Artifact{e.pkg("a", "1.0", ""), e.pkg("b", "1.0", "g:a:1.0"), e.pkg("c", "1.0", "g:b:1.0"), e.pkg("d", "1.0", "g:a:1.0")}
			j := crashAgent(t, e, tc.point, "g:b:1.0", arts)
			require.Empty(t, e.requests("upload", "g:c:1.0"), "nothing after the crash point ran")

			r, out := resume(t, e, j)
			require.NoError(t, r.Err())
			require.Equal(t, 2, r.Attempts)
			require.Equal(t, []string{"g:a:1.0=installed", "g:b:1.0=installed", "g:c:1.0=installed", "g:d:1.0=installed"}, statuses(out))
			require.Equal(t, "installed and verified by attempt 1 of this task", out.Packages[0].Message)
			require.Equal(t, tc.bMsg, out.Packages[1].Message)
			e.requireInstalledOnce("g:a:1.0", "g:b:1.0", "g:c:1.0", "g:d:1.0")
			require.Len(t, e.requests("install", "g:a:1.0"), 1)
			require.Len(t, e.requests("install", "g:b:1.0"), 1)

			en, err := j.Get("t1")
			require.NoError(t, err)
			for _, id := range []string{"g:a:1.0", "g:b:1.0", "g:c:1.0", "g:d:1.0"} {
				m, ok := en.Mark(aem.MarkInstalled + id)
				require.True(t, ok, "mark for %s", id)
				var d struct{ SHA256 string }
				require.NoError(t, json.Unmarshal(m.Data, &d))
				require.Len(t, d.SHA256, 64)
			}
		})
	}
}

// TestCrashWhileInstallInFlight: the agent dies while AEM is still
// installing b (a slow install). After the restart the handler must wait
// for AEM to finish and find b installed, not upload it over the running
// install nor install it again.
func TestCrashWhileInstallInFlight(t *testing.T) {
	e := newEnv(t)
	e.fault(sim.Fault{Kind: sim.FaultSlowInstall, Package: "g:b:1.0", Delay: sim.Duration(700 * time.Millisecond)})
	arts := []task.Artifact{e.pkg("a", "1.0", ""), e.pkg("b", "1.0", "g:a:1.0"), e.pkg("c", "1.0", "g:b:1.0")}

	j := newJournal(t)
	h := e.handler()
	a := newAgent(t, j, h)
	died := make(chan error, 1)
	aem.SetHook(h, func(ctx context.Context, p string, id aempkg.ID) error {
		if p == aem.FailpointAfterUpload && id.String() == "g:b:1.0" {
			go func() {
				// Die once AEM is busy with b's install.
				require.Eventually(t, func() bool {
					st := e.requests("install", "g:b:1.0")
					return len(st) == 1 && st[0].Outcome == sim.OutcomeInProgress
				}, 10*time.Second, time.Millisecond)
				died <- a.w.Shutdown(context.Background())
			}()
		}
		return nil
	})
	a.submit("t1", arts...)
	require.NoError(t, <-died)
	st, _ := e.sim.Package("g:b:1.0")
	require.False(t, st.Installed(), "the restart happens while AEM is still installing b")

	r, out := resume(t, e, j)
	require.NoError(t, r.Err())
	require.Equal(t, []string{"g:a:1.0=installed", "g:b:1.0=installed", "g:c:1.0=installed"}, statuses(out))
	require.Contains(t, out.Packages[1].Message, "interrupted earlier attempt")
	require.Len(t, e.requests("upload", "g:b:1.0"), 1, "no forced upload over the running install")
	require.Len(t, e.requests("install", "g:b:1.0"), 1)
	require.NotEmpty(t, e.requests("installstatus", ""), "the restart waited on installstatus.jsp")
	e.requireInstalledOnce("g:a:1.0", "g:b:1.0", "g:c:1.0")
}

// TestMarkedButUninstalledIsNotReinstalled: a package journaled as
// installed by an earlier attempt that AEM no longer lists as installed is
// reported, not installed a second time by the same task.
func TestMarkedButUninstalledIsNotReinstalled(t *testing.T) {
	e := newEnv(t)
	arts := []task.Artifact{e.pkg("a", "1.0", ""), e.pkg("b", "1.0", "g:a:1.0")}
	j := crashAgent(t, e, aem.FailpointAfterMark, "g:a:1.0", arts)
	// Someone uninstalls a while the agent is down (Deckhand's client has
	// no uninstall: Deckhand never uninstalls).
	e.uninstall("/etc/packages/g/a-1.0.zip")
	e.sim.ResetRequests()

	r, out := resume(t, e, j)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Equal(t, []string{"g:a:1.0=failed"}, statuses(out))
	require.Contains(t, out.Packages[0].Message, "now lists it as not installed")
	require.Empty(t, e.requests("install", ""))
}

// TestConcurrentTasksDoNotInterleave: two package install tasks for the
// same host run one after the other, each in its own dependency order.
func TestConcurrentTasksDoNotInterleave(t *testing.T) {
	e := newEnv(t)
	e.fault(sim.Fault{Kind: sim.FaultSlowInstall, Package: "g:a:1.0", Delay: sim.Duration(200 * time.Millisecond)})
	a := newAgent(t, newJournal(t), e.handler())
	a.submit("t1", e.pkg("a", "1.0", ""), e.pkg("b", "1.0", "g:a:1.0"))
	a.submit("t2", e.pkg("c", "1.0", ""), e.pkg("d", "1.0", "g:c:1.0"))
	r1, _ := a.result("t1")
	r2, _ := a.result("t2")
	require.NoError(t, r1.Err())
	require.NoError(t, r2.Err())
	order := e.installed()
	require.Len(t, order, 4)
	require.Equal(t, 1, indexOf(t, order, "g:b:1.0")-indexOf(t, order, "g:a:1.0"), "t1's packages back to back: %v", order)
	require.Equal(t, 1, indexOf(t, order, "g:d:1.0")-indexOf(t, order, "g:c:1.0"), "t2's packages back to back: %v", order)
}

// TestCancelDuringInstallSaysAEMMayFinish: a task cancelled by the server
// while AEM installs reports that the install may still complete.
func TestCancelDuringInstallSaysAEMMayFinish(t *testing.T) {
	e := newEnv(t)
	e.fault(sim.Fault{Kind: sim.FaultSlowInstall, Package: "g:a:1.0", Delay: sim.Duration(300 * time.Millisecond)})
	a := newAgent(t, newJournal(t), e.handler())
	a.submit("t1", e.pkg("a", "1.0", ""))
	require.Eventually(t, func() bool {
		st := e.requests("install", "g:a:1.0")
		return len(st) == 1 && st[0].Outcome == sim.OutcomeInProgress
	}, 10*time.Second, time.Millisecond)
	a.w.Cancel("t1", "operator cancelled the execution")
	r, out := a.result("t1")
	require.Equal(t, task.StatusCancelled, r.Status)
	require.Equal(t, []string{"g:a:1.0=failed"}, statuses(out))
	require.Contains(t, out.Packages[0].Message, "AEM may still complete it")
}
