package pipeline

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/kv"
)

// Buckets this package owns in the control plane's store:
//
//	executions/
//	  <program>/<pipeline>/<id, 10 digits>  -> Execution (JSON)
//	exec_index/
//	  <id>                                  -> "<program>/<pipeline>"
//	exec_logs/
//	  <id>/<step id>/<seq, 10 digits>       -> one log line (text)
//	program_flags/
//	  <program>                             -> programFlags (JSON)
//	meta/exec_seq                           -> last execution number
const (
	bucketExecutions = "executions"
	bucketExecIndex  = "exec_index"
	bucketExecLogs   = "exec_logs"
	bucketFlags      = "program_flags"
	bucketMeta       = "meta"
)

type programFlags struct {
	V         int       `json:"v"`
	Emergency bool      `json:"emergency"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
}

type records struct{ b kv.Backend }

func execKey(program, pipeline, id string) string {
	n, _ := strconv.Atoi(id)
	return fmt.Sprintf("%s/%s/%010d", program, pipeline, n)
}

func (r records) nextID() (string, error) {
	var id string
	err := r.b.Update(func(tx kv.Tx) error {
		n := 0
		if raw := tx.Get(bucketMeta, "exec_seq"); raw != nil {
			v, err := strconv.Atoi(string(raw))
			if err != nil {
				return err
			}
			n = v
		}
		n++
		id = strconv.Itoa(n)
		return tx.Put(bucketMeta, "exec_seq", []byte(id))
	})
	return id, err
}

func (r records) save(e *Execution) error {
	e.V = 1
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return r.b.Update(func(tx kv.Tx) error {
		if err := tx.Put(bucketExecutions, execKey(e.ProgramID, e.PipelineID, e.ID), raw); err != nil {
			return err
		}
		return tx.Put(bucketExecIndex, e.ID, []byte(e.ProgramID+"/"+e.PipelineID))
	})
}

func (r records) get(id string) (*Execution, error) {
	var e Execution
	err := r.b.View(func(tx kv.Tx) error {
		where := tx.Get(bucketExecIndex, id)
		if where == nil {
			return kv.ErrNotFound
		}
		prog, pipe, _ := strings.Cut(string(where), "/")
		raw := tx.Get(bucketExecutions, execKey(prog, pipe, id))
		if raw == nil {
			return kv.ErrNotFound
		}
		return json.Unmarshal(raw, &e)
	})
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// list returns a pipeline's executions, newest first.
func (r records) list(program, pipeline string) ([]*Execution, error) {
	var out []*Execution
	err := r.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketExecutions, program+"/"+pipeline+"/", func(_ string, v []byte) error {
			var e Execution
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, &e)
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool {
		x, _ := strconv.Atoi(out[a].ID)
		y, _ := strconv.Atoi(out[b].ID)
		return x > y
	})
	return out, err
}

func (r records) all() ([]*Execution, error) {
	var out []*Execution
	err := r.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketExecutions, "", func(_ string, v []byte) error {
			var e Execution
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, &e)
			return nil
		})
	})
	return out, err
}

func (r records) appendLog(execID, stepID string, lines ...string) error {
	return r.b.Update(func(tx kv.Tx) error {
		prefix := execID + "/" + stepID + "/"
		n := 0
		if raw := tx.Get(bucketMeta, "log_seq/"+execID+"/"+stepID); raw != nil {
			n, _ = strconv.Atoi(string(raw))
		}
		for _, l := range lines {
			n++
			if err := tx.Put(bucketExecLogs, fmt.Sprintf("%s%010d", prefix, n), []byte(l)); err != nil {
				return err
			}
		}
		return tx.Put(bucketMeta, "log_seq/"+execID+"/"+stepID, []byte(strconv.Itoa(n)))
	})
}

func (r records) logs(execID, stepID string) ([]string, error) {
	var out []string
	err := r.b.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketExecLogs, execID+"/"+stepID+"/", func(_ string, v []byte) error {
			out = append(out, string(v))
			return nil
		})
	})
	return out, err
}

func (r records) flags(program string) (programFlags, bool, error) {
	var f programFlags
	found := false
	err := r.b.View(func(tx kv.Tx) error {
		raw := tx.Get(bucketFlags, program)
		if raw == nil {
			return nil
		}
		found = true
		return json.Unmarshal(raw, &f)
	})
	return f, found, err
}

func (r records) setFlags(program string, f programFlags) error {
	f.V = 1
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return r.b.Update(func(tx kv.Tx) error { return tx.Put(bucketFlags, program, raw) })
}
