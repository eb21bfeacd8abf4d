package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
)

// Endpoints served (all but /_sim/ need Basic auth).
const (
	jsonServicePath   = "/crx/packmgr/service/.json"
	legacyServicePath = "/crx/packmgr/service.jsp"
	installStatusPath = "/crx/packmgr/installstatus.jsp"
)

// maxFieldBytes bounds one non-file multipart field.
const maxFieldBytes = 64 << 10

// response is a fully formed answer; handlers build it, ServeHTTP writes it
// (or replaces it with an injected fault).
type response struct {
	status      int
	contentType string
	body        []byte
	outcome     string // OutcomeSuccess, OutcomeFailure or OutcomeNotFound
	msg         string
}

// call is one authenticated Package Manager request, parsed.
type call struct {
	user   string
	cmd    string
	fields map[string]string
	upload *upload // the uploaded file, nil when there is none or once stored
	// fileName is the client's name of the uploaded file, echoed by service.jsp.
	fileName   string
	crxVersion string
	rec        *Request
}

// upload is a file part saved to the data directory's tmp/.
type upload struct {
	tmp  string // relative to the data directory
	size int64
}

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_sim" || strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.serveControl(w, r)
		return
	}
	start := time.Now()
	rec := s.startRequest(r.Method, r.URL.Path)
	if cmd := r.URL.Query().Get("cmd"); cmd != "" {
		// Known before auth, so even refused requests show what they wanted.
		s.updateRequest(rec, func(q *Request) { q.Cmd = cmd })
	}

	s.mu.Lock()
	if s.closed() {
		s.mu.Unlock()
		s.finish(rec, start, r, http.StatusServiceUnavailable, OutcomeUnavailable, "", "shutting down")
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	// Add under s.mu while not closed, so it never races Close's Wait.
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()

	user, ok := s.authenticate(r)
	if !ok {
		s.finish(rec, start, r, http.StatusUnauthorized, OutcomeUnauthorized, "", "")
		w.Header().Set("WWW-Authenticate", `Basic realm="Sling (Development)"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	s.updateRequest(rec, func(q *Request) { q.User = user })

	c := &call{user: user, rec: rec, crxVersion: s.cfg.CRXVersion, fields: queryFields(r)}
	var handle func(*call) response
	known := true // a Package Manager endpoint, subject to http-500 and drop faults
	switch p := r.URL.Path; {
	case p == jsonServicePath || p == jsonServicePath+"/" || strings.HasPrefix(p, jsonServicePath+"/"):
		pkgPath := strings.TrimPrefix(strings.TrimPrefix(p, jsonServicePath), "/")
		if pkgPath != "" {
			pkgPath = "/" + pkgPath
		}
		if r.Method != http.MethodPost {
			handle = func(*call) response {
				// Unverified: AEM's servlet only answers POST here.
				return jsonResponse(http.StatusMethodNotAllowed, false, "Only POST is supported", "")
			}
			break
		}
		if err := s.readForm(w, r, c, "package"); err != nil {
			handle = failedForm(err, false)
			break
		}
		handle = func(c *call) response { return s.serveJSON(c, pkgPath) }
		if id, ok := s.lookupPath(pkgPath); ok {
			// Name the package in the log even when a fault answers
			// before the command runs.
			s.updateRequest(rec, func(q *Request) { q.Package = id.String() })
		}
	case p == legacyServicePath:
		if r.Method == http.MethodPost {
			if err := s.readForm(w, r, c, "file"); err != nil {
				handle = failedForm(err, true)
				break
			}
		}
		handle = s.serveLegacy
		if c.fields["cmd"] == "" && c.upload != nil {
			c.cmd = "upload"
		}
	case p == installStatusPath:
		c.cmd = "installstatus"
		handle = s.serveInstallStatus
	default:
		known = false
		handle = func(*call) response {
			return response{status: http.StatusNotFound, contentType: "text/plain; charset=utf-8", body: []byte("404 Not Found\n"), outcome: OutcomeNotFound}
		}
	}
	if c.cmd == "" {
		c.cmd = c.fields["cmd"]
	}
	defer c.cleanup(s)
	s.updateRequest(rec, func(q *Request) {
		q.Cmd = c.cmd
		for k, v := range c.fields {
			if k == "cmd" {
				continue
			}
			if q.Params == nil {
				q.Params = map[string]string{}
			}
			q.Params[k] = v
		}
	})

	if known && s.injectFault(w, r, rec, start, c.cmd, false, "") {
		return
	}
	resp := handle(c)
	performed := resp.outcome
	if !known {
		performed = ""
	}
	if known && s.injectFault(w, r, rec, start, c.cmd, true, performed) {
		return
	}
	s.finish(rec, start, r, resp.status, resp.outcome, performed, resp.msg)
	w.Header().Set("Content-Type", resp.contentType)
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

// injectFault applies a drop or http-500 fault for cmd, before (after=false)
// or after the request was carried out; it reports whether it answered.
func (s *Sim) injectFault(w http.ResponseWriter, r *http.Request, rec *Request, start time.Time, cmd string, after bool, performed string) bool {
	s.mu.Lock()
	var f Fault
	ok := false
	for _, kind := range []FaultKind{FaultDrop, FaultHTTP500} {
		if f, ok = s.takeFaultLocked(kind, cmd, after); ok {
			break
		}
	}
	s.mu.Unlock()
	if !ok {
		return false
	}
	if f.Kind == FaultDrop {
		s.finish(rec, start, r, 0, OutcomeDropped, performed, fmt.Sprintf("fault %d: connection dropped", f.ID))
		dropConnection(w)
		return true
	}
	s.finish(rec, start, r, http.StatusInternalServerError, OutcomeInjected500, performed, fmt.Sprintf("fault %d: HTTP 500", f.ID))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, "<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1><p>Simulated fault.</p></body></html>\n")
	return true
}

// dropConnection closes the client connection without writing anything. An
// abortive close (RST) makes it look like a crashed or killed server.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
			return
		}
	}
	// Not hijackable (HTTP/2): make the server reset the stream.
	panic(http.ErrAbortHandler)
}

// finish completes a request's log entry and logs it.
func (s *Sim) finish(rec *Request, start time.Time, r *http.Request, status int, outcome, performed, msg string) {
	gone := r.Context().Err() != nil
	s.updateRequest(rec, func(q *Request) {
		q.Status = status
		q.Outcome = outcome
		q.Performed = performed
		q.Msg = msg
		q.Duration = Duration(time.Since(start))
		q.ClientGone = gone
	})
	s.log.Info("request", "seq", rec.Seq, "method", r.Method, "path", r.URL.Path, "cmd", rec.Cmd,
		"package", rec.Package, "user", rec.User, "status", status, "outcome", outcome, "msg", msg,
		"duration", time.Since(start), "client_gone", gone)
}

func queryFields(r *http.Request) map[string]string {
	fields := map[string]string{}
	for k, vs := range r.URL.Query() {
		if len(vs) > 0 {
			fields[k] = vs[0]
		}
	}
	return fields
}

// readForm adds form fields to c.fields (which holds the query parameters;
// a query parameter wins over a form field of the same name) and saves the
// file part named fileField to tmp/. Other file parts are read and discarded.
func (s *Sim) readForm(w http.ResponseWriter, r *http.Request, c *call, fileField string) error {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes+1<<20)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			return err
		}
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			name := part.FormName()
			if name == fileField && c.upload == nil {
				if err := s.saveUpload(c, part); err != nil {
					return err
				}
				continue
			}
			if part.FileName() != "" {
				if _, err := io.Copy(io.Discard, part); err != nil {
					return err
				}
				continue
			}
			v, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				return err
			}
			if len(v) > maxFieldBytes {
				return fmt.Errorf("form field %q is larger than %d bytes", name, maxFieldBytes)
			}
			if _, dup := c.fields[name]; !dup {
				c.fields[name] = string(v)
			}
		}
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return err
		}
		for k, vs := range r.PostForm {
			if _, dup := c.fields[k]; !dup && len(vs) > 0 {
				c.fields[k] = vs[0]
			}
		}
	}
	return nil
}

func (s *Sim) saveUpload(c *call, part io.Reader) error {
	f, tmp, err := s.store.createUpload()
	if err != nil {
		return err
	}
	c.upload = &upload{tmp: tmp}
	if p, ok := part.(interface{ FileName() string }); ok {
		c.fileName = p.FileName()
	}
	n, err := io.Copy(f, io.LimitReader(part, s.cfg.MaxUploadBytes+1))
	if err == nil && n > s.cfg.MaxUploadBytes {
		err = fmt.Errorf("package is larger than %d bytes", s.cfg.MaxUploadBytes)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	c.upload.size = n
	return err
}

// cleanup removes an upload that was not moved into place.
func (c *call) cleanup(s *Sim) {
	if c.upload != nil {
		_ = s.store.root.Remove(c.upload.tmp)
	}
}

// failedForm answers a request whose body could not be read.
func failedForm(err error, legacy bool) func(*call) response {
	return func(c *call) response {
		var tooBig *http.MaxBytesError
		msg := "Unable to read request: " + err.Error()
		if errors.As(err, &tooBig) {
			msg = fmt.Sprintf("Request body larger than %d bytes", tooBig.Limit)
		}
		if legacy {
			return xmlResponse(c, nil, http.StatusInternalServerError, msg)
		}
		return jsonResponse(http.StatusOK, false, msg, "")
	}
}

// jsonResult is the body of every JSON service answer.
type jsonResult struct {
	Success bool   `json:"success"`
	Msg     string `json:"msg"`
	Path    string `json:"path,omitempty"`
}

func jsonResponse(status int, success bool, msg, path string) response {
	body, _ := json.Marshal(jsonResult{Success: success, Msg: msg, Path: path})
	outcome := OutcomeFailure
	if success {
		outcome = OutcomeSuccess
	}
	return response{status: status, contentType: "application/json;charset=utf-8", body: append(body, '\n'), outcome: outcome, msg: msg}
}
