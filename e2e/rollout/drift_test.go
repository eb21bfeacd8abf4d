package rollout_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/stretchr/testify/require"
)

type driftRow struct {
	Host       string `json:"host"`
	Path       string `json:"path"`
	Kind       string `json:"kind"`
	From       string `json:"from"`
	Severity   string `json:"severity"`
	ResolvedBy string `json:"resolved_by"`
}

func driftRows(t *testing.T, tp *topology.Topology, args ...string) []driftRow {
	out, err := tp.Deckctl(append([]string{"drift", "-o", "json"}, args...)...)
	require.NoError(t, err)
	var rows []driftRow
	require.NoError(t, json.Unmarshal(out, &rows))
	return rows
}

// TestDriftReportedAndReplaced edits a dispatcher's config tree by hand:
// every change is one drift event at the control plane, an immutable file
// is flagged HIGH, Deckhand's own deployment is not drift, and the next
// deployment replaces (resolves) the drift.
func TestDriftReportedAndReplaced(t *testing.T) {
	tp := topology.Start(t, topology.Options{Pairs: 1})
	dumpOnFailure(t, tp)
	set := push(t, tp, "2", site(t, 2, false))
	_, err := deploy(t, tp, "deploy", "--env", tp.Env, "--artifacts", set)
	require.NoError(t, err)
	time.Sleep(time.Second) // longer than the debounce: a deployment's writes would have been reported by now
	require.Empty(t, driftRows(t, tp), "Deckhand's own deployment is not drift")

	dir := tp.Apache["dispatcher1"].Dir
	write := func(rel, body string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, rel), []byte(body), 0o644))
	}
	for i := 0; i < 5; i++ { // a burst of edits is one change
		write("conf.d/rewrites/default_rewrite.rules", "RewriteEngine On\nRewriteRule ^/page$ /v3.html [PT]\n# hotfix "+string(rune('a'+i))+"\n")
	}
	write("conf.d/variables/hotfix.vars", "Define HOTFIX on\n")
	require.NoError(t, os.Remove(filepath.Join(dir, "conf.d/variables/custom.vars")))
	require.NoError(t, os.Rename(filepath.Join(dir, "conf.dispatcher.d/filters/default_filters.any"), filepath.Join(dir, "conf.dispatcher.d/filters/renamed_filters.any")))
	write("conf.d/newdir/extra.conf", "# added by hand\n")
	write("conf.d/dispatcher_vhost.conf", "# immutable, edited by hand\nInclude conf.d/enabled_vhosts/*.vhost\n")

	want := map[string]string{
		"conf.d/rewrites/default_rewrite.rules":         "modified/normal",
		"conf.d/variables/hotfix.vars":                  "created/normal",
		"conf.d/variables/custom.vars":                  "removed/normal",
		"conf.dispatcher.d/filters/renamed_filters.any": "renamed/normal",
		"conf.d/newdir/extra.conf":                      "created/normal",
		"conf.d/dispatcher_vhost.conf":                  "modified/high",
	}
	var rows []driftRow
	require.Eventually(t, func() bool {
		rows = driftRows(t, tp, "--host", "dispatcher1")
		return len(rows) >= len(want)
	}, 20*time.Second, 200*time.Millisecond)
	time.Sleep(time.Second)
	rows = driftRows(t, tp, "--env", tp.Env)
	got := map[string]string{}
	var paths []string
	for _, r := range rows {
		got[r.Path] = r.Kind + "/" + r.Severity
		paths = append(paths, r.Path)
	}
	sort.Strings(paths)
	require.Equal(t, want, got, "exactly one event per change: %v", paths)
	for _, r := range rows {
		if r.Kind == "renamed" {
			require.Equal(t, "conf.dispatcher.d/filters/default_filters.any", r.From)
		}
	}

	// The next deployment replaces the drifted files.
	set = push(t, tp, "3", site(t, 3, false))
	_, err = deploy(t, tp, "deploy", "--env", tp.Env, "--artifacts", set)
	require.NoError(t, err)
	require.Empty(t, driftRows(t, tp), "a deployment resolves the drift it replaced")
	all := driftRows(t, tp, "--all")
	require.Len(t, all, len(want))
	for _, r := range all {
		require.NotEmpty(t, r.ResolvedBy)
	}
}
