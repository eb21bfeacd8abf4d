package gates

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeSite is a dispatcher stand-in: a hardened one by default (every
// probe path 404, the login refused, the home page framed SAMEORIGIN).
// routes override single "METHOD path" answers.
type fakeSite struct {
	routes map[string]http.HandlerFunc
	home   http.HandlerFunc
	hosts  chan string // Host headers seen, when non-nil
}

func (f *fakeSite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.hosts != nil {
		select {
		case f.hosts <- r.Host:
		default:
		}
	}
	if h, ok := f.routes[r.Method+" "+r.URL.Path]; ok {
		h(w, r)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		if f.home != nil {
			f.home(w, r)
			return
		}
		w.Header().Set("X-Frame-Options", "SAMEORIGIN")
		_, _ = w.Write([]byte("<html>home</html>"))
	case r.Method == http.MethodPost && r.URL.Path == AuthorLoginPath:
		w.WriteHeader(http.StatusForbidden)
	default:
		http.NotFound(w, r)
	}
}

func serve(t *testing.T, f *fakeSite) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv
}

func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}
}

func redirect(code int, loc string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", loc)
		w.WriteHeader(code)
	}
}

func probe(t *testing.T, srv *httptest.Server, mod func(*SecurityTarget)) ([]Metric, error) {
	t.Helper()
	target := SecurityTarget{BaseURL: srv.URL, AuthorLoginURL: srv.URL, Timeout: 5 * time.Second}
	if mod != nil {
		mod(&target)
	}
	return SecurityProbe(context.Background(), target)
}

var securityOrder = []string{
	KPICRXDE, KPIFelixConsole, KPIDefaultCredentials, KPIWebDAV,
	KPISlingGetServlet, KPIQueryBuilder, KPIClickjacking,
}

func TestSecurityHardenedSitePasses(t *testing.T) {
	ms, err := probe(t, serve(t, &fakeSite{}), nil)
	require.NoError(t, err)
	var kpis []string
	for _, m := range ms {
		kpis = append(kpis, m.KPI)
		require.True(t, m.Passed, "%+v", m)
		require.Equal(t, m.ExpectedValue, m.ActualValue, "a passing security metric's actual value equals its expected one")
		require.Equal(t, EQ, m.Comparator)
		require.Equal(t, "security."+m.KPI, m.ID)
	}
	require.Equal(t, securityOrder, kpis)
	sev := map[string]Severity{}
	for _, m := range ms {
		sev[m.KPI] = m.Severity
	}
	require.Equal(t, map[string]Severity{
		KPICRXDE: SeverityCritical, KPIFelixConsole: SeverityCritical, KPIDefaultCredentials: SeverityCritical,
		KPIWebDAV: SeverityImportant, KPISlingGetServlet: SeverityImportant, KPIQueryBuilder: SeverityImportant,
		KPIClickjacking: SeverityImportant,
	}, sev)
	require.True(t, Verdict(ms).Passed())
}

// TestSecurityEachPathExposed exposes one probe path at a time: exactly its
// metric fails, naming the path.
func TestSecurityEachPathExposed(t *testing.T) {
	for _, pr := range securityProbes {
		for _, path := range pr.paths {
			t.Run(pr.kpi+path, func(t *testing.T) {
				code, body := http.StatusOK, `{"jcr:primaryType":"sling:Folder"}`
				if pr.method == "PROPFIND" {
					code, body = http.StatusMultiStatus, `<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"/>`
				}
				srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{pr.method + " " + path: status(code, body)}})
				ms, err := probe(t, srv, nil)
				require.NoError(t, err)
				for _, m := range ms {
					if m.KPI != pr.kpi {
						require.True(t, m.Passed, "%+v", m)
						continue
					}
					require.False(t, m.Passed)
					require.Equal(t, pr.severity, m.Severity)
					require.Contains(t, m.ActualValue, "exposed: ")
					require.Contains(t, m.ActualValue, path)
				}
				v := Verdict(ms)
				if pr.severity == SeverityCritical {
					require.True(t, v.Failed())
				} else {
					require.True(t, v.Waiting())
				}
			})
		}
	}
}

func TestSecurityAnswerClassification(t *testing.T) {
	const path = "/system/console"
	tests := []struct {
		name    string
		method  string
		path    string
		h       http.HandlerFunc
		passed  bool
		finding string // substring of ActualValue when failed
	}{
		{"403 blocks", "GET", path, status(403, "Forbidden"), true, ""},
		{"404 blocks", "GET", path, status(404, "Not Found"), true, ""},
		{"200 with content", "GET", path, status(200, "<html>Adobe Experience Manager Web Console</html>"), false, "/system/console (200)"},
		{"200 without content", "GET", path, status(200, ""), false, "(200)"},
		{"401 is reachable behind a password", "GET", path, status(401, ""), false, "(401)"},
		{"503 means the filter let it through", "GET", path, status(503, ""), false, "(503)"},
		{"405 on a GET is not a block", "GET", path, status(405, ""), false, "(405)"},
		{"redirect to the AEM login blocks", "GET", path, redirect(302, "/libs/granite/core/content/login.html?resource=%2Fsystem%2Fconsole"), true, ""},
		{"redirect to the Sling login blocks", "GET", path, redirect(302, "/system/sling/login"), true, ""},
		{"redirect into the console", "GET", path, redirect(302, "/system/console/bundles"), false, "(302 to /system/console/bundles)"},
		{"redirect to the home page is not a block", "GET", path, redirect(301, "/"), false, "(301 to /)"},
		{"redirect without Location", "GET", path, status(302, ""), false, "302 without Location"},
		{"trailing-slash redirect shows the resource exists", "GET", path, redirect(301, "/system/console/"), false, "(301 to /system/console/)"},
		{"PROPFIND 207", "PROPFIND", "/crx/repository/crx.default", status(207, "<multistatus/>"), false, "PROPFIND /crx/repository/crx.default (207)"},
		{"PROPFIND 405 blocks", "PROPFIND", "/", status(405, ""), true, ""},
		{"PROPFIND 501 blocks", "PROPFIND", "/", status(501, ""), true, ""},
		{"PROPFIND 401 is a reachable WebDAV", "PROPFIND", "/crx/repository/crx.default", status(401, ""), false, "(401)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{tc.method + " " + tc.path: tc.h}})
			ms, err := probe(t, srv, nil)
			require.NoError(t, err)
			kpi := KPIFelixConsole
			if tc.method == "PROPFIND" {
				kpi = KPIWebDAV
			}
			m := byKPI(ms)[kpi]
			require.Equal(t, tc.passed, m.Passed, "%+v", m)
			if !tc.passed {
				require.Contains(t, m.ActualValue, tc.finding)
			}
		})
	}
}

func TestSecurityInconclusiveAnswersAreErrors(t *testing.T) {
	t.Run("same path on another scheme", func(t *testing.T) {
		srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{
			"GET /crx/de/index.jsp": redirect(301, "https://stage.example.com/crx/de/index.jsp"),
		}})
		ms, err := probe(t, srv, nil)
		require.Nil(t, ms)
		require.ErrorContains(t, err, "a probe that cannot run is not a pass")
		require.ErrorContains(t, err, "GET /crx/de/index.jsp: redirected to https://stage.example.com/crx/de/index.jsp")
		require.ErrorContains(t, err, "set the base URL")
	})
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		ms, err := SecurityProbe(context.Background(), SecurityTarget{BaseURL: url, Timeout: time.Second})
		require.Nil(t, ms)
		require.ErrorContains(t, err, "connection refused")
		require.ErrorContains(t, err, "/system/console")
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{
			"GET /content.infinity.json": func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-release:
				}
			},
		}})
		defer close(release)
		start := time.Now()
		ms, err := probe(t, srv, func(tg *SecurityTarget) { tg.Timeout = 300 * time.Millisecond })
		require.Nil(t, ms)
		require.ErrorContains(t, err, "/content.infinity.json")
		require.ErrorContains(t, err, "Timeout")
		require.Less(t, time.Since(start), 5*time.Second, "probes are bounded by the timeout")
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ms, err := SecurityProbe(ctx, SecurityTarget{BaseURL: serve(t, &fakeSite{}).URL})
		require.Nil(t, ms)
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("bad target", func(t *testing.T) {
		for _, tg := range []SecurityTarget{
			{},
			{BaseURL: "stage.example.com"},
			{BaseURL: "ftp://stage.example.com"},
			{BaseURL: "http://admin:admin@stage.example.com"},
			{BaseURL: "http://stage.example.com", AuthorLoginURL: "author"},
			{BaseURL: "http://stage.example.com", HomePath: "index.html"},
		} {
			_, err := SecurityProbe(context.Background(), tg)
			require.Error(t, err, "%+v", tg)
		}
	})
}

func TestSecurityDefaultCredentials(t *testing.T) {
	withToken := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			http.SetCookie(w, &http.Cookie{Name: "login-token", Value: "abc%3a123", Path: "/", HttpOnly: true})
			if code >= 300 && code < 400 {
				w.Header().Set("Location", "/aem/start.html")
			}
			w.WriteHeader(code)
		}
	}
	tests := []struct {
		name   string
		h      http.HandlerFunc
		passed bool
		actual string
	}{
		{"403 refuses", status(403, ""), true, SecurityRefused},
		{"401 refuses", status(401, ""), true, SecurityRefused},
		{"404 (login not reachable) refuses", status(404, ""), true, SecurityRefused},
		{"redirect back to the form refuses", redirect(302, "/libs/granite/core/content/login.html?j_reason=invalid_login"), true, SecurityRefused},
		{"200 accepts", status(200, ""), false, "accepted: admin/admin answered 200"},
		{"login-token cookie with a redirect accepts", withToken(302), false, "accepted: admin/admin got a login-token cookie (302)"},
		{"login-token cookie with 200 accepts", withToken(200), false, "login-token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := make(chan string, 1)
			srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{
				"POST " + AuthorLoginPath: func(w http.ResponseWriter, r *http.Request) {
					_ = r.ParseForm()
					form <- r.PostForm.Encode()
					tc.h(w, r)
				},
			}})
			ms, err := probe(t, srv, nil)
			require.NoError(t, err)
			m := byKPI(ms)[KPIDefaultCredentials]
			require.Equal(t, SeverityCritical, m.Severity)
			require.Equal(t, tc.passed, m.Passed)
			require.Contains(t, m.ActualValue, tc.actual)
			require.Equal(t, "_charset_=utf-8&j_password=admin&j_username=admin&j_validate=true", <-form)
		})
	}
	t.Run("full handler URL is used as given", func(t *testing.T) {
		hit := make(chan struct{}, 1)
		srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{
			"POST /author/j_security_check": func(w http.ResponseWriter, r *http.Request) {
				hit <- struct{}{}
				w.WriteHeader(403)
			},
		}})
		ms, err := probe(t, srv, func(tg *SecurityTarget) { tg.AuthorLoginURL = srv.URL + "/author/j_security_check" })
		require.NoError(t, err)
		require.True(t, byKPI(ms)[KPIDefaultCredentials].Passed)
		require.Len(t, hit, 1)
	})
	t.Run("5xx is inconclusive", func(t *testing.T) {
		srv := serve(t, &fakeSite{routes: map[string]http.HandlerFunc{"POST " + AuthorLoginPath: status(500, "")}})
		_, err := probe(t, srv, nil)
		require.ErrorContains(t, err, "answered 500, which neither accepts nor refuses the login")
	})
	t.Run("no author URL: informational skip", func(t *testing.T) {
		ms, err := probe(t, serve(t, &fakeSite{}), func(tg *SecurityTarget) { tg.AuthorLoginURL = "" })
		require.NoError(t, err)
		m := byKPI(ms)[KPIDefaultCredentials]
		require.Equal(t, SeverityInformational, m.Severity)
		require.False(t, m.Passed)
		require.Contains(t, m.ActualValue, "skipped")
		require.True(t, Verdict(ms).Passed(), "a skipped check does not block the step")
	})
}

func TestSecurityClickjacking(t *testing.T) {
	page := func(headers ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(headers); i += 2 {
				w.Header().Add(headers[i], headers[i+1])
			}
			_, _ = w.Write([]byte("<html>home</html>"))
		}
	}
	tests := []struct {
		name   string
		home   http.HandlerFunc
		passed bool
		why    string
	}{
		{"SAMEORIGIN", page("X-Frame-Options", "SAMEORIGIN"), true, ""},
		{"DENY", page("X-Frame-Options", "DENY"), true, ""},
		{"lower case", page("X-Frame-Options", "sameorigin"), true, ""},
		{"CSP frame-ancestors self", page("Content-Security-Policy", "default-src 'self'; frame-ancestors 'self' https://partner.example.com"), true, ""},
		{"CSP frame-ancestors none", page("Content-Security-Policy", "frame-ancestors 'none'"), true, ""},
		{"no header", page(), false, "no X-Frame-Options and no Content-Security-Policy frame-ancestors"},
		{"ALLOW-FROM", page("X-Frame-Options", "ALLOW-FROM https://example.com"), false, "is not DENY or SAMEORIGIN"},
		{"conflicting values", page("X-Frame-Options", "SAMEORIGIN", "X-Frame-Options", "ALLOWALL"), false, "is not DENY or SAMEORIGIN"},
		{"CSP frame-ancestors *", page("Content-Security-Policy", "frame-ancestors *"), false, "allows any origin"},
		{"CSP frame-ancestors https:", page("Content-Security-Policy", "frame-ancestors https:"), false, "allows any origin"},
		{"CSP without frame-ancestors", page("Content-Security-Policy", "default-src 'self'"), false, "no X-Frame-Options"},
		{"report-only CSP does not protect", page("Content-Security-Policy-Report-Only", "frame-ancestors 'none'"), false, "no X-Frame-Options"},
		{"weak XFO but good CSP", page("X-Frame-Options", "ALLOWALL", "Content-Security-Policy", "frame-ancestors 'self'"), true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := probe(t, serve(t, &fakeSite{home: tc.home}), nil)
			require.NoError(t, err)
			m := byKPI(ms)[KPIClickjacking]
			require.Equal(t, SeverityImportant, m.Severity)
			require.Equal(t, tc.passed, m.Passed, "%+v", m)
			if !tc.passed {
				require.Contains(t, m.ActualValue, "unprotected: ")
				require.Contains(t, m.ActualValue, tc.why)
			}
		})
	}

	t.Run("home redirects are followed on the target", func(t *testing.T) {
		var srv *httptest.Server
		srv = serve(t, &fakeSite{
			home: redirect(302, "/content/site/en.html"),
			routes: map[string]http.HandlerFunc{
				"GET /content/site/en.html": redirect(301, "http://www.example.com/content/site/en/home.html"),
				"GET /content/site/en/home.html": func(w http.ResponseWriter, r *http.Request) {
					assert.Equal(t, "www.example.com", r.Host, "the Host header is kept across redirects")
					page("X-Frame-Options", "DENY")(w, r)
				},
			},
		})
		ms, err := probe(t, srv, func(tg *SecurityTarget) { tg.Host = "www.example.com" })
		require.NoError(t, err)
		require.True(t, byKPI(ms)[KPIClickjacking].Passed)
	})
	t.Run("home path", func(t *testing.T) {
		srv := serve(t, &fakeSite{home: page(), routes: map[string]http.HandlerFunc{
			"GET /content/site/en.html": page("X-Frame-Options", "DENY"),
		}})
		ms, err := probe(t, srv, func(tg *SecurityTarget) { tg.HomePath = "/content/site/en.html" })
		require.NoError(t, err)
		require.True(t, byKPI(ms)[KPIClickjacking].Passed)
	})
	for name, home := range map[string]http.HandlerFunc{
		"home off the target":   redirect(302, "https://elsewhere.example.org/"),
		"home not served":       status(404, ""),
		"home broken":           status(500, ""),
		"home redirects a loop": redirect(302, "/"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := probe(t, serve(t, &fakeSite{home: home}), nil)
			require.Error(t, err)
			require.ErrorContains(t, err, "GET /")
		})
	}
}

func TestSecurityHostHeader(t *testing.T) {
	hosts := make(chan string, 100)
	srv := serve(t, &fakeSite{hosts: hosts})
	_, err := probe(t, srv, func(tg *SecurityTarget) { tg.Host = "www.example.com"; tg.AuthorLoginURL = "" })
	require.NoError(t, err)
	close(hosts)
	n := 0
	for h := range hosts {
		require.Equal(t, "www.example.com", h)
		n++
	}
	paths := 0
	for _, ps := range SecurityProbePaths() {
		paths += len(ps)
	}
	require.Equal(t, paths+1, n, "every probe path and the home page")
}

func TestSecurityProbePathsCoverTheBrief(t *testing.T) {
	got := SecurityProbePaths()
	kpis := make([]string, 0, len(got))
	for k := range got {
		kpis = append(kpis, k)
	}
	sort.Strings(kpis)
	require.Equal(t, []string{KPICRXDE, KPIFelixConsole, KPIQueryBuilder, KPISlingGetServlet, KPIWebDAV}, kpis)
	all := strings.Join(append(append(append(append(got[KPICRXDE], got[KPIFelixConsole]...), got[KPIWebDAV]...), got[KPISlingGetServlet]...), got[KPIQueryBuilder]...), " ")
	for _, p := range []string{
		"/crx/de/index.jsp", "/crx/explorer/index.jsp", "/system/console", "/system/console/bundles",
		"/crx/repository/crx.default", "/content.json", "/content.infinity.json", "/content.tidy.json",
		"/libs.json", "/content.1.json", "/content.-1.json", "/bin/querybuilder.json", "/bin/querybuilder.feed",
	} {
		require.Contains(t, strings.Fields(all), p)
	}
}
