package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
)

// MaxMetricsBytes bounds the metrics file a scan returns: it travels in
// the task result and is stored with it.
const MaxMetricsBytes = 1 << 20

// ConnFunc returns the agent's current connection to the control plane,
// waiting for one (bounded by ctx).
type ConnFunc func(ctx context.Context) (*grpc.ClientConn, error)

// Builder runs build and code_scan tasks on one builder host. Its two
// handlers share the workspaces. Safe for concurrent use: each task has
// its own workspace.
type Builder struct {
	cfg    *Config
	dir    string // workspace_dir, absolute, symlinks resolved
	bwrap  string // the bwrap binary; "" runs commands without a sandbox
	gitBin string
	conn   ConnFunc
	hostID string
	log    hclog.Logger

	mu       sync.Mutex
	active   map[string]int  // workspace name -> tasks using it; mu
	removing map[string]bool // workspaces prune is removing; mu
}

// New checks the host (git, the sandbox) and returns a Builder. cfg must
// have been validated. With sandbox left out it uses bwrap when
// /usr/bin/bwrap exists and says so in the log, or warns that commands run
// unsandboxed; an installed bwrap that cannot build a sandbox here is an
// error rather than a silent fallback.
func New(cfg *Config, conn ConnFunc, hostID string, log hclog.Logger) (*Builder, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	b := &Builder{cfg: cfg, conn: conn, hostID: hostID, log: log, active: map[string]int{}, removing: map[string]bool{}}
	if err := os.MkdirAll(cfg.WorkspaceDir, 0o700); err != nil {
		return nil, fmt.Errorf("builder.workspace_dir: %w", err)
	}
	dir, err := filepath.EvalSymlinks(cfg.WorkspaceDir)
	if err != nil {
		return nil, fmt.Errorf("builder.workspace_dir: %w", err)
	}
	if b.dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if b.gitBin, err = exec.LookPath(gitPath); err != nil {
		if b.gitBin, err = exec.LookPath("git"); err != nil {
			return nil, errors.New("builder: git is not installed (Debian package git); it is needed to clone repositories")
		}
	}
	switch cfg.Sandbox {
	case SandboxNone:
		log.Warn("builder.sandbox is none: build and scan commands run with the agent's user and see the whole host; use it only for code you trust")
	case SandboxBwrap, "":
		b.bwrap = findBwrap()
		if b.bwrap == "" {
			if cfg.Sandbox == SandboxBwrap {
				return nil, fmt.Errorf("builder.sandbox is bwrap but %s is not installed (Debian package bubblewrap)", bwrapPath)
			}
			log.Warn("bubblewrap is not installed (" + bwrapPath + "): build and scan commands run WITHOUT a sandbox, with the agent's user; install bubblewrap, or set builder.sandbox: none to say this is intended")
			break
		}
		if err := b.probeSandbox(); err != nil {
			return nil, fmt.Errorf("builder: %s cannot create a sandbox on this host (%v); fix that, or set builder.sandbox: none to run builds unsandboxed", b.bwrap, err)
		}
	}
	mode := SandboxNone
	if b.bwrap != "" {
		mode = SandboxBwrap
	}
	log.Info("builder ready", "sandbox", mode, "workspace_dir", b.dir, "profiles", strings.Join(sortedKeys(cfg.Profiles), ","),
		"scans", strings.Join(sortedKeys(cfg.Scans), ","), "artifacts", cfg.Artifacts)
	return b, nil
}

// probeSandbox runs `true` in a sandbox built like a real one.
func (b *Builder) probeSandbox() error {
	probe := filepath.Join(b.dir, ".sandbox-probe")
	defer removeTree(probe)
	ws := workspace{root: probe, src: filepath.Join(probe, "src"), home: filepath.Join(probe, "home"), tmp: filepath.Join(probe, "tmp")}
	for _, d := range []string{ws.src, ws.home, ws.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := bwrapArgs(b.bwrap, Step{Command: []string{"true"}}, ws, b.cfg.SandboxReadOnly)
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// BuildHandler returns the handler of build tasks.
func (b *Builder) BuildHandler() worker.Handler { return worker.HandlerFunc(b.runBuild) }

// ScanHandler returns the handler of code_scan tasks.
func (b *Builder) ScanHandler() worker.Handler { return worker.HandlerFunc(b.runScan) }

// runBuild clones, builds and uploads. Every refusal happens before
// anything touches the disk. On a failed command it returns the output
// (commit, exit code, log tail) with the error, so the control plane has
// both.
func (b *Builder) runBuild(ctx context.Context, t *worker.Task) (any, error) {
	spec, ok := t.Spec.Kind.(task.Build)
	if !ok {
		return nil, fmt.Errorf("build handler got a %s task", t.Spec.Kind.Name())
	}
	if !allowedRepository(spec.Repository, b.cfg.AllowedRepositories) {
		return nil, fmt.Errorf("repository %q is not in this builder's allowed_repositories (%s)", spec.Repository, strings.Join(b.cfg.AllowedRepositories, ", "))
	}
	profile, ok := b.cfg.Profiles[spec.Profile]
	if !ok {
		return nil, fmt.Errorf("unknown build profile %q; this builder has: %s", spec.Profile, strings.Join(sortedKeys(b.cfg.Profiles), ", "))
	}
	if err := checkBranch(spec.Branch); err != nil {
		return nil, err
	}
	b.prune(time.Now())
	ws := b.workspaceFor(t.Spec.ID)
	release, err := b.acquire(filepath.Base(ws.root))
	if err != nil {
		return nil, err
	}
	defer release()
	if t.Attempt() > 1 {
		// An agent crash or shutdown interrupted the earlier attempt;
		// whatever it left is discarded with the workspace.
		b.log.Info("build interrupted earlier; running it again from a fresh workspace", "task", t.Spec.ID, "attempt", t.Attempt())
		t.Logf("[deckhand] attempt %d: the earlier run was interrupted; starting again from a fresh workspace", t.Attempt())
	}
	if err := ws.fresh(); err != nil {
		return nil, err
	}
	log := newLogSink(t.Logf, b.cfg.MaxLogBytes)
	commit, err := b.clone(ctx, spec.Repository, spec.Branch, ws, log)
	if err != nil {
		return nil, err
	}
	if err := t.Mark("cloned", []byte(commit)); err != nil {
		return nil, err
	}
	log.Printf("[deckhand] commit %s; running build profile %s: %s", commit, spec.Profile, strings.Join(profile.Command, " "))
	out := &task.BuildOutput{Commit: commit}
	res, err := b.runStep(ctx, profile.Step, ws, log)
	out.ExitCode, out.LogTail = res.exitCode, log.Tail(tailLines)
	switch {
	case err != nil:
		return out, fmt.Errorf("build profile %s: %w", spec.Profile, err)
	case res.timedOut:
		return out, fmt.Errorf("build exceeded its timeout of %s (profile %s) and was killed; last lines:\n%s", profile.Timeout.D(), spec.Profile, log.Tail(errorTailLines))
	case res.exitCode != 0:
		return out, fmt.Errorf("build failed with exit code %d: %s", res.exitCode, log.Tail(errorTailLines))
	}
	files, err := findArtifacts(ws.src, b.cfg.Artifacts)
	if err != nil {
		return out, fmt.Errorf("find artifacts: %w", err)
	}
	if len(files) == 0 {
		return out, fmt.Errorf("the build succeeded but produced no artifacts matching %q: nothing to deploy", b.cfg.Artifacts)
	}
	if err := t.Mark("built", nil); err != nil {
		return out, err
	}
	out.Artifacts, err = b.uploadAll(ctx, t.Spec.ID, ws, files, log)
	out.LogTail = log.Tail(tailLines)
	if err != nil {
		return out, err
	}
	if err := ws.writeRecord(record{TaskID: t.Spec.ID, Repository: spec.Repository, Branch: spec.Branch, Profile: spec.Profile, Commit: commit, FinishedAt: time.Now().UTC()}); err != nil {
		return out, fmt.Errorf("record the workspace for the code scan: %w", err)
	}
	b.log.Info("build finished", "task", t.Spec.ID, "commit", commit, "artifacts", len(out.Artifacts))
	return out, nil
}

// runScan runs a scan profile in the workspace of a successful build and
// returns its metrics file verbatim; judging them is the control plane's
// job.
func (b *Builder) runScan(ctx context.Context, t *worker.Task) (any, error) {
	spec, ok := t.Spec.Kind.(task.CodeScan)
	if !ok {
		return nil, fmt.Errorf("code scan handler got a %s task", t.Spec.Kind.Name())
	}
	scan, ok := b.cfg.Scans[spec.Profile]
	if !ok {
		if len(b.cfg.Scans) == 0 {
			return nil, fmt.Errorf("unknown scan profile %q; this builder has no scans configured", spec.Profile)
		}
		return nil, fmt.Errorf("unknown scan profile %q; this builder has: %s", spec.Profile, strings.Join(sortedKeys(b.cfg.Scans), ", "))
	}
	if spec.BuildTaskID == "" {
		return nil, errors.New("code scan names no build task")
	}
	ws := b.workspaceFor(spec.BuildTaskID)
	release, err := b.acquire(filepath.Base(ws.root))
	if err == nil {
		defer release()
	}
	rec, rerr := ws.readRecord()
	if err != nil || errors.Is(rerr, fs.ErrNotExist) || (rerr == nil && rec.TaskID != spec.BuildTaskID) {
		return nil, fmt.Errorf("no workspace of a successful build task %q on this builder (the build failed, ran elsewhere, or its workspace was removed after keep_workspaces %s)", spec.BuildTaskID, b.cfg.KeepWorkspaces.D())
	}
	if rerr != nil {
		return nil, rerr
	}
	// Using the workspace keeps it: pruning counts from the last use.
	now := time.Now()
	_ = os.Chtimes(ws.recordPath(), now, now)
	log := newLogSink(t.Logf, b.cfg.MaxLogBytes)
	log.Printf("[deckhand] scanning commit %s of build %s with scan profile %s: %s", rec.Commit, spec.BuildTaskID, spec.Profile, strings.Join(scan.Command, " "))
	res, err := b.runStep(ctx, scan.Step, ws, log)
	out := &task.CodeScanOutput{ExitCode: res.exitCode, LogTail: log.Tail(tailLines)}
	switch {
	case err != nil:
		return out, fmt.Errorf("scan profile %s: %w", spec.Profile, err)
	case res.timedOut:
		return out, fmt.Errorf("scan exceeded its timeout of %s (profile %s) and was killed; last lines:\n%s", scan.Timeout.D(), spec.Profile, log.Tail(errorTailLines))
	case res.exitCode != 0:
		return out, fmt.Errorf("scan failed with exit code %d: %s", res.exitCode, log.Tail(errorTailLines))
	}
	out.Metrics, err = readMetrics(ws.src, scan.MetricsFile)
	if err != nil {
		return out, err
	}
	return out, nil
}

// readMetrics reads the metrics file through an os.Root, so a metrics_file
// the scan replaced with a symlink out of the checkout is not followed.
func readMetrics(src, name string) ([]byte, error) {
	root, err := os.OpenRoot(src)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the scan succeeded but did not write its metrics file %s", name)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics file %s: %w", name, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("metrics file %s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxMetricsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read metrics file %s: %w", name, err)
	}
	if len(data) > MaxMetricsBytes {
		return nil, fmt.Errorf("metrics file %s is larger than %d bytes", name, MaxMetricsBytes)
	}
	return data, nil
}
