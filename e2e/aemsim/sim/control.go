package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// The control API for tests. It is deliberately unauthenticated: it is the
// test harness's side door, not part of AEM, and keeping it outside Basic
// auth means auth tests and the request log only ever see Package Manager
// traffic. The simulator is meant to listen on loopback only.
//
//	GET    /_sim/health          {"ok":true}
//	GET    /_sim/faults          active faults
//	POST   /_sim/faults          add one Fault or an array of them; returns them with ids
//	DELETE /_sim/faults[?id=N]   remove one fault, or all
//	GET    /_sim/requests        the request log ([]Request)
//	DELETE /_sim/requests        empty the request log
//	GET    /_sim/packages        []PackageState
//	GET    /_sim/installs        {"group:name:version": times installed by logged requests}
func (s *Sim) serveControl(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/_sim/health":
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	case "/_sim/faults":
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.Faults())
		case http.MethodPost:
			s.postFaults(w, r)
		case http.MethodDelete:
			if v := r.URL.Query().Get("id"); v != "" {
				id, err := strconv.ParseInt(v, 10, 64)
				if err != nil || !s.RemoveFault(id) {
					writeJSON(w, http.StatusNotFound, map[string]string{"error": "no fault " + v})
					return
				}
			} else {
				s.ClearFaults()
			}
			writeJSON(w, http.StatusOK, s.Faults())
		default:
			methodNotAllowed(w)
		}
	case "/_sim/requests":
		switch r.Method {
		case http.MethodGet:
			writeJSON(w, http.StatusOK, s.Requests())
		case http.MethodDelete:
			s.ResetRequests()
			writeJSON(w, http.StatusOK, []Request{})
		default:
			methodNotAllowed(w)
		}
	case "/_sim/packages":
		if r.Method != http.MethodGet {
			methodNotAllowed(w)
			return
		}
		writeJSON(w, http.StatusOK, s.Packages())
	case "/_sim/installs":
		if r.Method != http.MethodGet {
			methodNotAllowed(w)
			return
		}
		writeJSON(w, http.StatusOK, s.InstallCounts())
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown control endpoint " + r.URL.Path})
	}
}

func (s *Sim) postFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	var faults []Fault
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(trimmed, &faults)
	} else {
		var f Fault
		err = json.Unmarshal(trimmed, &f)
		faults = []Fault{f}
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid fault JSON: " + err.Error()})
		return
	}
	// Validate all before adding any, so a bad batch changes nothing.
	for _, f := range faults {
		if err := f.validate(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
	}
	added := make([]Fault, 0, len(faults))
	for _, f := range faults {
		a, _ := s.AddFault(f)
		added = append(added, a)
	}
	writeJSON(w, http.StatusOK, added)
}

func methodNotAllowed(w http.ResponseWriter) {
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
