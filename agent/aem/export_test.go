package aem

import (
	"context"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// Progress lets tests run the handler without a worker.
type Progress = progress

// SetHook makes h call f at each failpoint; an error returned by f makes
// Run return at once, as if the agent died there.
func SetHook(h *Handler, f func(ctx context.Context, point string, id aempkg.ID) error) { h.hook = f }

// RunWith runs the handler's work for arts with p standing in for the task.
func RunWith(ctx context.Context, h *Handler, p Progress, arts []task.Artifact) (*task.PackageInstallOutput, error) {
	return h.run(ctx, p, arts)
}

// SetAfter replaces the client's timer (backoff and polling).
func SetAfter(c *Client, after func(time.Duration) <-chan time.Time) { c.after = after }
