package agent

import (
	"context"

	"github.com/deckhand-dev/deckhand/agent/drift"
	"github.com/deckhand-dev/deckhand/agent/worker"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// newDriftWatcher watches the dispatcher's httpd tree; its events become
// journaled drift reports.
func (a *Agent) newDriftWatcher() (*drift.Watcher, error) {
	d := a.cfg.Dispatcher
	return drift.New(drift.Config{Dir: d.HTTPDDir, Immutable: d.Immutable}, func(evs []drift.Event) {
		out := make([]*pb.DriftEvent, 0, len(evs))
		for _, e := range evs {
			out = append(out, &pb.DriftEvent{Path: e.Path, Kind: e.Kind, From: e.From, BeforeSha256: e.Before, AfterSha256: e.After,
				Severity: e.Severity, At: timestamppb.New(e.At)})
			a.log.Warn("configuration changed outside Deckhand", "path", e.Path, "kind", e.Kind, "severity", e.Severity)
			a.metrics.Drift(e.Severity)
		}
		if err := a.drift.Report(out); err != nil {
			a.log.Error("cannot journal drift", "error", err)
		}
	}, a.log.Named("drift"))
}

// quiet wraps a handler that rewrites the watched tree so its own changes
// (and its crash recovery's) are not reported as drift.
type quiet struct {
	h worker.Handler
	w *drift.Watcher
}

func (q quiet) Run(ctx context.Context, t *worker.Task) (any, error) {
	release := q.w.Suppress()
	defer release()
	return q.h.Run(ctx, t)
}

// quietRecoverer keeps the Recoverer of the wrapped handler visible.
type quietRecoverer struct {
	quiet
	r worker.Recoverer
}

func (q quietRecoverer) Recover(ctx context.Context, t *worker.Task) (any, error, bool) {
	release := q.w.Suppress()
	defer release()
	return q.r.Recover(ctx, t)
}

func silence(h worker.Handler, w *drift.Watcher) worker.Handler {
	q := quiet{h: h, w: w}
	if r, ok := h.(worker.Recoverer); ok {
		return quietRecoverer{quiet: q, r: r}
	}
	return q
}
