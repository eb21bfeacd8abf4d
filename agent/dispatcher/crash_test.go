package dispatcher

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

// crashScenario is one task run against a host prepared by warm.
type crashScenario struct {
	name       string
	noExchange bool
	// warm prepares the host (it runs without crashes).
	warm func(e *env, d *Dispatcher)
	// task builds the task that is crashed.
	task func(e *env) task.Kind
	// newWins: a clean run ends with the new tree (the configtest
	// passes).
	newWins bool
}

func crashScenarios() []crashScenario {
	warmDeploy := func(e *env, d *Dispatcher) {
		r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(nil))}, nil)
		require.NoError(e.t, r.Err())
	}
	warmV2 := func(e *env, d *Dispatcher) {
		warmDeploy(e, d)
		r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, nil)
		require.NoError(e.t, r.Err())
	}
	good := func(e *env) task.Kind {
		return task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{
			"conf.d/rewrites/default_rewrite.rules": v2Rules,
			"conf.d/new_site.conf":                  "# new\n",
			"conf.modules.d/00-base.conf":           "", // removed: conf.modules.d keeps only the immutable file
		}))}
	}
	bad := func(e *env) task.Kind {
		return task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": "BOGUS\n"}))}
	}
	restore := func(e *env) task.Kind { return task.DispatcherRestore{} }
	var out []crashScenario
	for _, noEx := range []bool{false, true} {
		sfx := ""
		if noEx {
			sfx = "/rename-fallback"
		}
		out = append(out,
			crashScenario{name: "deploy" + sfx, noExchange: noEx, warm: warmDeploy, task: good, newWins: true},
			crashScenario{name: "deploy-configtest-fails" + sfx, noExchange: noEx, warm: warmDeploy, task: bad},
			crashScenario{name: "restore" + sfx, noExchange: noEx, warm: warmV2, task: restore, newWins: true},
		)
	}
	return out
}

func crashMod(c *Config) { c.BackupsKeep = 1 }

// crashSnapshot prepares a host for crash tests once per scenario: one
// backup kept (so every task prunes), chattr +i on the host's httpd.conf
// where the filesystem allows, a bbolt journal, warmed up by sc.warm. It
// returns the directory to clone, the task to crash (its artifact
// registered in fetch) and the files to flag again in each clone.
func crashSnapshot(t *testing.T, sc crashScenario) (snap string, fetch *fakeFetcher, kind task.Kind, flag []string) {
	e := newEnvAt(t, memTempDir(t), crashMod)
	e.useBolt()
	p := filepath.Join(e.httpd, "conf/httpd.conf")
	if setImmutableAttr(p, true) == nil && immutableAttr(p) {
		flag = []string{"conf/httpd.conf"}
	}
	d := e.dispatcher()
	d.noExchange = sc.noExchange
	sc.warm(e, d)
	kind = sc.task(e)
	require.NoError(t, e.j.Close())
	return e.base, e.fetch, kind, flag
}

// clone is a fresh copy of the snapshot host with its own dispatcher.
func clone(t *testing.T, sc crashScenario, snap string, fetch *fakeFetcher, flag []string) (*env, *Dispatcher) {
	e := cloneEnv(t, snap, fetch, crashMod, flag...)
	d := e.dispatcher()
	d.noExchange = sc.noExchange
	return e, d
}

type hitPoint struct {
	name string
	n    int
}

// points lists every (failpoint, occurrence) of a recorded sequence.
func points(seq []string) []hitPoint {
	count := map[string]int{}
	var out []hitPoint
	for _, s := range seq {
		count[s]++
		out = append(out, hitPoint{s, count[s]})
	}
	return out
}

func indexOf(seq []string, name string) int {
	return slices.Index(seq, name)
}

// TestCrashAtEveryFailpoint stops a deploy or restore at every failpoint
// it passes (each occurrence), as if the agent were killed there, then runs
// start-up recovery with a fresh dispatcher on the same journal. The tree
// must be exactly the old or exactly the new one — new only when the crash
// came after the new tree's configtest verdict was journaled — with the
// immutable files (and their chattr +i) intact, no leftovers, and a result
// that says what recovery did.
func TestCrashAtEveryFailpoint(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	record := func(seq []string) {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range seq {
			seen[s] = true
		}
	}
	var total atomic.Int64
	t.Cleanup(func() { t.Logf("simulated %d crashes", total.Load()) })
	for _, sc := range crashScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			// A clean run records the failpoints the task passes.
			snap, fetch, kind, flag := crashSnapshot(t, sc)
			e, d := clone(t, sc, snap, fetch, flag)
			oldM := e.manifest()
			dry := newCrashHook("", 0)
			r := e.run(d, kind, dry)
			if sc.newWins {
				require.NoError(t, r.Err())
			} else {
				require.Equal(t, task.StatusFailed, r.Status)
			}
			newM := e.manifest()
			if sc.newWins {
				require.NotEmpty(t, oldM.Diff(newM))
			}
			seq := dry.sequence()
			record(seq)
			verdict := indexOf(seq, "dispatcher/after-mark-"+markConfigTestOK)
			planned := indexOf(seq, "dispatcher/after-mark-"+markPlan)
			require.GreaterOrEqual(t, planned, 0)

			for i, pt := range points(seq) {
				if sc.noExchange && i < planned {
					// Before the plan the rename fallback runs the same
					// code as the exchange scenario; only the swap differs.
					continue
				}
				total.Add(1)
				e, d := clone(t, sc, snap, fetch, flag)
				require.Empty(t, oldM.Diff(e.manifest()))
				reloadsBefore := e.reloadCount()
				crash := newCrashHook(pt.name, pt.n)
				require.Nil(t, e.run(d, kind, crash), "crash at %s#%d", pt.name, pt.n)
				record(crash.sequence())

				results := e.restart(nil)
				require.Len(t, results, 1)
				res := results[0]
				out := dispOut(t, res)
				wantNew := sc.newWins && verdict >= 0 && i >= verdict
				where := fmt.Sprintf("crash at %s#%d (step %d)", pt.name, pt.n, i)
				got := e.manifest()
				if wantNew {
					require.Empty(t, newM.Diff(got), "%s: want exactly the new tree", where)
					require.NoError(t, res.Err(), where)
				} else {
					require.Empty(t, oldM.Diff(got), "%s: want exactly the old tree", where)
					require.Equal(t, task.StatusFailed, res.Status, where)
				}
				require.NotEmpty(t, out.Recovery, where)
				require.Equal(t, hostHTTPDConf, e.read("conf/httpd.conf"), where)
				if len(flag) > 0 {
					require.True(t, immutableAttr(filepath.Join(e.httpd, "conf/httpd.conf")), "%s: chattr +i kept", where)
				}
				if i > planned && !wantNew || wantNew {
					require.Greater(t, e.reloadCount(), reloadsBefore, "%s: Apache reloaded after the tree changed", where)
				}
				if i < planned {
					require.Contains(t, res.Error, "before the live config was changed", where)
				}
				if !sc.newWins && strings.Contains(sc.name, "configtest") && i > indexOf(seq, "dispatcher/after-mark-"+markRollback) {
					require.Contains(t, res.Error, "AH00526: Syntax error on line 1 of ", where)
					require.True(t, out.Restored, where)
				}
				e.requireNoLeftovers()
				require.Empty(t, e.restart(nil), "%s: nothing left to recover", where)
			}
		})
	}
	t.Cleanup(func() { checkFailpointCoverage(t, seen) })
}

// checkFailpointCoverage runs after the parallel scenarios: every listed
// failpoint was passed, and every passed one is listed.
func checkFailpointCoverage(t *testing.T, seen map[string]bool) {
	var missing []string
	for _, n := range FailpointNames {
		if !seen[n] {
			missing = append(missing, n)
		}
	}
	var unlisted []string
	for n := range seen {
		if !slices.Contains(FailpointNames, n) {
			unlisted = append(unlisted, n)
		}
	}
	sort.Strings(unlisted)
	// Recovery's own renames are covered by TestCrashDuringRecovery.
	missing = slices.DeleteFunc(missing, func(n string) bool { return strings.HasPrefix(n, fpRecover) })
	require.Empty(t, missing, "failpoints never passed")
	require.Empty(t, unlisted, "failpoints passed but not in FailpointNames")
}

// TestCrashDuringRecovery crashes the task, then crashes recovery itself at
// every failpoint it passes, then recovers again.
func TestCrashDuringRecovery(t *testing.T) {
	sc := crashScenarios()
	cases := []struct {
		sc      crashScenario
		at      hitPoint
		wantNew bool
	}{
		{sc[0], hitPoint{FPSwapAfterRename, 2}, false},                            // mid-swap: back
		{sc[0], hitPoint{"dispatcher/after-mark-" + markConfigTestOK, 1}, true},   // verdict journaled: forward
		{sc[1], hitPoint{"dispatcher/after-mark-" + markRollback, 1}, false},      // rolling back
		{sc[3], hitPoint{FPSwapAfterRename, 1}, false},                            // rename fallback, mid-swap
		{sc[5], hitPoint{"dispatcher/after-mark-" + markConfigTestOK, 1}, true},   // restore, forward
		{sc[4], hitPoint{"dispatcher/before-mark-" + markRolledBack, 1}, false},   // fallback: rolled back, not journaled
		{sc[1], hitPoint{FPRollbackAfterRename, 1}, false},                        // half rolled back
		{sc[0], hitPoint{"dispatcher/before-mark-" + markConfigTestOK, 1}, false}, // tested, verdict not journaled
	}
	var mu sync.Mutex
	seenRecover := map[string]bool{}
	t.Cleanup(func() {
		require.True(t, seenRecover[FPRecoverBeforeRename] && seenRecover[FPRecoverAfterRename], "recovery renames were exercised: %v", seenRecover)
	})
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s#%d", c.sc.name, c.at.name, c.at.n), func(t *testing.T) {
			t.Parallel()
			snap, fetch, kind, flag := crashSnapshot(t, c.sc)
			prep := func() (*env, *Manifest, *Manifest) {
				e, d := clone(t, c.sc, snap, fetch, flag)
				oldM := e.manifest()
				require.Nil(t, e.run(d, kind, newCrashHook(c.at.name, c.at.n)))
				return e, oldM, nil
			}
			// Clean recovery: learn its failpoints and the final tree.
			e, oldM, _ := prep()
			dry := newCrashHook("", 0)
			require.NotNil(t, e.restart(dry))
			final := e.manifest()
			if !c.wantNew {
				require.Empty(t, oldM.Diff(final))
			} else {
				require.NotEmpty(t, oldM.Diff(final))
			}
			for _, pt := range points(dry.sequence()) {
				mu.Lock()
				seenRecover[pt.name] = true
				mu.Unlock()
				e, _, _ := prep()
				require.Nil(t, e.restart(newCrashHook(pt.name, pt.n)), "recovery crash at %s#%d", pt.name, pt.n)
				res := e.restart(nil)
				require.Len(t, res, 1)
				require.Empty(t, final.Diff(e.manifest()), "recovery crash at %s#%d", pt.name, pt.n)
				require.Equal(t, hostHTTPDConf, e.read("conf/httpd.conf"))
				require.NotEmpty(t, dispOut(t, res[0]).Recovery)
				e.requireNoLeftovers()
			}
		})
	}
}
