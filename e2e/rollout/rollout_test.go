// Package rollout_test runs production and non-production rollouts end to
// end: real deckhand-server, deckhand-agent and deckctl binaries, real
// Apache dispatchers behind a real HAProxy, AEM simulators, a client loop
// hammering the site throughout, and the independent invariant checker on
// every deployment's event log.
package rollout_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/e2e/invariants"
	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/stretchr/testify/require"
)

// site builds the artifacts of a release: a dispatcher config that serves
// /page from version N and three AEM packages in a dependency chain.
func site(t testing.TB, version int, broken bool) []string {
	dir := t.TempDir()
	art := apache.DefaultArtifact()
	art.Files["conf.d/rewrites/default_rewrite.rules"] = fmt.Sprintf("RewriteEngine On\nRewriteRule ^/page$ /v%d.html [PT]\n", version)
	if broken {
		art.Files["conf.d/rewrites/default_rewrite.rules"] += "Bogus directive\n"
	}
	disp := filepath.Join(dir, "dispatcher.zip")
	_, _, err := art.Write(disp)
	require.NoError(t, err)
	v := fmt.Sprintf("1.%d", version)
	files := []string{disp}
	for _, p := range []aempkgtest.Spec{
		{Group: "wknd", Name: "core", Version: v},
		{Group: "wknd", Name: "ui.apps", Version: v, Dependencies: "wknd:core:" + v},
		{Group: "wknd", Name: "ui.content", Version: v, Dependencies: "wknd:ui.apps:" + v},
	} {
		files = append(files, aempkgtest.WriteFile(t, dir, p.Name+".zip", aempkgtest.Package(p)))
	}
	return files
}

func push(t testing.TB, tp *topology.Topology, version string, files []string) string {
	out, err := tp.Deckctl(append([]string{"artifact", "push", "--version", version, "-o", "json"}, files...)...)
	require.NoError(t, err)
	var res struct {
		Set struct {
			ID string `json:"id"`
		} `json:"set"`
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(out, &res), string(out))
	id := res.Set.ID
	if id == "" {
		id = res.ID
	}
	require.NotEmpty(t, id, string(out))
	return id
}

// deploy runs `deckctl deploy` and returns the deployment id and whether
// deckctl exited 0.
func deploy(t testing.TB, tp *topology.Topology, args ...string) (string, error) {
	out, err := tp.Deckctl(append([]string{"-o", "json"}, args...)...)
	id := ""
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, `"deployment.started"`) || id == "" {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil {
				if m, ok := e["message"].(string); ok && e["kind"] == "deployment.started" {
					_ = m
				}
			}
		}
	}
	list, lerr := tp.Deckctl("deployments", "list", "-o", "json")
	require.NoError(t, lerr)
	var deps []struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(list, &deps))
	require.NotEmpty(t, deps)
	id = deps[0].ID
	return id, err
}

func checkInvariants(t *testing.T, tp *topology.Topology, id string) []invariants.Event {
	out, err := tp.Deckctl("deployments", "logs", id, "-o", "json")
	require.NoError(t, err)
	evs, err := invariants.Parse(bytes.NewReader(out))
	require.NoError(t, err)
	hosts := map[string]string{}
	for _, h := range tp.Hosts {
		hosts[h.ID] = h.Role
	}
	require.NoError(t, invariants.Check(evs, invariants.Options{Production: tp.Opts.EnvType == "prod", MaxUnavailable: tp.Opts.MaxUnavailable, Hosts: hosts}))
	return evs
}

func get(t *testing.T, url string) string {
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func installs(t *testing.T, aemURL string) map[string]int {
	resp, err := http.Get(aemURL + "/_sim/installs")
	require.NoError(t, err)
	defer resp.Body.Close()
	var out map[string]int
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

func dumpOnFailure(t *testing.T, tp *topology.Topology) {
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("E2E_DUMP") != "" {
			tp.Dump()
		}
	})
}

func TestProductionRolloutZeroFailedRequests(t *testing.T) {
	tp := topology.Start(t, topology.Options{InvalidatePaths: []string{"/content"}})
	dumpOnFailure(t, tp)
	set := push(t, tp, "2", site(t, 2, false))
	load := topology.Hammer(tp.HAProxy.URL+"/page", 4)
	id, err := deploy(t, tp, "deploy", "--env", tp.Env, "--artifacts", set)
	res := load.Stop()
	require.NoError(t, err)
	require.Zero(t, res.Failed, "failed requests during the rollout: %v", res.Failures)
	require.Greater(t, res.Total, int64(100))
	require.Equal(t, "version 2\n", get(t, tp.HAProxy.URL+"/page"))
	for h, in := range tp.Apache {
		require.Equal(t, "version 2\n", get(t, in.URL+"/page"), h)
	}
	evs := checkInvariants(t, tp, id)
	// The seed's order: author, then pair 1 (detach, deploy, flush,
	// attach), then pair 2; before all of it, every dispatcher prepares
	// the artifact while it still serves.
	var order []string
	for _, e := range evs {
		if e.Kind == "step.started" {
			order = append(order, e.Step)
		}
	}
	require.ElementsMatch(t, []string{"prepare.dispatcher1", "prepare.dispatcher2"}, order[:2])
	require.Equal(t, "author.install.author1", order[2])
	idx := func(s string) int {
		for i, o := range order {
			if o == s {
				return i
			}
		}
		return -1
	}
	require.Less(t, idx("pair1.attach.dispatcher1"), idx("pair2.detach.dispatcher2"))
	for _, host := range []string{"author1", "publish1", "publish2"} {
		inst := installs(t, tp.AEM[host])
		require.Len(t, inst, 3, host)
		for pkg, n := range inst {
			require.Equal(t, 1, n, "%s installed %s %d times", host, pkg, n)
		}
	}
}

// shownDeployment is what the tests read of deckctl deployments show.
type shownDeployment struct {
	State string            `json:"state"`
	Error string            `json:"error"`
	Hosts map[string]string `json:"hosts"`
}

// deployFails deploys set to the topology's environment while a client
// hammers HAProxy, and checks that deckctl exits non-zero, no request
// failed and the deployment ended FAILED.
func deployFails(t *testing.T, tp *topology.Topology, set string) (string, shownDeployment) {
	t.Helper()
	load := topology.Hammer(tp.HAProxy.URL+"/page", 4)
	id, err := deploy(t, tp, "deploy", "--env", tp.Env, "--artifacts", set)
	res := load.Stop()
	require.Error(t, err, "deckctl deploy must exit non-zero for a failed deployment")
	require.Zero(t, res.Failed, "failed requests: %v", res.Failures)
	out, err := tp.Deckctl("deployments", "show", id, "-o", "json")
	require.NoError(t, err)
	var d shownDeployment
	require.NoError(t, json.Unmarshal(out, &d))
	require.Equal(t, "FAILED", d.State)
	return id, d
}

// TestIncompleteArtifactTouchesNoHost: an artifact whose config includes a
// file it does not ship is rejected while every dispatcher prepares it,
// before the author installs anything and before any host is detached.
func TestIncompleteArtifactTouchesNoHost(t *testing.T) {
	tp := topology.Start(t, topology.Options{})
	dumpOnFailure(t, tp)
	files := site(t, 4, false)
	art := apache.DefaultArtifact()
	art.Files["conf.d/rewrites/default_rewrite.rules"] = "RewriteEngine On\nInclude conf.d/rewrites/not-shipped.rules\n"
	_, _, err := art.Write(files[0])
	require.NoError(t, err)
	id, d := deployFails(t, tp, push(t, tp, "4", files))
	require.Contains(t, d.Error, "conf.d/rewrites/not-shipped.rules")
	for _, h := range []string{"author1", "publish1", "publish2"} {
		require.Equal(t, "untouched", d.Hosts[h], h)
		require.Empty(t, installs(t, tp.AEM[h]), "%s: nothing installed", h)
	}
	for _, h := range []string{"dispatcher1", "dispatcher2"} {
		require.Equal(t, "untouched (artifact rejected in prepare)", d.Hosts[h], h)
		require.Equal(t, "version 1\n", get(t, tp.Apache[h].URL+"/page"))
	}
	for _, e := range checkInvariants(t, tp, id) {
		if e.Kind == "step.started" {
			require.True(t, strings.HasPrefix(e.Step, "prepare."), "only prepares ran, not %s", e.Step)
		}
	}
}

func TestBrokenDispatcherConfigStopsTheRollout(t *testing.T) {
	tp := topology.Start(t, topology.Options{})
	dumpOnFailure(t, tp)
	id, d := deployFails(t, tp, push(t, tp, "3", site(t, 3, true)))
	require.Contains(t, d.Error, "AH00526", "the configtest output is the deployment's error")
	require.Equal(t, "untouched", d.Hosts["dispatcher2"])
	require.Equal(t, "untouched", d.Hosts["publish2"])
	require.Contains(t, d.Hosts["dispatcher1"], "in service", "restored and re-attached")
	// Both dispatchers still serve the old page.
	require.Equal(t, "version 1\n", get(t, tp.Apache["dispatcher1"].URL+"/page"))
	require.Equal(t, "version 1\n", get(t, tp.Apache["dispatcher2"].URL+"/page"))
	checkInvariants(t, tp, id)
}

func TestNonProduction(t *testing.T) {
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip_lb_changes=%v", skip), func(t *testing.T) {
			tp := topology.Start(t, topology.Options{EnvType: "stage", SkipLBChanges: skip})
			dumpOnFailure(t, tp)
			set := push(t, tp, "2", site(t, 2, false))
			id, err := deploy(t, tp, "deploy", "--env", tp.Env, "--artifacts", set)
			require.NoError(t, err)
			evs := checkInvariants(t, tp, id)
			lbSteps := 0
			for _, e := range evs {
				if e.Kind == "step.started" && (e.Task == "lb_detach" || e.Task == "lb_attach") {
					lbSteps++
				}
			}
			if skip {
				require.Zero(t, lbSteps)
			} else {
				require.Equal(t, 4, lbSteps)
			}
			require.Equal(t, "version 2\n", get(t, tp.Apache["dispatcher1"].URL+"/page"))
		})
	}
}

func TestRollbackToThePreviousBackup(t *testing.T) {
	tp := topology.Start(t, topology.Options{})
	dumpOnFailure(t, tp)
	set := push(t, tp, "2", site(t, 2, false))
	_, err := deploy(t, tp, "deploy", "--env", tp.Env, "--artifacts", set)
	require.NoError(t, err)
	require.Equal(t, "version 2\n", get(t, tp.HAProxy.URL+"/page"))

	// Each dispatcher lists its backups through deckctl: the newest was
	// taken before the deploy, which went live.
	taken := map[string]string{}
	for h := range tp.Apache {
		bs := backups(t, tp, h)
		require.NotEmpty(t, bs, h)
		require.Equal(t, "deploy", bs[0].Kind, h)
		require.Equal(t, "applied", bs[0].Outcome, h)
		require.Len(t, bs[0].ArtifactSHA256, 64, h)
		require.Positive(t, bs[0].Files, h)
		taken[h] = bs[0].ID
		out, err := tp.Deckctl("agents", "facts", h)
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "dispatcher config backups, newest first")
		require.Contains(t, string(out), bs[0].ID)
	}

	load := topology.Hammer(tp.HAProxy.URL+"/page", 4)
	id, err := deploy(t, tp, "dispatcher", "rollback", "--env", tp.Env, "--previous")
	res := load.Stop()
	require.NoError(t, err)
	require.Zero(t, res.Failed, "failed requests: %v", res.Failures)
	for h, in := range tp.Apache {
		require.Equal(t, "version 1\n", get(t, in.URL+"/page"), h)
		bs := backups(t, tp, h)
		require.Equal(t, "restore", bs[0].Kind, h)
		require.Equal(t, taken[h], bs[0].RestoredFrom, "%s: --previous restores the backup taken before the last deploy", h)
	}
	checkInvariants(t, tp, id)
}

type backup struct {
	ID             string `json:"id"`
	Kind           string `json:"kind"`
	Outcome        string `json:"outcome"`
	Files          int    `json:"files"`
	ArtifactSHA256 string `json:"artifact_sha256"`
	RestoredFrom   string `json:"restored_from"`
}

// backups is what `deckctl agents facts HOST -o json` says of the host's
// dispatcher config backups, newest first.
func backups(t *testing.T, tp *topology.Topology, host string) []backup {
	t.Helper()
	out, err := tp.Deckctl("agents", "facts", host, "-o", "json")
	require.NoError(t, err, string(out))
	var facts struct {
		Backups      []backup `json:"backups"`
		BackupsError string   `json:"backups_error"`
	}
	require.NoError(t, json.Unmarshal(out, &facts), string(out))
	require.Empty(t, facts.BackupsError)
	return facts.Backups
}
