package sim

import (
	"time"
)

// Outcomes of a request as the client saw it (Request.Outcome) and of the
// operation itself (Request.Performed).
const (
	// OutcomeSuccess: AEM reported success.
	OutcomeSuccess = "success"
	// OutcomeFailure: AEM reported a failure in the body (success:false, or
	// a status code other than 200 in a service.jsp response).
	OutcomeFailure = "failure"
	// OutcomeUnauthorized: missing or wrong credentials, 401.
	OutcomeUnauthorized = "unauthorized"
	// OutcomeNotFound: no such endpoint, 404.
	OutcomeNotFound = "not-found"
	// OutcomeInjected500: an http-500 fault answered.
	OutcomeInjected500 = "injected-500"
	// OutcomeDropped: a drop fault closed the connection; Status is 0.
	OutcomeDropped = "dropped"
	// OutcomeUnavailable: the simulator was shutting down, 503.
	OutcomeUnavailable = "unavailable"
	// OutcomeInProgress: the request is still being handled.
	OutcomeInProgress = "in-progress"
)

// Request is one entry of the request log. /_sim/ requests are not logged.
type Request struct {
	// Seq numbers requests from 1 in arrival order.
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	// Cmd is the Package Manager command: upload, install, uninstall,
	// delete, build, ls, installstatus, or what the client sent.
	Cmd string `json:"cmd,omitempty"`
	// Package is the group:name:version the request was about, when known.
	Package string `json:"package,omitempty"`
	// User is the authenticated user; empty when authentication failed.
	User string `json:"user,omitempty"`
	// Params are the other request parameters (force, install, recursive,
	// acHandling, dependencyHandling, name, ...).
	Params map[string]string `json:"params,omitempty"`
	// Status is the HTTP status written; 0 for a dropped connection.
	Status int `json:"status"`
	// Outcome is what the client saw (Outcome* constants).
	Outcome string `json:"outcome"`
	// Performed is the result of the operation itself, success or failure,
	// which differs from Outcome when an http-500 or drop fault fired after
	// the operation; empty when the operation was not carried out.
	Performed string `json:"performed,omitempty"`
	// Msg is the message AEM returned (or would have).
	Msg string `json:"msg,omitempty"`
	// Installed lists the packages this request installed, in order:
	// dependencies installed on the way first, the requested package last.
	Installed []string `json:"installed,omitempty"`
	// Duration is how long the request took to handle.
	Duration Duration `json:"duration"`
	// ClientGone is set when the client had disconnected before the
	// response was ready (typically a client timeout during a slow install).
	ClientGone bool `json:"clientGone,omitempty"`
}

func (r *Request) clone() Request {
	c := *r
	if r.Params != nil {
		c.Params = make(map[string]string, len(r.Params))
		for k, v := range r.Params {
			c.Params[k] = v
		}
	}
	c.Installed = append([]string(nil), r.Installed...)
	return c
}

// startRequest appends a log entry for a request that just arrived.
func (s *Sim) startRequest(method, path string) *Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextSeq++
	r := &Request{Seq: s.nextSeq, Time: s.cfg.Now(), Method: method, Path: path, Outcome: OutcomeInProgress}
	s.requests = append(s.requests, r)
	return r
}

// updateRequest changes a log entry under the lock.
func (s *Sim) updateRequest(r *Request, f func(*Request)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(r)
}

// Requests returns a copy of the request log, oldest first.
func (s *Sim) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.requests))
	for _, r := range s.requests {
		out = append(out, r.clone())
	}
	return out
}

// ResetRequests empties the request log; sequence numbers keep counting.
func (s *Sim) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// InstallCounts counts, per package id, how many times requests in the log
// installed it (dependencies included). A test asserting "no package was
// installed twice" checks that every count is 1.
func (s *Sim) InstallCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[string]int{}
	for _, r := range s.requests {
		for _, id := range r.Installed {
			counts[id]++
		}
	}
	return counts
}
