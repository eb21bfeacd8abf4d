package dispatcher

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

// newApacheEnv points the agent at a real Apache started by the harness,
// configured as the harness documents.
func newApacheEnv(t testing.TB, in *apache.Instance, log hclog.Logger) *env {
	e := &env{t: t, base: t.TempDir(), httpd: in.Dir, fetch: &fakeFetcher{paths: map[string]string{}}, log: log}
	e.reloads = filepath.Join(e.base, "reloads-unused")
	e.cfg = &Config{
		HTTPDDir:   in.Dir,
		ConfigTest: in.ConfigTestArgv(),
		Reload:     in.GracefulArgv(),
		BackupDir:  filepath.Join(e.base, "backups"),
		Flush:      FlushConfig{Mode: FlushDocroot, Docroot: in.DocRoot},
	}
	require.NoError(t, e.cfg.Prepare("test", ""))
	var err error
	e.j, err = journal.New(kv.NewMemory())
	require.NoError(t, err)
	return e
}

// pageLoop requests /page without pause until stopped, on fresh
// connections and on one keep-alive connection, and counts what it saw.
type pageLoop struct {
	in      *apache.Instance
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	total   atomic.Int64
	mu      sync.Mutex
	bodies  map[string]int
	fails   []string
	slowest time.Duration
	last    atomic.Value // string: the last body
}

func startPageLoop(in *apache.Instance) *pageLoop {
	l := &pageLoop{in: in, stop: make(chan struct{}), bodies: map[string]int{}}
	for _, keepAlive := range []bool{false, true, false} {
		tr := &http.Transport{DisableKeepAlives: !keepAlive, MaxIdleConnsPerHost: 1}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer tr.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				resp, err := c.Get(in.URL + "/page")
				took := time.Since(start)
				var body string
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					body = string(b)
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				l.total.Add(1)
				l.mu.Lock()
				if err != nil {
					l.fails = append(l.fails, fmt.Sprintf("keepalive=%v after %v: %v", keepAlive, took, err))
				} else {
					l.bodies[body]++
					l.last.Store(body)
				}
				l.slowest = max(l.slowest, took)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *pageLoop) halt() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// TestDeployRealApache deploys to a real Apache while clients request a
// page without pause: a good config goes live, a config with a syntax
// error is refused with Apache's own words and the previous config keeps
// serving; no request fails throughout.
func TestDeployRealApache(t *testing.T) {
	in := apache.Start(t, apache.Config{})
	e := newApacheEnv(t, in, testlog.New(t, "dispatcher"))
	d := e.dispatcher()
	_, body, err := in.Get("/page")
	require.NoError(t, err)
	require.Equal(t, "version 1\n", body)

	loop := startPageLoop(in)
	defer loop.halt()
	require.Eventually(t, func() bool { return loop.total.Load() > 20 }, 5*time.Second, 5*time.Millisecond)

	// A good config: v2 is served.
	start := time.Now()
	r := e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v2")))}, nil)
	deployTook := time.Since(start)
	require.NoError(t, r.Err())
	out := dispOut(t, r)
	require.Contains(t, out.ConfigTest, "Syntax OK")
	require.Contains(t, out.Ignored, "conf/httpd.conf")
	require.Eventually(t, func() bool { return loop.last.Load() == "version 2\n" }, 10*time.Second, 5*time.Millisecond)
	liveAfter := time.Since(start)
	_, body, err = in.Get("/page")
	require.NoError(t, err)
	require.Equal(t, "version 2\n", body)

	// A config with a syntax error: refused verbatim, v2 keeps serving.
	bad := withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": "RewriteEngine On\nBogusDirective here\n"})
	reqsBefore := loop.total.Load()
	start = time.Now()
	r = e.run(d, task.DispatcherDeploy{Artifact: e.artifact(bad)}, nil)
	badTook := time.Since(start)
	require.Equal(t, task.StatusFailed, r.Status)
	rulesPath := filepath.Join(in.Dir, "conf.d/rewrites/default_rewrite.rules")
	require.True(t, strings.HasPrefix(r.Error, "AH00526: Syntax error on line 2 of "+rulesPath+":\n"), "error: %q", r.Error)
	require.Contains(t, r.Error, "Invalid command 'BogusDirective', perhaps misspelled or defined by a module not included in the server configuration")
	out = dispOut(t, r)
	require.Equal(t, r.Error, out.ConfigTest, "the task error is the configtest output verbatim")
	require.True(t, out.Restored)
	require.Equal(t, rules("v2")["conf.d/rewrites/default_rewrite.rules"], e.read("conf.d/rewrites/default_rewrite.rules"))
	// Past the graceful restart's generation switch (up to 1s): still v2.
	time.Sleep(1500 * time.Millisecond)
	_, body, err = in.Get("/page")
	require.NoError(t, err)
	require.Equal(t, "version 2\n", body)
	require.Greater(t, loop.total.Load()-reqsBefore, int64(10))

	loop.halt()
	loop.mu.Lock()
	defer loop.mu.Unlock()
	t.Logf("requests during the test: %d, failed: %d, slowest: %v, bodies: %v; good deploy took %v (serving v2 after %v), failed deploy took %v",
		loop.total.Load(), len(loop.fails), loop.slowest, loop.bodies, deployTook, liveAfter, badTook)
	require.Empty(t, loop.fails, "no request may fail during deployments")
	require.Zero(t, loop.bodies["version 3\n"])
	require.Equal(t, 2, len(loop.bodies), "only v1 and v2 were ever served: %v", loop.bodies)
	e.requireNoLeftovers()
}

// TestRestoreRealApache restores the config from before the last
// deployment on a real Apache.
func TestRestoreRealApache(t *testing.T) {
	in := apache.Start(t, apache.Config{})
	e := newApacheEnv(t, in, testlog.New(t, "dispatcher"))
	d := e.dispatcher()
	require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v2")))}, nil).Err())
	require.NoError(t, e.run(d, task.DispatcherDeploy{Artifact: e.artifact(withFiles(rules("v3")))}, nil).Err())
	require.Eventually(t, func() bool { _, b, err := in.Get("/page"); return err == nil && b == "version 3\n" }, 10*time.Second, 10*time.Millisecond)
	r := e.run(d, task.DispatcherRestore{}, nil)
	require.NoError(t, r.Err())
	require.True(t, dispOut(t, r).Restored)
	require.Eventually(t, func() bool { _, b, err := in.Get("/page"); return err == nil && b == "version 2\n" }, 10*time.Second, 10*time.Millisecond)
}

// genArtifact is a dispatcher config of about n files: rewrite rules and
// variables Apache includes, and dispatcher filters the validator follows.
func genArtifact(n int, version string) apache.Artifact {
	a := withFiles(rules("v1"))
	a.Files["conf.d/available_vhosts/default.vhost"] = "<VirtualHost *:*>\n\tServerName default\n\tInclude conf.d/rewrites/default_rewrite.rules\n\tInclude conf.d/rewrites/gen/*.rules\n</VirtualHost>\n"
	a.Files["conf.d/zz_gen.conf"] = "Include conf.d/variables/gen/*.vars\n"
	a.Files["conf.dispatcher.d/available_farms/default_farm.any"] += "/genfarm { /filter { $include \"../filters/gen/*.any\" } }\n"
	for i := 0; len(a.Files)+len(a.Symlinks) < n; i++ {
		switch i % 5 {
		case 0, 1:
			a.Files[fmt.Sprintf("conf.d/rewrites/gen/rule_%05d.rules", i)] = fmt.Sprintf("RewriteRule ^/gen/%d/%s$ /v1.html [PT]\n", i, version)
		case 2:
			a.Files[fmt.Sprintf("conf.d/variables/gen/var_%05d.vars", i)] = fmt.Sprintf("Define GEN_%d %s\n", i, version)
		default:
			a.Files[fmt.Sprintf("conf.dispatcher.d/filters/gen/filter_%05d.any", i)] = fmt.Sprintf("/%05d { /type \"allow\" /url \"/content/gen/%d/%s/*\" }\n", i, i, version)
		}
	}
	return a
}

// BenchmarkDeploy deploys a generated 2,000-file dispatcher config through
// the handler (fetch, validate, back up, swap, configtest, graceful reload,
// cleanup) on a real Apache, alternating two versions so every deploy
// changes the tree.
func BenchmarkDeploy(b *testing.B) {
	in := apache.Start(b, apache.Config{})
	e := newApacheEnv(b, in, hclog.NewNullLogger())
	e.cfg.BackupsKeep = 2
	d := e.dispatcher()
	arts := []task.Artifact{e.artifact(genArtifact(2000, "a")), e.artifact(genArtifact(2000, "b"))}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := e.run(d, task.DispatcherDeploy{Artifact: arts[i%2]}, nil)
		if err := r.Err(); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			b.ReportMetric(float64(dispOut(b, r).Files), "files/op")
		}
	}
}

// TestGeneratedConfigDeploys keeps the benchmark's config honest: it is
// valid for Apache and passes the include validator. It deploys a smaller
// one than the benchmark (same shape): creating thousands of files takes
// seconds on a busy disk.
func TestGeneratedConfigDeploys(t *testing.T) {
	in := apache.Start(t, apache.Config{})
	e := newApacheEnv(t, in, testlog.New(t, "dispatcher"))
	start := time.Now()
	r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(genArtifact(400, "a"))}, nil)
	require.NoError(t, r.Err())
	require.GreaterOrEqual(t, dispOut(t, r).Files, 390)
	t.Logf("400-file deploy on real Apache took %v", time.Since(start))
	require.Eventually(t, func() bool { _, b, err := in.Get("/page"); return err == nil && b == "version 1\n" }, 10*time.Second, 10*time.Millisecond)
}
