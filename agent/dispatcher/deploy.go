package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/classify"
	"github.com/deckhand-dev/deckhand/pkg/safezip"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// staged is a complete new tree in the work dir, validated.
type staged struct {
	root    string   // holds the new managed dirs
	files   int      // files and symlinks written from the artifact
	ignored []string // immutable entries of the artifact, not written
	flagged []string // host immutable files with chattr +i
	// took times the steps, for the log: fetch, extract (safezip, synced),
	// immutables (host files copied in, synced), validate.
	took struct{ fetch, extract, immutables, validate time.Duration }
}

// deploy follows the seed's dispatcher steps: validate (in staging),
// back up, replace everything but the immutable files, configtest, then
// reload or restore and reload.
func (d *Dispatcher) deploy(ctx context.Context, t *worker.Task, k task.DispatcherDeploy) (any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.Entry().Has(markPlan) {
		// Run again after an interruption without Recover (a wrapped
		// handler): finish or undo what the earlier attempt left.
		return d.recoverLocked(ctx, t, "deployment")
	}
	d.cleanup()
	start := time.Now()
	log := d.log.With("task", t.Spec.ID, "artifact", k.Artifact.SHA256)
	if d.fetch == nil {
		return nil, errors.New("dispatcher: this agent has no artifact fetcher")
	}
	work := d.workDir(t.Spec.ID)
	if err := removeTree(work); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	// A DispatcherPrepare of this artifact may have done the fetch,
	// extraction and validation already.
	st, err := d.takePrepared(k.Artifact, work)
	how := "prepared tree"
	if err == nil && st == nil {
		st, err = d.stageArtifact(ctx, k.Artifact, work)
		how = "artifact"
	}
	if err != nil {
		d.abort(work, "")
		return nil, err
	}
	out := &task.DispatcherOutput{Files: st.files, Ignored: st.ignored}
	log.Info("artifact staged and validated", "from", how, "files", st.files, "ignored_immutable", len(st.ignored), "took", time.Since(start),
		"fetch", st.took.fetch, "extract", st.took.extract, "immutables", st.took.immutables, "validate", st.took.validate)
	if err := ctx.Err(); err != nil {
		d.abort(work, "")
		return out, err
	}
	b, err := d.takeBackup(t, BackupKindDeploy, func(b *Backup) { b.Artifact = k.Artifact.SHA256 })
	if err != nil {
		d.abort(work, "")
		return out, fmt.Errorf("back up the current config: %w; nothing on the host was changed", err)
	}
	out.BackupID = b.ID
	if err := d.mark(t, markBackup, []byte(b.ID)); err != nil {
		d.abort(work, b.ID)
		return out, fmt.Errorf("journal: %w; nothing on the host was changed", err)
	}
	if err := ctx.Err(); err != nil {
		d.abort(work, b.ID)
		return out, err
	}
	p, err := d.makePlan("deployment", work, st.root)
	if err != nil {
		d.abort(work, b.ID)
		return out, fmt.Errorf("%w; nothing on the host was changed", err)
	}
	p.BackupID, p.Files, p.Ignored, p.Flagged = b.ID, st.files, st.ignored, st.flagged
	o, err := d.apply(ctx, t, p, out)
	if err == nil {
		log.Info("dispatcher config deployed", "backup", b.ID, "files", st.files, "took", time.Since(start))
	}
	return o, err
}

// stageArtifact fetches and extracts the artifact into work, adds the
// host's immutable files and checks the full file set, all without
// touching the live tree.
func (d *Dispatcher) stageArtifact(ctx context.Context, a task.Artifact, work string) (*staged, error) {
	st, names, err := d.extractArtifact(ctx, a, work)
	if err != nil {
		return nil, err
	}
	if err := d.completeStage(st, names, work); err != nil {
		return nil, err
	}
	return st, nil
}

// extractArtifact fetches the artifact and extracts it into a new
// directory in work, without the immutable files. It returns the staged
// tree and the artifact's relative paths, written or ignored (for
// required_paths).
func (d *Dispatcher) extractArtifact(ctx context.Context, a task.Artifact, work string) (*staged, map[string]bool, error) {
	t0 := time.Now()
	zipPath, err := d.fetch.Fetch(ctx, a)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch artifact %s: %w", a.SHA256, err)
	}
	d.hit(FPAfterFetch)
	t1 := time.Now()
	root := ""
	cl, err := classify.Classify(zipPath)
	switch {
	case errors.Is(err, classify.ErrNotZip), errors.Is(err, classify.ErrUnrecognized):
		// safezip says exactly what is wrong with an unreadable zip, and
		// the full-file-set check names each missing required path.
	case err != nil:
		return nil, nil, fmt.Errorf("artifact %s: %w", a.SHA256, err)
	case cl.Kind != classify.DispatcherConfig:
		return nil, nil, fmt.Errorf("artifact %s is an %s, not a dispatcher configuration", a.SHA256, cl.Kind)
	default:
		root = cl.Root // "" or "wrapper/"
	}
	wrapper := strings.TrimSuffix(root, "/")
	rel := func(name string) (string, bool) {
		if wrapper == "" {
			return name, true
		}
		return strings.CutPrefix(name, wrapper+"/")
	}
	skip := func(name string) bool {
		if name == wrapper {
			return false
		}
		r, ok := rel(name)
		if !ok {
			return true // macOS metadata beside the wrapper directory
		}
		first, _, _ := strings.Cut(r, "/")
		if first == "__MACOSX" || first == ".DS_Store" {
			return true
		}
		return d.cfg.IsImmutable(r)
	}
	x, res, err := safezip.ExtractToTemp(zipPath, work, safezip.Options{Limits: d.cfg.limits(), Skip: skip, SHA256: a.SHA256})
	if err != nil {
		why := "cannot extract"
		for _, k := range []error{safezip.ErrUnsafePath, safezip.ErrUnsupported, safezip.ErrLimit, safezip.ErrCorrupt, safezip.ErrDigest} {
			if errors.Is(err, k) {
				why = k.Error()
				break
			}
		}
		return nil, nil, fmt.Errorf("artifact %s rejected (%s): %w; nothing on the host was changed", a.SHA256, why, err)
	}
	d.hit(FPAfterExtract)
	st := &staged{root: filepath.Join(x, wrapper), files: res.Files + res.Symlinks}
	t2 := time.Now()
	st.took.fetch, st.took.extract = t1.Sub(t0), t2.Sub(t1)
	// What the artifact holds, written or ignored, for required_paths.
	names := map[string]bool{}
	for _, s := range res.Skipped {
		r, ok := rel(s)
		if !ok || !d.cfg.IsImmutable(r) {
			continue
		}
		st.ignored = append(st.ignored, r)
		for p := r; p != "."; p = path.Dir(p) {
			names[p] = true
		}
	}
	sort.Strings(st.ignored)
	ents, err := os.ReadDir(st.root)
	if err != nil {
		return nil, nil, err
	}
	var stray []string
	for _, e := range ents {
		if first := e.Name(); first == "__MACOSX" || first == ".DS_Store" {
			continue
		} else if !d.cfg.isManaged(first) {
			stray = append(stray, first)
		}
	}
	if len(stray) > 0 {
		return nil, nil, fmt.Errorf("artifact %s has top-level entries outside the managed dirs %v: %s; nothing on the host was changed (the artifact must hold only the dispatcher config dirs; see dispatcher.managed_dirs)",
			a.SHA256, d.cfg.ManagedDirs, strings.Join(stray, ", "))
	}
	err = filepath.WalkDir(st.root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == st.root {
			return err
		}
		r, err := filepath.Rel(st.root, p)
		names[filepath.ToSlash(r)] = true
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return st, names, nil
}

// completeStage adds the host's immutable files to a staged tree, syncs it
// and checks the full file set (required paths, includes).
func (d *Dispatcher) completeStage(st *staged, names map[string]bool, work string) error {
	t2 := time.Now()
	var err error
	if st.flagged, err = d.addHostImmutable(st.root); err != nil {
		return fmt.Errorf("stage the host's immutable files: %w", err)
	}
	if err := syncFS(work); err != nil {
		return err
	}
	d.hit(FPAfterStage)
	t3 := time.Now()
	st.took.immutables = t3.Sub(t2)
	missing := checkRequired(d.cfg, names)
	inc, unchecked, err := checkIncludes(d.cfg, st.root)
	if err != nil {
		return fmt.Errorf("validate includes: %w", err)
	}
	for _, u := range unchecked {
		d.log.Debug("include not checked against the artifact; configtest will judge it", "ref", u)
	}
	missing = append(missing, inc...)
	if len(missing) > 0 {
		return &IncompleteError{Missing: missing}
	}
	d.hit(FPAfterValidate)
	st.took.validate = time.Since(t3)
	return nil
}

// addHostImmutable copies the host's immutable files into the staged tree
// (the artifact's copies were not written), so the new tree is complete
// before it goes live. It returns those that carry chattr +i on the host.
func (d *Dispatcher) addHostImmutable(stage string) ([]string, error) {
	cp := newCopier(d.cfg.HTTPDDir, stage)
	var flagged []string
	for _, dir := range d.cfg.ManagedDirs {
		err := filepath.WalkDir(filepath.Join(d.cfg.HTTPDDir, dir), func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if de.IsDir() {
				return nil
			}
			r, err := filepath.Rel(d.cfg.HTTPDDir, p)
			if err != nil {
				return err
			}
			r = filepath.ToSlash(r)
			if !d.cfg.IsImmutable(r) {
				return nil
			}
			if err := cp.one(r); err != nil {
				return err
			}
			if de.Type().IsRegular() && immutableAttr(p) {
				flagged = append(flagged, r)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if _, err := cp.finish(); err != nil {
		return nil, err
	}
	return flagged, nil
}
