package agent

import (
	"fmt"

	"github.com/deckhand-dev/deckhand/agent/journal"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
)

// driftQueue journals drift reports and hands them to the session until
// the server acks them (session.DriftSource).
type driftQueue struct {
	j       *journal.Journal
	log     hclog.Logger
	changed chan struct{}
}

func newDriftQueue(j *journal.Journal, log hclog.Logger) *driftQueue {
	return &driftQueue{j: j, log: log, changed: make(chan struct{}, 1)}
}

// Report journals events as one report; it is durable when Report returns.
func (q *driftQueue) Report(events []*pb.DriftEvent) error {
	if len(events) == 0 {
		return nil
	}
	_, err := q.j.AddDrift(func(id string) ([]byte, error) {
		return proto.Marshal(&pb.DriftReport{Id: id, Events: events})
	})
	if err != nil {
		return fmt.Errorf("journal drift: %w", err)
	}
	select {
	case q.changed <- struct{}{}:
	default:
	}
	return nil
}

func (q *driftQueue) Pending() ([]*pb.DriftReport, error) {
	entries, err := q.j.PendingDrift()
	if err != nil {
		return nil, err
	}
	out := make([]*pb.DriftReport, 0, len(entries))
	for _, e := range entries {
		var r pb.DriftReport
		if err := proto.Unmarshal(e.Report, &r); err != nil {
			q.log.Error("unreadable journaled drift report; dropping it", "id", e.ID, "error", err)
			q.Ack(e.ID)
			continue
		}
		out = append(out, &r)
	}
	return out, nil
}

func (q *driftQueue) Ack(id string) {
	if err := q.j.AckDrift(id); err != nil {
		q.log.Warn("drift ack not recorded", "id", id, "error", err)
	}
}

func (q *driftQueue) Changed() <-chan struct{} { return q.changed }
