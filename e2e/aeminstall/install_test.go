package aeminstall_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// TestOrderedInstall pushes a dependency chain, a fan-out and a fan-in in
// scrambled order to every host. AEM runs in strict mode, so an install
// before its dependencies would be refused. With several hosts, the first
// install on each is slowed to two seconds, and the three slow installs must
// overlap: the hosts deploy in parallel, not one after the other.
func TestOrderedInstall(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		c := newCluster(t, hosts, options{})
		arts := c.upload(standardSet)
		// Long enough that agents starting a little apart (fetching and
		// reading the packages first) still overlap on a loaded machine.
		const slow = 2 * time.Second
		if len(hosts) > 1 {
			for _, h := range c.hosts {
				_, err := h.sim.AddFault(sim.Fault{Kind: sim.FaultSlowInstall, Package: pid("base"), Delay: sim.Duration(slow), Count: 1})
				require.NoError(t, err)
			}
		}
		ids := c.assign("e1", arts, hosts...)

		for i, id := range ids {
			h := c.host(hosts[i])
			r, out := c.await(id)
			require.NoError(t, r.Err(), "host %s", h.id)
			require.Equal(t, 1, r.Attempts)

			reqs := h.sim.Requests()
			order := installOrder(reqs)
			require.Len(t, order, len(standardSet), "host %s: %v", h.id, order)
			c.requireDependencyOrder(order)
			// Each install request installed exactly its own package: the
			// agent ordered the set, AEM never had to.
			for _, q := range only(reqs, "install", "") {
				require.Equal(t, []string{q.Package}, q.Installed, "host %s", h.id)
				require.Equal(t, "strict", q.Params["dependencyHandling"], "the agent passes its dependency_handling through")
			}
			require.Equal(t, onceEach(allIDs(standardSet)...), h.sim.InstallCounts(), "host %s", h.id)

			// One listing first, then per package: upload (forced),
			// install, and cmd=ls to verify it before the next begins.
			want := []string{"ls"}
			for _, p := range order {
				want = append(want, "upload "+p, "install "+p, "ls")
			}
			require.Equal(t, want, cmds(reqs), "host %s: Package Manager requests", h.id)
			for _, q := range only(reqs, "upload", "") {
				require.Equal(t, "true", q.Params["force"])
			}

			require.Equal(t, order, outcomeIDs(out), "host %s: outcomes are listed in install order", h.id)
			for _, p := range out.Packages {
				require.Equal(t, aem.StatusInstalled, p.Status, p.ID)
				require.Equal(t, "Package installed", p.Message, "AEM's own message")
				require.Equal(t, c.arts[strings.Split(p.ID, ":")[1]].SHA256, p.SHA256)
			}
			c.requireResultOnce(id)
		}

		if len(hosts) > 1 {
			var latestStart, earliestEnd time.Time
			for _, h := range c.hosts {
				q := only(h.sim.Requests(), "install", pid("base"))
				require.Len(t, q, 1)
				start, end := q[0].Time, q[0].Time.Add(time.Duration(q[0].Duration))
				require.GreaterOrEqual(t, end.Sub(start), slow)
				if latestStart.IsZero() || start.After(latestStart) {
					latestStart = start
				}
				if earliestEnd.IsZero() || end.Before(earliestEnd) {
					earliestEnd = end
				}
			}
			require.True(t, latestStart.Before(earliestEnd),
				"the hosts' slow installs did not overlap (last began %v, first ended %v): the hosts did not deploy in parallel",
				latestStart.Format(time.StampMilli), earliestEnd.Format(time.StampMilli))
		}
	})
}

// TestSkipsInstalledPackages installs base and core first on some hosts;
// a later task with the whole set reports them skipped as "already
// installed" there and does not touch them on AEM at all (a forced
// re-upload would make AEM forget they are installed), while the other
// hosts install everything.
func TestSkipsInstalledPackages(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		c := newCluster(t, hosts, options{})
		arts := c.upload(standardSet)
		var pre []string // author1 and publish2
		for i, h := range hosts {
			if i%2 == 0 {
				pre = append(pre, h)
			}
		}
		for _, id := range c.assign("e1", c.pick("core", "base"), pre...) {
			r, _ := c.await(id)
			require.NoError(t, r.Err())
		}
		for _, h := range c.hosts {
			h.sim.ResetRequests()
		}

		ids := c.assign("e2", arts, hosts...)
		for i, id := range ids {
			h := c.host(hosts[i])
			r, out := c.await(id)
			require.NoError(t, r.Err(), "host %s", h.id)
			c.requireResultOnce(id)
			reqs := h.sim.Requests()
			if !slices.Contains(pre, h.id) {
				c.requireDependencyOrder(installOrder(reqs))
				require.Equal(t, onceEach(allIDs(standardSet)...), h.sim.InstallCounts(), "host %s", h.id)
				for _, p := range out.Packages {
					require.Equal(t, aem.StatusInstalled, p.Status, "host %s: %s", h.id, p.ID)
				}
				continue
			}
			for _, name := range []string{"base", "core"} {
				o := outcome(t, out, pid(name))
				require.Equal(t, aem.StatusSkipped, o.Status, "host %s: %s", h.id, name)
				require.Equal(t, "already installed", o.Message)
				require.Empty(t, only(reqs, "upload", pid(name)), "host %s: an installed package must not be uploaded again", h.id)
				require.Empty(t, only(reqs, "install", pid(name)), "host %s", h.id)
				st, ok := h.sim.Package(pid(name))
				require.True(t, ok)
				require.True(t, st.Installed())
				require.Equal(t, 1, st.InstallCount, "host %s: %s installed once, by the first task", h.id, name)
			}
			// base and core were installed by the first task.
			c.requireDependencyOrder(append([]string{pid("base"), pid("core")}, installOrder(reqs)...))
			var rest []string
			for _, d := range standardSet {
				if d.name != "base" && d.name != "core" {
					rest = append(rest, pid(d.name))
					require.Equal(t, aem.StatusInstalled, outcome(t, out, pid(d.name)).Status)
				}
			}
			require.Equal(t, onceEach(rest...), h.sim.InstallCounts(), "host %s", h.id)
		}
	})
}

// failureMsg is what the failing AEM answers, with characters that a
// careless encoding on the way to the control plane would mangle.
const failureMsg = `javax.jcr.nodetype.ConstraintViolationException: OakConstraint0001: /apps/api/jcr:content[[nt:unstructured]]: No matching property definition found for "jcr:title" <in> 'api' & ünïcödé`

// TestFailureReportedVerbatim makes AEM answer success:false for one
// package on one host. That host's task fails with AEM's message verbatim
// in the task error and the package's outcome, stops there (nothing after
// the package is uploaded or installed), and the other hosts are not
// affected.
func TestFailureReportedVerbatim(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		c := newCluster(t, hosts, options{})
		arts := c.upload(standardSet)
		failing := c.host(hosts[len(hosts)-1])
		_, err := failing.sim.AddFault(sim.Fault{Kind: sim.FaultInstallFailure, Package: pid("api"), Message: failureMsg, Count: 1})
		require.NoError(t, err)

		ids := c.assign("e1", arts, hosts...)
		for i, id := range ids {
			h := c.host(hosts[i])
			r, out := c.await(id)
			c.requireResultOnce(id)
			reqs := h.sim.Requests()
			if h != failing {
				require.NoError(t, r.Err(), "host %s is not the failing one", h.id)
				require.Equal(t, onceEach(allIDs(standardSet)...), h.sim.InstallCounts())
				continue
			}
			require.Equal(t, task.StatusFailed, r.Status)
			require.Contains(t, r.Error, failureMsg, "AEM's message verbatim in the task error")
			require.Contains(t, r.Error, pid("api"))

			last := out.Packages[len(out.Packages)-1]
			require.Equal(t, pid("api"), last.ID, "the run stops at the failed package")
			require.Equal(t, aem.StatusFailed, last.Status)
			require.Equal(t, failureMsg, last.Message, "AEM's message verbatim in the outcome")

			installed := installOrder(reqs)
			require.Equal(t, outcomeIDs(out)[:len(out.Packages)-1], installed, "everything before the failure installed, in order")
			require.Equal(t, onceEach(installed...), h.sim.InstallCounts())
			q := only(reqs, "install", pid("api"))
			require.Len(t, q, 1, "a reported failure is final: no retry")
			require.Equal(t, sim.OutcomeFailure, q[0].Outcome)
			require.Equal(t, failureMsg, q[0].Msg)
			// Nothing after the failure was attempted.
			attempted := append(slices.Clone(installed), pid("api"))
			for _, q := range append(only(reqs, "upload", ""), only(reqs, "install", "")...) {
				require.Contains(t, attempted, q.Package, "host %s touched %s after the failure", h.id, q.Package)
			}
			st, ok := h.sim.Package(pid("api"))
			require.True(t, ok)
			require.False(t, st.Installed())
		}
	})
}

// TestRetriesServerErrors answers the first upload with HTTP 500 and the
// first two installs with HTTP 500 (not carried out). The upload is simply
// retried; each failed install is reconciled (installstatus, then cmd=ls)
// before it is sent again, and the package ends up installed once.
func TestRetriesServerErrors(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		c := newCluster(t, hosts, options{})
		arts := c.upload(standardSet)
		for _, h := range c.hosts {
			for _, f := range []sim.Fault{
				{Kind: sim.FaultHTTP500, Cmd: "upload", Count: 1},
				{Kind: sim.FaultHTTP500, Cmd: "install", Count: 2},
			} {
				_, err := h.sim.AddFault(f)
				require.NoError(t, err)
			}
		}
		ids := c.assign("e1", arts, hosts...)
		for i, id := range ids {
			h := c.host(hosts[i])
			r, out := c.await(id)
			require.NoError(t, r.Err(), "host %s", h.id)
			c.requireResultOnce(id)
			reqs := h.sim.Requests()
			require.Equal(t, onceEach(allIDs(standardSet)...), h.sim.InstallCounts(), "host %s", h.id)
			c.requireDependencyOrder(installOrder(reqs))

			first := installOrder(reqs)[0]
			// The refused upload names no package (AEM never read it); the
			// retry that follows is the first package's.
			ups := only(reqs, "upload", "")
			require.Len(t, ups, len(standardSet)+1)
			require.Equal(t, []string{sim.OutcomeInjected500, sim.OutcomeSuccess},
				field(ups[:2], func(q sim.Request) string { return q.Outcome }))
			require.Equal(t, first, ups[1].Package)
			inst := installsOf(reqs, first)
			require.Equal(t, []string{sim.OutcomeInjected500, sim.OutcomeInjected500, sim.OutcomeSuccess},
				field(inst, func(q sim.Request) string { return q.Outcome }))
			require.Equal(t, []string{"", "", sim.OutcomeSuccess},
				field(inst, func(q sim.Request) string { return q.Performed }), "the 500s were not carried out")
			// Between two install requests the agent asked AEM whether the
			// first one had happened after all.
			for k := 1; k < len(inst); k++ {
				between := cmds(after(reqs, inst[k-1].Seq))
				between = between[:slices.Index(between, "install "+first)]
				require.Contains(t, between, "installstatus", "host %s: install retried without reconciling", h.id)
				require.Contains(t, between, "ls", "host %s: install retried without reconciling", h.id)
			}
			o := outcome(t, out, first)
			require.Equal(t, aem.StatusInstalled, o.Status)
			require.Equal(t, "Package installed", o.Message)
		}
	})
}

// TestLostAnswersReconciled loses two install answers: the connection of
// the first install is dropped after AEM carried it out, and core's install
// outlasts the agent's install timeout (1s) by far. Neither is installed a
// second time: the agent waits until installstatus reports AEM idle, finds
// the package installed with cmd=ls, and goes on.
func TestLostAnswersReconciled(t *testing.T) {
	forEachTopology(t, func(t *testing.T, hosts []string) {
		const installTimeout, delay = time.Second, 3 * time.Second
		c := newCluster(t, hosts, options{installTimeout: installTimeout})
		arts := c.upload(standardSet)
		for _, h := range c.hosts {
			for _, f := range []sim.Fault{
				{Kind: sim.FaultDrop, Cmd: "install", After: true, Count: 1},
				{Kind: sim.FaultSlowInstall, Package: pid("core"), Delay: sim.Duration(delay), Count: 1},
			} {
				_, err := h.sim.AddFault(f)
				require.NoError(t, err)
			}
		}
		ids := c.assign("e1", arts, hosts...)
		for i, id := range ids {
			h := c.host(hosts[i])
			r, out := c.await(id)
			require.NoError(t, r.Err(), "host %s", h.id)
			c.requireResultOnce(id)
			reqs := h.sim.Requests()
			require.Equal(t, onceEach(allIDs(standardSet)...), h.sim.InstallCounts(), "host %s: nothing installed twice", h.id)
			c.requireDependencyOrder(installOrder(reqs))

			first := installOrder(reqs)[0]
			dropped := only(reqs, "install", first)
			require.Len(t, dropped, 1, "host %s: the dropped install was sent again", h.id)
			require.Equal(t, sim.OutcomeDropped, dropped[0].Outcome)
			require.Equal(t, sim.OutcomeSuccess, dropped[0].Performed)

			slowReq := only(reqs, "install", pid("core"))
			require.Len(t, slowReq, 1, "host %s: the slow install was sent again", h.id)
			require.True(t, slowReq[0].ClientGone, "the agent's install timeout should have ended the request")
			require.Equal(t, sim.OutcomeSuccess, slowReq[0].Performed)
			require.GreaterOrEqual(t, time.Duration(slowReq[0].Duration), delay)
			// While AEM was still installing, the agent polled installstatus
			// instead of installing again.
			end := slowReq[0].Time.Add(time.Duration(slowReq[0].Duration))
			polled := 0
			for _, q := range only(reqs, "installstatus", "") {
				if q.Time.After(slowReq[0].Time) && q.Time.Before(end) {
					polled++
				}
			}
			require.Positive(t, polled, "host %s: no installstatus poll during the slow install", h.id)

			for _, p := range []string{first, pid("core")} {
				o := outcome(t, out, p)
				require.Equal(t, aem.StatusInstalled, o.Status, p)
				require.True(t, strings.HasPrefix(o.Message, "installed (confirmed by cmd=ls"), "%s: %q", p, o.Message)
			}
		}
	})
}
