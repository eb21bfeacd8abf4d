package api

import (
	"bytes"
	"fmt"
	"net/http"
	"time"
)

// EventJSON is the data of one "execution" event on the SSE stream.
type EventJSON struct {
	At          string `json:"at"`
	ExecutionID string `json:"executionId"`
	ProgramID   string `json:"programId"`
	PipelineID  string `json:"pipelineId"`
	StepID      string `json:"stepId,omitempty"`
	Action      string `json:"action,omitempty"`
	// Status is the step's status when StepID is set, else the
	// execution's.
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
	Links   links  `json:"_links"`
}

// events is GET .../events: a text/event-stream of the pipeline's
// execution events, one "execution" event per pipeline.Event, with a
// heartbeat comment when idle. There is no replay: a client that
// reconnects reads the execution (GET .../execution) to catch up. A slow
// client loses events rather than slowing executions (pipeline.Subscribe).
func (h *HTTP) events(w http.ResponseWriter, r *http.Request) {
	program, pl := r.PathValue("programId"), r.PathValue("pipelineId")
	q, ok := h.begin(w, r, "", "")
	if !ok || !q.pipelineKnown(program, pl) {
		return
	}
	rc := http.NewResponseController(w)
	// Subscribe before answering, so a client that saw the response
	// headers sees every event from then on.
	ch, cancel := h.Pipelines.Subscribe()
	defer cancel()
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: 3000\n: events of %s/%s\n\n", program, pl); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	every := h.Heartbeat
	if every <= 0 {
		every = DefaultSSEHeartbeat
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-r.Context().Done():
			// The client went away, or the server is stopping (its base
			// context is cancelled).
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil {
				return
			}
		case ev, open := <-ch:
			if !open {
				return
			}
			if ev.ProgramID != program || ev.PipelineID != pl {
				continue
			}
			n++
			var data bytes.Buffer
			err := encoder(&data).Encode(EventJSON{
				At: stamp(ev.At), ExecutionID: ev.ExecutionID, ProgramID: ev.ProgramID, PipelineID: ev.PipelineID,
				StepID: ev.StepID, Action: ev.Action, Status: ev.Status, Message: ev.Message,
				Links: links{"execution": {executionPath(ev.ProgramID, ev.PipelineID, ev.ExecutionID)}},
			})
			if err != nil {
				return
			}
			// Encode ends the JSON with its only newline, so the data is
			// one line.
			if _, err := fmt.Fprintf(w, "id: %d\nevent: execution\ndata: %s\n", n, data.Bytes()); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
