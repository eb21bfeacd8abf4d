package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/deckhand-dev/deckhand/pkg/task"
)

// MaxFlushPaths bounds each list of a CacheFlush, as Cloud Manager does
// (up to 100 invalidation and 100 flush paths per environment).
const MaxFlushPaths = 100

// Flush actions in the output, and the CQ-Action each sends.
const (
	ActionInvalidate = "invalidate" // CQ-Action: Activate
	ActionFlush      = "flush"      // CQ-Action: Delete
)

// ErrFlushRejected is wrapped when the dispatcher answers 403: its
// /allowedClients (or the flush vhost) does not let this host flush.
var ErrFlushRejected = errors.New("flush rejected by the dispatcher (403 Forbidden)")

// ValidateHandle checks one cache path: absolute, clean, no "." or ".."
// elements, no NUL, backslash or control characters (they would end up in
// HTTP headers or file names).
func ValidateHandle(p string) error {
	switch {
	case p == "":
		return errors.New("empty cache path")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("cache path %q must be absolute (start with /)", p)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("cache path %q contains a control character (NUL, CR, LF...)", p)
	case strings.Contains(p, `\`):
		return fmt.Errorf("cache path %q contains a backslash", p)
	}
	for _, el := range strings.Split(p[1:], "/") {
		if el == ".." || el == "." {
			return fmt.Errorf("cache path %q must not contain %q", p, el)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("cache path %q is not clean (write %q)", p, path.Clean(p))
	}
	return nil
}

// Flush invalidates (CQ-Action Activate) the InvalidatePaths, then flushes
// (CQ-Action Delete) the FlushPaths, in the configured mode. Every path is
// validated before any is sent. It stops at the first failure; the output
// lists the paths handled, the failed one last with the reason in Detail.
func (d *Dispatcher) Flush(ctx context.Context, k task.CacheFlush) (*task.CacheFlushOutput, error) {
	out := &task.CacheFlushOutput{}
	if len(k.InvalidatePaths) > MaxFlushPaths || len(k.FlushPaths) > MaxFlushPaths {
		return out, fmt.Errorf("at most %d invalidation and %d flush paths per task (got %d and %d)", MaxFlushPaths, MaxFlushPaths, len(k.InvalidatePaths), len(k.FlushPaths))
	}
	type job struct{ path, action string }
	var jobs []job
	var bad []string
	for _, l := range []struct {
		paths  []string
		action string
	}{{k.InvalidatePaths, ActionInvalidate}, {k.FlushPaths, ActionFlush}} {
		for _, p := range l.paths {
			if err := ValidateHandle(p); err != nil {
				bad = append(bad, err.Error())
				continue
			}
			if l.action == ActionFlush && p == "/" {
				bad = append(bad, `refusing to flush "/" (it would delete the whole cache docroot); invalidate "/" instead`)
				continue
			}
			jobs = append(jobs, job{p, l.action})
		}
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("invalid cache paths, nothing flushed: %s", strings.Join(bad, "; "))
	}
	var client *http.Client
	var root *os.Root
	switch d.cfg.Flush.Mode {
	case FlushHTTP:
		tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr, Timeout: d.cfg.Flush.Timeout.D()}
	case FlushDocroot:
		var err error
		if root, err = os.OpenRoot(d.cfg.Flush.Docroot); err != nil {
			return out, fmt.Errorf("cache docroot: %w", err)
		}
		defer root.Close()
	default:
		return out, fmt.Errorf("flush mode %q is not configured", d.cfg.Flush.Mode)
	}
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		fp := task.FlushedPath{Path: j.path, Action: j.action}
		var err error
		if client != nil {
			fp.Detail, err = d.flushHTTP(ctx, client, j.path, j.action)
		} else {
			fp.Removed, fp.Detail, err = d.flushDocroot(root, j.path, j.action)
		}
		if err != nil {
			fp.Detail = err.Error()
			out.Paths = append(out.Paths, fp)
			return out, fmt.Errorf("%s %s: %w", j.action, j.path, err)
		}
		d.log.Info("cache path handled", "path", j.path, "action", j.action, "removed", fp.Removed, "detail", fp.Detail)
		out.Paths = append(out.Paths, fp)
	}
	return out, nil
}

// flushHTTP sends the dispatcher's invalidation request. Header names are
// set verbatim (CQ-Action, not Go's canonical Cq-Action) as AEM's
// replication agents send them.
func (d *Dispatcher) flushHTTP(ctx context.Context, client *http.Client, handle, action string) (string, error) {
	cq := "Activate"
	if action == ActionFlush {
		cq = "Delete"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.Flush.URL, http.NoBody)
	if err != nil {
		return "", err
	}
	req.Host = d.cfg.Flush.Host
	req.Header["CQ-Action"] = []string{cq}
	req.Header["CQ-Handle"] = []string{handle}
	req.Header["CQ-Path"] = []string{handle}
	req.Header["Content-Length"] = []string{"0"}
	req.ContentLength = 0
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST %s: %w", d.cfg.Flush.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	snippet := strings.TrimSpace(string(body))
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return "", fmt.Errorf("POST %s (Host: %s): %w: the dispatcher's /allowedClients or the flush vhost does not allow this agent's address; %s",
			d.cfg.Flush.URL, d.cfg.Flush.Host, ErrFlushRejected, snippet)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return "", fmt.Errorf("POST %s (Host: %s): HTTP %s: %s", d.cfg.Flush.URL, d.cfg.Flush.Host, resp.Status, snippet)
	}
	return fmt.Sprintf("CQ-Action %s: HTTP %s", cq, resp.Status), nil
}

// flushDocroot has the dispatcher's effect on the cache directly (see
// AEM-APIS.md section 2): remove the handle's cached files of any
// extension (and directories such as "page.html/" that hold suffix
// renditions) and <handle>/_jcr_content; a flush also removes the handle's
// directory; then touch the .stat files from the docroot down to
// min(statfileslevel, depth of the handle). Everything goes through an
// os.Root, so a symlink in the cache cannot lead outside the docroot.
func (d *Dispatcher) flushDocroot(root *os.Root, handle, action string) (int, string, error) {
	rel := strings.TrimPrefix(handle, "/")
	removed := 0
	var gone []string
	remove := func(p string) error {
		fi, err := root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n := 1
		if fi.IsDir() {
			n = 0
			_ = fs.WalkDir(root.FS(), p, func(_ string, de fs.DirEntry, err error) error {
				if err == nil && !de.IsDir() {
					n++
				}
				return nil
			})
		}
		if err := root.RemoveAll(p); err != nil {
			return err
		}
		removed += n
		gone = append(gone, p)
		return nil
	}
	if rel != "" {
		dir, base := path.Split(rel)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		if f, err := root.Open(dir); err == nil {
			ents, rerr := f.ReadDir(-1)
			f.Close()
			if rerr != nil {
				return removed, "", rerr
			}
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), base+".") {
					if err := remove(path.Join(dir, e.Name())); err != nil {
						return removed, "", err
					}
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return removed, "", err
		}
		if err := remove(rel + "/_jcr_content"); err != nil {
			return removed, "", err
		}
		if action == ActionFlush {
			if err := remove(rel); err != nil {
				return removed, "", err
			}
		}
	}
	depth := 0
	if rel != "" {
		depth = strings.Count(rel, "/") + 1
	}
	level := min(d.cfg.Flush.StatFilesLevel, depth)
	parts := strings.Split(rel, "/")
	now := d.now()
	var touched []string
	for i := 0; i <= level; i++ {
		dir := "."
		if i > 0 {
			dir = path.Join(parts[:i]...)
		}
		if fi, err := root.Stat(dir); err != nil || !fi.IsDir() {
			continue // the dispatcher does not create directories to hold a .stat
		}
		stat := path.Join(dir, ".stat")
		f, err := root.OpenFile(stat, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return removed, "", err
		}
		f.Close()
		if err := root.Chtimes(stat, now, now); err != nil {
			return removed, "", err
		}
		touched = append(touched, "/"+strings.TrimPrefix(stat, "./"))
	}
	detail := fmt.Sprintf("removed %d file(s)", removed)
	if len(gone) > 0 {
		detail += " (" + strings.Join(gone, ", ") + ")"
	}
	detail += "; touched " + strings.Join(touched, ", ")
	return removed, detail, nil
}
