package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// Drift buckets:
//
//	drift/
//	  <host>\x00<report id>\x00<n, 4 digits>  -> DriftRecord (JSON)
const bucketDrift = "drift"

// DriftRecord is one change an agent saw in its dispatcher config tree
// that no Deckhand task made.
type DriftRecord struct {
	V          int       `json:"v"`
	Host       string    `json:"host"`
	ReportID   string    `json:"report"`
	Path       string    `json:"path"`
	Kind       string    `json:"kind"`
	From       string    `json:"from,omitempty"`
	Before     string    `json:"before,omitempty"`
	After      string    `json:"after,omitempty"`
	Severity   string    `json:"severity"`
	At         time.Time `json:"at"`
	ReceivedAt time.Time `json:"received_at"`
	// ResolvedBy names the deploy or restore task that replaced the tree
	// after the change.
	ResolvedBy string `json:"resolved_by,omitempty"`
}

// AddDrift stores a report's records. A report already stored (the agent
// sent it again before it saw the ack) is not stored twice.
func (s *Store) AddDrift(host, reportID string, recs []DriftRecord) error {
	return s.b.Update(func(tx Tx) error {
		prefix := host + "\x00" + reportID + "\x00"
		exists := false
		if err := tx.ForEach(bucketDrift, prefix, func(string, []byte) error { exists = true; return nil }); err != nil {
			return err
		}
		if exists {
			return nil
		}
		for i, r := range recs {
			r.V, r.Host, r.ReportID = 1, host, reportID
			raw, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := tx.Put(bucketDrift, fmt.Sprintf("%s%04d", prefix, i), raw); err != nil {
				return err
			}
		}
		return nil
	})
}

// ResolveDrift marks host's unresolved drift as replaced by taskID.
func (s *Store) ResolveDrift(host, taskID string) (int, error) {
	n := 0
	err := s.b.Update(func(tx Tx) error {
		n = 0
		type kv struct {
			k string
			r DriftRecord
		}
		var todo []kv
		err := tx.ForEach(bucketDrift, host+"\x00", func(k string, v []byte) error {
			var r DriftRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if r.ResolvedBy == "" {
				todo = append(todo, kv{k, r})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, x := range todo {
			x.r.ResolvedBy = taskID
			raw, err := json.Marshal(x.r)
			if err != nil {
				return err
			}
			if err := tx.Put(bucketDrift, x.k, raw); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Drift lists drift records of host (all hosts when empty), oldest first;
// resolved ones only when all is true.
func (s *Store) Drift(host string, all bool) ([]DriftRecord, error) {
	var out []DriftRecord
	prefix := ""
	if host != "" {
		prefix = host + "\x00"
	}
	err := s.b.View(func(tx Tx) error {
		return tx.ForEach(bucketDrift, prefix, func(k string, v []byte) error {
			var r DriftRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if all || r.ResolvedBy == "" {
				out = append(out, r)
			}
			return nil
		})
	})
	return out, err
}
