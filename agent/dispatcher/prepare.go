package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/agent/worker"
	pkgidentity "github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// Prepared trees. A DispatcherPrepare task does the slow half of a deploy
// ahead of time, while the host still serves: fetch, extract and validate
// into <work_dir>/prepared-<sha256>/. The DispatcherDeploy of the same
// artifact that follows moves that tree into its own work dir and only
// re-adds the host's immutable files and re-checks the file set, so the
// load-balancer detach window holds backup, swap, configtest and reload.
//
// A prepared tree is a cache, never a source of truth: it is used only
// when its marker (written last, after the tree is synced, then the
// directory renamed into place) names the same artifact digest and the
// same dispatcher settings; anything else and the deploy stages from the
// artifact as if nothing was prepared. The live tree is never touched.
var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

const (
	preparedPrefix  = "prepared-"
	preparingPrefix = "preparing-"
	preparedMarker  = "prepared.json"
	preparedTree    = "tree"
	// keepPrepared bounds how many prepared trees stay on disk (the
	// newest); a deploy consumes the one it uses.
	keepPrepared = 2
)

// preparedInfo is the marker of a complete prepared tree.
type preparedInfo struct {
	SHA256 string `json:"sha256"`
	// Settings fingerprints the dispatcher settings the tree was
	// extracted and validated with (settingsKey).
	Settings string `json:"settings"`
	// Root is the staged root relative to the prepared dir.
	Root    string   `json:"root"`
	Files   int      `json:"files"`
	Ignored []string `json:"ignored,omitempty"`
	// Names are the artifact's relative paths, written or ignored (what
	// required_paths is checked against), without the host's files.
	Names []string  `json:"names"`
	At    time.Time `json:"at"`
}

// settingsKey fingerprints what extraction and validation depend on, so a
// tree prepared under other settings (a reloaded agent config) is not used.
func (d *Dispatcher) settingsKey() string {
	b, _ := json.Marshal(struct {
		HTTPD, ServerRoot, Work string
		Managed, Required, Imm  []string
		Limits                  [4]float64
	}{d.cfg.HTTPDDir, d.cfg.ServerRoot, d.cfg.WorkDir, d.cfg.ManagedDirs, d.cfg.RequiredPaths, d.cfg.Immutable,
		[4]float64{float64(d.cfg.Limits.MaxEntries), float64(d.cfg.Limits.MaxTotalBytes), float64(d.cfg.Limits.MaxFileBytes), d.cfg.Limits.MaxRatio}})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (d *Dispatcher) preparedDir(sha string) string {
	return filepath.Join(d.cfg.WorkDir, preparedPrefix+sha)
}

// PrepareHandler runs DispatcherPrepare tasks.
type PrepareHandler struct{ d *Dispatcher }

// Run implements worker.Handler. An interrupted prepare simply runs again:
// it only ever writes below work_dir.
func (h *PrepareHandler) Run(ctx context.Context, t *worker.Task) (any, error) {
	k, ok := t.Spec.Kind.(task.DispatcherPrepare)
	if !ok {
		return nil, fmt.Errorf("dispatcher: prepare handler got a %T task", t.Spec.Kind)
	}
	out, err := h.d.prepare(ctx, t, k)
	if out == nil {
		return nil, err // not a typed nil in the interface
	}
	return out, err
}

// prepare extracts and validates the artifact into a prepared tree.
func (d *Dispatcher) prepare(ctx context.Context, t *worker.Task, k task.DispatcherPrepare) (*task.DispatcherOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fetch == nil {
		return nil, errors.New("dispatcher: this agent has no artifact fetcher")
	}
	start := time.Now()
	if !sha256Hex.MatchString(k.Artifact.SHA256) {
		return nil, fmt.Errorf("artifact %q: %q is not a sha256 digest", k.Artifact.Name, k.Artifact.SHA256)
	}
	if info, err := d.readPrepared(k.Artifact.SHA256); err == nil {
		t.Logf("artifact %s was already prepared at %s (%d files)", k.Artifact.SHA256[:12], info.At.Format(time.RFC3339), info.Files)
		return &task.DispatcherOutput{Files: info.Files, Ignored: info.Ignored}, nil
	}
	if err := os.MkdirAll(d.cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	tmp := filepath.Join(d.cfg.WorkDir, preparingPrefix+k.Artifact.SHA256)
	if err := removeTree(tmp); err != nil {
		return nil, err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("create prepare dir: %w", err)
	}
	fail := func(err error) (*task.DispatcherOutput, error) {
		if rerr := removeTree(tmp); rerr != nil {
			d.log.Warn("cannot remove a failed prepare dir", "path", tmp, "error", rerr)
		}
		return nil, err
	}
	st, names, err := d.extractArtifact(ctx, k.Artifact, tmp)
	if err != nil {
		return fail(err)
	}
	// Validate exactly as the deploy will: with the host's immutable
	// files in place. The deploy drops these copies and takes fresh ones.
	if err := d.completeStage(st, names, tmp); err != nil {
		return fail(fmt.Errorf("%w; nothing on the host was changed", err))
	}
	root, err := filepath.Rel(tmp, st.root)
	if err != nil {
		return fail(err)
	}
	info := preparedInfo{SHA256: k.Artifact.SHA256, Settings: d.settingsKey(), Root: filepath.ToSlash(root), Files: st.files, Ignored: st.ignored, At: d.now().UTC()}
	for n := range names {
		info.Names = append(info.Names, n)
	}
	sort.Strings(info.Names)
	b, err := json.Marshal(info)
	if err != nil {
		return fail(err)
	}
	if err := pkgidentity.WriteFileAtomic(filepath.Join(tmp, preparedMarker), b, 0o600); err != nil {
		return fail(err)
	}
	final := d.preparedDir(k.Artifact.SHA256)
	if err := removeTree(final); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(fmt.Errorf("move the prepared tree into place: %w", err))
	}
	if err := syncDirs(d.cfg.WorkDir); err != nil {
		return fail(err)
	}
	d.prunePrepared(k.Artifact.SHA256)
	t.Logf("prepared %s: %d files extracted and validated in %s; the live config is untouched", k.Artifact.SHA256[:12], st.files, time.Since(start).Round(time.Millisecond))
	d.log.Info("artifact prepared", "artifact", k.Artifact.SHA256, "files", st.files, "took", time.Since(start),
		"fetch", st.took.fetch, "extract", st.took.extract, "validate", st.took.immutables+st.took.validate)
	return &task.DispatcherOutput{Files: st.files, Ignored: st.ignored}, nil
}

// readPrepared returns the marker of a complete, usable prepared tree.
func (d *Dispatcher) readPrepared(sha string) (*preparedInfo, error) {
	if !sha256Hex.MatchString(sha) {
		return nil, fmt.Errorf("%q is not a sha256 digest", sha)
	}
	b, err := os.ReadFile(filepath.Join(d.preparedDir(sha), preparedMarker))
	if err != nil {
		return nil, err
	}
	var info preparedInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("prepared marker: %w", err)
	}
	switch {
	case info.SHA256 != sha:
		return nil, fmt.Errorf("prepared tree names artifact %s", info.SHA256)
	case info.Settings != d.settingsKey():
		return nil, errors.New("prepared under other dispatcher settings")
	case info.Root == "" || !filepath.IsLocal(filepath.FromSlash(info.Root)):
		return nil, fmt.Errorf("prepared marker root %q", info.Root)
	}
	return &info, nil
}

// takePrepared moves the prepared tree of a into work and completes it
// there: the copies of the host's immutable files made at prepare time are
// replaced by fresh ones and the file set is checked again. It returns
// nil, nil when there is no usable prepared tree (the caller stages from
// the artifact); an error only when the prepared artifact fails the checks
// now.
func (d *Dispatcher) takePrepared(a task.Artifact, work string) (*staged, error) {
	info, err := d.readPrepared(a.SHA256)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			d.log.Info("not using the prepared tree; staging from the artifact", "artifact", a.SHA256, "reason", err)
		}
		return nil, nil
	}
	start := time.Now()
	dst := filepath.Join(work, preparedTree)
	if err := os.Rename(d.preparedDir(a.SHA256), dst); err != nil {
		d.log.Warn("cannot take the prepared tree; staging from the artifact", "artifact", a.SHA256, "error", err)
		return nil, nil
	}
	st := &staged{root: filepath.Join(dst, filepath.FromSlash(info.Root)), files: info.Files, ignored: info.Ignored}
	names := make(map[string]bool, len(info.Names))
	for _, n := range info.Names {
		names[n] = true
	}
	// The host's immutable files, and directories made for them, were
	// added at prepare time (the artifact's immutable entries are never
	// written): remove them, the host's current files go in below.
	var extra []string
	err = filepath.WalkDir(st.root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == st.root {
			return err
		}
		r, err := filepath.Rel(st.root, p)
		if err != nil {
			return err
		}
		if r = filepath.ToSlash(r); !names[r] || (!de.IsDir() && d.cfg.IsImmutable(r)) {
			extra = append(extra, p)
			if de.IsDir() {
				return fs.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prepared tree: %w", err)
	}
	for _, p := range extra {
		if err := removeTree(p); err != nil {
			return nil, fmt.Errorf("prepared tree: %w", err)
		}
	}
	st.took.extract = time.Since(start)
	if err := d.completeStage(st, names, work); err != nil {
		return nil, err
	}
	return st, nil
}

// removeInterruptedPrepares removes what a prepare that died left. mu held.
func (d *Dispatcher) removeInterruptedPrepares() {
	ents, err := os.ReadDir(d.cfg.WorkDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), preparingPrefix) {
			p := filepath.Join(d.cfg.WorkDir, e.Name())
			if err := removeTree(p); err != nil {
				d.log.Warn("cannot remove an interrupted prepare", "path", p, "error", err)
			}
		}
	}
}

// prunePrepared keeps the newest keepPrepared prepared trees, keep among
// them. mu held.
func (d *Dispatcher) prunePrepared(keep string) {
	ents, err := os.ReadDir(d.cfg.WorkDir)
	if err != nil {
		return
	}
	type tree struct {
		name string
		at   time.Time
	}
	var trees []tree
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, preparedPrefix) && n != preparedPrefix+keep {
			var at time.Time
			if fi, err := os.Stat(filepath.Join(d.cfg.WorkDir, n, preparedMarker)); err == nil {
				at = fi.ModTime()
			}
			trees = append(trees, tree{n, at})
		}
	}
	sort.Slice(trees, func(a, b int) bool { return trees[a].at.After(trees[b].at) })
	for i, tr := range trees {
		if i < keepPrepared-1 && !tr.at.IsZero() {
			continue
		}
		p := filepath.Join(d.cfg.WorkDir, tr.name)
		if err := removeTree(p); err != nil {
			d.log.Warn("cannot remove an old prepared tree", "path", p, "error", err)
		}
	}
}
