package dispatcher

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

func TestFlushDocroot(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Flush.StatFilesLevel = 2 })
	d := e.dispatcher()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	d.now = func() time.Time { return now }
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	root := e.cfg.Flush.Docroot
	writeTree(t, root, map[string]string{
		".stat":                                  "",
		"content/.stat":                          "",
		"content/site/.stat":                     "",
		"content/site/en/.stat":                  "",
		"content/site/en.html":                   "en",
		"content/site/en.json":                   "{}",
		"content/site/en.mobile.html":            "m",
		"content/site/en.print.html/suffix.html": "s",
		"content/site/en/_jcr_content/image.png": "png",
		"content/site/en/child.html":             "child",
		"content/site/enx.html":                  "not the handle",
		"content/site/de.html":                   "de",
		"content/site/de/child.html":             "de child",
		"content/site/de/_jcr_content/x.png":     "x",
	}, nil)
	for _, p := range []string{".stat", "content/.stat", "content/site/.stat", "content/site/en/.stat"} {
		require.NoError(t, os.Chtimes(filepath.Join(root, p), old, old))
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }
	mtime := func(p string) time.Time {
		st, err := os.Stat(filepath.Join(root, p))
		require.NoError(t, err)
		return st.ModTime().UTC()
	}

	out, err := d.Flush(context.Background(), task.CacheFlush{
		InvalidatePaths: []string{"/content/site/en", "/content/other/page"},
		FlushPaths:      []string{"/content/site/de"},
	})
	require.NoError(t, err)
	require.Len(t, out.Paths, 3)
	require.Equal(t, task.FlushedPath{Path: "/content/site/en", Action: ActionInvalidate, Removed: 5}, withoutDetail(out.Paths[0]))
	require.Contains(t, out.Paths[0].Detail, "touched /.stat, /content/.stat, /content/site/.stat")
	require.Equal(t, 0, out.Paths[1].Removed)
	require.Equal(t, task.FlushedPath{Path: "/content/site/de", Action: ActionFlush, Removed: 3}, withoutDetail(out.Paths[2]))

	for _, gone := range []string{"content/site/en.html", "content/site/en.json", "content/site/en.mobile.html", "content/site/en.print.html", "content/site/en/_jcr_content", "content/site/de.html", "content/site/de"} {
		require.False(t, exists(gone), gone)
	}
	for _, kept := range []string{"content/site/en/child.html", "content/site/enx.html", "content/site/en/.stat"} {
		require.True(t, exists(kept), kept)
	}
	// .stat from the docroot down to min(statfileslevel=2, depth 3).
	require.Equal(t, now, mtime(".stat"))
	require.Equal(t, now, mtime("content/.stat"))
	require.Equal(t, now, mtime("content/site/.stat"))
	require.Equal(t, old, mtime("content/site/en/.stat"), "below statfileslevel")
	require.False(t, exists("content/other"), "no directories are created for .stat files")

	// Invalidating "/" only touches the docroot's .stat.
	require.NoError(t, os.Chtimes(filepath.Join(root, ".stat"), old, old))
	out, err = d.Flush(context.Background(), task.CacheFlush{InvalidatePaths: []string{"/"}})
	require.NoError(t, err)
	require.Equal(t, 0, out.Paths[0].Removed)
	require.Equal(t, now, mtime(".stat"))
}

func withoutDetail(f task.FlushedPath) task.FlushedPath {
	f.Detail = ""
	return f
}

func TestFlushDocrootStaysInside(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	outside := t.TempDir()
	writeTree(t, outside, map[string]string{"secret.html": "keep", "secret/_jcr_content/x": "keep"}, nil)
	writeTree(t, e.cfg.Flush.Docroot, nil, map[string]string{"content/escape": outside})
	_, err := d.Flush(context.Background(), task.CacheFlush{FlushPaths: []string{"/content/escape/secret"}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "escapes")
	require.FileExists(t, filepath.Join(outside, "secret.html"))
	require.FileExists(t, filepath.Join(outside, "secret/_jcr_content/x"))
}

func TestFlushValidatesEveryPathFirst(t *testing.T) {
	e := newEnv(t, nil)
	d := e.dispatcher()
	writeTree(t, e.cfg.Flush.Docroot, map[string]string{"content/a.html": "a"}, nil)
	_, err := d.Flush(context.Background(), task.CacheFlush{
		InvalidatePaths: []string{"/content/a", "content/rel", "/a/../b", "/nul\x00", "/x\r\nX-Evil: 1", "/a//b", "/a/./b", `/a\b`, ""},
		FlushPaths:      []string{"/"},
	})
	require.Error(t, err)
	for _, s := range []string{
		`invalid cache paths, nothing flushed`,
		`"content/rel" must be absolute`,
		`"/a/../b" must not contain ".."`,
		`"/nul\x00" contains a control character`,
		`"/x\r\nX-Evil: 1" contains a control character`,
		`"/a//b" is not clean (write "/a/b")`,
		`"/a/./b" must not contain "."`,
		`contains a backslash`,
		`empty cache path`,
		`refusing to flush "/"`,
	} {
		require.Contains(t, err.Error(), s)
	}
	require.FileExists(t, filepath.Join(e.cfg.Flush.Docroot, "content/a.html"), "nothing flushed")

	many := make([]string, MaxFlushPaths+1)
	for i := range many {
		many[i] = "/p"
	}
	_, err = d.Flush(context.Background(), task.CacheFlush{FlushPaths: many})
	require.ErrorContains(t, err, "at most 100")
}

// rawRecorder keeps the bytes of every request the server reads, so the
// test sees header names exactly as sent (net/http canonicalizes them).
type rawRecorder struct {
	net.Listener
	mu  sync.Mutex
	raw bytes.Buffer
}

func (l *rawRecorder) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, l: l}, nil
}

func (l *rawRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

type rawConn struct {
	net.Conn
	l *rawRecorder
}

func (c *rawConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.mu.Lock()
	c.l.raw.Write(p[:n])
	c.l.mu.Unlock()
	return n, err
}

type flushReq struct {
	method, path, host, action, handle, cqPath string
	contentLength                              int64
}

func TestFlushHTTP(t *testing.T) {
	var mu sync.Mutex
	var reqs []flushReq
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs = append(reqs, flushReq{r.Method, r.URL.Path, r.Host, r.Header.Get("CQ-Action"), r.Header.Get("CQ-Handle"), r.Header.Get("CQ-Path"), r.ContentLength})
		mu.Unlock()
		switch {
		case strings.HasPrefix(r.Header.Get("CQ-Handle"), "/content/forbidden"):
			http.Error(w, "Flushing rejected from 127.0.0.1", http.StatusForbidden)
		case strings.HasPrefix(r.Header.Get("CQ-Handle"), "/content/broken"):
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			w.Write([]byte("<H1>OK</H1>"))
		}
	}))
	rec := &rawRecorder{Listener: srv.Listener}
	srv.Listener = rec
	srv.Start()
	defer srv.Close()

	e := newEnv(t, func(c *Config) {
		c.Flush = FlushConfig{Mode: FlushHTTP, URL: srv.URL + "/dispatcher/invalidate.cache"}
	})
	d := e.dispatcher()
	r := e.run(d, task.CacheFlush{InvalidatePaths: []string{"/content/site/en"}, FlushPaths: []string{"/content/site/old"}}, nil)
	require.NoError(t, r.Err())
	out, ok := r.Output.(*task.CacheFlushOutput)
	require.True(t, ok, "%T", r.Output)
	require.Equal(t, []task.FlushedPath{
		{Path: "/content/site/en", Action: ActionInvalidate, Detail: "CQ-Action Activate: HTTP 200 OK"},
		{Path: "/content/site/old", Action: ActionFlush, Detail: "CQ-Action Delete: HTTP 200 OK"},
	}, out.Paths)
	mu.Lock()
	require.Equal(t, []flushReq{
		{"POST", "/dispatcher/invalidate.cache", "flush", "Activate", "/content/site/en", "/content/site/en", 0},
		{"POST", "/dispatcher/invalidate.cache", "flush", "Delete", "/content/site/old", "/content/site/old", 0},
	}, reqs)
	reqs = nil
	mu.Unlock()
	raw := rec.String()
	for _, h := range []string{"POST /dispatcher/invalidate.cache HTTP/1.1\r\n", "Host: flush\r\n", "CQ-Action: Activate\r\n", "CQ-Handle: /content/site/en\r\n",
		"CQ-Path: /content/site/en\r\n", "Content-Length: 0\r\n", "CQ-Action: Delete\r\n"} {
		require.Contains(t, raw, h)
	}

	// 403: a clear error, stop at that path.
	fo, err := d.Flush(context.Background(), task.CacheFlush{InvalidatePaths: []string{"/content/ok", "/content/forbidden", "/content/never"}})
	require.ErrorIs(t, err, ErrFlushRejected)
	require.Contains(t, err.Error(), "invalidate /content/forbidden")
	require.Contains(t, err.Error(), "/allowedClients")
	require.Contains(t, err.Error(), "Flushing rejected from 127.0.0.1")
	require.Len(t, fo.Paths, 2)
	require.Contains(t, fo.Paths[1].Detail, "403")
	mu.Lock()
	require.Len(t, reqs, 2, "no request after the failure")
	mu.Unlock()

	_, err = d.Flush(context.Background(), task.CacheFlush{FlushPaths: []string{"/content/broken"}})
	require.ErrorContains(t, err, "HTTP 500 Internal Server Error: boom")
}

func TestFlushHTTPUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	e := newEnv(t, func(c *Config) {
		c.Flush = FlushConfig{Mode: FlushHTTP, URL: "http://" + addr + "/dispatcher/invalidate.cache"}
	})
	_, err = e.dispatcher().Flush(context.Background(), task.CacheFlush{InvalidatePaths: []string{"/content/x"}})
	require.ErrorContains(t, err, "connection refused")
}
