package sim

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
)

// AEM's answers. Those marked FileVault are format strings copied from
// FileVault's JcrPackageImpl; the others follow AEM-APIS.md or, where marked
// unverified, are our best guess at AEM's wording.
const (
	msgUploaded    = "Package uploaded"
	msgInstalled   = "Package installed"
	msgUninstalled = "Package uninstalled"
	msgDeleted     = "Package deleted"
	msgBuilt       = "Package built"
	msgNoPackage   = "no package"
	// FileVault. AEM-APIS.md writes ": required" after the id; FileVault's
	// source has ". required", which is what AEM returns.
	fmtDepsMissing = "Refusing to install package %s. required dependencies missing: %s"
	// FileVault.
	fmtCycle = "Unable to install package %s. dependency has as cycling reference to %s"
	// FileVault.
	fmtStillUsed = "Refusing to uninstall package %s. it is still used by: %s"
	// Unverified: FileVault's PackageExistsException text.
	fmtExists = "Package already exists: %s"
	// Unverified.
	msgDefaultInstallFailure = "simulated install failure"
)

// errNoPackage is returned when the package disappeared mid-operation.
var errNoPackage = errors.New(msgNoPackage)

// serveJSON handles /crx/packmgr/service/.json[/etc/packages/...].
func (s *Sim) serveJSON(c *call, pkgPath string) response {
	switch c.cmd {
	case "upload":
		id, msg, err := s.upload(c)
		if err != nil {
			return jsonResponse(http.StatusOK, false, err.Error(), "")
		}
		return jsonResponse(http.StatusOK, true, msg, id.Path())
	case "install", "uninstall", "delete", "build":
	case "":
		return jsonResponse(http.StatusOK, false, "No command given (cmd)", "") // unverified
	default:
		return jsonResponse(http.StatusOK, false, "Unknown command: "+c.cmd, "") // unverified
	}
	id, ok := s.lookupPath(pkgPath)
	if !ok {
		return jsonResponse(http.StatusOK, false, msgNoPackage, "")
	}
	s.updateRequest(c.rec, func(q *Request) { q.Package = id.String() })
	handling, err := s.handling(c)
	if err != nil {
		return jsonResponse(http.StatusOK, false, err.Error(), "")
	}
	var msg string
	switch c.cmd {
	case "install":
		err, msg = s.install(c, id, handling), msgInstalled
	case "uninstall":
		err, msg = s.uninstall(c, id, handling), msgUninstalled
	case "delete":
		err, msg = s.delete(id), msgDeleted
	case "build":
		err, msg = s.build(c, id), msgBuilt
	}
	if err != nil {
		return jsonResponse(http.StatusOK, false, err.Error(), "")
	}
	return jsonResponse(http.StatusOK, true, msg, "")
}

// serveLegacy handles /crx/packmgr/service.jsp: cmd=ls, or a one-shot
// upload (multipart file, name, force, install). Failures are reported as
// <status code="500"> in an HTTP 200 response (unverified: AEM may also use
// HTTP 500 for some).
func (s *Sim) serveLegacy(c *call) response {
	if c.cmd == "ls" {
		return s.list(c)
	}
	if c.upload == nil {
		if c.cmd != "" && c.cmd != "upload" {
			return xmlResponse(c, nil, http.StatusInternalServerError, "Unknown command: "+c.cmd) // unverified
		}
		return xmlResponse(c, nil, http.StatusInternalServerError, "No package file in request (multipart field \"file\")") // unverified
	}
	id, _, err := s.upload(c)
	if err != nil {
		return xmlResponse(c, nil, http.StatusInternalServerError, err.Error())
	}
	if isTrue(c.fields["install"]) {
		handling, err := s.handling(c)
		if err == nil {
			err = s.install(c, id, handling)
		}
		if err != nil {
			return xmlResponse(c, &crxData{Package: s.crxPackage(id)}, http.StatusInternalServerError, err.Error())
		}
	}
	return xmlResponse(c, &crxData{Package: s.crxPackage(id)}, http.StatusOK, "ok")
}

// installStatus is the body of installstatus.jsp.
type installStatus struct {
	Status struct {
		Finished  bool `json:"finished"`
		ItemCount int  `json:"itemCount"`
	} `json:"status"`
}

func (s *Sim) serveInstallStatus(c *call) response {
	var st installStatus
	s.mu.Lock()
	st.Status.Finished = s.progress == nil
	if s.progress != nil {
		st.Status.ItemCount = s.progress.items
	}
	s.mu.Unlock()
	body, _ := json.Marshal(st)
	return response{status: http.StatusOK, contentType: "application/json;charset=utf-8", body: append(body, '\n'), outcome: OutcomeSuccess}
}

func isTrue(v string) bool { return strings.EqualFold(v, "true") }

// handling is the request's dependencyHandling parameter or the default.
// Unverified: that AEM's service accepts this parameter.
func (s *Sim) handling(c *call) (string, error) {
	if v := c.fields["dependencyHandling"]; v != "" {
		return parseDependencyHandling(v)
	}
	return s.cfg.DependencyHandling, nil
}

// lookupPath finds the uploaded package stored at an /etc/packages path.
func (s *Sim) lookupPath(p string) (aempkg.ID, bool) {
	if !strings.HasPrefix(p, aempkg.PackagesRoot) {
		return aempkg.ID{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.store.entries {
		if id.Path() == p {
			return id, true
		}
	}
	return aempkg.ID{}, false
}

// upload stores an uploaded package. Without force an existing package of
// the same id is an error. A forced upload replaces the stored zip and, like
// AEM re-creating the package node, forgets that it was installed
// (unverified: we have not confirmed that AEM drops lastUnpacked here).
func (s *Sim) upload(c *call) (aempkg.ID, string, error) {
	if c.upload == nil {
		return aempkg.ID{}, "", errors.New("No package file in request (multipart field \"package\")") // unverified
	}
	pkg, items, _, err := s.store.readZip(c.upload.tmp)
	if err != nil {
		return aempkg.ID{}, "", fmt.Errorf("Invalid package: %v", err) // unverified wording
	}
	id := pkg.ID
	s.updateRequest(c.rec, func(q *Request) { q.Package = id.String() })
	force := isTrue(c.fields["force"])

	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.store.entries[id]
	if exists && !force {
		return id, "", fmt.Errorf(fmtExists, id)
	}
	if err := s.store.commitUpload(c.upload.tmp, id); err != nil {
		return id, "", fmt.Errorf("Unable to store package: %v", err)
	}
	c.upload = nil // moved into place; nothing to clean up
	now := s.cfg.Now()
	st := PackageState{
		ID: id.String(), Group: id.Group, Name: id.Name, Version: id.Version.String(), Path: id.Path(),
		Size: sizeOf(s, id), Dependencies: pkg.Properties[aempkg.PropDependencies],
		Uploaded: now, UploadedBy: c.user, Created: now, CreatedBy: c.user,
	}
	if t, ok := parseJCRDate(pkg.Properties["created"]); ok {
		st.Created = t
	}
	if v := pkg.Properties["createdBy"]; v != "" {
		st.CreatedBy = v
	}
	if t, ok := parseJCRDate(pkg.Properties["lastModified"]); ok {
		st.LastModified = &t
	}
	st.LastModifiedBy = pkg.Properties["lastModifiedBy"]
	s.store.entries[id] = &entry{id: id, pkg: pkg, state: st, items: items}
	if err := s.store.saveLocked(); err != nil {
		if exists {
			s.store.entries[id] = old
		} else {
			delete(s.store.entries, id)
		}
		return id, "", fmt.Errorf("Unable to store package: %v", err)
	}
	s.log.Info("package uploaded", "id", id, "user", c.user, "force", force, "replaced", exists)
	return id, msgUploaded, nil
}

func sizeOf(s *Sim, id aempkg.ID) int64 {
	fi, err := s.store.root.Stat(zipRel(id))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// parseJCRDate reads the ISO 8601 dates FileVault writes into properties.xml
// (2024-01-31T10:00:00.000+01:00).
func parseJCRDate(v string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02T15:04:05.000Z07:00", time.RFC3339Nano, time.RFC3339} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// install installs id after its dependencies, per FileVault's
// JcrPackageImpl.extract/installDependencies, and records what it installed.
func (s *Sim) install(c *call, id aempkg.ID, handling string) error {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	var installed []string
	err := s.extract(c.user, id, handling, map[aempkg.ID]bool{}, &installed)
	s.updateRequest(c.rec, func(q *Request) { q.Installed = append(q.Installed, installed...) })
	return err
}

// extract is FileVault's dependency handling around one install:
//   - every dependency is resolved to the highest matching uploaded package;
//   - strict refuses unless all of them are installed;
//   - required refuses when one is not even uploaded;
//   - otherwise (required, best_effort) uploaded-but-uninstalled ones are
//     installed first, recursively, and a dependency met again on the way is
//     a cycle (best_effort skips it);
//   - ignore looks at none of this.
//
// The refusal lists every unresolved dependency, uploaded or not, as
// FileVault does. s.installMu must be held.
func (s *Sim) extract(user string, id aempkg.ID, handling string, processed map[aempkg.ID]bool, installed *[]string) error {
	processed[id] = true
	if handling != DepIgnore {
		s.mu.Lock()
		e := s.store.entries[id]
		if e == nil {
			s.mu.Unlock()
			return errNoPackage
		}
		var unresolved []string
		var uninstalled []aempkg.ID
		for _, d := range e.pkg.Dependencies {
			best := s.resolveLocked(d, false)
			switch {
			case best == nil:
				unresolved = append(unresolved, d.String())
			case !best.state.Installed():
				unresolved = append(unresolved, d.String())
				uninstalled = append(uninstalled, best.id)
			}
		}
		s.mu.Unlock()
		if handling == DepStrict && len(unresolved) > 0 ||
			handling == DepRequired && len(unresolved) > len(uninstalled) {
			return fmt.Errorf(fmtDepsMissing, id, "["+strings.Join(unresolved, ", ")+"]")
		}
		for _, dep := range uninstalled {
			if s.isInstalled(dep) {
				continue
			}
			if processed[dep] {
				if handling == DepBestEffort {
					continue
				}
				return fmt.Errorf(fmtCycle, id, dep)
			}
			if err := s.extract(user, dep, handling, processed, installed); err != nil {
				return err
			}
		}
	}
	return s.installOne(user, id, installed)
}

// installOne installs one package: the slow-install delay, the
// install-failure fault, then the record. s.installMu must be held.
func (s *Sim) installOne(user string, id aempkg.ID, installed *[]string) error {
	s.mu.Lock()
	e := s.store.entries[id]
	if e == nil {
		s.mu.Unlock()
		return errNoPackage
	}
	slow, isSlow := s.takeInstallFaultLocked(FaultSlowInstall, id)
	s.progress = &progress{pkg: id, items: e.items}
	s.mu.Unlock()

	if isSlow {
		s.log.Info("slow install", "id", id, "delay", time.Duration(slow.Delay))
		t := time.NewTimer(time.Duration(slow.Delay))
		select {
		case <-t.C:
		case <-s.closing: // shutting down: finish now rather than hold up Close
			t.Stop()
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress = nil
	if f, ok := s.takeInstallFaultLocked(FaultInstallFailure, id); ok {
		msg := f.Message
		if msg == "" {
			msg = msgDefaultInstallFailure
		}
		s.log.Info("install failed (injected)", "id", id, "msg", msg)
		return errors.New(msg)
	}
	e = s.store.entries[id]
	if e == nil {
		return errNoPackage
	}
	prev := e.state
	now := s.cfg.Now()
	e.state.LastUnpacked = &now
	e.state.LastUnpackedBy = user
	e.state.InstallCount++
	if err := s.store.saveLocked(); err != nil {
		e.state = prev
		return fmt.Errorf("Unable to record installation: %v", err)
	}
	*installed = append(*installed, id.String())
	s.log.Info("package installed", "id", id, "user", user, "count", e.state.InstallCount)
	return nil
}

// uninstall follows FileVault's JcrPackageImpl.uninstall: strict refuses
// while installed packages depend on id; required and best_effort first
// uninstall those dependents. Uninstalling a package that is not installed
// (FileVault: no snapshot) succeeds and changes nothing, as FileVault does
// outside strict import mode (unverified for AEM's default options).
func (s *Sim) uninstall(c *call, id aempkg.ID, handling string) error {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	return s.uninstallRec(c, id, handling, map[aempkg.ID]bool{})
}

func (s *Sim) uninstallRec(c *call, id aempkg.ID, handling string, processed map[aempkg.ID]bool) error {
	processed[id] = true
	if handling != DepIgnore {
		usage := s.usage(id)
		if len(usage) > 0 && handling == DepStrict {
			names := make([]string, 0, len(usage))
			for _, u := range usage {
				names = append(names, u.String())
			}
			return fmt.Errorf(fmtStillUsed, id, "["+strings.Join(names, ", ")+"]")
		}
		for _, u := range usage {
			if processed[u] || !s.isInstalled(u) {
				continue
			}
			if err := s.uninstallRec(c, u, handling, processed); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.store.entries[id]
	if e == nil {
		return errNoPackage
	}
	if !e.state.Installed() {
		return nil
	}
	prev := e.state
	e.state.LastUnpacked = nil
	e.state.LastUnpackedBy = ""
	if err := s.store.saveLocked(); err != nil {
		e.state = prev
		return fmt.Errorf("Unable to record uninstallation: %v", err)
	}
	s.log.Info("package uninstalled", "id", id, "user", c.user)
	return nil
}

// delete removes an uploaded package (installed or not; like AEM, the
// installed content would stay). It queues behind a running install.
func (s *Sim) delete(id aempkg.ID) error {
	s.installMu.Lock()
	defer s.installMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.store.entries[id]
	if e == nil {
		return errNoPackage
	}
	delete(s.store.entries, id)
	if err := s.store.saveLocked(); err != nil {
		s.store.entries[id] = e
		return fmt.Errorf("Unable to delete package: %v", err)
	}
	if err := s.store.removeZip(id); err != nil {
		s.log.Warn("package deleted but its zip could not be removed", "id", id, "error", err)
	}
	s.log.Info("package deleted", "id", id)
	return nil
}

// build is accepted for completeness; the simulator has no repository to
// build from, so it only checks the package exists.
func (s *Sim) build(c *call, id aempkg.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store.entries[id] == nil {
		return errNoPackage
	}
	s.log.Info("package built (no-op)", "id", id, "user", c.user)
	return nil
}

// resolveLocked is FileVault's PackageRegistry.resolve: the highest version
// among the (installed, if onlyInstalled) packages matching d. Equal-comparing
// versions ("1" and "1.0") are ordered by string for determinism. s.mu must
// be held.
func (s *Sim) resolveLocked(d aempkg.Dependency, onlyInstalled bool) *entry {
	var best *entry
	for id, e := range s.store.entries {
		if !d.Matches(id) || onlyInstalled && !e.state.Installed() {
			continue
		}
		if best == nil {
			best = e
			continue
		}
		c := id.Version.Compare(best.id.Version)
		if c > 0 || c == 0 && id.Version.String() > best.id.Version.String() {
			best = e
		}
	}
	return best
}

func (s *Sim) isInstalled(id aempkg.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.store.entries[id]
	return e != nil && e.state.Installed()
}

// usage lists the installed packages with a dependency that id satisfies
// (FileVault's PackageRegistry.usage), sorted.
func (s *Sim) usage(id aempkg.ID) []aempkg.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []aempkg.ID
	for uid, e := range s.store.entries {
		if uid == id || !e.state.Installed() {
			continue
		}
		if slices.ContainsFunc(e.pkg.Dependencies, func(d aempkg.Dependency) bool { return d.Matches(id) }) {
			out = append(out, uid)
		}
	}
	slices.SortFunc(out, func(a, b aempkg.ID) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// Packages returns the state of every uploaded package, sorted by id.
func (s *Sim) Packages() []PackageState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PackageState, 0, len(s.store.entries))
	for _, e := range s.store.entries {
		out = append(out, e.state)
	}
	slices.SortFunc(out, func(a, b PackageState) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Package returns the state of one package by group:name:version.
func (s *Sim) Package(id string) (PackageState, bool) {
	pid, err := aempkg.ParseID(id)
	if err != nil {
		return PackageState{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.store.entries[pid]
	if e == nil {
		return PackageState{}, false
	}
	return e.state, true
}

// The service.jsp XML, e.g.
//
//	<crx version="1.6.13" user="admin" workspace="crx.default">
//	  <request><param name="cmd" value="ls"/></request>
//	  <response>
//	    <data><packages><package>...</package></packages></data>
//	    <status code="200">ok</status>
//	  </response>
//	</crx>
type crxXML struct {
	XMLName   xml.Name    `xml:"crx"`
	Version   string      `xml:"version,attr"`
	User      string      `xml:"user,attr"`
	Workspace string      `xml:"workspace,attr"`
	Request   crxRequest  `xml:"request"`
	Response  crxResponse `xml:"response"`
}

type crxRequest struct {
	Params []crxParam `xml:"param"`
}

type crxParam struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type crxResponse struct {
	Data   crxData   `xml:"data"`
	Status crxStatus `xml:"status"`
}

type crxData struct {
	Packages *crxPackages `xml:"packages,omitempty"`
	Package  *crxPackage  `xml:"package,omitempty"`
}

type crxPackages struct {
	Package []crxPackage `xml:"package"`
}

// crxPackage is one <package> of a listing. Absent dates are empty elements
// and absent users the string "null", as AEM renders them; a package is
// installed when lastUnpackedBy is neither empty nor "null".
type crxPackage struct {
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

type crxStatus struct {
	Code int    `xml:"code,attr"`
	Text string `xml:",chardata"`
}

// crxDateLayout is how service.jsp renders dates ("Tue, 25 Feb 2014 11:40:56 +0100").
const crxDateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

func crxDate(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.Format(crxDateLayout)
}

func nullIfEmpty(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

func toCRXPackage(st PackageState) crxPackage {
	created := st.Created
	return crxPackage{
		Group: st.Group, Name: st.Name, Version: st.Version,
		DownloadName:   st.Name + "-" + st.Version + ".zip",
		Size:           st.Size,
		Created:        crxDate(&created),
		CreatedBy:      nullIfEmpty(st.CreatedBy),
		LastModified:   crxDate(st.LastModified),
		LastModifiedBy: nullIfEmpty(st.LastModifiedBy),
		LastUnpacked:   crxDate(st.LastUnpacked),
		LastUnpackedBy: nullIfEmpty(st.LastUnpackedBy),
	}
}

func (s *Sim) crxPackage(id aempkg.ID) *crxPackage {
	st, ok := s.Package(id.String())
	if !ok {
		return nil
	}
	p := toCRXPackage(st)
	return &p
}

func (s *Sim) list(c *call) response {
	pkgs := &crxPackages{Package: []crxPackage{}}
	for _, st := range s.Packages() {
		pkgs.Package = append(pkgs.Package, toCRXPackage(st))
	}
	return xmlResponse(c, &crxData{Packages: pkgs}, http.StatusOK, "ok")
}

// xmlResponse renders a service.jsp answer. It is always HTTP 200; code is
// the status inside the XML.
func xmlResponse(c *call, data *crxData, code int, text string) response {
	doc := crxXML{Version: simCRXVersion(c), User: c.user, Workspace: "crx.default"}
	keys := make([]string, 0, len(c.fields))
	for k := range c.fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		doc.Request.Params = append(doc.Request.Params, crxParam{Name: k, Value: c.fields[k]})
	}
	if c.fileName != "" {
		doc.Request.Params = append(doc.Request.Params, crxParam{Name: "file", Value: c.fileName})
	}
	if data != nil {
		doc.Response.Data = *data
	}
	doc.Response.Status = crxStatus{Code: code, Text: text}
	body, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		body = []byte(fmt.Sprintf("<crx><response><status code=\"500\">%v</status></response></crx>", err))
	}
	outcome := OutcomeSuccess
	if code != http.StatusOK {
		outcome = OutcomeFailure
	}
	msg := ""
	if code != http.StatusOK {
		msg = text
	}
	return response{
		status:      http.StatusOK,
		contentType: "text/xml;charset=utf-8",
		body:        append([]byte(xml.Header), append(body, '\n')...),
		outcome:     outcome,
		msg:         msg,
	}
}

func simCRXVersion(c *call) string { return c.crxVersion }
