package sim_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
)

func TestAuthRequiredEverywhere(t *testing.T) {
	e := start(t, "")
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/crx/packmgr/service/.json?cmd=upload"},
		{http.MethodPost, "/crx/packmgr/service/.json/etc/packages/g/n-1.zip?cmd=install"},
		{http.MethodGet, "/crx/packmgr/service.jsp?cmd=ls"},
		{http.MethodPost, "/crx/packmgr/service.jsp"},
		{http.MethodGet, "/crx/packmgr/installstatus.jsp"},
		{http.MethodGet, "/anything/else"},
	} {
		for _, creds := range [][2]string{{"", ""}, {user, "wrong"}, {"other", password}} {
			req, err := http.NewRequest(c.method, e.url(c.path), nil)
			require.NoError(t, err)
			if creds[0] != "" {
				req.SetBasicAuth(creds[0], creds[1])
			}
			resp, err := e.client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s as %q", c.method, c.path, creds[0])
			require.Equal(t, `Basic realm="Sling (Development)"`, resp.Header.Get("WWW-Authenticate"))
		}
	}
	for _, r := range e.requests() {
		require.Equal(t, sim.OutcomeUnauthorized, r.Outcome)
		require.Equal(t, http.StatusUnauthorized, r.Status)
		require.Empty(t, r.User)
	}
	// With the right credentials the same listing works.
	require.Empty(t, e.ls())
}

func TestUploadInstallListShapes(t *testing.T) {
	e := start(t, "")
	zip := aempkgtest.Package(aempkgtest.Spec{Group: "my/group", Name: "site", Version: "1.0", Props: map[string]string{
		"created": "2024-01-31T10:00:00.000+01:00", "createdBy": "builder",
	}})

	// Upload: exact body.
	resp, body := e.do(e.uploadReq(zip, false))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"success":true,"msg":"Package uploaded","path":"/etc/packages/my/group/site-1.0.zip"}`, string(body))

	// Listed, not installed.
	p := e.ls()["my/group:site:1.0"]
	require.Equal(t, "site-1.0.zip", p.DownloadName)
	require.Equal(t, int64(len(zip)), p.Size)
	require.Equal(t, "builder", p.CreatedBy)
	require.Equal(t, 2024, parseCRXDate(t, p.Created).Year())
	require.Equal(t, "", p.LastUnpacked)
	require.Equal(t, "null", p.LastUnpackedBy)
	require.Equal(t, "", p.LastModified)
	require.Equal(t, "null", p.LastModifiedBy)
	require.False(t, p.installed())

	// Install: exact body.
	resp, body = e.do(e.cmdReq("install", pkgPath("my/group", "site", "1.0"), url.Values{"recursive": {"true"}, "acHandling": {"merge_preserve"}}))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"success":true,"msg":"Package installed"}`, string(body))

	p = e.ls()["my/group:site:1.0"]
	require.True(t, p.installed())
	require.Equal(t, user, p.LastUnpackedBy)
	require.WithinDuration(t, time.Now(), parseCRXDate(t, p.LastUnpacked), time.Minute)

	finished, items := e.installStatus()
	require.True(t, finished)
	require.Zero(t, items)

	rec := e.lastRequest("install")
	require.Equal(t, "my/group:site:1.0", rec.Package)
	require.Equal(t, user, rec.User)
	require.Equal(t, sim.OutcomeSuccess, rec.Outcome)
	require.Equal(t, sim.OutcomeSuccess, rec.Performed)
	require.Equal(t, []string{"my/group:site:1.0"}, rec.Installed)
	require.Equal(t, map[string]string{"recursive": "true", "acHandling": "merge_preserve"}, rec.Params)
	require.Equal(t, http.StatusOK, rec.Status)

	st, ok := e.sim.Package("my/group:site:1.0")
	require.True(t, ok)
	require.True(t, st.Installed())
	require.Equal(t, 1, st.InstallCount)
}

func TestListingXMLShape(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	req, err := http.NewRequest(http.MethodGet, e.url("/crx/packmgr/service.jsp?cmd=ls"), nil)
	require.NoError(t, err)
	resp, body := e.do(req)
	c := decodeCRX(t, resp, body)
	require.Equal(t, user, c.User)
	require.Equal(t, "crx.default", c.Workspace)
	require.NotEmpty(t, c.Version)
	require.Len(t, c.Request.Params, 1)
	require.Equal(t, "cmd", c.Request.Params[0].Name)
	require.Equal(t, "ls", c.Request.Params[0].Value)
	require.Equal(t, 200, c.Response.Status.Code)
	require.Equal(t, "ok", c.Response.Status.Text)
	for _, el := range []string{"<group>g</group>", "<name>a</name>", "<version>1.0</version>", "<downloadName>a-1.0.zip</downloadName>",
		"<size>", "<created>", "<createdBy>admin</createdBy>", "<lastModified></lastModified>", "<lastModifiedBy>null</lastModifiedBy>",
		"<lastUnpacked></lastUnpacked>", "<lastUnpackedBy>null</lastUnpackedBy>"} {
		require.Contains(t, string(body), el)
	}
}

func TestUploadExistingNeedsForce(t *testing.T) {
	e := start(t, "")
	zip := pkgZip("g", "a", "1.0", "")
	require.True(t, e.upload(zip, false).Success)
	require.True(t, e.cmd("install", pkgPath("g", "a", "1.0"), nil).Success)

	r := e.upload(zip, false)
	require.False(t, r.Success)
	require.Equal(t, "Package already exists: g:a:1.0", r.Msg)
	require.True(t, e.ls()["g:a:1.0"].installed(), "a refused upload changes nothing")

	// cmd and force as form fields instead of query parameters.
	body, ct := multipartBody(t, map[string]string{"cmd": "upload", "force": "true"}, "package", "a.zip", zip)
	req, err := http.NewRequest(http.MethodPost, e.url("/crx/packmgr/service/.json"), body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	resp, data := e.do(req)
	r = decodeJSON(t, resp, data)
	require.True(t, r.Success, r.Msg)
	require.Equal(t, "/etc/packages/g/a-1.0.zip", r.Path)
	require.False(t, e.ls()["g:a:1.0"].installed(), "a forced re-upload forgets the install")
}

func TestUploadRejectsInvalidPackages(t *testing.T) {
	e := start(t, "")
	noVersion := aempkgtest.Package(aempkgtest.Spec{Group: "g", Name: "a"})
	r := e.upload(noVersion, false)
	require.False(t, r.Success)
	require.Contains(t, r.Msg, "missing required property version")

	r = e.upload([]byte("not a zip"), false)
	require.False(t, r.Success)
	require.Contains(t, r.Msg, "zip")

	r = e.upload(aempkgtest.Zip(map[string]string{"jcr_root/x": "y"}), false)
	require.False(t, r.Success)
	require.Contains(t, r.Msg, "properties.xml")

	// No file part at all.
	body, ct := multipartBody(t, map[string]string{"force": "true"}, "", "", nil)
	req, err := http.NewRequest(http.MethodPost, e.url("/crx/packmgr/service/.json?cmd=upload"), body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	resp, data := e.do(req)
	r = decodeJSON(t, resp, data)
	require.False(t, r.Success)
	require.Contains(t, r.Msg, "package")

	require.Empty(t, e.ls())
	tmp, err := os.ReadDir(filepath.Join(e.dir, "tmp"))
	require.NoError(t, err)
	require.Empty(t, tmp, "rejected uploads leave nothing behind")
}

func TestUploadSizeLimit(t *testing.T) {
	e := start(t, "", func(c *sim.Config) { c.MaxUploadBytes = 100 })
	r := e.upload(pkgZip("g", "a", "1.0", ""), false)
	require.False(t, r.Success)
	require.Contains(t, r.Msg, "larger than 100 bytes")
	require.Empty(t, e.ls())
}

func TestUnknownPackageAndCommand(t *testing.T) {
	e := start(t, "")
	for _, cmd := range []string{"install", "uninstall", "delete", "build"} {
		resp, body := e.do(e.cmdReq(cmd, pkgPath("g", "nope", "1.0"), nil))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.JSONEq(t, `{"success":false,"msg":"no package"}`, string(body), cmd)
	}
	r := e.cmd("frobnicate", pkgPath("g", "nope", "1.0"), nil)
	require.False(t, r.Success)
	require.Contains(t, r.Msg, "frobnicate")

	req, err := http.NewRequest(http.MethodGet, e.url("/crx/packmgr/service/.json?cmd=upload"), nil)
	require.NoError(t, err)
	resp, _ := e.do(req)
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "upload", e.lastRequest("upload").Cmd)

	req, err = http.NewRequest(http.MethodGet, e.url("/crx/packmgr/nothing"), nil)
	require.NoError(t, err)
	resp, _ = e.do(req)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestInstallRefusedWhenDependencyMissing(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "app", "1.0", "g:lib:[1.0,2.0),g:other:1.0"), false).Success)
	r := e.cmd("install", pkgPath("g", "app", "1.0"), nil)
	require.False(t, r.Success)
	require.Equal(t, "Refusing to install package g:app:1.0. required dependencies missing: [g:lib:[1.0,2.0), g:other:1.0]", r.Msg)
	require.False(t, e.ls()["g:app:1.0"].installed())
	rec := e.lastRequest("install")
	require.Equal(t, sim.OutcomeFailure, rec.Outcome)
	require.Empty(t, rec.Installed)

	// Installed dependencies satisfy it; a version out of range does not.
	require.True(t, e.upload(pkgZip("g", "lib", "2.0", ""), false).Success)
	require.True(t, e.cmd("install", pkgPath("g", "lib", "2.0"), nil).Success)
	require.True(t, e.upload(pkgZip("g", "other", "1.5", ""), false).Success)
	require.True(t, e.cmd("install", pkgPath("g", "other", "1.5"), nil).Success)
	r = e.cmd("install", pkgPath("g", "app", "1.0"), nil)
	require.False(t, r.Success)
	require.Equal(t, "Refusing to install package g:app:1.0. required dependencies missing: [g:lib:[1.0,2.0)]", r.Msg)

	require.True(t, e.upload(pkgZip("g", "lib", "1.9", ""), false).Success)
	require.True(t, e.cmd("install", pkgPath("g", "lib", "1.9"), nil).Success)
	require.True(t, e.cmd("install", pkgPath("g", "app", "1.0"), nil).Success)
}

// FileVault's REQUIRED handling installs an uploaded but uninstalled
// dependency first; STRICT refuses; IGNORE does not look.
func TestDependencyHandlingModes(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "base", "1.0", ""), false).Success)
	require.True(t, e.upload(pkgZip("g", "lib", "1.0", "g:base:1.0"), false).Success)
	require.True(t, e.upload(pkgZip("g", "app", "1.0", "g:lib:1.0"), false).Success)

	r := e.cmd("install", pkgPath("g", "app", "1.0"), url.Values{"dependencyHandling": {"strict"}})
	require.False(t, r.Success)
	require.Equal(t, "Refusing to install package g:app:1.0. required dependencies missing: [g:lib:1.0]", r.Msg)

	r = e.cmd("install", pkgPath("g", "app", "1.0"), nil) // required (default)
	require.True(t, r.Success, r.Msg)
	require.Equal(t, []string{"g:base:1.0", "g:lib:1.0", "g:app:1.0"}, e.lastRequest("install").Installed)
	ls := e.ls()
	for _, id := range []string{"g:base:1.0", "g:lib:1.0", "g:app:1.0"} {
		require.True(t, ls[id].installed(), id)
	}

	require.True(t, e.upload(pkgZip("g", "loner", "1.0", "g:absent:1.0"), false).Success)
	r = e.cmd("install", pkgPath("g", "loner", "1.0"), url.Values{"dependencyHandling": {"ignore"}})
	require.True(t, r.Success, r.Msg)
}

func TestDependencyCycleRefused(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1", "g:b:1"), false).Success)
	require.True(t, e.upload(pkgZip("g", "b", "1", "g:a:1"), false).Success)
	r := e.cmd("install", pkgPath("g", "a", "1"), nil)
	require.False(t, r.Success)
	require.Equal(t, "Unable to install package g:b:1. dependency has as cycling reference to g:a:1", r.Msg)
	require.False(t, e.ls()["g:a:1"].installed())
	require.False(t, e.ls()["g:b:1"].installed())
}

func TestUninstall(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "lib", "1.0", ""), false).Success)
	require.True(t, e.upload(pkgZip("g", "app", "1.0", "g:lib:1.0"), false).Success)
	require.True(t, e.cmd("install", pkgPath("g", "app", "1.0"), nil).Success)

	r := e.cmd("uninstall", pkgPath("g", "lib", "1.0"), url.Values{"dependencyHandling": {"strict"}})
	require.False(t, r.Success)
	require.Equal(t, "Refusing to uninstall package g:lib:1.0. it is still used by: [g:app:1.0]", r.Msg)

	// Required: dependents are uninstalled first.
	resp, body := e.do(e.cmdReq("uninstall", pkgPath("g", "lib", "1.0"), nil))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"success":true,"msg":"Package uninstalled"}`, string(body))
	ls := e.ls()
	require.False(t, ls["g:lib:1.0"].installed())
	require.False(t, ls["g:app:1.0"].installed())
	require.Equal(t, "null", ls["g:lib:1.0"].LastUnpackedBy)

	// Uninstalling what is not installed changes nothing and succeeds.
	require.True(t, e.cmd("uninstall", pkgPath("g", "lib", "1.0"), nil).Success)
}

func TestDeleteAndBuild(t *testing.T) {
	e := start(t, "")
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	resp, body := e.do(e.cmdReq("build", pkgPath("g", "a", "1.0"), nil))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"success":true,"msg":"Package built"}`, string(body))

	require.True(t, e.cmd("install", pkgPath("g", "a", "1.0"), nil).Success)
	resp, body = e.do(e.cmdReq("delete", pkgPath("g", "a", "1.0"), nil))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"success":true,"msg":"Package deleted"}`, string(body))
	require.Empty(t, e.ls())
	_, err := os.Stat(filepath.Join(e.dir, "packages", "g", "a-1.0.zip"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, "no package", e.cmd("install", pkgPath("g", "a", "1.0"), nil).Msg)
}

func legacyReq(t *testing.T, e *env, fields map[string]string, zip []byte) *http.Request {
	t.Helper()
	body, ct := multipartBody(t, fields, "file", "pkg.zip", zip)
	req, err := http.NewRequest(http.MethodPost, e.url("/crx/packmgr/service.jsp"), body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", ct)
	return req
}

func TestLegacyOneShotUploadInstall(t *testing.T) {
	e := start(t, "")
	zip := pkgZip("g", "a", "1.0", "")
	resp, body := e.do(legacyReq(t, e, map[string]string{"name": "a", "force": "true", "install": "true"}, zip))
	c := decodeCRX(t, resp, body)
	require.Equal(t, 200, c.Response.Status.Code, "body: %s", body)
	require.Equal(t, "ok", c.Response.Status.Text)
	require.NotNil(t, c.Response.Data.Package)
	require.Equal(t, "a", c.Response.Data.Package.Name)
	require.Equal(t, user, c.Response.Data.Package.LastUnpackedBy)
	require.True(t, e.ls()["g:a:1.0"].installed())
	rec := e.lastRequest("upload")
	require.Equal(t, "g:a:1.0", rec.Package)
	require.Equal(t, []string{"g:a:1.0"}, rec.Installed)

	// Existing package without force: status 500 in the XML.
	resp, body = e.do(legacyReq(t, e, map[string]string{"name": "a", "install": "true"}, zip))
	c = decodeCRX(t, resp, body)
	require.Equal(t, 500, c.Response.Status.Code)
	require.Equal(t, "Package already exists: g:a:1.0", c.Response.Status.Text)
	require.Equal(t, sim.OutcomeFailure, e.lastRequest("upload").Outcome)

	// Install refused for a missing dependency: uploaded, not installed.
	resp, body = e.do(legacyReq(t, e, map[string]string{"install": "true"}, pkgZip("g", "b", "1.0", "g:zzz:1")))
	c = decodeCRX(t, resp, body)
	require.Equal(t, 500, c.Response.Status.Code)
	require.Equal(t, "Refusing to install package g:b:1.0. required dependencies missing: [g:zzz:1]", c.Response.Status.Text)
	_, uploaded := e.ls()["g:b:1.0"]
	require.True(t, uploaded)

	// Upload only.
	resp, body = e.do(legacyReq(t, e, map[string]string{"force": "true"}, pkgZip("g", "c", "1.0", "")))
	c = decodeCRX(t, resp, body)
	require.Equal(t, 200, c.Response.Status.Code)
	require.False(t, e.ls()["g:c:1.0"].installed())
}

func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir)
	require.True(t, e.upload(pkgZip("my/group", "a", "1.0", ""), false).Success)
	require.True(t, e.upload(pkgZip("my/group", "b", "2.0", "my/group:a:1.0"), false).Success)
	require.True(t, e.cmd("install", pkgPath("my/group", "b", "2.0"), nil).Success)
	before := e.ls()
	e.stop()

	// The files are where the layout says, and nothing temporary is left.
	_, err := os.Stat(filepath.Join(dir, "packages", "my", "group", "a-1.0.zip"))
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	require.NoError(t, err)
	var st struct {
		Version  int                `json:"version"`
		Packages []sim.PackageState `json:"packages"`
	}
	require.NoError(t, json.Unmarshal(data, &st))
	require.Equal(t, 1, st.Version)
	require.Len(t, st.Packages, 2)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, en := range entries {
		require.NotContains(t, en.Name(), ".tmp-")
	}

	e2 := start(t, dir)
	after := e2.ls()
	require.Equal(t, before, after)
	require.True(t, after["my/group:b:2.0"].installed())
	require.Equal(t, user, after["my/group:a:1.0"].LastUnpackedBy)
	// The restarted instance still knows the dependencies.
	require.True(t, e2.cmd("install", pkgPath("my/group", "b", "2.0"), nil).Success)
	st2, _ := e2.sim.Package("my/group:b:2.0")
	require.Equal(t, 2, st2.InstallCount)
}

func TestStateWithMissingZipIsDropped(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir)
	require.True(t, e.upload(pkgZip("g", "a", "1.0", ""), false).Success)
	require.True(t, e.upload(pkgZip("g", "b", "1.0", ""), false).Success)
	e.stop()
	require.NoError(t, os.Remove(filepath.Join(dir, "packages", "g", "a-1.0.zip")))
	e2 := start(t, dir)
	ls := e2.ls()
	require.Len(t, ls, 1)
	require.Contains(t, ls, "g:b:1.0")
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := sim.New(sim.Config{Password: "x", DataDir: t.TempDir()})
	require.Error(t, err)
	_, err = sim.New(sim.Config{User: "x", Password: "x"})
	require.Error(t, err)
	_, err = sim.New(sim.Config{User: "x", Password: "x", DataDir: t.TempDir(), DependencyHandling: "sometimes"})
	require.Error(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"version":99}`), 0o644))
	_, err = sim.New(sim.Config{User: "x", Password: "x", DataDir: dir})
	require.ErrorContains(t, err, "unsupported version")
}

func TestControlAPI(t *testing.T) {
	e := start(t, "")
	resp, err := e.client.Get(e.url("/_sim/health"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	added := e.postFaults(`[{"kind":"http-500","cmd":"ls","count":3},{"kind":"slow-install","package":"g:a:1","delay":"2s"}]`)
	require.Len(t, added, 2)
	require.NotZero(t, added[0].ID)
	require.Equal(t, sim.Duration(2*time.Second), added[1].Delay)
	require.Len(t, e.sim.Faults(), 2)

	for _, bad := range []string{`{"kind":"meteor"}`, `{"kind":"slow-install"}`, `{"kind":"http-500","cmd":"dance"}`, `{"kind":"install-failure","package":"nope"}`, `not json`} {
		resp, err := e.client.Post(e.url("/_sim/faults"), "application/json", strings.NewReader(bad))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, bad)
	}
	require.Len(t, e.sim.Faults(), 2, "a rejected batch adds nothing")

	req, err := http.NewRequest(http.MethodDelete, e.url("/_sim/faults?id="+strconv.FormatInt(added[0].ID, 10)), nil)
	require.NoError(t, err)
	resp, err = e.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Len(t, e.sim.Faults(), 1)

	req, err = http.NewRequest(http.MethodDelete, e.url("/_sim/faults"), nil)
	require.NoError(t, err)
	resp, err = e.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, e.sim.Faults())

	e.ls()
	require.NotEmpty(t, e.requests())
	req, err = http.NewRequest(http.MethodDelete, e.url("/_sim/requests"), nil)
	require.NoError(t, err)
	resp, err = e.client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, e.requests(), "control requests are not logged")

	resp, err = e.client.Get(e.url("/_sim/packages"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
