package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeFetcher serves artifacts from local files, by digest.
type fakeFetcher struct {
	mu    sync.Mutex
	paths map[string]string
}

func (f *fakeFetcher) Fetch(_ context.Context, a task.Artifact) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.paths[a.SHA256]
	if !ok {
		return "", fmt.Errorf("fake fetcher: no artifact %s", a.SHA256)
	}
	return p, nil
}

func (f *fakeFetcher) add(sha, path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paths[sha] = path
}

// hostHTTPDConf is the unit tests' immutable conf/httpd.conf: it names
// the host, so a test can tell the host's copy from an artifact's.
const hostHTTPDConf = "# host-specific httpd.conf (immutable)\nServerName unit-test-host\nInclude conf.modules.d/*.conf\nIncludeOptional conf.d/*.conf\n"

// fakeConfigTest fails, like Apache, when a live config file holds BOGUS.
const fakeConfigTest = `#!/bin/sh
if f=$(grep -rlF BOGUS "$1/conf" "$1/conf.d" "$1/conf.modules.d" 2>/dev/null); then
	f=${f%%
*}
	n=$(grep -nF BOGUS "$f")
	echo "AH00526: Syntax error on line ${n%%:*} of $f:" >&2
	echo "Invalid command 'BOGUS', perhaps misspelled or defined by a module not included in the server configuration" >&2
	exit 1
fi
echo "Syntax OK"
`

// env is one host for unit tests: an httpd dir laid out like the apache
// harness (without running Apache), fake configtest and reload commands,
// and an in-memory journal.
type env struct {
	t       testing.TB
	base    string
	httpd   string
	cfg     *Config
	j       *journal.Journal
	fetch   *fakeFetcher
	reloads string
	log     hclog.Logger
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	return newEnvAt(t, t.TempDir(), mod)
}

// memTempDir is a temporary directory on tmpfs (/dev/shm) when there is
// one, for tests that run hundreds of deployments: fsync and syncfs cost
// nothing there, and rename, RENAME_EXCHANGE and chattr +i behave as on
// disk. Elsewhere it is t.TempDir().
func memTempDir(t testing.TB) string {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if syscall.Statfs("/dev/shm", &st) != nil || st.Type != tmpfsMagic {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "deckhand-dispatcher-test-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		clearAttrs(dir)
		os.RemoveAll(dir)
	})
	return dir
}

func newEnvAt(t testing.TB, base string, mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, base: base, httpd: filepath.Join(base, "httpd"), fetch: &fakeFetcher{paths: map[string]string{}},
		reloads: filepath.Join(base, "reloads"), log: testlog.New(t, "dispatcher")}
	files := apache.ManagedFiles()
	for k, v := range apache.ImmutableFiles() {
		files[k] = v
	}
	files["conf/httpd.conf"] = hostHTTPDConf
	files["conf.d/orphan.conf"] = "# a file no artifact has: a deploy must remove it\n"
	for name, body := range files {
		p := filepath.Join(e.httpd, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(body), 0o644))
	}
	for name, target := range apache.ManagedSymlinks() {
		p := filepath.Join(e.httpd, filepath.FromSlash(name))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.Symlink(target, p))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(e.httpd, "logs"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.httpd, "logs", "error_log"), []byte("not managed\n"), 0o644))
	script := filepath.Join(base, "configtest.sh")
	require.NoError(t, os.WriteFile(script, []byte(fakeConfigTest), 0o755))
	e.configure(mod)
	var err error
	e.j, err = journal.New(kv.NewMemory())
	require.NoError(t, err)
	// Immutable files may carry chattr +i; t.TempDir's cleanup cannot
	// remove them.
	t.Cleanup(func() { clearAttrs(base) })
	return e
}

// configure sets e.cfg for the host under e.base.
func (e *env) configure(mod func(*Config)) {
	e.cfg = &Config{
		HTTPDDir:   e.httpd,
		ConfigTest: []string{"sh", filepath.Join(e.base, "configtest.sh"), e.httpd},
		Reload:     []string{"sh", "-c", "echo reload >> " + e.reloads},
		BackupDir:  filepath.Join(e.base, "backups"),
		Flush:      FlushConfig{Mode: FlushDocroot, Docroot: filepath.Join(e.base, "cache")},
	}
	if mod != nil {
		mod(e.cfg)
	}
	require.NoError(e.t, e.cfg.Prepare("test", ""))
}

// useBolt replaces the in-memory journal by a bbolt one in base/data, so
// the whole host (files and journal) can be copied by cloneEnv.
func (e *env) useBolt() {
	j, err := journal.Open(filepath.Join(e.base, "data"))
	require.NoError(e.t, err)
	e.j = j
	e.t.Cleanup(func() { j.Close() })
}

// cloneEnv copies a host prepared in snap (journal closed) to a fresh
// directory, as if it were another machine in the same state, with its
// own bbolt journal. chattr flags are not copied by cp; flag lists the
// files to set +i on again.
func cloneEnv(t testing.TB, snap string, fetch *fakeFetcher, mod func(*Config), flag ...string) *env {
	t.Helper()
	base := memTempDir(t)
	out, err := exec.Command("cp", "-a", snap+"/.", base).CombinedOutput()
	require.NoError(t, err, "%s", out)
	e := &env{t: t, base: base, httpd: filepath.Join(base, "httpd"), fetch: fetch,
		reloads: filepath.Join(base, "reloads"), log: testlog.New(t, "dispatcher")}
	e.configure(mod)
	e.useBolt()
	for _, rel := range flag {
		require.NoError(t, setImmutableAttr(filepath.Join(e.httpd, rel), true))
	}
	t.Cleanup(func() { clearAttrs(base) })
	return e
}

func clearAttrs(dir string) {
	_ = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			_ = setImmutableAttr(p, false)
		}
		return nil
	})
}

func (e *env) dispatcher() *Dispatcher {
	d, err := New(e.cfg, e.j, e.fetch, e.log)
	require.NoError(e.t, err)
	return d
}

// artifact builds a zip and makes the fake fetcher serve it.
func (e *env) artifact(a apache.Artifact) task.Artifact {
	p, sha := a.Build(e.t)
	e.fetch.add(sha, p)
	st, err := os.Stat(p)
	require.NoError(e.t, err)
	return task.Artifact{SHA256: sha, Size: st.Size(), Name: filepath.Base(p)}
}

// rawArtifact serves a file as is (corrupt zips).
func (e *env) rawArtifact(data []byte) task.Artifact {
	p := filepath.Join(e.t.TempDir(), "raw.zip")
	require.NoError(e.t, os.WriteFile(p, data, 0o644))
	sha := sha256hex(data)
	e.fetch.add(sha, p)
	return task.Artifact{SHA256: sha, Size: int64(len(data))}
}

// withFiles returns the default artifact with changes; a "" value removes
// the file.
func withFiles(changes map[string]string) apache.Artifact {
	a := apache.DefaultArtifact()
	for k, v := range changes {
		if v == "" {
			delete(a.Files, k)
			delete(a.Symlinks, k)
			continue
		}
		a.Files[k] = v
	}
	return a
}

func (e *env) manifest() *Manifest {
	m, err := TreeManifest(e.httpd, e.cfg.ManagedDirs)
	require.NoError(e.t, err)
	return m
}

func (e *env) reloadCount() int {
	b, err := os.ReadFile(e.reloads)
	if os.IsNotExist(err) {
		return 0
	}
	require.NoError(e.t, err)
	return strings.Count(string(b), "reload\n")
}

func (e *env) read(rel string) string {
	b, err := os.ReadFile(filepath.Join(e.httpd, filepath.FromSlash(rel)))
	require.NoError(e.t, err)
	return string(b)
}

// taskSeq numbers tasks across all envs: a cloned host's journal already
// holds the snapshot's task ids.
var taskSeq atomic.Int64

func (e *env) nextID(kind string) string {
	return fmt.Sprintf("exec-%d/%s/host1", taskSeq.Add(1), kind)
}

// crashHook stops a task at the n-th hit of a failpoint as if the process
// died there: runtime.Goexit ends the goroutine, running only in-memory
// deferred calls (unlocks, closes), and the worker never journals a
// result. With name "", it only records.
type crashHook struct {
	name string
	n    int

	mu      sync.Mutex
	counts  map[string]int
	seq     []string
	crashed chan struct{}
}

func newCrashHook(name string, n int) *crashHook {
	return &crashHook{name: name, n: n, counts: map[string]int{}, crashed: make(chan struct{})}
}

func (c *crashHook) hit(name string) {
	c.mu.Lock()
	c.counts[name]++
	k := c.counts[name]
	c.seq = append(c.seq, name)
	c.mu.Unlock()
	if name == c.name && k == c.n {
		close(c.crashed)
		runGoexit()
	}
}

func (c *crashHook) sequence() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.seq...)
}

// run submits a task to a fresh worker and waits until it finishes or is
// stopped by the dispatcher's crash hook. It returns the result, or nil
// after a crash.
func (e *env) run(d *Dispatcher, kind task.Kind, crash *crashHook) *task.Result {
	e.t.Helper()
	if crash != nil {
		d.hook = crash.hit
	}
	w := worker.New(worker.Config{Journal: e.j, Handlers: d.Handlers(), Logger: e.log})
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(e.t, w.Shutdown(ctx))
	}()
	spec := task.Spec{ID: e.nextID(kind.Name()), Kind: kind, CreatedAt: time.Now()}
	raw, err := task.MarshalSpec(spec)
	require.NoError(e.t, err)
	w.Submit(spec, raw, 1, nil)
	var crashed <-chan struct{}
	if crash != nil {
		crashed = crash.crashed
	}
	deadline := time.After(60 * time.Second)
	for {
		en, err := e.j.Get(spec.ID)
		require.NoError(e.t, err)
		if en.State != journal.Running {
			r, err := task.UnmarshalResult(en.Result)
			require.NoError(e.t, err)
			return r
		}
		select {
		case <-crashed:
			// The deferred Shutdown waits for the worker's goroutine.
			return nil
		case <-deadline:
			e.t.Fatalf("task %s did not finish", spec.ID)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// restart runs start-up recovery with a fresh dispatcher (the process
// restarted) and returns the result of every task it finished. crash, if
// set, may stop recovery itself; then it returns nil.
func (e *env) restart(crash *crashHook) []*task.Result {
	e.t.Helper()
	d := e.dispatcher()
	if crash != nil {
		d.hook = crash.hit
	}
	before, err := e.j.List(journal.Running)
	require.NoError(e.t, err)
	w := worker.New(worker.Config{Journal: e.j, Handlers: d.Handlers(), Logger: e.log})
	done := make(chan error, 1)
	go func() {
		// Runs on its own goroutine: a crash hook ends it with Goexit.
		var err error = errCrashed
		defer func() { done <- err }()
		err = w.Recover(context.Background())
	}()
	err = <-done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(e.t, w.Shutdown(ctx))
	if err == errCrashed {
		return nil
	}
	require.NoError(e.t, err)
	var out []*task.Result
	for _, en := range before {
		got, err := e.j.Get(en.ID)
		require.NoError(e.t, err)
		require.Equal(e.t, journal.Finished, got.State, "recovery must finish task %s", en.ID)
		r, err := task.UnmarshalResult(got.Result)
		require.NoError(e.t, err)
		out = append(out, r)
	}
	return out
}

var errCrashed = fmt.Errorf("crashed")

func dispOut(t testing.TB, r *task.Result) *task.DispatcherOutput {
	t.Helper()
	require.NotNil(t, r)
	if r.Output == nil {
		return &task.DispatcherOutput{}
	}
	o, ok := r.Output.(*task.DispatcherOutput)
	require.True(t, ok, "output is %T", r.Output)
	return o
}

// requireNoLeftovers checks that no work dir and no unindexed backup dir
// remain.
func (e *env) requireNoLeftovers() {
	e.t.Helper()
	ents, err := os.ReadDir(e.cfg.WorkDir)
	if err == nil {
		require.Empty(e.t, names(ents), "work dir leftovers")
	}
	all, err := listBackups(e.j.Backend())
	require.NoError(e.t, err)
	indexed := map[string]bool{}
	for _, b := range all {
		indexed[b.ID] = true
		_, err := os.Stat(filepath.Join(e.cfg.BackupDir, b.ID, "manifest.json"))
		require.NoError(e.t, err, "indexed backup %s has its files", b.ID)
	}
	ents, err = os.ReadDir(e.cfg.BackupDir)
	if err == nil {
		for _, en := range ents {
			require.True(e.t, indexed[en.Name()], "unindexed backup dir %s", en.Name())
		}
	}
}

func names(ents []os.DirEntry) []string {
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func runGoexit() { runtime.Goexit() }

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
