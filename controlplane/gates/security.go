package gates

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Security metric KPIs. Each is one metric; a probe with several paths
// fails when any of them is exposed.
const (
	KPICRXDE              = "crxde"
	KPIFelixConsole       = "felix_console"
	KPIDefaultCredentials = "default_credentials"
	KPIWebDAV             = "webdav"
	KPISlingGetServlet    = "sling_get_servlet"
	KPIQueryBuilder       = "querybuilder"
	KPIClickjacking       = "clickjacking"
)

// Expected values of the security metrics. A passing metric's actual
// value equals its expected value (comparator EQ); a failing one says
// what was found.
const (
	SecurityBlocked   = "blocked"
	SecurityRefused   = "refused"
	SecurityProtected = "protected"
)

// SkippedPrefix starts the actual value of a check that did not run (it is
// informational and neither passes nor fails the gate).
const SkippedPrefix = "skipped: "

// AuthorLoginPath is AEM's login form handler. SecurityTarget's
// AuthorLoginURL gets it appended when it names only the author's scheme,
// host and port.
const AuthorLoginPath = "/libs/granite/core/content/login.html/j_security_check"

// DefaultProbeTimeout bounds each probe request (headers and the first
// bytes of the body) when SecurityTarget.Timeout is zero.
const DefaultProbeTimeout = 10 * time.Second

// maxRedirects bounds the redirects followed on the home page (the only
// probe that follows any).
const maxRedirects = 5

// probeBodyBytes is how much of a body a probe reads: enough to see that
// content came back, without downloading a whole /content.infinity.json.
const probeBodyBytes = 4 << 10

// probeParallelism bounds concurrent probe requests: quick on a healthy
// stage, gentle on a struggling one.
const probeParallelism = 4

// SecurityTarget is what SecurityProbe tests.
type SecurityTarget struct {
	// BaseURL is the stage dispatcher (or the load balancer in front of
	// it) as the probes reach it, e.g. "https://stage.example.com" or
	// "http://10.0.0.12:80". Probe paths are appended to it. Required.
	BaseURL string
	// Host, when set, is sent as the Host header (and TLS server name) of
	// every dispatcher probe, so a dispatcher reached by address serves
	// the site's virtual host. Empty: BaseURL's host.
	Host string
	// HomePath is the page checked for clickjacking headers. Default "/".
	HomePath string
	// AuthorLoginURL is the author (or author dispatcher) where the
	// default admin/admin login is tried: either the full URL of the
	// login handler or just "https://author.example.com", to which
	// AuthorLoginPath is appended. Empty: the check is skipped and
	// reported as an informational metric.
	AuthorLoginURL string
	// Timeout bounds each request. Default DefaultProbeTimeout.
	Timeout time.Duration
	// Transport, when set, sends the requests (custom TLS roots, a
	// proxy). Nil: a private transport, closed when SecurityProbe
	// returns.
	Transport http.RoundTripper
}

// securityProbe is one path-based check.
type securityProbe struct {
	kpi      string
	severity Severity
	method   string
	paths    []string
}

// securityProbes are the path checks, in metric order after which
// default_credentials and clickjacking follow. Critical: the tools that
// hand over the repository or the OSGi container (CRXDE, the Felix
// console). Important: the rest, which leak content or structure and
// should be blocked but may, after review, be accepted by a user.
//
// The querybuilder list carries two well-known filter-bypass spellings
// (a ".servlet" selector, a ".css" suffix) that a filter allowing
// "*.css" or matching only the exact extension lets through.
var securityProbes = []securityProbe{
	{KPICRXDE, SeverityCritical, http.MethodGet, []string{"/crx/de/index.jsp", "/crx/explorer/index.jsp"}},
	{KPIFelixConsole, SeverityCritical, http.MethodGet, []string{"/system/console", "/system/console/bundles"}},
	{KPIWebDAV, SeverityImportant, "PROPFIND", []string{"/", "/crx/repository/crx.default"}},
	{KPISlingGetServlet, SeverityImportant, http.MethodGet, []string{
		"/content.json", "/content.infinity.json", "/content.tidy.json",
		"/libs.json", "/content.1.json", "/content.-1.json",
	}},
	{KPIQueryBuilder, SeverityImportant, http.MethodGet, []string{
		"/bin/querybuilder.json", "/bin/querybuilder.feed",
		"/bin/querybuilder.json.servlet", "/bin/querybuilder.json/a.css",
	}},
}

// SecurityProbePaths returns the probed paths by kpi (a fresh copy), for
// docs and UIs.
func SecurityProbePaths() map[string][]string {
	out := map[string][]string{}
	for _, p := range securityProbes {
		out[p.kpi] = slices.Clone(p.paths)
	}
	return out
}

// SecurityProbe runs the built-in security checks against the stage
// environment and returns one metric per check, in this order: crxde,
// felix_console (critical), default_credentials (critical;
// informational and not passed when no AuthorLoginURL is set), webdav,
// sling_get_servlet, querybuilder, clickjacking (important).
//
// A path counts as blocked when the answer is 403 or 404, a redirect to a
// login page (a Location whose path contains "login"), or, for WebDAV's
// PROPFIND, 405 or 501 (the method is refused). Anything else is a
// finding: a 2xx (with or without content), a 401 (the resource is
// reachable and guarded only by a password: what default credentials
// open), a 5xx (a dispatcher filter refuses with 404, so a 5xx means the
// request was let through to AEM) and a redirect anywhere but a login
// page (a same-origin redirect that only adds a trailing slash shows the
// resource exists). Redirects are not followed, except on the home page
// (below).
//
// The default-credentials check POSTs j_username=admin, j_password=admin
// and j_validate=true (so Sling answers 200 for a valid login and 403 for
// an invalid one) to the author login handler. It passes when refused:
// 401, 403, 404, or a redirect that sets no login-token cookie (Sling's
// form auth sends a failed login back to the form). A login-token cookie
// or a 2xx fails it.
//
// The clickjacking check GETs HomePath, following up to 5 redirects that
// stay on the target (same scheme; host BaseURL's or Host), and passes
// when the page has X-Frame-Options DENY or SAMEORIGIN, or a
// Content-Security-Policy whose frame-ancestors does not allow any
// origin ("*", or a bare scheme such as "https:").
//
// Errors are not passes: a connection error or timeout, a home page that
// does not answer 2xx, a redirect to the same path on another scheme or
// host (BaseURL then names the wrong address: the probes would not see the
// dispatcher's own answer) or an inconclusive login answer return an
// error naming every such request, and no metrics.
func SecurityProbe(ctx context.Context, target SecurityTarget) ([]Metric, error) {
	base, err := parseHTTPURL("base URL", target.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("security probe: %w", err)
	}
	var login *url.URL
	if target.AuthorLoginURL != "" {
		if login, err = parseHTTPURL("author login URL", target.AuthorLoginURL); err != nil {
			return nil, fmt.Errorf("security probe: %w", err)
		}
		if login.Path == "" || login.Path == "/" {
			login.Path = AuthorLoginPath
		}
	}
	home := target.HomePath
	if home == "" {
		home = "/"
	}
	if !strings.HasPrefix(home, "/") {
		return nil, fmt.Errorf("security probe: home path %q must start with /", home)
	}
	timeout := target.Timeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	siteRT, authorRT := target.Transport, target.Transport
	if siteRT == nil {
		site := http.DefaultTransport.(*http.Transport).Clone()
		if target.Host != "" && base.Scheme == "https" {
			// The site's certificate names the virtual host, not the
			// dispatcher's address.
			site.TLSClientConfig = &tls.Config{ServerName: hostOnly(target.Host), MinVersion: tls.VersionTLS12}
		}
		// The author is another host: its own name, its own connections.
		author := http.DefaultTransport.(*http.Transport).Clone()
		defer site.CloseIdleConnections()
		defer author.CloseIdleConnections()
		siteRT, authorRT = site, author
	}
	newClient := func(rt http.RoundTripper) *http.Client {
		return &http.Client{
			Transport: rt,
			// Redirects are classified, not followed (see above).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       timeout,
		}
	}
	p := &prober{base: base, host: target.Host, client: newClient(siteRT), author: newClient(authorRT)}

	type pathResult struct {
		finding string // "" when blocked
		err     error
	}
	results := make([][]pathResult, len(securityProbes))
	var (
		wg          sync.WaitGroup
		sem         = make(chan struct{}, probeParallelism)
		loginMetric Metric
		loginErr    error
		clickMetric Metric
		clickErr    error
		acquire     = func() { sem <- struct{}{} }
		release     = func() { <-sem }
	)
	for i, pr := range securityProbes {
		results[i] = make([]pathResult, len(pr.paths))
		for j, path := range pr.paths {
			wg.Go(func() {
				acquire()
				defer release()
				f, err := p.probePath(ctx, pr.method, path)
				results[i][j] = pathResult{f, err}
			})
		}
	}
	wg.Go(func() {
		acquire()
		defer release()
		loginMetric, loginErr = p.probeDefaultCredentials(ctx, login)
	})
	wg.Go(func() {
		acquire()
		defer release()
		clickMetric, clickErr = p.probeClickjacking(ctx, home)
	})
	wg.Wait()
	if err := ctx.Err(); err != nil {
		// One cause, not one "context canceled" per path.
		return nil, fmt.Errorf("security probe stopped: %w", err)
	}

	var errs []error
	metrics := make([]Metric, 0, len(securityProbes)+2)
	for i, pr := range securityProbes {
		var findings []string
		for _, r := range results[i] {
			if r.err != nil {
				errs = append(errs, r.err)
			} else if r.finding != "" {
				findings = append(findings, r.finding)
			}
		}
		m := Metric{
			ID: "security." + pr.kpi, KPI: pr.kpi, Severity: pr.severity,
			Passed: len(findings) == 0, ActualValue: SecurityBlocked,
			ExpectedValue: SecurityBlocked, Comparator: EQ,
		}
		if !m.Passed {
			m.ActualValue = "exposed: " + strings.Join(findings, ", ")
		}
		metrics = append(metrics, m)
		if pr.kpi == KPIFelixConsole {
			// Critical checks first, as a UI lists them.
			metrics = append(metrics, loginMetric)
		}
	}
	metrics = append(metrics, clickMetric)
	errs = append(errs, loginErr, clickErr)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("security probe could not complete (a probe that cannot run is not a pass): %w", err)
	}
	return metrics, nil
}

// parseHTTPURL checks an http(s) base URL and drops a trailing slash.
func parseHTTPURL(what, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s %q must be an absolute http or https URL", what, s)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s %q must not carry credentials, a query or a fragment", what, s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// hostOnly drops a port from a Host header value.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// prober sends the probes: client to the site (with the Host header),
// author to the author login.
type prober struct {
	base   *url.URL
	host   string
	client *http.Client
	author *http.Client
}

// target builds the request URL of path on the base URL. Paths are ours
// and already escaped.
func (p *prober) target(path string) string {
	return p.base.Scheme + "://" + p.base.Host + p.base.EscapedPath() + path
}

type probeResponse struct {
	status   int
	location *url.URL // resolved; nil when absent
	size     int      // body bytes read, at most probeBodyBytes
	header   http.Header
}

func (p *prober) do(ctx context.Context, client *http.Client, method, rawURL, host string, body io.Reader, contentType string) (probeResponse, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, body)
	if err != nil {
		return probeResponse{}, err
	}
	if host != "" {
		req.Host = host
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if method == "PROPFIND" {
		req.Header.Set("Depth", "0")
	}
	req.Header.Set("User-Agent", "deckhand-security-probe/1")
	resp, err := client.Do(req)
	if err != nil {
		return probeResponse{}, fmt.Errorf("%s %s: %w", method, rawURL, err)
	}
	defer resp.Body.Close()
	// The status decides; the body only shows that content came back. A
	// read error after the headers does not change the status.
	n, _ := io.CopyN(io.Discard, resp.Body, probeBodyBytes)
	loc, _ := resp.Location()
	return probeResponse{status: resp.StatusCode, location: loc, size: int(n), header: resp.Header}, nil
}

// probePath returns "" when path is blocked, a finding ("/path (200)")
// when it is exposed, or an error when the answer cannot tell.
func (p *prober) probePath(ctx context.Context, method, path string) (string, error) {
	r, err := p.do(ctx, p.client, method, p.target(path), p.host, nil, "")
	if err != nil {
		return "", err
	}
	label := path
	if method != http.MethodGet {
		label = method + " " + path
	}
	switch {
	case r.status == http.StatusForbidden || r.status == http.StatusNotFound:
		return "", nil
	case method == "PROPFIND" && (r.status == http.StatusMethodNotAllowed || r.status == http.StatusNotImplemented):
		return "", nil
	case r.status >= 300 && r.status < 400:
		if r.location == nil {
			return fmt.Sprintf("%s (%d without Location)", label, r.status), nil
		}
		if isLoginPath(r.location.Path) {
			return "", nil
		}
		otherOrigin := r.location.Scheme != p.base.Scheme || !strings.EqualFold(r.location.Host, p.base.Host)
		if otherOrigin && samePath(r.location.Path, p.base.Path+path) {
			// Typically http -> https: the answer we need comes from the
			// other address, which the probes were not pointed at.
			return "", fmt.Errorf("%s %s: redirected to %s, the same path on another scheme or host; set the base URL to the address the site serves so the probes see the dispatcher's own answer", method, path, r.location)
		}
		// Anything else, including a same-origin "add a trailing slash"
		// redirect (the resource exists), is not a refusal.
		return fmt.Sprintf("%s (%d to %s)", label, r.status, r.location.RequestURI()), nil
	default:
		return fmt.Sprintf("%s (%d)", label, r.status), nil
	}
}

func isLoginPath(p string) bool { return strings.Contains(strings.ToLower(p), "login") }

func samePath(a, b string) bool {
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

// probeDefaultCredentials tries admin/admin on the author login handler.
func (p *prober) probeDefaultCredentials(ctx context.Context, login *url.URL) (Metric, error) {
	m := Metric{
		ID: "security." + KPIDefaultCredentials, KPI: KPIDefaultCredentials,
		Severity: SeverityCritical, ExpectedValue: SecurityRefused, Comparator: EQ,
	}
	if login == nil {
		m.Severity = SeverityInformational
		m.ActualValue = SkippedPrefix + "no author login URL configured"
		return m, nil
	}
	form := url.Values{
		"j_username": {"admin"}, "j_password": {"admin"},
		"j_validate": {"true"}, "_charset_": {"utf-8"},
	}
	r, err := p.do(ctx, p.author, http.MethodPost, login.String(), "", strings.NewReader(form.Encode()), "application/x-www-form-urlencoded")
	if err != nil {
		return m, err
	}
	token := false
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "login-token" && c.Value != "" && c.MaxAge >= 0 {
			token = true
		}
	}
	switch {
	case token:
		m.ActualValue = fmt.Sprintf("accepted: admin/admin got a login-token cookie (%d)", r.status)
	case r.status >= 200 && r.status < 300:
		m.ActualValue = fmt.Sprintf("accepted: admin/admin answered %d", r.status)
	case r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || r.status == http.StatusNotFound,
		r.status >= 300 && r.status < 400:
		m.Passed, m.ActualValue = true, SecurityRefused
	default:
		return m, fmt.Errorf("POST %s: answered %d, which neither accepts nor refuses the login", login.Redacted(), r.status)
	}
	return m, nil
}

// probeClickjacking checks the home page's framing headers.
func (p *prober) probeClickjacking(ctx context.Context, home string) (Metric, error) {
	m := Metric{
		ID: "security." + KPIClickjacking, KPI: KPIClickjacking,
		Severity: SeverityImportant, ExpectedValue: SecurityProtected, Comparator: EQ,
	}
	path := home
	var r probeResponse
	for hops := 0; ; hops++ {
		var err error
		if r, err = p.do(ctx, p.client, http.MethodGet, p.target(path), p.host, nil, ""); err != nil {
			return m, err
		}
		if r.status < 300 || r.status >= 400 {
			break
		}
		if r.location == nil {
			return m, fmt.Errorf("GET %s: %d without a Location", path, r.status)
		}
		if hops == maxRedirects {
			return m, fmt.Errorf("GET %s: more than %d redirects from the home page %s", path, maxRedirects, home)
		}
		loc := r.location
		onTarget := loc.Scheme == p.base.Scheme &&
			(strings.EqualFold(loc.Host, p.base.Host) || (p.host != "" && strings.EqualFold(loc.Host, p.host)))
		if !onTarget || (!strings.HasPrefix(loc.Path, p.base.Path+"/") && loc.Path != p.base.Path) {
			return m, fmt.Errorf("GET %s: the home page redirects to %s, off the probed target; set the base URL (and host) to what the site serves", path, loc)
		}
		path = strings.TrimPrefix(loc.RequestURI(), p.base.EscapedPath())
	}
	if r.status < 200 || r.status >= 300 {
		return m, fmt.Errorf("GET %s: the home page answered %d; its clickjacking headers can only be checked on a page that is served", path, r.status)
	}
	if ok, why := framingProtected(r.header); ok {
		m.Passed, m.ActualValue = true, SecurityProtected
	} else {
		m.ActualValue = "unprotected: " + why
	}
	return m, nil
}

// framingProtected reports whether headers stop other sites framing the
// page, and if not, why.
func framingProtected(h http.Header) (bool, string) {
	var why []string
	if xfo := h.Values("X-Frame-Options"); len(xfo) > 0 {
		good := true
		for _, v := range xfo {
			// A browser given several values may ignore them all; each
			// must be a restrictive one.
			for part := range strings.SplitSeq(v, ",") {
				switch strings.ToUpper(strings.TrimSpace(part)) {
				case "DENY", "SAMEORIGIN":
				default:
					good = false
				}
			}
		}
		if good {
			return true, ""
		}
		why = append(why, fmt.Sprintf("X-Frame-Options %q is not DENY or SAMEORIGIN", strings.Join(xfo, ", ")))
	}
	sawFA := false
	for _, csp := range h.Values("Content-Security-Policy") {
		for dir := range strings.SplitSeq(csp, ";") {
			fields := strings.Fields(dir)
			if len(fields) == 0 || !strings.EqualFold(fields[0], "frame-ancestors") {
				continue
			}
			sawFA = true
			open := len(fields) == 1 // an empty source list is invalid: ignored by browsers
			for _, src := range fields[1:] {
				s := strings.ToLower(src)
				if s == "*" || s == "http:" || s == "https:" || s == "data:" || s == "blob:" {
					open = true
				}
			}
			if !open {
				return true, ""
			}
			why = append(why, fmt.Sprintf("CSP %q allows any origin to frame the page", strings.TrimSpace(dir)))
		}
	}
	if len(why) == 0 && !sawFA {
		why = append(why, "no X-Frame-Options and no Content-Security-Policy frame-ancestors")
	}
	return false, strings.Join(why, "; ")
}
