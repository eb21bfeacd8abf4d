package aem

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/backoff"
)

// Package Manager endpoints, relative to the base URL (AEM-APIS.md §1).
const (
	jsonServicePath   = "/crx/packmgr/service/.json"
	legacyServicePath = "/crx/packmgr/service.jsp"
	installStatusPath = "/crx/packmgr/installstatus.jsp"
)

// Bounds on answers read into memory. A listing of a big instance is a few
// MiB; JSON answers are a line.
const (
	maxJSONBody    = 1 << 20
	maxListingBody = 64 << 20
	snippetLen     = 200
)

// ErrUnauthorized is wrapped by the error for an HTTP 401 or 403 answer:
// AEM refused the configured user or password, or the user may not use the
// Package Manager. It is never retried: the next try would fail the same
// way, and repeated failures can lock the account.
var ErrUnauthorized = errors.New("AEM refused the credentials")

// Error is a failure AEM reported in an answer's body: success:false from
// the JSON service, or a status code other than 200 inside a service.jsp
// listing. It is final; sending the request again would not help. Msg is
// AEM's text verbatim.
type Error struct {
	// Op is upload, install or ls.
	Op string
	// Package is group:name:version, or the uploaded file's name for an
	// upload whose package AEM did not name; empty for ls.
	Package string
	Msg     string
}

func (e *Error) Error() string {
	if e.Package == "" {
		return fmt.Sprintf("aem %s: AEM reported failure: %s", e.Op, e.Msg)
	}
	return fmt.Sprintf("aem %s %s: AEM reported failure: %s", e.Op, e.Package, e.Msg)
}

// HTTPError is an answer that is not a usable Package Manager answer: an
// HTTP status other than 200 (but not 401/403), or a 200 whose body is not
// what the Package Manager sends (a proxy's or login page, a truncated
// body). 5xx answers are transient and retried.
type HTTPError struct {
	Op         string
	URL        string
	StatusCode int
	// Reason says what was wrong with a 200 answer; empty otherwise.
	Reason string
	// Body is the start of the answer, for the operator.
	Body string
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "aem %s: %s: HTTP %d", e.Op, e.URL, e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		b.WriteString(" " + t)
	}
	if e.Reason != "" {
		b.WriteString(": " + e.Reason)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, " (answer began %q)", e.Body)
	}
	return b.String()
}

// TransportError is a request that got no HTTP answer: connection refused
// or reset, a dropped connection, or the request timeout. For an install,
// AEM may or may not have carried it out.
type TransportError struct {
	Op  string
	URL string
	Err error
	// Timeout is set when the request timeout (not the caller's context)
	// ended the request.
	Timeout bool
}

func (e *TransportError) Error() string {
	if e.Timeout {
		return fmt.Sprintf("aem %s: %s: no answer within the request timeout: %v", e.Op, e.URL, e.Err)
	}
	return fmt.Sprintf("aem %s: %s: %v", e.Op, e.URL, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// transient reports whether sending the same idempotent request again may
// succeed.
func transient(err error) bool {
	var te *TransportError
	if errors.As(err, &te) {
		// A certificate AEM's TLS does not pass will not pass next time.
		var unknownCA x509.UnknownAuthorityError
		var hostname x509.HostnameError
		var invalid x509.CertificateInvalidError
		var verify *tls.CertificateVerificationError
		return !errors.As(err, &unknownCA) && !errors.As(err, &hostname) &&
			!errors.As(err, &invalid) && !errors.As(err, &verify)
	}
	var he *HTTPError
	return errors.As(err, &he) && he.StatusCode >= 500
}

// ambiguous reports whether an install that failed with err may
// nevertheless have been carried out (or may still be running): AEM got
// the request, or may have, and its answer was lost or unusable.
func ambiguous(err error) bool {
	if transient(err) {
		return true
	}
	var he *HTTPError
	return errors.As(err, &he) && he.StatusCode == http.StatusOK
}

// Client talks to the CRX Package Manager of one AEM instance. It is safe
// for concurrent use, but AEM serialises installs, so callers install one
// package at a time.
type Client struct {
	base        *url.URL
	user        string
	password    string
	set         settings
	depHandling string
	hc          *http.Client
	log         hclog.Logger
	// after is the timer behind backoff and polling; tests may replace it.
	after func(time.Duration) <-chan time.Time
}

// NewClient validates cfg, reads the password file if one is configured,
// and returns a client. It does not contact AEM. A nil logger discards.
func NewClient(cfg *Config, log hclog.Logger) (*Client, error) {
	if cfg == nil {
		return nil, errors.New("aem: no config")
	}
	if err := cfg.Validate("agent config"); err != nil {
		return nil, err
	}
	password := cfg.Password
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("aem.password_file: %w", err)
		}
		password = strings.TrimSpace(string(b))
		if password == "" {
			return nil, fmt.Errorf("aem.password_file %s is empty", cfg.PasswordFile)
		}
	}
	base, _ := url.Parse(strings.TrimRight(cfg.BaseURL, "/")) // checked by Validate
	if log == nil {
		log = hclog.NewNullLogger()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	// AEM is on this host or next to it: a proxy from the environment
	// would only add a party that sees the credentials.
	tr.Proxy = nil
	return &Client{
		base:        base,
		user:        cfg.User,
		password:    password,
		set:         cfg.settings(),
		depHandling: cfg.DependencyHandling,
		hc: &http.Client{
			Transport: tr,
			// A redirect here is a login page or a misconfigured base_url;
			// following it would send the POST somewhere unintended.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		log:   log,
		after: time.After,
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// BaseURL is the instance's URL as configured.
func (c *Client) BaseURL() string { return c.base.String() }

func (c *Client) endpoint(p string, q url.Values) *url.URL {
	u := c.base.JoinPath(p)
	u.RawQuery = q.Encode()
	return u
}

// do sends one request, bounded by timeout, and returns the body of a 200
// answer. build makes the request (called once; a fresh body each call of
// do). Errors: ctx's own error (wrapped) when ctx ended, *TransportError,
// ErrUnauthorized (wrapped), *HTTPError.
func (c *Client) do(ctx context.Context, op string, timeout time.Duration, limit int64, build func(ctx context.Context) (*http.Request, error)) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := build(rctx)
	if err != nil {
		return nil, fmt.Errorf("aem %s: %w", op, err)
	}
	req.SetBasicAuth(c.user, c.password)
	where := req.URL.String()
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportErr(ctx, rctx, op, where, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, c.transportErr(ctx, rctx, op, where, err)
	}
	c.log.Trace("aem request", "op", op, "url", where, "status", resp.StatusCode, "took", time.Since(start))
	switch code := resp.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return nil, fmt.Errorf("aem %s: %s: HTTP %d: %w of user %q (check aem.user and aem.password or aem.password_file in the agent config)",
			op, where, code, ErrUnauthorized, c.user)
	case code != http.StatusOK:
		return nil, &HTTPError{Op: op, URL: where, StatusCode: code, Body: snippet(body)}
	case int64(len(body)) > limit:
		return nil, &HTTPError{Op: op, URL: where, StatusCode: code, Reason: fmt.Sprintf("answer larger than %d bytes", limit)}
	}
	return body, nil
}

func (c *Client) transportErr(ctx, rctx context.Context, op, where string, err error) error {
	if ctx.Err() != nil {
		// The caller gave up (task cancelled or timed out); not AEM's fault
		// and not to be retried.
		return fmt.Errorf("aem %s: %s: %w", op, where, context.Cause(ctx))
	}
	return &TransportError{Op: op, URL: where, Err: err, Timeout: rctx.Err() != nil}
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > snippetLen {
		s = s[:snippetLen] + "..."
	}
	return s
}

// retry runs fn until it succeeds, fails in a way that is not transient,
// or has been retried the configured number of times, waiting a jittered
// backoff between tries. Only for requests that are safe to repeat.
func (c *Client) retry(ctx context.Context, op string, fn func() error) error {
	b := c.newBackoff()
	for try := 1; ; try++ {
		err := fn()
		if err == nil || !transient(err) {
			return err
		}
		if try > c.set.retries {
			return fmt.Errorf("%w (gave up after %d tries)", err, try)
		}
		d := b.Next()
		c.log.Warn("transient AEM failure; retrying", "op", op, "try", try, "retry_in", d, "error", err)
		if serr := backoff.Sleep(ctx, d, c.after); serr != nil {
			return fmt.Errorf("%w (while waiting to retry: %w)", err, context.Cause(ctx))
		}
	}
}

func (c *Client) newBackoff() *backoff.Backoff {
	b := backoff.New(c.set.baseBackoff, c.set.maxBackoff)
	b.After = c.after
	return b
}

// jsonAnswer is the body of every JSON service answer.
type jsonAnswer struct {
	Success *bool  `json:"success"`
	Msg     string `json:"msg"`
	Path    string `json:"path"`
}

// parseJSONAnswer reads a JSON service answer. success:false becomes an
// *Error carrying AEM's msg; a body that is not such an answer becomes an
// *HTTPError (HTTP 200 with a Reason).
func parseJSONAnswer(op, pkg, where string, body []byte) (jsonAnswer, error) {
	var a jsonAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.Success == nil {
		return a, &HTTPError{Op: op, URL: where, StatusCode: http.StatusOK,
			Reason: "not a Package Manager answer (no JSON with \"success\")", Body: snippet(body)}
	}
	if !*a.Success {
		return a, &Error{Op: op, Package: pkg, Msg: a.Msg}
	}
	return a, nil
}

// Upload uploads the package zip at path with force=true, replacing an
// uploaded package of the same id, and returns the repository path AEM
// stored it at (/etc/packages/<group>/<name>-<version>.zip). fileName is
// the name the upload carries (conventionally <name>-<version>.zip).
//
// Transient failures are retried: repeating a forced upload is harmless for
// a package that is not installed. Do not upload a package that is
// installed: AEM re-creates the package node and forgets that it was.
func (c *Client) Upload(ctx context.Context, path, fileName string) (string, error) {
	// The multipart framing is built once; the file is streamed from disk
	// on every try, with an exact Content-Length (some proxies in front of
	// AEM refuse chunked uploads).
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("force", "true"); err != nil {
		return "", err
	}
	if _, err := mw.CreateFormFile("package", fileName); err != nil {
		return "", err
	}
	head := bytes.Clone(buf.Bytes())
	buf.Reset()
	if err := mw.Close(); err != nil {
		return "", err
	}
	tail := bytes.Clone(buf.Bytes())
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("aem upload: %w", err)
	}
	u := c.endpoint(jsonServicePath, url.Values{"cmd": {"upload"}})
	var stored string
	err = c.retry(ctx, "upload", func() error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("aem upload: %w", err)
		}
		defer f.Close()
		body, err := c.do(ctx, "upload", c.set.requestTimeout, maxJSONBody, func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(),
				io.MultiReader(bytes.NewReader(head), f, bytes.NewReader(tail)))
			if err != nil {
				return nil, err
			}
			req.ContentLength = int64(len(head)) + st.Size() + int64(len(tail))
			req.Header.Set("Content-Type", mw.FormDataContentType())
			return req, nil
		})
		if err != nil {
			return err
		}
		a, err := parseJSONAnswer("upload", fileName, u.String(), body)
		if err != nil {
			return err
		}
		stored = a.Path
		return nil
	})
	return stored, err
}

// InstallResult says how an install went.
type InstallResult struct {
	// Msg is AEM's message ("Package installed"), or, when the answer was
	// lost, what reconciliation established.
	Msg string
	// Requests is the number of install requests sent.
	Requests int
	// Reconciled is set when an install request's answer was lost and
	// cmd=ls confirmed the package installed.
	Reconciled bool
}

// Install installs the uploaded package id.
//
// success:false is returned at once as an *Error with AEM's message. When
// the answer is lost or unusable (timeout, dropped connection, 5xx, a body
// that is not a Package Manager answer), AEM may have installed the
// package, may still be installing it, or never saw the request, so the
// request is never simply sent again: Install reconciles first (waits until
// installstatus.jsp reports AEM idle, then looks the package up with
// cmd=ls). An installed package ends the call successfully with Reconciled
// set; only a package verifiably not installed is installed again, up to
// the configured retry count. Other errors (401/403, 4xx, ctx) end the call.
func (c *Client) Install(ctx context.Context, id aempkg.ID) (InstallResult, error) {
	var res InstallResult
	b := c.newBackoff()
	for {
		res.Requests++
		msg, err := c.installOnce(ctx, id)
		if err == nil {
			res.Msg = msg
			return res, nil
		}
		if !ambiguous(err) {
			return res, err
		}
		c.log.Warn("install outcome unknown; reconciling before anything else", "package", id, "error", err)
		installed, rerr := c.reconcile(ctx, id)
		if rerr != nil {
			return res, fmt.Errorf("%w; whether AEM installed %s could not be established: %w", err, id, rerr)
		}
		if installed {
			c.log.Info("install confirmed by cmd=ls after its answer was lost", "package", id)
			res.Msg = fmt.Sprintf("installed (confirmed by cmd=ls; the install request's answer was lost: %v)", err)
			res.Reconciled = true
			return res, nil
		}
		if res.Requests > c.set.retries {
			return res, fmt.Errorf("%w (%s verified not installed; gave up after %d install requests)", err, id, res.Requests)
		}
		d := b.Next()
		c.log.Warn("install verified not carried out; installing again", "package", id, "retry_in", d)
		if serr := backoff.Sleep(ctx, d, c.after); serr != nil {
			return res, fmt.Errorf("%w (while waiting to retry: %w)", err, context.Cause(ctx))
		}
	}
}

// installOnce sends one install request and returns AEM's message.
func (c *Client) installOnce(ctx context.Context, id aempkg.ID) (string, error) {
	q := url.Values{"cmd": {"install"}}
	if c.depHandling != "" {
		q.Set("dependencyHandling", c.depHandling)
	}
	u := c.endpoint(jsonServicePath+id.Path(), q)
	body, err := c.do(ctx, "install", c.set.installTimeout, maxJSONBody, func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), http.NoBody)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req, nil
	})
	if err != nil {
		return "", err
	}
	a, err := parseJSONAnswer("install", id.String(), u.String(), body)
	if err != nil {
		return "", err
	}
	return a.Msg, nil
}

// Reconcile establishes whether id is installed when an earlier install
// request's fate is unknown (its answer was lost, or the agent crashed
// while it was in flight), without installing anything; see reconcile.
func (c *Client) Reconcile(ctx context.Context, id aempkg.ID) (installed bool, err error) {
	return c.reconcile(ctx, id)
}

// reconcile establishes whether id is installed after an install request
// whose answer was lost. It waits until installstatus.jsp reports AEM
// idle, then looks id up with cmd=ls. "Not installed" counts only when seen
// twice, one poll interval apart, with AEM idle both times: AEM serialises
// installs, and a request still queued behind another install shows
// "idle, not installed" for an instant between the two, which must not be
// taken for a request that never arrived. Bounded by the reconcile timeout.
func (c *Client) reconcile(ctx context.Context, id aempkg.ID) (bool, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.set.reconcileTimeout,
		fmt.Errorf("AEM did not finish within aem.reconcile_timeout (%v): %w", c.set.reconcileTimeout, context.DeadlineExceeded))
	defer cancel()
	idleAndAbsent := 0
	for {
		st, err := c.InstallStatus(ctx)
		if err != nil {
			return false, err
		}
		if st.Finished {
			info, ok, err := c.Package(ctx, id)
			if err != nil {
				return false, err
			}
			if ok && info.Installed() {
				return true, nil
			}
			idleAndAbsent++
			if idleAndAbsent >= 2 {
				return false, nil
			}
		} else {
			idleAndAbsent = 0
			c.log.Debug("AEM is still installing", "waiting_for", id, "items", st.ItemCount)
		}
		if err := backoff.Sleep(ctx, c.set.pollInterval, c.after); err != nil {
			return false, context.Cause(ctx)
		}
	}
}

// InstallStatus is installstatus.jsp's answer.
type InstallStatus struct {
	// Finished is false while AEM is installing a package.
	Finished  bool
	ItemCount int
}

// InstallStatus asks installstatus.jsp whether AEM is installing anything
// now. Transient failures are retried.
func (c *Client) InstallStatus(ctx context.Context) (InstallStatus, error) {
	u := c.endpoint(installStatusPath, nil)
	var st InstallStatus
	err := c.retry(ctx, "installstatus", func() error {
		body, err := c.do(ctx, "installstatus", c.set.requestTimeout, maxJSONBody, getRequest(u))
		if err != nil {
			return err
		}
		var a struct {
			Status *struct {
				Finished  *bool `json:"finished"`
				ItemCount int   `json:"itemCount"`
			} `json:"status"`
		}
		if err := json.Unmarshal(body, &a); err != nil || a.Status == nil || a.Status.Finished == nil {
			return &HTTPError{Op: "installstatus", URL: u.String(), StatusCode: http.StatusOK,
				Reason: "not an installstatus answer (no status.finished)", Body: snippet(body)}
		}
		st = InstallStatus{Finished: *a.Status.Finished, ItemCount: a.Status.ItemCount}
		return nil
	})
	return st, err
}

func getRequest(u *url.URL) func(ctx context.Context) (*http.Request, error) {
	return func(ctx context.Context) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	}
}

// PackageInfo is one package of a cmd=ls listing, as AEM wrote it.
type PackageInfo struct {
	Group          string
	Name           string
	Version        string
	DownloadName   string
	Size           int64
	LastUnpacked   string
	LastUnpackedBy string
}

// Installed reports whether AEM has installed the package: lastUnpackedBy
// is neither empty nor the string "null" (AEM-APIS.md §1).
func (p PackageInfo) Installed() bool {
	u := strings.TrimSpace(p.LastUnpackedBy)
	return u != "" && u != "null"
}

// String is group:name:version.
func (p PackageInfo) String() string { return p.Group + ":" + p.Name + ":" + p.Version }

// Listing is a cmd=ls answer: every package uploaded to the instance.
type Listing []PackageInfo

// Find returns the package with exactly id's group, name and version
// strings ("1.0" and "1.0.0" are different packages to AEM: they are
// stored under different paths).
func (l Listing) Find(id aempkg.ID) (PackageInfo, bool) {
	v := id.Version.String()
	for _, p := range l {
		if p.Group == id.Group && p.Name == id.Name && p.Version == v {
			return p, true
		}
	}
	return PackageInfo{}, false
}

// InstalledIDs lists the installed packages. Entries Deckhand cannot
// represent as an aempkg.ID (FileVault is laxer about names) are left
// out; no package Deckhand deploys can depend on them.
func (l Listing) InstalledIDs() []aempkg.ID {
	var out []aempkg.ID
	for _, p := range l {
		if !p.Installed() {
			continue
		}
		if id, err := aempkg.NewID(p.Group, p.Name, p.Version); err == nil {
			out = append(out, id)
		}
	}
	return out
}

// lsDoc is the part of service.jsp's cmd=ls XML we read.
type lsDoc struct {
	XMLName  xml.Name `xml:"crx"`
	Response struct {
		Data struct {
			Packages struct {
				Package []struct {
					Group          string `xml:"group"`
					Name           string `xml:"name"`
					Version        string `xml:"version"`
					DownloadName   string `xml:"downloadName"`
					Size           string `xml:"size"`
					LastUnpacked   string `xml:"lastUnpacked"`
					LastUnpackedBy string `xml:"lastUnpackedBy"`
				} `xml:"package"`
			} `xml:"packages"`
		} `xml:"data"`
		Status *struct {
			Code int    `xml:"code,attr"`
			Text string `xml:",chardata"`
		} `xml:"status"`
	} `xml:"response"`
}

// List returns every package uploaded to the instance (cmd=ls).
// Transient failures are retried. A listing whose status is not 200 is an
// *Error with AEM's text.
func (c *Client) List(ctx context.Context) (Listing, error) {
	u := c.endpoint(legacyServicePath, url.Values{"cmd": {"ls"}})
	var out Listing
	err := c.retry(ctx, "ls", func() error {
		body, err := c.do(ctx, "ls", c.set.requestTimeout, maxListingBody, getRequest(u))
		if err != nil {
			return err
		}
		var doc lsDoc
		if err := xml.Unmarshal(body, &doc); err != nil || doc.Response.Status == nil {
			return &HTTPError{Op: "ls", URL: u.String(), StatusCode: http.StatusOK,
				Reason: "not a Package Manager listing (no <crx><response><status>)", Body: snippet(body)}
		}
		if st := doc.Response.Status; st.Code != http.StatusOK {
			return &Error{Op: "ls", Msg: strings.TrimSpace(st.Text)}
		}
		out = make(Listing, 0, len(doc.Response.Data.Packages.Package))
		for _, p := range doc.Response.Data.Packages.Package {
			size, _ := strconv.ParseInt(strings.TrimSpace(p.Size), 10, 64)
			out = append(out, PackageInfo{
				Group: strings.TrimSpace(p.Group), Name: strings.TrimSpace(p.Name), Version: strings.TrimSpace(p.Version),
				DownloadName: strings.TrimSpace(p.DownloadName), Size: size,
				LastUnpacked: strings.TrimSpace(p.LastUnpacked), LastUnpackedBy: strings.TrimSpace(p.LastUnpackedBy),
			})
		}
		return nil
	})
	return out, err
}

// Package looks id up with cmd=ls; ok is false when it is not uploaded.
func (c *Client) Package(ctx context.Context, id aempkg.ID) (info PackageInfo, ok bool, err error) {
	l, err := c.List(ctx)
	if err != nil {
		return PackageInfo{}, false, err
	}
	info, ok = l.Find(id)
	return info, ok, nil
}
