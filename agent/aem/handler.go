package aem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/failpoint"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// Outcome statuses (task.PackageOutcome.Status).
const (
	StatusInstalled = "installed"
	StatusSkipped   = "skipped"
	StatusFailed    = "failed"
)

// Journal marks, each followed by the package's group:name:version.
const (
	// MarkInstalling is journaled before a package is uploaded. Seen on a
	// later attempt without MarkInstalled, it means the interrupted run may
	// have an install in flight, so that attempt reconciles before it
	// uploads or installs anything.
	MarkInstalling = "installing:"
	// MarkInstalled is journaled once cmd=ls shows the package installed;
	// its data is installedMark as JSON. A later attempt never touches a
	// package with this mark.
	MarkInstalled = "installed:"
)

// Failpoints (pkg/failpoint) where the handler's progress becomes durable
// on AEM or in the journal.
const (
	// FailpointAfterUpload: uploaded, install not sent.
	FailpointAfterUpload = "aem/after-upload"
	// FailpointAfterInstall: AEM answered the install (or reconciliation
	// found it installed); not yet verified nor journaled.
	FailpointAfterInstall = "aem/after-install"
	// FailpointAfterMark: verified and journaled as installed.
	FailpointAfterMark = "aem/after-mark"
)

// installedMark is the data of a MarkInstalled mark.
type installedMark struct {
	SHA256  string        `json:"sha256"`
	Message string        `json:"message,omitempty"`
	Took    time.Duration `json:"took"`
	Attempt int           `json:"attempt"`
}

// Handler runs PackageInstall tasks against the AEM instance of this host.
//
// Run returns a *task.PackageInstallOutput, also when it fails. Outcomes
// are listed in install order: "installed" (by this attempt or, as the
// message says, an earlier interrupted one), "skipped" ("already
// installed" on AEM before the task), or "failed" with AEM's message
// verbatim when AEM reported the failure. A run that gets through every
// package then lists the packages left out as superseded by a higher
// version or listed twice, as "skipped".
//
// When a package fails, Run stops: the packages after it in install order
// were not attempted and are omitted from the output (the task's error
// says how many). A refusal before any install (an artifact that cannot be
// fetched or is not a content package, two artifacts with one package id,
// a dependency cycle or unsatisfiable dependency, cmd=ls failing) leaves
// the output empty except for the artifact at fault, if there is one.
type Handler struct {
	Client  *Client
	Fetcher artifacts.Fetcher
	Logger  hclog.Logger

	// hook, when set, is called at each failpoint after failpoint.Hit; an
	// error makes Run return at once, as if the agent died there (tests).
	hook func(ctx context.Context, point string, id aempkg.ID) error

	// busy holds one token: one package install task talks to AEM at a
	// time, so two tasks cannot interleave their dependency orders and a
	// reconciliation waits only for installs of its own task.
	busy     chan struct{}
	busyOnce sync.Once
}

// NewHandler builds a handler with a client for cfg. A nil logger discards.
func NewHandler(cfg *Config, fetcher artifacts.Fetcher, log hclog.Logger) (*Handler, error) {
	if fetcher == nil {
		return nil, errors.New("aem: no artifact fetcher")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c, err := NewClient(cfg, log.Named("client"))
	if err != nil {
		return nil, err
	}
	return &Handler{Client: c, Fetcher: fetcher, Logger: log}, nil
}

// progress is what the handler needs of its task; *worker.Task has it.
// An interface so the benchmark can run the handler without a worker.
type progress interface {
	Attempt() int
	Entry() journal.Entry
	Mark(name string, data []byte) error
	Logf(format string, args ...any)
}

// Run implements worker.Handler for task.PackageInstall.
func (h *Handler) Run(ctx context.Context, t *worker.Task) (any, error) {
	var arts []task.Artifact
	switch k := t.Spec.Kind.(type) {
	case task.PackageInstall:
		arts = k.Packages
	case *task.PackageInstall:
		arts = k.Packages
	default:
		return nil, fmt.Errorf("aem: the package install handler got a %T task", t.Spec.Kind)
	}
	h.busyOnce.Do(func() { h.busy = make(chan struct{}, 1) })
	select {
	case h.busy <- struct{}{}:
		defer func() { <-h.busy }()
	case <-ctx.Done():
		return &task.PackageInstallOutput{Packages: []task.PackageOutcome{}},
			fmt.Errorf("waiting for another package install task to finish: %w", context.Cause(ctx))
	}
	// Always a non-nil *PackageInstallOutput: a typed nil in the interface
	// would reach the wire encoder as a nil pointer.
	return h.run(ctx, t, arts)
}

// item is one artifact of the task, fetched and read.
type item struct {
	art  task.Artifact
	path string
	pkg  *aempkg.Package
}

func (h *Handler) log() hclog.Logger {
	if h.Logger == nil {
		return hclog.NewNullLogger()
	}
	return h.Logger
}

func (h *Handler) point(ctx context.Context, name string, id aempkg.ID) error {
	failpoint.Hit(name)
	if h.hook != nil {
		return h.hook(ctx, name, id)
	}
	return nil
}

func artifactName(a task.Artifact) string {
	if a.Name != "" {
		return a.Name
	}
	return "sha256:" + a.SHA256
}

func (h *Handler) run(ctx context.Context, t progress, arts []task.Artifact) (*task.PackageInstallOutput, error) {
	out := &task.PackageInstallOutput{Packages: []task.PackageOutcome{}}
	fail := func(id, sha string, start time.Time, msg string) {
		out.Packages = append(out.Packages, task.PackageOutcome{ID: id, Status: StatusFailed, Message: msg, Took: time.Since(start), SHA256: sha})
	}
	if len(arts) == 0 {
		return out, nil
	}
	log := h.log()
	if t.Attempt() > 1 {
		log.Info("resuming an interrupted package install", "attempt", t.Attempt(), "marks", len(t.Entry().Marks))
		t.Logf("resuming (attempt %d): packages journaled as installed are not touched again", t.Attempt())
	}

	// Everything is fetched and read before AEM is touched, so a bad
	// artifact fails the task with nothing half-deployed.
	items := make(map[*aempkg.Package]item, len(arts))
	byID := make(map[aempkg.ID]item, len(arts))
	pkgs := make([]*aempkg.Package, 0, len(arts))
	for _, a := range arts {
		start := time.Now()
		path, err := h.Fetcher.Fetch(ctx, a)
		if err != nil {
			fail(artifactName(a), a.SHA256, start, "fetch: "+err.Error())
			return out, fmt.Errorf("fetch package %s: %w", artifactName(a), err)
		}
		p, err := aempkg.ReadFile(path)
		if err != nil {
			fail(artifactName(a), a.SHA256, start, "not a readable AEM content package: "+err.Error())
			return out, fmt.Errorf("package %s: %w", artifactName(a), err)
		}
		if prev, dup := byID[p.ID]; dup && prev.art.SHA256 != a.SHA256 {
			// AEM would keep whichever was uploaded last; which one the
			// deployment meant cannot be guessed.
			fail(p.ID.String(), a.SHA256, start, fmt.Sprintf("artifacts %s and %s both contain package %s with different content", artifactName(prev.art), artifactName(a), p.ID))
			return out, fmt.Errorf("two different artifacts contain package %s", p.ID)
		}
		it := item{art: a, path: path, pkg: p}
		items[p], byID[p.ID] = it, it
		pkgs = append(pkgs, p)
	}

	listing, err := h.Client.List(ctx)
	if err != nil {
		return out, fmt.Errorf("list the packages on AEM: %w", err)
	}
	// The control plane ordered the packages already; ordering again
	// against what this instance has installed catches a dependency that
	// only this instance lacks, before anything is installed.
	ordered, err := aempkg.Order(pkgs, listing.InstalledIDs())
	if err != nil {
		return out, fmt.Errorf("refusing to install any package: %w", err)
	}
	_, superseded := aempkg.Dedupe(pkgs)

	entry := t.Entry()
	for i, p := range ordered {
		it := items[p]
		id := p.ID
		start := time.Now()
		outcome := func(status, msg string) task.PackageOutcome {
			return task.PackageOutcome{ID: id.String(), Status: status, Message: msg, Took: time.Since(start), SHA256: it.art.SHA256}
		}
		stop := func(msg string, err error) (*task.PackageInstallOutput, error) {
			t.Logf("%s failed: %s", id, msg)
			out.Packages = append(out.Packages, outcome(StatusFailed, msg))
			if rest := len(ordered) - i - 1; rest > 0 {
				return out, fmt.Errorf("package %s failed (%d later packages not attempted): %w", id, rest, err)
			}
			return out, fmt.Errorf("package %s failed: %w", id, err)
		}

		if m, ok := entry.Mark(MarkInstalled + id.String()); ok {
			// Verified by an earlier attempt. It is not installed again even
			// if AEM no longer lists it installed: that is someone else's
			// change, and a task installs each package at most once.
			var d installedMark
			_ = json.Unmarshal(m.Data, &d)
			if info, found := listing.Find(id); !found || !info.Installed() {
				return stop("journaled as installed and verified by an earlier attempt of this task, but cmd=ls now lists it as not installed (uninstalled or AEM restored meanwhile?); not installing it a second time within this task",
					errors.New("installed earlier in this task, no longer installed"))
			}
			o := outcome(StatusInstalled, fmt.Sprintf("installed and verified by attempt %d of this task", d.Attempt))
			o.Took = d.Took
			out.Packages = append(out.Packages, o)
			continue
		}

		if entry.Has(MarkInstalling + id.String()) {
			// An earlier attempt began this package and was interrupted;
			// its install may still be running in AEM. Find out before
			// uploading (a forced upload over a running install) or
			// installing (twice).
			log.Info("an interrupted attempt began this package; reconciling", "package", id)
			installed, err := h.Client.Reconcile(ctx, id)
			if err != nil {
				return stop("an interrupted attempt began installing this package and its outcome could not be established: "+err.Error(), err)
			}
			if installed {
				if err := h.markInstalled(t, it, start, "installed by an interrupted earlier attempt"); err != nil {
					return stop(err.Error(), err)
				}
				out.Packages = append(out.Packages, outcome(StatusInstalled, "installed by an interrupted earlier attempt of this task; verified with cmd=ls"))
				continue
			}
		} else if info, found := listing.Find(id); found && info.Installed() {
			t.Logf("%s is already installed; skipped", id)
			out.Packages = append(out.Packages, outcome(StatusSkipped, "already installed"))
			continue
		}

		t.Logf("installing %s (%d of %d)", id, i+1, len(ordered))
		if err := t.Mark(MarkInstalling+id.String(), nil); err != nil {
			return stop(err.Error(), err)
		}
		stored, err := h.Client.Upload(ctx, it.path, id.DownloadName())
		if err != nil {
			return stop(failureMessage("upload", err), err)
		}
		if stored != "" && stored != id.Path() {
			// AEM read the package's identity differently from aempkg;
			// installing at our path would hit "no package" or another one.
			err := fmt.Errorf("AEM stored the upload at %s, expected %s", stored, id.Path())
			return stop(err.Error(), err)
		}
		if err := h.point(ctx, FailpointAfterUpload, id); err != nil {
			return out, err
		}
		res, err := h.Client.Install(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				// AEM does not abort an install when its client goes away.
				return stop("interrupted while the install was in progress; AEM may still complete it (see cmd=ls): "+err.Error(), err)
			}
			return stop(failureMessage("install", err), err)
		}
		if err := h.point(ctx, FailpointAfterInstall, id); err != nil {
			return out, err
		}
		// AEM's "Package installed" is not taken on trust: the next
		// package may depend on this one being installed.
		listing, err = h.Client.List(ctx)
		if err != nil {
			return stop("installed, but cmd=ls could not confirm it: "+err.Error(), err)
		}
		if info, found := listing.Find(id); !found || !info.Installed() {
			err := fmt.Errorf("AEM answered %q but cmd=ls does not list %s as installed", res.Msg, id)
			return stop(err.Error(), err)
		}
		if err := h.markInstalled(t, it, start, res.Msg); err != nil {
			return stop(err.Error(), err)
		}
		if err := h.point(ctx, FailpointAfterMark, id); err != nil {
			return out, err
		}
		t.Logf("installed %s in %v", id, time.Since(start).Round(time.Millisecond))
		out.Packages = append(out.Packages, outcome(StatusInstalled, res.Msg))
	}

	for _, p := range superseded {
		msg := "listed twice in the task; installed once"
		for _, k := range ordered {
			if k.ID.GroupName() == p.ID.GroupName() && k.ID != p.ID {
				msg = "superseded by " + k.ID.String() + " in the same task (only the highest version is installed)"
			}
		}
		out.Packages = append(out.Packages, task.PackageOutcome{ID: p.ID.String(), Status: StatusSkipped, Message: msg, SHA256: items[p].art.SHA256})
	}
	return out, nil
}

// markInstalled journals that it.pkg is verified installed.
func (h *Handler) markInstalled(t progress, it item, start time.Time, msg string) error {
	data, _ := json.Marshal(installedMark{SHA256: it.art.SHA256, Message: msg, Took: time.Since(start), Attempt: t.Attempt()})
	if err := t.Mark(MarkInstalled+it.pkg.ID.String(), data); err != nil {
		return fmt.Errorf("installed and verified, but the journal could not record it: %w", err)
	}
	return nil
}

// failureMessage is the outcome message for a failed step: AEM's own text
// verbatim when AEM reported the failure, the whole error otherwise.
func failureMessage(step string, err error) string {
	var ae *Error
	if errors.As(err, &ae) {
		return ae.Msg
	}
	return step + ": " + err.Error()
}
