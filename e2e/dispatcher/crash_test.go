package dispatcher_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	disp "github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// phases are the parts of a deployment a kill must hit at least once.
var phases = []string{"fetch", "extract", "stage", "validate", "backup", "plan", "swap", "configtest", "rollback", "reload", "commit", "prune"}

// phaseOf names the phase a dispatcher failpoint belongs to.
func phaseOf(name string) string {
	n := strings.TrimPrefix(name, "dispatcher/")
	switch {
	case n == "after-fetch":
		return "fetch"
	case n == "after-extract":
		return "extract"
	case n == "after-stage":
		return "stage"
	case n == "after-validate":
		return "validate"
	case strings.HasPrefix(n, "backup/"), n == "after-backup", strings.HasSuffix(n, "-mark-backup"):
		return "backup"
	case strings.HasSuffix(n, "-mark-plan"):
		return "plan"
	case strings.HasPrefix(n, "swap/"), strings.HasSuffix(n, "-mark-swapped"):
		return "swap"
	case strings.Contains(n, "configtest"):
		return "configtest"
	case strings.HasPrefix(n, "rollback/"), strings.HasSuffix(n, "-mark-rollback"), strings.HasSuffix(n, "-mark-rolled-back"):
		return "rollback"
	case strings.Contains(n, "reload"):
		return "reload"
	case strings.HasPrefix(n, "commit/"), strings.HasSuffix(n, "-mark-committed"):
		return "commit"
	case strings.HasPrefix(n, "prune/"):
		return "prune"
	}
	return "unknown:" + n
}

// scenario is one kind of deployment that gets killed, with the failpoint
// hits of a clean run of it.
type scenario struct {
	name string
	bad  bool // the new config fails configtest
	seq  []string
}

// at is the index in seq of the nth hit of point, or -1.
func (s *scenario) at(point string, n int) int {
	for i, p := range s.seq {
		if p == point {
			if n--; n == 0 {
				return i
			}
		}
	}
	return -1
}

// kill is one planned kill: the nth hit of point in a run of sc, and
// optionally a second kill of the recovering agent at its recoveryKill-th
// dispatcher failpoint.
type kill struct {
	sc           *scenario
	point        string
	n            int
	pos          int // index of the hit in sc.seq
	recoveryKill int
	extra        bool // seeded extra, not part of the deterministic set
}

func (k kill) String() string {
	s := fmt.Sprintf("%s %s@%d [%s]", k.sc.name, k.point, k.n, phaseOf(k.point))
	if k.recoveryKill > 0 {
		s += fmt.Sprintf(" + recovery killed at its dispatcher failpoint #%d", k.recoveryKill)
	}
	return s
}

// distinctKills lists every (point, n) of the scenarios once: points the
// runs share (everything up to configtest) alternate between the
// scenarios, the others belong to theirs.
func distinctKills(scs ...*scenario) []kill {
	seen := map[string]bool{}
	var out []kill
	alt := 0
	for _, sc := range scs {
		count := map[string]int{}
		for pos, p := range sc.seq {
			count[p]++
			key := fmt.Sprintf("%s@%d", p, count[p])
			if seen[key] {
				continue
			}
			seen[key] = true
			owner := sc
			// Shared with another scenario at the same position: alternate.
			shared := []*scenario{}
			for _, o := range scs {
				if o.at(p, count[p]) == pos {
					shared = append(shared, o)
				}
			}
			if len(shared) > 1 {
				owner = shared[alt%len(shared)]
				alt++
			}
			out = append(out, kill{sc: owner, point: p, n: count[p], pos: owner.at(p, count[p])})
		}
	}
	return out
}

// killPlan chooses total kills: every distinct point, then seeded extras
// (random scenario and point; half of those after the plan mark also kill
// the recovering agent). With fewer kills than distinct points, one per
// phase comes first, then a seeded sample of the rest.
func killPlan(rng *rand.Rand, total int, scs ...*scenario) []kill {
	all := distinctKills(scs...)
	var plan []kill
	if total < len(all) {
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		covered := map[string]bool{}
		var rest []kill
		for _, k := range all {
			if ph := phaseOf(k.point); !covered[ph] {
				covered[ph] = true
				plan = append(plan, k)
			} else {
				rest = append(rest, k)
			}
		}
		plan = append(plan, rest...)
		if total > len(plan) {
			total = len(plan)
		}
		plan = plan[:max(total, 0)]
	} else {
		plan = all
		for len(plan) < total {
			sc := scs[rng.IntN(len(scs))]
			pos := rng.IntN(len(sc.seq))
			p := sc.seq[pos]
			n := 0
			for _, q := range sc.seq[:pos+1] {
				if q == p {
					n++
				}
			}
			k := kill{sc: sc, point: p, n: n, pos: pos, extra: true}
			if pos > sc.at("dispatcher/after-mark-plan", 1) && rng.IntN(2) == 0 {
				k.recoveryKill = 1 + rng.IntN(4)
			}
			plan = append(plan, k)
		}
	}
	rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })
	return plan
}

// dispatcherHits keeps the dispatcher's failpoints of a failpoint log
// (the session's heartbeat passes one too).
func dispatcherHits(lines []string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, "dispatcher/") {
			out = append(out, l)
		}
	}
	return out
}

// crashRun is the state TestCrashRealAgent carries across kills.
type crashRun struct {
	t       *testing.T
	h       *host
	initial *disp.Manifest
	// arts are the good versions; manifests maps their sha256 to the
	// tree they make live; pages to the page Apache serves then.
	arts      []task.Artifact
	bad       task.Artifact
	manifests map[string]*disp.Manifest
	pages     map[string]string
	// immutable are the immutable entries of the host's tree, as they
	// must stay.
	immutable []disp.ManifestEntry
	sides     map[string]int
}

// TestCrashRealAgent kills the real deckhand-agent with SIGKILL at
// failpoints during DispatcherDeploy tasks — a good config and one that
// fails configtest — and restarts it without failpoints. The kill points
// are every distinct (failpoint, hit) of a clean run of each, found by a
// first run with DECKHAND_FAILPOINT_LOG, plus seeded extras (some of which
// also kill the agent again during its recovery). After each restart the
// recovery reports what it did, the live tree is exactly the old or
// exactly the new config — the new one only when the configtest verdict
// was journaled — with the immutable files unchanged, nothing is left in
// the work and backup dirs, the backups index says what happened, and
// Apache serves the live config's page. One Apache, one control plane and
// one agent data dir serve every kill: each iteration redeploys.
func TestCrashRealAgent(t *testing.T) {
	began := time.Now()
	rng := seeded(t)
	h := newHost(t, hostOptions{backupsKeep: 1, logLevel: "info"})
	c := &crashRun{t: t, h: h, manifests: map[string]*disp.Manifest{}, pages: map[string]string{}, sides: map[string]int{}}
	v1, v2 := h.upload(artifactV1()), h.upload(artifactV2())
	c.arts, c.bad = []task.Artifact{v1, v2}, h.upload(artifactBad())
	c.initial = h.live()
	cfg := disp.Config{}
	cfg.ApplyDefaults(h.dataDir)
	for _, e := range c.initial.Entries {
		if e.Type != disp.TypeDir && cfg.IsImmutable(e.Path) {
			c.immutable = append(c.immutable, e)
		}
	}
	require.NotEmpty(t, c.immutable)

	// Warm-up: the first start enrolls; version 1 is the harness layout.
	r := h.deploy("warm-v1", v1)
	require.NoError(t, r.Err())
	c.manifests[v1.SHA256], c.pages[v1.SHA256] = h.live(), pageV1
	require.Empty(t, c.initial.Diff(c.manifests[v1.SHA256]), "deploying the harness layout changed the tree")
	h.requireServes(pageV1)

	// Enumerate: one clean run of each scenario with a failpoint log.
	good := &scenario{name: "good"}
	r, good.seq = c.enumerate("enum-good", v2)
	require.NoError(t, r.Err())
	c.manifests[v2.SHA256], c.pages[v2.SHA256] = h.live(), pageV2
	require.NotEmpty(t, c.manifests[v1.SHA256].Diff(c.manifests[v2.SHA256]))
	h.requireServes(pageV2)
	bad := &scenario{name: "bad", bad: true}
	r, bad.seq = c.enumerate("enum-bad", c.bad)
	require.Error(t, r.Err())
	require.Contains(t, r.Error, "AH00526", "the configtest output is the error, verbatim")
	require.True(t, output(r).Restored)
	require.Empty(t, c.manifests[v2.SHA256].Diff(h.live()), "a config that failed configtest stayed live")
	t.Logf("clean runs pass %d (good) and %d (failing configtest) dispatcher failpoint hits", len(good.seq), len(bad.seq))

	// Every failpoint of a deployment is passed, and every phase.
	passed := map[string]bool{}
	for _, p := range append(slices.Clone(good.seq), bad.seq...) {
		passed[p] = true
		require.NotContains(t, phaseOf(p), "unknown", "a new failpoint: give it a phase")
	}
	for _, name := range disp.FailpointNames {
		if strings.HasPrefix(name, "dispatcher/recover/") || strings.HasPrefix(name, "dispatcher/restore/") {
			continue // recovery and restore only
		}
		require.True(t, passed[name], "the clean runs never pass %s: the kill plan would miss it", name)
	}

	distinct := len(distinctKills(good, bad))
	total := envInt(t, "E2E_DISPATCHER_KILLS", max(distinct+20, 50))
	plan := killPlan(rng, total, good, bad)
	covered := map[string]int{}
	for _, k := range plan {
		covered[phaseOf(k.point)]++
	}
	if total >= len(phases) {
		for _, ph := range phases {
			require.Positive(t, covered[ph], "no kill in phase %s", ph)
		}
	}
	t.Logf("%d kills: %d distinct points (each once), %d seeded extras; per phase %v", len(plan), min(distinct, len(plan)), max(len(plan)-distinct, 0), covered)

	for i, k := range plan {
		start := time.Now()
		t.Logf("kill %d/%d: %s", i+1, len(plan), k)
		side := c.once(i, k)
		t.Logf("  -> %s tree (%v)", side, time.Since(start).Round(time.Millisecond))
		if t.Failed() {
			return
		}
	}
	t.Logf("%d kills in %v; trees after recovery: %v", len(plan), time.Since(began).Round(time.Second), c.sides)
}

// enumerate runs one clean deployment with a failpoint log and returns
// its result and the dispatcher failpoints it passed, in order.
func (c *crashRun) enumerate(exec string, a task.Artifact) (*task.Result, []string) {
	c.t.Helper()
	fpLog := filepath.Join(c.h.dir, "failpoints", exec+".log")
	require.NoError(c.t, os.MkdirAll(filepath.Dir(fpLog), 0o700))
	r := c.h.deploy(exec, a, "DECKHAND_FAILPOINT_LOG="+fpLog)
	return r, dispatcherHits(readLines(c.t, fpLog))
}

// liveArtifact is the good version whose tree is live.
func (c *crashRun) liveArtifact(m *disp.Manifest) task.Artifact {
	for _, a := range c.arts {
		if len(c.manifests[a.SHA256].Diff(m)) == 0 {
			return a
		}
	}
	require.FailNow(c.t, "the live tree is neither version", "diff to v1: %v", c.manifests[c.arts[0].SHA256].Diff(m))
	return task.Artifact{}
}

// once runs one kill and checks the host after the restart; it returns
// which tree ended up live ("old" or "new").
func (c *crashRun) once(i int, k kill) string {
	t, h := c.t, c.h
	t.Helper()
	before := h.live()
	oldArt := c.liveArtifact(before)
	target := c.bad
	if !k.sc.bad {
		target = c.arts[0]
		if target.SHA256 == oldArt.SHA256 {
			target = c.arts[1]
		}
	}
	exec := fmt.Sprintf("kill-%03d", i)
	fpLog := filepath.Join(h.dir, "failpoints", exec+".log")

	p := h.start(fmt.Sprintf("DECKHAND_FAILPOINTS=%s=kill@%d", k.point, k.n), "DECKHAND_FAILPOINT_LOG="+fpLog)
	id := h.assign(exec, target)
	st := p.waitExit(60 * time.Second)
	require.True(t, killedBySIGKILL(st), "the agent should have died of SIGKILL at %s, got %v", k, st)
	hits := dispatcherHits(readLines(t, fpLog))
	// The killed run went the way the clean run did, up to the kill.
	require.Equal(t, k.sc.seq[:k.pos+1], hits, "kill at %s", k)
	done, _ := h.done(id)
	require.False(t, done, "the control plane has a result from the killed run")

	attempts := 2
	var r *task.Result
	if k.recoveryKill > 0 {
		rlog := filepath.Join(h.dir, "failpoints", exec+"-recovery.log")
		p := h.start(fmt.Sprintf("DECKHAND_FAILPOINTS=dispatcher/*=kill@%d", k.recoveryKill), "DECKHAND_FAILPOINT_LOG="+rlog)
		// Recovery runs at start-up, before the session: the agent dies
		// there, or it recovers in fewer hits and the result arrives.
		require.Eventually(t, func() bool { d, _ := h.done(id); return d || p.exited() }, 60*time.Second, 5*time.Millisecond)
		if p.exited() {
			require.True(t, killedBySIGKILL(p.cmd.ProcessState), "the recovering agent exited: %v", p.cmd.ProcessState)
			require.Len(t, dispatcherHits(readLines(t, rlog)), k.recoveryKill)
			attempts = 3
		} else {
			r = h.await(id, time.Minute)
			p.stop()
		}
	}
	if r == nil {
		p := h.start()
		r = h.await(id, time.Minute)
		p.stop()
	}
	o := output(r)
	t.Logf("  result: %s, attempts %d, recovery: %s", r.Status, r.Attempts, o.Recovery)

	// Which tree? Decided by the journal marks alone.
	wantNew := !k.sc.bad && k.pos >= k.sc.at("dispatcher/after-mark-configtest-ok", 1)
	prePlan := k.pos < k.sc.at("dispatcher/after-mark-plan", 1)
	after := h.live()
	newMan := c.manifests[target.SHA256]
	side := ""
	switch {
	case len(before.Diff(after)) == 0:
		side = "old"
	case newMan != nil && len(newMan.Diff(after)) == 0:
		side = "new"
	default:
		require.Failf(t, "the live tree is neither exactly the old nor exactly the new config", "kill at %s\nvs old: %v\nvs new: %v", k, before.Diff(after), func() []string {
			if newMan == nil {
				return []string{"(the failing config's tree)"}
			}
			return newMan.Diff(after)
		}())
	}
	c.sides[side]++
	if wantNew {
		require.Equal(t, "new", side, "the configtest verdict was journaled: the new config stays")
	} else {
		require.Equal(t, "old", side, "the new config was never verified: the old one must be back")
	}
	for _, e := range c.immutable {
		got, ok := after.Lookup(e.Path)
		require.True(t, ok, "immutable file %s is gone", e.Path)
		require.Equal(t, e, got, "immutable file %s changed", e.Path)
	}

	// What the recovery reported.
	require.Equal(t, attempts, r.Attempts)
	require.NotEmpty(t, o.Recovery, "the recovery says what it did")
	switch {
	case prePlan:
		require.Equal(t, task.StatusFailed, r.Status)
		require.Contains(t, r.Error, "before the live config was changed")
		require.Contains(t, o.Recovery, "nothing to undo")
	case wantNew:
		require.NoError(t, r.Err())
		require.True(t, strings.Contains(o.Recovery, "recovery kept it and reloaded Apache") || strings.Contains(o.Recovery, "recovery finished the cleanup"), o.Recovery)
	default:
		require.Equal(t, task.StatusFailed, r.Status)
		require.True(t, o.Restored)
		require.Contains(t, o.Recovery, "put the previous config back")
		if k.sc.bad && k.pos >= k.sc.at("dispatcher/after-mark-rollback", 1) {
			require.Contains(t, r.Error, "AH00526", "the journaled configtest output is still reported verbatim")
		}
	}
	done, dups := h.done(id)
	require.True(t, done)
	require.Zero(t, dups, "the agent sent the result more than once")

	// Nothing left behind, and the index says what happened.
	work, _ := os.ReadDir(filepath.Join(h.in.Dir, ".deckhand"))
	for _, e := range work {
		require.False(t, strings.HasPrefix(e.Name(), "tx-"), "work dir %s left behind", e.Name())
	}
	recs := h.backupsList()
	indexed := map[string]backupRecord{}
	for _, b := range recs {
		indexed[b.ID] = b
		_, err := os.Stat(filepath.Join(b.Path, "manifest.json"))
		require.NoError(t, err, "backup %s is listed but incomplete", b.ID)
	}
	ents, err := os.ReadDir(filepath.Join(h.dataDir, "backups"))
	require.NoError(t, err)
	var dirs []string
	for _, e := range ents {
		require.True(t, indexed[e.Name()].ID != "", "backup dir %s is not in the index", e.Name())
		dirs = append(dirs, e.Name())
	}
	require.Len(t, dirs, len(recs))
	// Backups hard-link the tree they copy until it is no longer live:
	// after recovery none shares a file with the live tree.
	liveInodes := h.inodes(h.in.Dir)
	for _, b := range recs {
		for ino, rel := range h.inodes(filepath.Join(b.Path, "tree")) {
			require.Empty(t, liveInodes[ino], "backup %s file %s is the live file %s (shared inode)", b.ID, rel, liveInodes[ino])
		}
		require.NoDirExists(t, filepath.Join(b.Path, ".unshare"))
	}
	own, ok := indexed[disp.BackupID(id)]
	switch {
	case prePlan:
		if ok {
			require.Equal(t, disp.OutcomeInterrupted, own.Outcome)
		}
	case side == "new":
		require.True(t, ok, "the task's backup is not listed")
		require.Equal(t, disp.OutcomeApplied, own.Outcome)
	default:
		require.True(t, ok, "the task's backup is not listed")
		require.Equal(t, disp.OutcomeRolledBack, own.Outcome)
	}

	// Apache serves the live config (and never the failing one's page).
	want := c.pages[oldArt.SHA256]
	if side == "new" {
		want = c.pages[target.SHA256]
	}
	h.requireServes(want, c.pages[oldArt.SHA256])
	return side
}
