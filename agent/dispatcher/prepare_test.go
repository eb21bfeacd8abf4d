package dispatcher

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/pkg/task"
)

func (f *fakeFetcher) remove(sha string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.paths, sha)
}

// workEntries lists work_dir's entries by prefix.
func (e *env) workEntries(prefix string) []string {
	e.t.Helper()
	ents, err := os.ReadDir(e.cfg.WorkDir)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(e.t, err)
	var out []string
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), prefix) {
			out = append(out, en.Name())
		}
	}
	return out
}

func TestPrepareLeavesLiveTreeAndDeployUsesIt(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	before := e.manifest()
	a := withFiles(map[string]string{
		"conf.d/rewrites/default_rewrite.rules": v2Rules,
		"conf.d/new_site.conf":                  "# new in this release\n",
		"conf/httpd.conf":                       "# the artifact's httpd.conf must never be written\n",
	})
	art := e.artifact(a)

	r := e.run(d, task.DispatcherPrepare{Artifact: art}, nil)
	require.NoError(t, r.Err())
	prep := dispOut(t, r)
	require.Equal(t, len(a.Files)+len(a.Symlinks)-4, prep.Files)
	require.Contains(t, prep.Ignored, "conf/httpd.conf")
	require.Empty(t, before.Diff(e.manifest()), "prepare never touches the live tree")
	require.Zero(t, e.reloadCount())
	require.Equal(t, []string{preparedPrefix + art.SHA256}, e.workEntries(preparedPrefix))

	// Preparing again is a no-op (and needs no fetch).
	e.fetch.remove(art.SHA256)
	r = e.run(d, task.DispatcherPrepare{Artifact: art}, nil)
	require.NoError(t, r.Err())
	require.Equal(t, prep.Files, dispOut(t, r).Files)

	// The deploy cannot fetch the artifact any more: it succeeds only from
	// the prepared tree.
	r = e.run(d, task.DispatcherDeploy{Artifact: art}, nil)
	require.NoError(t, r.Err())
	out := dispOut(t, r)
	require.Equal(t, prep.Files, out.Files)
	require.Equal(t, prep.Ignored, out.Ignored)
	require.Equal(t, v2Rules, e.read("conf.d/rewrites/default_rewrite.rules"))
	require.Equal(t, "# new in this release\n", e.read("conf.d/new_site.conf"))
	require.Equal(t, hostHTTPDConf, e.read("conf/httpd.conf"))
	require.NoFileExists(t, filepath.Join(e.httpd, "conf.d/orphan.conf"))
	require.Equal(t, 1, e.reloadCount())
	e.requireNoLeftovers()
}

// The same artifact deployed with and without a prepare gives the same
// live tree.
func TestPreparedDeployEqualsDirectDeploy(t *testing.T) {
	a := withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules, "conf.d/extra/deep/x.conf": "# deep\n"})
	a.Wrapper = "dispatcher"
	var trees []*Manifest
	for _, prepare := range []bool{false, true} {
		e := newEnv(t, nil)
		d := e.dispatcher()
		art := e.artifact(a)
		if prepare {
			require.NoError(t, e.run(d, task.DispatcherPrepare{Artifact: art}, nil).Err())
			e.fetch.remove(art.SHA256)
		}
		require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: art}, nil).Err())
		e.requireNoLeftovers()
		trees = append(trees, e.manifest())
	}
	require.Empty(t, trees[0].Diff(trees[1]))
}

func TestPreparedDeployTakesTheHostsCurrentImmutableFiles(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	art := e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))
	require.NoError(t, e.run(d, task.DispatcherPrepare{Artifact: art}, nil).Err())
	// The operator changes a host file between prepare and deploy.
	changed := hostHTTPDConf + "# changed after the prepare\n"
	require.NoError(t, os.WriteFile(filepath.Join(e.httpd, "conf/httpd.conf"), []byte(changed), 0o644))
	e.fetch.remove(art.SHA256)
	require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: art}, nil).Err())
	require.Equal(t, changed, e.read("conf/httpd.conf"))
	require.Equal(t, v2Rules, e.read("conf.d/rewrites/default_rewrite.rules"))
	e.requireNoLeftovers()
}

func TestPrepareRejectsBadArtifactsWithNothingLeft(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	before := e.manifest()

	missing := e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": "", "conf.d/rewrites/rewrite.rules": ""}))
	r := e.run(d, task.DispatcherPrepare{Artifact: missing}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "nothing on the host was changed")

	unsafe := e.rawArtifact(zipWith(t, map[string]fs.FileMode{"conf/x.conf": 0o644, "conf.d/../../escape.conf": 0o644}))
	r = e.run(d, task.DispatcherPrepare{Artifact: unsafe}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "rejected")

	r = e.run(d, task.DispatcherPrepare{Artifact: task.Artifact{SHA256: "../../etc"}}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "not a sha256 digest")

	require.Empty(t, before.Diff(e.manifest()))
	require.Empty(t, e.workEntries(preparedPrefix))
	require.Empty(t, e.workEntries(preparingPrefix))
	require.Zero(t, e.reloadCount())
}

func TestPreparedTreeIgnoredUnderOtherSettingsOrWhenIncomplete(t *testing.T) {
	e := newEnv(t, nil)
	art := e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))
	require.NoError(t, e.run(e.dispatcher(), task.DispatcherPrepare{Artifact: art}, nil).Err())

	// A reloaded config with another immutable list: the tree was
	// validated under other rules, so the deploy stages afresh; without
	// the artifact it must fail rather than use the prepared tree.
	e.cfg.Immutable = append(append([]string(nil), e.cfg.Immutable...), "conf.d/new_immutable.conf")
	d := e.dispatcher()
	e.fetch.remove(art.SHA256)
	r := e.run(d, task.DispatcherDeploy{Artifact: art}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "fetch artifact")
	require.Equal(t, []string{preparedPrefix + art.SHA256}, e.workEntries(preparedPrefix), "not consumed")

	// A prepared dir without its marker (a crash before it was written is
	// impossible, the rename comes last, but a damaged disk is not) is
	// never used either.
	require.NoError(t, os.Remove(filepath.Join(e.cfg.WorkDir, preparedPrefix+art.SHA256, preparedMarker)))
	e.cfg.Immutable = e.cfg.Immutable[:len(e.cfg.Immutable)-1]
	r = e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: art}, nil)
	require.Equal(t, task.StatusFailed, r.Status)
	require.Contains(t, r.Error, "fetch artifact")
}

func TestInterruptedPrepareIsCleanedAndPreparedTreesArePruned(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	var arts []task.Artifact
	for i := range 3 {
		arts = append(arts, e.artifact(withFiles(map[string]string{"conf.d/n.conf": strings.Repeat("#\n", i+1)})))
	}
	// What a prepare killed half way leaves.
	half := filepath.Join(e.cfg.WorkDir, preparingPrefix+arts[0].SHA256, ".safezip-1", "conf.d")
	require.NoError(t, os.MkdirAll(half, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(half, "x.conf"), []byte("half"), 0o644))

	for _, a := range arts {
		require.NoError(t, e.run(d, task.DispatcherPrepare{Artifact: a}, nil).Err())
	}
	require.Empty(t, e.workEntries(preparingPrefix))
	got := e.workEntries(preparedPrefix)
	require.Len(t, got, keepPrepared, "only the newest are kept")
	require.Contains(t, got, preparedPrefix+arts[2].SHA256)

	// A fresh start removes a half-written prepare.
	require.NoError(t, os.MkdirAll(half, 0o755))
	e.dispatcher()
	require.Empty(t, e.workEntries(preparingPrefix))
}
