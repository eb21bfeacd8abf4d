package api

// The HTTP/JSON API: pipeline executions in the shape of Adobe Cloud
// Manager's execution API (routes, status codes, HAL JSON), the program and
// pipeline listings, the emergency-mode switch and an SSE stream of
// execution events. docs/api.md is its reference. This file holds the
// router, authentication and the helpers every handler shares; the
// handlers are in http_exec.go and http_events.go, the listener in
// http_server.go.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/hashicorp/go-hclog"
)

// MaxBodyBytes bounds every request body; the largest legitimate one (a
// gate override listing every metric) is a few kilobytes.
const MaxBodyBytes = 64 << 10

// DefaultSSEHeartbeat is how often an idle event stream gets a comment,
// so proxies and clients see it is alive.
const DefaultSSEHeartbeat = 15 * time.Second

// HTTP is the HTTP API handler. Fields are set once before it serves.
type HTTP struct {
	Pipelines *pipeline.Manager
	Config    *config.Config
	// Auth resolves bearer tokens and admin certificates (Auth.PKI, nil in
	// --dev-insecure mode) and writes the audit log.
	Auth   *auth.Authorizer
	Logger hclog.Logger
	// Heartbeat is the SSE heartbeat interval; 0 means DefaultSSEHeartbeat.
	Heartbeat time.Duration

	once sync.Once
	mux  *http.ServeMux
}

// Route patterns. Every one needs an authenticated operator; the role each
// needs is checked in its handler (advance and cancel depend on the step).
const (
	pathPipeline = "/api/program/{programId}/pipeline/{pipelineId}"
	pathStep     = pathPipeline + "/execution/{executionId}/phase/{phaseId}/step/{stepId}"
)

func (h *HTTP) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/programs", h.listPrograms)
	m.HandleFunc("GET /api/program/{programId}", h.getProgram)
	m.HandleFunc("PUT /api/program/{programId}/emergency", h.setEmergency)
	m.HandleFunc("GET /api/program/{programId}/pipelines", h.listPipelines)
	m.HandleFunc("GET "+pathPipeline, h.getPipeline)
	m.HandleFunc("PUT "+pathPipeline+"/execution", h.startExecution)
	m.HandleFunc("GET "+pathPipeline+"/execution", h.currentExecution)
	m.HandleFunc("GET "+pathPipeline+"/execution/{executionId}", h.getExecution)
	m.HandleFunc("GET "+pathPipeline+"/executions", h.listExecutions)
	m.HandleFunc("GET "+pathStep, h.getStep)
	m.HandleFunc("PUT "+pathStep+"/advance", h.advanceStep)
	m.HandleFunc("PUT "+pathStep+"/cancel", h.cancelStep)
	m.HandleFunc("GET "+pathStep+"/logs", h.stepLogs)
	m.HandleFunc("GET "+pathStep+"/metrics", h.stepMetrics)
	m.HandleFunc("GET "+pathPipeline+"/events", h.events)
	h.mux = m
}

// ServeHTTP implements http.Handler. Unknown paths and wrong methods get a
// problem document like every other error, not the mux's plain text.
func (h *HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.routes)
	if _, pattern := h.mux.Handler(r); pattern == "" {
		// The mux answers 404 or 405 (with Allow); keep its verdict and
		// headers, replace its body.
		rec := &statusRecorder{header: http.Header{}}
		h.mux.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		code := rec.code
		if code == 0 {
			code = http.StatusNotFound
		}
		detail := "no such route: " + r.URL.Path
		if code == http.StatusMethodNotAllowed {
			detail = fmt.Sprintf("%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.header.Get("Allow"))
		}
		problem(w, code, detail)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// statusRecorder keeps only the status and headers of the mux's own
// 404/405 answers.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}

func (h *HTTP) log() hclog.Logger {
	if h.Logger == nil {
		return hclog.NewNullLogger()
	}
	return h.Logger
}

// errUnauthenticated and errForbidden classify authentication failures:
// no usable credential (401) or a credential that is not an operator's
// (403).
var (
	errUnauthenticated = auth.ErrUnauthenticated
	errForbidden       = errors.New("forbidden")
)

// caller resolves the operator behind a request, in the gRPC API's order:
// a bearer token, then an admin client certificate, then (--dev-insecure
// only) everyone is an admin. A host certificate is refused: hosts are not
// operators.
func (h *HTTP) caller(r *http.Request) (auth.Caller, error) {
	if v := r.Header.Get("Authorization"); v != "" {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if !ok {
			return auth.Caller{}, fmt.Errorf("%w: the Authorization header must be \"Bearer <token>\"", errUnauthenticated)
		}
		return h.Auth.ResolveToken(strings.TrimSpace(tok))
	}
	if h.Auth.PKI != nil && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		who, _, err := h.Auth.PKI.PeerTLS(r.TLS)
		if err != nil {
			return auth.Caller{}, fmt.Errorf("%w: %v", errUnauthenticated, err)
		}
		if who.Kind != identity.KindAdmin {
			return auth.Caller{Name: who.String()}, fmt.Errorf("%w: %s presented a %s certificate; the API takes operator credentials (a bearer token or an admin certificate)", errForbidden, who, who.Kind)
		}
		adm, err := h.Auth.Store.Admin(who.Name)
		if err != nil {
			return auth.Caller{}, fmt.Errorf("%w: admin %q from the certificate is not known", errUnauthenticated, who.Name)
		}
		roles := make([]auth.Role, 0, len(adm.Roles))
		for _, x := range adm.Roles {
			roles = append(roles, auth.Role(x))
		}
		return auth.Caller{Name: adm.Name, Roles: roles, Via: "certificate"}, nil
	}
	if h.Auth.Insecure {
		return auth.Caller{Name: "dev-insecure", Roles: []auth.Role{auth.Admin}, Via: "dev-insecure"}, nil
	}
	return auth.Caller{}, fmt.Errorf("%w: give a bearer token (Authorization: Bearer <token>) or an admin client certificate", errUnauthenticated)
}

// request is one authenticated call being handled.
type request struct {
	h *HTTP
	w http.ResponseWriter
	r *http.Request
	c auth.Caller
	// action and target name a mutating call in the audit log; empty for
	// reads, which are not audited.
	action, target string
}

// begin authenticates the caller and checks the viewer role every route
// needs. action, when not empty, makes the call audited: its denials here
// and its outcome later (done, fail). ok false means the answer was sent.
func (h *HTTP) begin(w http.ResponseWriter, r *http.Request, action, target string) (*request, bool) {
	q := &request{h: h, w: w, r: r, action: action, target: target}
	c, err := h.caller(r)
	q.c = c
	if err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, errForbidden) {
			code = http.StatusForbidden
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="deckhand"`)
		}
		q.deny(code, err.Error())
		return nil, false
	}
	if !q.need(auth.Viewer) {
		return nil, false
	}
	return q, true
}

// need checks that the caller holds one of roles (admin holds all) and
// answers 403 naming them when not.
func (q *request) need(roles ...auth.Role) bool {
	for _, r := range roles {
		if q.c.Has(r) {
			return true
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	what := q.action
	if what == "" {
		what = "reading " + q.r.URL.Path
	}
	have := "no roles"
	if len(q.c.Roles) > 0 {
		hs := make([]string, len(q.c.Roles))
		for i, r := range q.c.Roles {
			hs[i] = string(r)
		}
		have = strings.Join(hs, ", ")
	}
	q.deny(http.StatusForbidden, fmt.Sprintf("%s needs the %s role; %s has %s", what, strings.Join(names, " or "), q.c.Name, have))
	return false
}

// deny answers code and, for audited calls and every 403, writes the
// denial to the audit log (as the gRPC interceptor does).
func (q *request) deny(code int, detail string) {
	if q.action != "" || code == http.StatusForbidden {
		who := q.c.Name
		if who == "" {
			who = "unauthenticated"
		}
		action := q.action
		if action == "" {
			action = "http " + q.r.Method + " " + q.r.URL.Path
		}
		q.h.Auth.Record(who, action, q.target, "denied: "+detail, "via http")
	}
	problem(q.w, code, detail)
}

// fail answers an error from the pipeline manager (mapped by
// statusOf) and audits it for mutating calls.
func (q *request) fail(err error) {
	code := statusOf(err)
	if code == http.StatusInternalServerError {
		q.h.log().Error("HTTP API call failed", "method", q.r.Method, "path", q.r.URL.Path, "caller", q.c.Name, "error", err)
	}
	if q.action != "" {
		q.h.Auth.Record(q.c.Name, q.action, q.target, "error: "+err.Error(), "via http")
	}
	problem(q.w, code, err.Error())
}

// done audits a successful mutating call.
func (q *request) done(detail string) {
	if q.action != "" {
		if detail != "" {
			detail += "; "
		}
		q.h.Auth.Record(q.c.Name, q.action, q.target, "ok", detail+"via http")
	}
}

// statusOf maps the pipeline manager's errors to HTTP statuses.
func statusOf(err error) int {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadRequest), errors.Is(err, pipeline.ErrBadInput), errors.Is(err, pipeline.ErrEmergencyDisabled):
		return http.StatusBadRequest
	case errors.Is(err, pipeline.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, pipeline.ErrBusy):
		return http.StatusPreconditionFailed
	case errors.Is(err, pipeline.ErrNotWaiting):
		// The step is not in a state that takes this answer (already
		// answered, not waiting yet, or the execution ended).
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// errBadRequest marks malformed requests (400).
var errBadRequest = errors.New("bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// Problem is the error document of every failed call (RFC 9457 style).
type Problem struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func problem(w http.ResponseWriter, code int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = encoder(w).Encode(Problem{Status: code, Title: http.StatusText(code), Detail: detail})
}

// encoder writes JSON without HTML escaping: the API serves no HTML, and
// links with "&" and details with "<token>" stay readable.
func encoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// reply writes v as JSON with code; HAL resources are application/hal+json.
func reply(w http.ResponseWriter, code int, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = encoder(w).Encode(v)
}

const halJSON = "application/hal+json"

// decodeBody reads a size-limited JSON object into v. Unknown fields,
// trailing data and malformed JSON are 400s. An empty body is allowed only
// when optional; it returns false then.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) (bool, error) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return false, fmt.Errorf("the request body is larger than %d bytes: %w", MaxBodyBytes, err)
		}
		return false, badRequest("reading the request body: %v", err)
	}
	if strings.TrimSpace(string(raw)) == "" {
		if optional {
			return false, nil
		}
		return false, badRequest("a JSON request body is required")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return false, badRequest("the request body is not valid: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return false, badRequest("the request body has data after the JSON object")
	}
	return true, nil
}

// stamp formats a time as Cloud Manager does (RFC 3339, UTC,
// milliseconds); the zero time is "" so omitempty leaves it out.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// link is a HAL link.
type link struct {
	Href string `json:"href"`
}

type links map[string]link

func programPath(p string) string          { return "/api/program/" + p }
func pipelinePath(p, pl string) string     { return programPath(p) + "/pipeline/" + pl }
func executionPath(p, pl, e string) string { return pipelinePath(p, pl) + "/execution/" + e }
func stepPath(e *pipeline.Execution, s *pipeline.Step) string {
	return executionPath(e.ProgramID, e.PipelineID, e.ID) + "/phase/" + s.PhaseID + "/step/" + s.ID
}
