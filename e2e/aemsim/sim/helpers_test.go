package sim_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	user     = "admin"
	password = "s3cret"
)

// env is one simulator behind an httptest server, with a client of its own.
type env struct {
	t      *testing.T
	sim    *sim.Sim
	srv    *httptest.Server
	dir    string
	client *http.Client
}

// testLogger writes hclog lines to the test log at trace level, so a failing
// conformance test reads as the story of its requests.
func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Trace, Output: testWriter{t}})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// start runs a simulator on dir (a new temp dir when empty).
func start(t *testing.T, dir string, opts ...func(*sim.Config)) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := sim.Config{User: user, Password: password, DataDir: dir, Logger: testLogger(t, "aemsim")}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := sim.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	e := &env{t: t, sim: s, srv: srv, dir: dir, client: &http.Client{Transport: &http.Transport{}}}
	t.Cleanup(e.stop)
	return e
}

// stop closes everything; safe to call twice.
func (e *env) stop() {
	e.client.CloseIdleConnections()
	e.srv.Close()
	require.NoError(e.t, e.sim.Close())
}

func (e *env) url(path string) string { return e.srv.URL + path }

// do sends a request with the right credentials.
func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	req.SetBasicAuth(user, password)
	resp, err := e.client.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp, body
}

// multipartBody builds a multipart form with fields and one file part.
func multipartBody(t *testing.T, fields map[string]string, fileField, fileName string, data []byte) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		require.NoError(t, mw.WriteField(k, v))
	}
	if fileField != "" {
		fw, err := mw.CreateFormFile(fileField, fileName)
		require.NoError(t, err)
		_, err = fw.Write(data)
		require.NoError(t, err)
	}
	require.NoError(t, mw.Close())
	return &buf, mw.FormDataContentType()
}

// jsonResult is the JSON service's answer.
type jsonResult struct {
	Success bool   `json:"success"`
	Msg     string `json:"msg"`
	Path    string `json:"path"`
}

func decodeJSON(t *testing.T, resp *http.Response, body []byte) jsonResult {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Contains(t, resp.Header.Get("Content-Type"), "application/json")
	var r jsonResult
	require.NoError(t, json.Unmarshal(body, &r), "body: %s", body)
	return r
}

// uploadReq builds the JSON service upload of pkg.
func (e *env) uploadReq(pkg []byte, force bool) *http.Request {
	fields := map[string]string{}
	if force {
		fields["force"] = "true"
	}
	body, ct := multipartBody(e.t, fields, "package", "pkg.zip", pkg)
	req, err := http.NewRequest(http.MethodPost, e.url("/crx/packmgr/service/.json?cmd=upload"), body)
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", ct)
	return req
}

func (e *env) upload(pkg []byte, force bool) jsonResult {
	e.t.Helper()
	resp, body := e.do(e.uploadReq(pkg, force))
	return decodeJSON(e.t, resp, body)
}

// cmdReq builds a JSON service command on a package path, cmd in the query.
func (e *env) cmdReq(cmd, pkgPath string, params url.Values) *http.Request {
	q := url.Values{"cmd": {cmd}}
	for k, v := range params {
		q[k] = v
	}
	req, err := http.NewRequest(http.MethodPost, e.url("/crx/packmgr/service/.json"+pkgPath+"?"+q.Encode()), nil)
	require.NoError(e.t, err)
	return req
}

func (e *env) cmd(cmd, pkgPath string, params url.Values) jsonResult {
	e.t.Helper()
	resp, body := e.do(e.cmdReq(cmd, pkgPath, params))
	return decodeJSON(e.t, resp, body)
}

// crx is the service.jsp XML.
type crx struct {
	XMLName   xml.Name `xml:"crx"`
	Version   string   `xml:"version,attr"`
	User      string   `xml:"user,attr"`
	Workspace string   `xml:"workspace,attr"`
	Request   struct {
		Params []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"param"`
	} `xml:"request"`
	Response struct {
		Data struct {
			Packages *struct {
				Package []lsPackage `xml:"package"`
			} `xml:"packages"`
			Package *lsPackage `xml:"package"`
		} `xml:"data"`
		Status struct {
			Code int    `xml:"code,attr"`
			Text string `xml:",chardata"`
		} `xml:"status"`
	} `xml:"response"`
}

type lsPackage struct {
	Group          string `xml:"group"`
	Name           string `xml:"name"`
	Version        string `xml:"version"`
	DownloadName   string `xml:"downloadName"`
	Size           int64  `xml:"size"`
	Created        string `xml:"created"`
	CreatedBy      string `xml:"createdBy"`
	LastModified   string `xml:"lastModified"`
	LastModifiedBy string `xml:"lastModifiedBy"`
	LastUnpacked   string `xml:"lastUnpacked"`
	LastUnpackedBy string `xml:"lastUnpackedBy"`
}

// installed is how a client tells an installed package from a listing.
func (p lsPackage) installed() bool { return p.LastUnpackedBy != "" && p.LastUnpackedBy != "null" }

func decodeCRX(t *testing.T, resp *http.Response, body []byte) crx {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Contains(t, resp.Header.Get("Content-Type"), "xml")
	var c crx
	require.NoError(t, xml.Unmarshal(body, &c), "body: %s", body)
	return c
}

// ls returns the listing, keyed by group:name:version.
func (e *env) ls() map[string]lsPackage {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url("/crx/packmgr/service.jsp?cmd=ls"), nil)
	require.NoError(e.t, err)
	resp, body := e.do(req)
	c := decodeCRX(e.t, resp, body)
	require.Equal(e.t, 200, c.Response.Status.Code)
	require.NotNil(e.t, c.Response.Data.Packages, "body: %s", body)
	out := map[string]lsPackage{}
	for _, p := range c.Response.Data.Packages.Package {
		out[p.Group+":"+p.Name+":"+p.Version] = p
	}
	return out
}

// installStatus returns installstatus.jsp's finished and itemCount.
func (e *env) installStatus() (bool, int) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url("/crx/packmgr/installstatus.jsp"), nil)
	require.NoError(e.t, err)
	resp, body := e.do(req)
	require.Equal(e.t, http.StatusOK, resp.StatusCode)
	var st struct {
		Status struct {
			Finished  *bool `json:"finished"`
			ItemCount *int  `json:"itemCount"`
		} `json:"status"`
	}
	require.NoError(e.t, json.Unmarshal(body, &st), "body: %s", body)
	require.NotNil(e.t, st.Status.Finished)
	require.NotNil(e.t, st.Status.ItemCount)
	return *st.Status.Finished, *st.Status.ItemCount
}

// postFaults adds faults through the control endpoint.
func (e *env) postFaults(body string) []sim.Fault {
	e.t.Helper()
	resp, err := e.client.Post(e.url("/_sim/faults"), "application/json", strings.NewReader(body))
	require.NoError(e.t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	require.Equal(e.t, http.StatusOK, resp.StatusCode, "body: %s", data)
	var out []sim.Fault
	require.NoError(e.t, json.Unmarshal(data, &out))
	return out
}

// requests reads the request log through the control endpoint.
func (e *env) requests() []sim.Request {
	e.t.Helper()
	resp, err := e.client.Get(e.url("/_sim/requests"))
	require.NoError(e.t, err)
	defer resp.Body.Close()
	var out []sim.Request
	require.NoError(e.t, json.NewDecoder(resp.Body).Decode(&out))
	return out
}

// lastRequest returns the newest logged request with cmd.
func (e *env) lastRequest(cmd string) sim.Request {
	e.t.Helper()
	reqs := e.requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Cmd == cmd {
			return reqs[i]
		}
	}
	e.t.Fatalf("no %s request in the log", cmd)
	return sim.Request{}
}

func pkgZip(group, name, version, deps string) []byte {
	return aempkgtest.Package(aempkgtest.Spec{Group: group, Name: name, Version: version, Dependencies: deps})
}

func pkgPath(group, name, version string) string {
	return "/etc/packages/" + group + "/" + name + "-" + version + ".zip"
}

// parseCRXDate checks a service.jsp date.
func parseCRXDate(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse("Mon, 02 Jan 2006 15:04:05 -0700", s)
	require.NoError(t, err, "date %q", s)
	return tm
}
