package rollout

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
)

// Schema of the buckets this package owns in the control plane's store:
//
//	deployments/
//	  <deployment id>          -> Deployment (JSON)
//	deploy_steps/
//	  <deployment id>/<key>    -> StepState (JSON), one per planned or cleanup step
//	deploy_events/
//	  <deployment id>/<seq>    -> Event (JSON), seq zero-padded: the event log
//	meta/deploy_seq            -> last deployment number
const (
	bucketDeployments = "deployments"
	bucketSteps       = "deploy_steps"
	bucketEvents      = "deploy_events"
	bucketMeta        = "meta"
)

// State is where a deployment is.
type State string

const (
	StateRunning    State = "RUNNING"
	StateCancelling State = "CANCELLING"
	StateSucceeded  State = "SUCCEEDED"
	StateFailed     State = "FAILED"
	StateCancelled  State = "CANCELLED"
)

// Done reports whether the deployment ended.
func (s State) Done() bool { return s == StateSucceeded || s == StateFailed || s == StateCancelled }

// StepStatus is where a step is.
type StepStatus string

const (
	StepPending   StepStatus = "pending"
	StepRunning   StepStatus = "running"
	StepSucceeded StepStatus = "succeeded"
	StepFailed    StepStatus = "failed"
	StepSkipped   StepStatus = "skipped"
)

// Deployment is a rollout as persisted.
type Deployment struct {
	V          int       `json:"v"`
	ID         string    `json:"id"`
	Request    Request   `json:"request"`
	By         string    `json:"by"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	State      State     `json:"state"`
	Error      string    `json:"error,omitempty"`
	// Cleanup lists the extra steps decided after a failure or a cancel
	// (flush and re-attach what the deployment detached), persisted before
	// they run so a resumed runner finishes them.
	Cleanup []CleanupStep `json:"cleanup,omitempty"`
	// Hosts is each host's final state, filled when the deployment ends.
	Hosts map[string]string `json:"hosts,omitempty"`
	// EventSeq is the last event's number.
	EventSeq uint64 `json:"event_seq"`
}

// CleanupStep is a step added after the plan stopped.
type CleanupStep struct {
	Key  string `json:"key"`
	Host string `json:"host"`
	Pair int    `json:"pair"`
	Kind string `json:"kind"` // lb_attach or cache_flush
}

// StepState is one step's progress.
type StepState struct {
	V          int        `json:"v"`
	Key        string     `json:"key"`
	Host       string     `json:"host"`
	Kind       string     `json:"kind"`
	Pair       int        `json:"pair"`
	Group      int        `json:"group"`
	Status     StepStatus `json:"status"`
	TaskID     string     `json:"task_id,omitempty"`
	StartedAt  time.Time  `json:"started_at,omitzero"`
	FinishedAt time.Time  `json:"finished_at,omitzero"`
	Error      string     `json:"error,omitempty"`
	Summary    string     `json:"summary,omitempty"`
}

// EventKind names an event in a deployment's log.
type EventKind string

const (
	EventDeploymentStarted  EventKind = "deployment.started"
	EventDeploymentResumed  EventKind = "deployment.resumed"
	EventDeploymentFinished EventKind = "deployment.finished"
	EventStepStarted        EventKind = "step.started"
	EventStepFinished       EventKind = "step.finished"
	EventNote               EventKind = "note"
)

// Event is one line of the event log, the record an independent checker
// reads to verify a rollout's invariants.
type Event struct {
	V      int        `json:"v"`
	Seq    uint64     `json:"seq"`
	At     time.Time  `json:"at"`
	Kind   EventKind  `json:"kind"`
	Step   string     `json:"step,omitempty"`
	Task   string     `json:"task,omitempty"` // task kind
	Host   string     `json:"host,omitempty"`
	Pair   int        `json:"pair,omitempty"`
	Status StepStatus `json:"status,omitempty"`
	// Attempts is how many times the agent started the task's work.
	Attempts int    `json:"attempts,omitempty"`
	Message  string `json:"message,omitempty"`
	// State is set on deployment.finished.
	State State `json:"state,omitempty"`
}

// records reads and writes this package's buckets.
type records struct{ b kv.Backend }

func stepKey(id, key string) string { return id + "/" + key }

func (r records) nextID() (string, error) {
	var id string
	err := r.b.Update(func(tx kv.Tx) error {
		n := uint64(0)
		if raw := tx.Get(bucketMeta, "deploy_seq"); raw != nil {
			v, err := strconv.ParseUint(string(raw), 10, 64)
			if err != nil {
				return err
			}
			n = v
		}
		n++
		id = fmt.Sprintf("d%d", n)
		return tx.Put(bucketMeta, "deploy_seq", []byte(strconv.FormatUint(n, 10)))
	})
	return id, err
}

func put(tx kv.Tx, bucket, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, key, raw)
}

// create stores a new deployment with its pending steps and first event.
func (r records) create(d *Deployment, steps []StepState, first Event) error {
	return r.b.Update(func(tx kv.Tx) error {
		d.V = 1
		for i := range steps {
			steps[i].V = 1
			if err := put(tx, bucketSteps, stepKey(d.ID, steps[i].Key), steps[i]); err != nil {
				return err
			}
		}
		return r.appendEvent(tx, d, first)
	})
}

// appendEvent assigns the next sequence number and stores e and d.
func (r records) appendEvent(tx kv.Tx, d *Deployment, e Event) error {
	d.EventSeq++
	e.V, e.Seq = 1, d.EventSeq
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	if err := put(tx, bucketEvents, fmt.Sprintf("%s/%010d", d.ID, e.Seq), e); err != nil {
		return err
	}
	return put(tx, bucketDeployments, d.ID, d)
}

// saveStep stores a step's state and an event about it, in one commit.
func (r records) saveStep(d *Deployment, s StepState, e *Event) error {
	return r.b.Update(func(tx kv.Tx) error {
		s.V = 1
		if err := put(tx, bucketSteps, stepKey(d.ID, s.Key), s); err != nil {
			return err
		}
		if e == nil {
			return put(tx, bucketDeployments, d.ID, d)
		}
		return r.appendEvent(tx, d, *e)
	})
}

func (r records) saveDeployment(d *Deployment, e *Event) error {
	return r.b.Update(func(tx kv.Tx) error {
		if e == nil {
			return put(tx, bucketDeployments, d.ID, d)
		}
		return r.appendEvent(tx, d, *e)
	})
}

func (r records) get(id string) (*Deployment, error) {
	var d Deployment
	err := r.b.View(func(tx kv.Tx) error {
		raw := tx.Get(bucketDeployments, id)
		if raw == nil {
			return kv.ErrNotFound
		}
		return json.Unmarshal(raw, &d)
	})
	if err != nil {
		return nil, err
	}
	return &d, nil
}

func (r records) list() ([]*Deployment, error) {
	var out []*Deployment
	err := r.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketDeployments, "", func(_ string, v []byte) error {
			var d Deployment
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			out = append(out, &d)
			return nil
		})
	})
	return out, err
}

func (r records) steps(id string) (map[string]StepState, error) {
	out := map[string]StepState{}
	err := r.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketSteps, id+"/", func(_ string, v []byte) error {
			var s StepState
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
			out[s.Key] = s
			return nil
		})
	})
	return out, err
}

func (r records) events(id string, after uint64) ([]Event, error) {
	var out []Event
	err := r.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketEvents, id+"/", func(_ string, v []byte) error {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Seq > after {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}
