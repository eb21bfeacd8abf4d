package aeminstall_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/agent/aem"
)

// crashPlan is where one host's agent is killed: at the nth hit of point.
type crashPlan struct {
	point string
	n     int
}

func (p crashPlan) env(h *aemHost) []string {
	return []string{fmt.Sprintf("DECKHAND_FAILPOINTS=%s=kill@%d", p.point, p.n), "DECKHAND_FAILPOINT_LOG=" + h.fpLog}
}

// TestCrashBetweenPackages SIGKILLs each host's real agent binary right
// after it journaled the nth package as installed (n seeded per host, so
// hosts die at different points), before the next package is touched. The
// restarted agent continues with the next package; no package is installed
// twice, and the control plane gets the task's result exactly once.
func TestCrashBetweenPackages(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		rng := seeded(t)
		plans := map[string]crashPlan{}
		for _, h := range hosts {
			// 1..len-1: between two packages, never after the last.
			plans[h] = crashPlan{point: aem.FailpointAfterMark, n: 1 + rng.IntN(len(standardSet)-1)}
			t.Logf("%s: kill at %s hit %d", h, plans[h].point, plans[h].n)
		}
		runCrash(t, hosts, plans)
	})
}

// TestCrashAtSeededPoints kills each host's agent at a seeded failpoint —
// after an upload, after AEM answered an install (not yet verified or
// journaled), or after the journal mark — at a seeded package, and checks
// the same invariants after the restart.
func TestCrashAtSeededPoints(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		rng := seeded(t)
		points := []string{aem.FailpointAfterUpload, aem.FailpointAfterInstall, aem.FailpointAfterMark}
		plans := map[string]crashPlan{}
		for _, h := range hosts {
			plans[h] = crashPlan{point: points[rng.IntN(len(points))], n: 1 + rng.IntN(len(standardSet))}
			t.Logf("%s: kill at %s hit %d", h, plans[h].point, plans[h].n)
		}
		runCrash(t, hosts, plans)
	})
}

// runCrash deploys the standard set with every host's agent set to die as
// planned, checks what AEM and the control plane saw at the moment of
// death, restarts the agents and checks the resumed runs.
func runCrash(t *testing.T, hosts []string, plans map[string]crashPlan) {
	c := newCluster(t, hosts, options{agentEnv: func(h *aemHost) []string { return plans[h.id].env(h) }})
	arts := c.upload(standardSet)
	ids := c.assign("e1", arts, hosts...)

	// At the moment of death.
	killedAt := map[string]int64{}  // host -> last AEM request seq before the restart
	before := map[string][]string{} // host -> packages AEM installed before the kill
	for i, id := range ids {
		h, p := c.host(hosts[i]), plans[hosts[i]]
		requireKilled(t, h.agent.waitExit(60*time.Second), h.agent.name)
		require.Equal(t, p.n, failpointHits(t, h.fpLog, p.point), "%s died at the wrong hit", h.id)
		reqs := h.sim.Requests()
		killedAt[h.id] = lastSeq(reqs)
		before[h.id] = installOrder(reqs)
		uploads := len(only(reqs, "upload", ""))
		switch p.point {
		case aem.FailpointAfterUpload:
			// The nth package is uploaded, not installed.
			require.Len(t, before[h.id], p.n-1, "%s", h.id)
			require.Equal(t, p.n, uploads)
		case aem.FailpointAfterInstall, aem.FailpointAfterMark:
			// The nth package is installed; the next is untouched.
			require.Len(t, before[h.id], p.n, "%s", h.id)
			require.Equal(t, p.n, uploads, "%s: the next package was touched before the kill", h.id)
		}
		require.Equal(t, onceEach(before[h.id]...), h.sim.InstallCounts())
		st, err := c.cp.Server.Store().Task(id)
		require.NoError(t, err)
		require.False(t, st.Done, "%s: the control plane has a result from a killed run", h.id)
		require.Empty(t, c.events.results(id))
	}

	// Restart, without failpoints, on the same data dirs.
	for _, h := range c.hosts {
		h.start()
	}
	for i, id := range ids {
		h, p := c.host(hosts[i]), plans[hosts[i]]
		r, out := c.await(id)
		require.NoError(t, r.Err(), "host %s", h.id)
		require.Equal(t, 2, r.Attempts, "host %s: one interrupted attempt, one resumed", h.id)
		c.requireResultOnce(id)

		reqs := h.sim.Requests()
		require.Equal(t, onceEach(allIDs(standardSet)...), h.sim.InstallCounts(), "host %s: a package was installed twice", h.id)
		order := installOrder(reqs)
		c.requireDependencyOrder(order)
		require.Equal(t, order, outcomeIDs(out), "host %s", h.id)
		require.True(t, slices.Equal(before[h.id], order[:len(before[h.id])]),
			"host %s: the resumed run reordered what was installed before the kill (%v, then %v)", h.id, before[h.id], order)

		resumed := after(reqs, killedAt[h.id])
		for _, done := range before[h.id] {
			require.Empty(t, only(resumed, "install", done), "host %s: %s installed again after the restart", h.id, done)
		}
		switch p.point {
		case aem.FailpointAfterMark:
			// Journaled packages are not touched at all; the resumed run
			// goes straight on with the next package.
			for _, done := range before[h.id] {
				require.Empty(t, only(resumed, "upload", done), "host %s: %s uploaded again after the restart", h.id, done)
				o := outcome(t, out, done)
				require.Equal(t, aem.StatusInstalled, o.Status)
				require.Equal(t, "installed and verified by attempt 1 of this task", o.Message)
			}
			if p.n < len(standardSet) {
				ups := only(resumed, "upload", "")
				require.NotEmpty(t, ups)
				require.Equal(t, order[p.n], ups[0].Package, "host %s: the resumed run did not continue with the next package", h.id)
			}
		case aem.FailpointAfterInstall:
			// Installed but neither verified nor journaled: cmd=ls finds it.
			o := outcome(t, out, order[p.n-1])
			require.Equal(t, "installed by an interrupted earlier attempt of this task; verified with cmd=ls", o.Message)
			require.Empty(t, only(resumed, "upload", order[p.n-1]))
		case aem.FailpointAfterUpload:
			// Uploaded, never installed: reconciled, then installed once.
			require.Len(t, only(resumed, "install", order[p.n-1]), 1)
			require.Contains(t, cmds(resumed), "installstatus", "host %s: no reconciliation before installing the interrupted package", h.id)
		}
		// The resumed attempt says so in the agent's log. (Not in the
		// control plane's progress log: the agent resumes before its
		// session is up, and progress lines sent with no session are
		// dropped.)
		log, err := os.ReadFile(filepath.Join(h.dir, "agent.log"))
		require.NoError(t, err)
		require.Contains(t, string(log), "resuming an interrupted package install: host="+h.id+" attempt=2")
		for _, o := range out.Packages {
			require.Equal(t, aem.StatusInstalled, o.Status, "host %s: %s", h.id, o.ID)
		}
	}
}
