package gates

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/stretchr/testify/require"
)

// These tests probe a real Apache httpd (e2e/harness/apache). Without
// apache2 they skip, or fail when DECKHAND_REQUIRE_REAL=1 (apache.Require).

// leakyPublish makes the harness's Apache answer like an unhardened AEM
// publish seen through a dispatcher that lets everything through: the
// tools and the Sling JSON dumps serve content, the query builder
// answers, WebDAV answers PROPFIND with 207 (real mod_dav), admin/admin
// logs in (a login-token cookie and a redirect), and no framing header is
// sent.
const leakyPublish = `
	RewriteRule ^/(crx/de|crx/explorer|system/console)(/.*)?$ /leak.html [PT,L]
	RewriteRule ^/bin/querybuilder /leak.json [PT,L]
	RewriteRule ^/[^/]+\.(infinity\.|tidy\.|-?[0-9]+\.)?json$ /leak.json [PT,L]
	RewriteRule ^/libs/granite/core/content/login\.html/j_security_check$ /aem/start.html [R=302,E=LOGIN_OK:1,L]
	Header always set Set-Cookie "login-token=deckhand-test-1; Path=/; HttpOnly" env=LOGIN_OK
	<Location "/crx/repository/crx.default">
		Dav On
	</Location>
`

// dispatcherFilters is what an AMS publish dispatcher's filters and
// security headers amount to, in plain Apache directives (mod_dispatcher
// is Adobe's). Placed before leakyPublish's rules, like the dispatcher's
// filter before the render, it refuses with 403 the AEM tools, the query
// builder, every Sling JSON rendering and every method other than GET,
// HEAD and POST (so no WebDAV), and frames nothing from other origins.
const dispatcherFilters = `
	Header always set X-Frame-Options "SAMEORIGIN"
	RewriteCond %{REQUEST_METHOD} !^(GET|HEAD|POST)$
	RewriteRule .* - [F,L]
	RewriteRule ^/(crx|system|bin|libs|apps|etc)(/|\.|$) - [F,L]
	RewriteRule \.json(/|$) - [F,L]
`

func vhost(rules string) string {
	return "<VirtualHost *:*>\n\tServerName default\n\tInclude conf.d/rewrites/default_rewrite.rules\n" + rules + "</VirtualHost>\n"
}

const exposedModules = `LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule dir_module modules/mod_dir.so
LoadModule mime_module modules/mod_mime.so
LoadModule rewrite_module modules/mod_rewrite.so
LoadModule headers_module modules/mod_headers.so
LoadModule alias_module modules/mod_alias.so
LoadModule dav_module modules/mod_dav.so
LoadModule dav_fs_module modules/mod_dav_fs.so
`

func exposedDocRoot() map[string]string {
	d := apache.DefaultDocRoot()
	d["leak.html"] = "<html><title>CRXDE Lite</title></html>\n"
	d["leak.json"] = `{"jcr:primaryType":"nt:unstructured","jcr:createdBy":"admin"}` + "\n"
	// A file, so mod_dav answers PROPFIND itself (a directory would first
	// get mod_dir's trailing-slash redirect, which the probe also reports).
	d["crx/repository/crx.default"] = "repository\n"
	return d
}

// startSite starts a real Apache serving the leaky publish behind rules.
func startSite(t *testing.T, rules string) *apache.Instance {
	t.Helper()
	apache.Require(t)
	// mod_dav keeps its lock database where the workers (www-data) can
	// write; t.TempDir()'s parents are closed to them.
	lockDir, err := os.MkdirTemp("", "deckhand-davlock-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(lockDir) })
	require.NoError(t, os.Chmod(lockDir, 0o777))
	return apache.Start(t, apache.Config{
		Files: map[string]string{
			"conf.modules.d/00-base.conf":           exposedModules,
			"conf.d/available_vhosts/default.vhost": vhost(rules),
			"conf.d/dav.conf":                       "DAVLockDB " + lockDir + "/DAVLock\n",
		},
		DocRoot: exposedDocRoot(),
	})
}

func TestSecurityProbeRealApacheHardened(t *testing.T) {
	in := startSite(t, dispatcherFilters+leakyPublish)
	// The site still serves its pages: the probes test filters, not an
	// Apache that serves nothing.
	code, body, err := in.Get("/page")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "version 1\n", body)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms, err := SecurityProbe(ctx, SecurityTarget{BaseURL: in.URL, AuthorLoginURL: in.URL, Timeout: 5 * time.Second})
	require.NoError(t, err)
	require.Len(t, ms, len(securityOrder))
	for _, m := range ms {
		require.True(t, m.Passed, "%+v", m)
	}
	require.True(t, Verdict(ms).Passed())
}

func TestSecurityProbeRealApacheExposed(t *testing.T) {
	in := startSite(t, leakyPublish)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms, err := SecurityProbe(ctx, SecurityTarget{BaseURL: in.URL, AuthorLoginURL: in.URL, Timeout: 5 * time.Second})
	require.NoError(t, err)
	for _, m := range ms {
		t.Logf("%-20s %-13s passed=%v %s", m.KPI, m.Severity, m.Passed, m.ActualValue)
	}
	got := byKPI(ms)
	for _, kpi := range securityOrder {
		require.False(t, got[kpi].Passed, "%s must fail against the exposed config: %+v", kpi, got[kpi])
	}
	require.Contains(t, got[KPICRXDE].ActualValue, "/crx/de/index.jsp (200)")
	require.Contains(t, got[KPICRXDE].ActualValue, "/crx/explorer/index.jsp (200)")
	require.Contains(t, got[KPIFelixConsole].ActualValue, "/system/console (200)")
	require.Contains(t, got[KPIFelixConsole].ActualValue, "/system/console/bundles (200)")
	require.Contains(t, got[KPIWebDAV].ActualValue, "PROPFIND /crx/repository/crx.default (207)")
	for _, p := range SecurityProbePaths()[KPISlingGetServlet] {
		require.Contains(t, got[KPISlingGetServlet].ActualValue, p+" (200)")
	}
	require.Contains(t, got[KPIQueryBuilder].ActualValue, "/bin/querybuilder.json (200)")
	require.Contains(t, got[KPIQueryBuilder].ActualValue, "/bin/querybuilder.feed (200)")
	require.Contains(t, got[KPIDefaultCredentials].ActualValue, "accepted: admin/admin got a login-token cookie (302)")
	require.Equal(t, "unprotected: no X-Frame-Options and no Content-Security-Policy frame-ancestors", got[KPIClickjacking].ActualValue)

	v := Verdict(ms)
	require.True(t, v.Failed())
	require.ElementsMatch(t, []string{KPICRXDE, KPIFelixConsole, KPIDefaultCredentials}, kpiNames(v.CriticalFailures))
	require.ElementsMatch(t, []string{KPIWebDAV, KPISlingGetServlet, KPIQueryBuilder, KPIClickjacking}, kpiNames(v.ImportantFailures))
}

func kpiNames(ms []Metric) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.KPI)
	}
	return out
}
