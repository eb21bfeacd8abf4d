package build

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

func TestAllowedRepository(t *testing.T) {
	allowed := []string{"https://git.example.com/site", "git@github.com:org/", "file:///srv/git/"}
	for repo, want := range map[string]bool{
		"https://git.example.com/site":              true,
		"https://git.example.com/site/app.git":      true,
		"https://git.example.com/site-evil.git":     false,
		"https://git.example.com/site@evil.org/x":   false,
		"https://git.example.com/site/../other.git": false,
		"https://git.example.com/other.git":         false,
		"git@github.com:org/site.git":               true,
		"git@github.com:org2/site.git":              false,
		"file:///srv/git/site.git":                  true,
		"file:///srv/gitx/site.git":                 false,
		"-https://git.example.com/site":             false,
		"https://git.example.com/site/a b":          false,
		"https://git.example.com/site/\n":           false,
		"":                                          false,
	} {
		require.Equal(t, want, allowedRepository(repo, allowed), repo)
	}
}

func TestCheckBranch(t *testing.T) {
	for _, ok := range []string{"main", "release/1.0", "feature/ABC-12_x", "v1.2.3", "hotfix@1"} {
		require.NoError(t, checkBranch(ok), ok)
	}
	for _, bad := range []string{"", "-x", "--upload-pack=x", "a..b", "a b", "a\x00b", "a\tb", "a\x7f", "a~1", "a^", "a:b", "a?", "a*", "a[", `a\b`,
		"a@{1}", "@", "/a", "a/", "a//b", "a.", "a.lock", ".hidden", "a/.b", strings.Repeat("x", 256), "caf\xe9"} {
		require.Error(t, checkBranch(bad), "%q", bad)
	}
}

func TestWorkspaceName(t *testing.T) {
	a, b := workspaceName("e1/build/builder1"), workspaceName("e1_build_builder1")
	require.NotEqual(t, a, b, "ids that sanitize alike still get their own workspace")
	require.True(t, strings.HasPrefix(a, workspacePrefix+"e1_build_builder1-"), a)
	for _, id := range []string{"../../etc", "a/b/c", strings.Repeat("x/", 200), "é/…"} {
		n := workspaceName(id)
		require.True(t, filepath.IsLocal(n) && !strings.ContainsAny(n, "/\\") && n != ".." && len(n) < 120, n)
	}
}

func TestMatchGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{DefaultArtifacts, "target/a.zip", true},
		{DefaultArtifacts, "ui.apps/target/a.zip", true},
		{DefaultArtifacts, "a/b/c/target/a.zip", true},
		{DefaultArtifacts, "target/sub/a.zip", false},
		{DefaultArtifacts, "target/a.jar", false},
		{DefaultArtifacts, "a.zip", false},
		{DefaultArtifacts, "xtarget/a.zip", false},
		{"all/target/*.zip", "all/target/site.all-1.0.zip", true},
		{"all/target/*.zip", "x/all/target/site.all-1.0.zip", false},
		{"**", "anything/at/all", true},
		{"**/*.zip", "a.zip", true},
	} {
		require.Equal(t, tc.want, matchGlob(tc.pattern, tc.name), "%s ~ %s", tc.pattern, tc.name)
	}
}

func TestLogSinkCapsStreamingButKeepsTheTail(t *testing.T) {
	var streamed []string
	collect := func(f string, a ...any) { streamed = append(streamed, fmt.Sprintf(f, a...)) }
	l := newLogSink(collect, 30)
	_, _ = l.Write([]byte("line one\r\nline two\npart"))
	_, _ = l.Write([]byte("ial\nline four is long\nline five\nbad \xff byte\nno newline"))
	l.Close()
	require.Equal(t, []string{"line one", "line two", "partial"}, streamed[:3])
	require.Contains(t, streamed[3], "longer than max_log_bytes (30)")
	require.Len(t, streamed, 4, "nothing more is streamed after the note")
	require.Equal(t, "line five\nbad \uFFFD byte\nno newline", l.Tail(3), "invalid UTF-8 is replaced; the tail has the last lines")
	require.Contains(t, l.Tail(100), "line one")

	streamed = nil
	l = newLogSink(collect, 1<<20)
	_, _ = l.Write([]byte(strings.Repeat("x", maxLineBytes*2+10) + "\n"))
	l.Close()
	require.Len(t, streamed, 1)
	require.Len(t, streamed[0], maxLineBytes, "a giant line is cut")
}

func TestFindArtifacts(t *testing.T) {
	src := t.TempDir()
	write := func(rel string) {
		p := filepath.Join(src, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(rel), 0o644))
	}
	write("target/site.all-1.0.zip")
	write("ui.apps/target/site.ui.apps-1.0.zip")
	write("ui.apps/target/classes/x.zip")
	write("target/notes.txt")
	write(".git/target/objects.zip")
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(src, "target", "passwd.zip")))
	require.NoError(t, os.Mkdir(filepath.Join(src, "linked"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(src, "target"), filepath.Join(src, "linked", "target")))

	got, err := findArtifacts(src, DefaultArtifacts)
	require.NoError(t, err)
	require.Equal(t, []found{
		{rel: "target/site.all-1.0.zip", name: "site.all-1.0.zip"},
		{rel: "ui.apps/target/site.ui.apps-1.0.zip", name: "site.ui.apps-1.0.zip"},
	}, got, "symlinks and .git are skipped")

	write("other/target/site.all-1.0.zip")
	_, err = findArtifacts(src, DefaultArtifacts)
	require.ErrorContains(t, err, "two artifacts are named site.all-1.0.zip (other/target/site.all-1.0.zip and target/site.all-1.0.zip)")
}

func TestPruneRemovesOnlyOldUnusedWorkspaces(t *testing.T) {
	dir := t.TempDir()
	b := &Builder{cfg: &Config{KeepWorkspaces: yamlconf.Duration(time.Hour)}, dir: dir, log: hclog.NewNullLogger(), active: map[string]int{}, removing: map[string]bool{}}
	old := time.Now().Add(-2 * time.Hour)
	mk := func(name string, age time.Time, record bool) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Join(p, "src", "ro"), 0o755))
		// A read-only directory, as Go's module cache leaves them.
		require.NoError(t, os.WriteFile(filepath.Join(p, "src", "ro", "f"), nil, 0o444))
		require.NoError(t, os.Chmod(filepath.Join(p, "src", "ro"), 0o555))
		if record {
			require.NoError(t, os.WriteFile(filepath.Join(p, "build.json"), []byte("{}"), 0o600))
			require.NoError(t, os.Chtimes(filepath.Join(p, "build.json"), age, age))
		}
		require.NoError(t, os.Chtimes(p, age, age))
		return p
	}
	oldWS := mk(workspaceName("e1/build/b"), old, true)
	oldUnfinished := mk(workspaceName("e2/build/b"), old, false)
	recentlyScanned := mk(workspaceName("e3/build/b"), time.Now(), true)
	require.NoError(t, os.Chtimes(recentlyScanned, old, old)) // the record, not the dir, counts
	inUse := mk(workspaceName("e4/build/b"), old, true)
	notOurs := mk("operator-files", old, false)
	release, err := b.acquire(filepath.Base(inUse))
	require.NoError(t, err)
	defer release()

	b.prune(time.Now())
	require.NoDirExists(t, oldWS)
	require.NoDirExists(t, oldUnfinished)
	require.DirExists(t, recentlyScanned)
	require.DirExists(t, inUse)
	require.DirExists(t, notOurs)

	// A workspace being removed cannot be taken by a task meanwhile.
	require.True(t, b.claim(filepath.Base(recentlyScanned)))
	_, err = b.acquire(filepath.Base(recentlyScanned))
	require.ErrorIs(t, err, errRemoving)
	b.unclaim(filepath.Base(recentlyScanned))
	require.False(t, b.claim(filepath.Base(inUse)), "a workspace in use is not claimed")
}

func TestBwrapArgs(t *testing.T) {
	ws := workspace{root: "/data/ws/ws-x", src: "/data/ws/ws-x/src", home: "/data/ws/ws-x/home", tmp: "/data/ws/ws-x/tmp"}
	args := bwrapArgs("/usr/bin/bwrap", Step{Command: []string{"mvn", "-B", "install"}, CacheDirs: []string{"/var/cache/m2"}}, ws, []string{"/opt/maven"})
	joined := strings.Join(args, " ")
	for _, want := range []string{"--unshare-all", "--die-with-parent", "--new-session", "--cap-drop ALL", "--ro-bind /usr /usr",
		"--tmpfs /tmp", "--bind /data/ws/ws-x/src /workspace/src", "--bind /data/ws/ws-x/home /workspace/home", "--bind /data/ws/ws-x/tmp /workspace/tmp", "--bind /var/cache/m2 /var/cache/m2", "--ro-bind /opt/maven /opt/maven",
		"--chdir /workspace/src -- mvn -B install"} {
		require.Contains(t, joined, want)
	}
	require.NotContains(t, joined, "--share-net")
	require.NotContains(t, joined, "--bind /data/ws/ws-x /", "the workspace root (build.json) is not bound")
	// The root becomes read-only after every mount under it.
	ro := slices.Index(args, "--remount-ro")
	require.Greater(t, ro, slices.Index(args, "--bind"))
	require.Greater(t, ro, slices.Index(args, "--tmpfs"))

	args = bwrapArgs("/usr/bin/bwrap", Step{Command: []string{"mvn"}, Network: true}, ws, nil)
	require.Contains(t, args, "--share-net")
}

func TestStepEnvIsClean(t *testing.T) {
	t.Setenv("DECKHAND_PASS", "p")
	t.Setenv("DECKHAND_SECRET", "s")
	env := stepEnv(Step{Env: []string{"DECKHAND_PASS", "FIXED=1", "UNSET_VAR", "PATH=/opt/bin:/usr/bin"}}, workspace{home: "/w/home", tmp: "/w/tmp"})
	require.Equal(t, []string{"DECKHAND_PASS=p", "FIXED=1", "HOME=/w/home", "LANG=C.UTF-8", "PATH=/opt/bin:/usr/bin", "TMPDIR=/w/tmp"}, env)
}

func TestReadMetrics(t *testing.T) {
	src := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(src, "m.json"), []byte(`{"a":1}`), 0o644))
	got, err := readMetrics(src, "m.json")
	require.NoError(t, err)
	require.Equal(t, `{"a":1}`, string(got))

	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(src, "link.json")))
	_, err = readMetrics(src, "link.json")
	require.Error(t, err, "a symlink out of the checkout is not followed")

	require.NoError(t, os.WriteFile(filepath.Join(src, "big.json"), make([]byte, MaxMetricsBytes+1), 0o644))
	_, err = readMetrics(src, "big.json")
	require.ErrorContains(t, err, "larger than")
}
