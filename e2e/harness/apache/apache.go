// Package apache runs a real Apache httpd for tests: one private instance
// per test, laid out like an AMS dispatcher's httpd directory in
// t.TempDir(), listening on a free loopback port, stopped on t.Cleanup with
// no process left behind. It also builds dispatcher artifacts (zips) from
// maps of files.
//
// The harness owns only the Apache process, its directory and artifact
// zips. It does not import the code under test (agent/dispatcher): a test
// checks what a deployment did by asking Apache itself.
//
// # Layout (Instance.Dir is both the httpd dir and Apache's ServerRoot)
//
//	conf/httpd.conf                        generated per instance (Listen, PidFile, ErrorLog,
//	                                       Mutex, DocumentRoot); immutable in the AMS list
//	conf.modules.d/00-base.conf            LoadModule lines (mpm_event, authz_core, dir, mime,
//	                                       rewrite, headers, alias); managed
//	conf.modules.d/02-dispatcher.conf      a comment (mod_dispatcher is Adobe's); immutable
//	conf.d/dispatcher_vhost.conf           Include conf.d/enabled_vhosts/*.vhost; immutable
//	conf.d/available_vhosts/default.vhost  <VirtualHost *:*> including the rewrite rules; managed
//	conf.d/enabled_vhosts/default.vhost    -> ../available_vhosts/default.vhost
//	conf.d/rewrites/default_rewrite.rules  RewriteRule ^/page$ /v1.html [PT]; managed
//	conf.dispatcher.d/dispatcher.any       $include "enabled_farms/*_farm.any"; immutable
//	conf.dispatcher.d/...                  a farm with $includes (checked by the agent's
//	                                       include validator only; Apache never reads them)
//	modules -> /usr/lib/apache2/modules    as on RHEL; logs/ and run/ are real directories
//
// ManagedFiles and ManagedSymlinks are the managed part: an artifact built
// from them (DefaultArtifact) redeploys the layout unchanged, and a test
// changes the served page by changing "conf.d/rewrites/default_rewrite.rules".
//
// # Configuring the agent for an instance
//
//	cfg := &dispatcher.Config{
//		HTTPDDir:   in.Dir,               // ServerRoot defaults to it
//		ConfigTest: in.ConfigTestArgv(),  // apache2 -t -f <Dir>/conf/httpd.conf
//		Reload:     in.GracefulArgv(),    // apache2 -k graceful -f <Dir>/conf/httpd.conf
//		BackupDir:  t.TempDir(),
//	}
//	err := cfg.Prepare("test", "")       // default managed dirs and AMS immutable list fit
//
// For CacheFlush in docroot mode, set Flush.Mode "docroot" and Flush.Docroot
// to in.DocRoot (Apache here has no dispatcher module, so no flush URL).
package apache

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RequireRealEnv names the environment variable that turns a missing real
// component into a test failure instead of a skip. CI sets it to "1".
const RequireRealEnv = "DECKHAND_REQUIRE_REAL"

// BinaryEnv overrides the Apache binary (default /usr/sbin/apache2, then
// apache2 or httpd on $PATH).
const BinaryEnv = "DECKHAND_APACHE"

// ModulesEnv overrides the modules directory (default /usr/lib/apache2/modules).
const ModulesEnv = "DECKHAND_APACHE_MODULES"

const (
	defaultBinary  = "/usr/sbin/apache2"
	defaultModules = "/usr/lib/apache2/modules"
)

// Require returns the path of the Apache binary. When it is missing, the
// test fails if RequireRealEnv is "1" and is skipped otherwise (as the
// haproxy harness does).
func Require(t testing.TB) string {
	t.Helper()
	path, err := findBinary()
	if err == nil {
		_, err = modulesDir()
	}
	if err == nil {
		return path
	}
	if os.Getenv(RequireRealEnv) == "1" {
		t.Fatalf("apache is required (%s=1) but not usable: %v", RequireRealEnv, err)
		return ""
	}
	t.Skipf("apache not available (%v); set %s=1 to make this a failure", err, RequireRealEnv)
	return ""
}

func findBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		path, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%s=%q: %w", BinaryEnv, p, err)
		}
		return path, nil
	}
	if path, err := exec.LookPath(defaultBinary); err == nil {
		return path, nil
	}
	if path, err := exec.LookPath("apache2"); err == nil {
		return path, nil
	}
	return exec.LookPath("httpd")
}

func modulesDir() (string, error) {
	d := defaultModules
	if p := os.Getenv(ModulesEnv); p != "" {
		d = p
	}
	if _, err := os.Stat(filepath.Join(d, "mod_mpm_event.so")); err != nil {
		return "", fmt.Errorf("apache modules: %w", err)
	}
	return d, nil
}

// ManagedFiles returns the managed files of the default layout (what a
// dispatcher artifact for the instance holds), by slash path relative to
// the httpd dir. The map is a fresh copy.
func ManagedFiles() map[string]string {
	return map[string]string{
		"conf.modules.d/00-base.conf": `# Modules the test config uses. mod_unixd is built in.
LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule dir_module modules/mod_dir.so
LoadModule mime_module modules/mod_mime.so
LoadModule rewrite_module modules/mod_rewrite.so
LoadModule headers_module modules/mod_headers.so
LoadModule alias_module modules/mod_alias.so
`,
		"conf.d/available_vhosts/default.vhost": `<VirtualHost *:*>
	ServerName default
	Include conf.d/rewrites/default_rewrite.rules
	Header always set X-Deckhand-Vhost "default"
</VirtualHost>
`,
		"conf.d/rewrites/default_rewrite.rules": `RewriteEngine On
RewriteRule ^/page$ /v1.html [PT]
`,
		"conf.d/variables/custom.vars": "Define DECKHAND_TEST_VAR on\n",
		"conf.dispatcher.d/available_farms/default_farm.any": `/defaultfarm {
	/clientheaders { $include "../clientheaders/default_clientheaders.any" }
	/virtualhosts { $include "../vhosts/default_vhosts.any" }
	/filter { $include "../filters/default_filters.any" }
	/cache {
		/docroot "/var/www/html"
		/rules { $include "../cache/default_rules.any" }
		/statfileslevel "2"
	}
}
`,
		"conf.dispatcher.d/clientheaders/default_clientheaders.any": "\"*\"\n",
		"conf.dispatcher.d/vhosts/default_vhosts.any":               "\"*\"\n",
		"conf.dispatcher.d/filters/default_filters.any":             "/0001 { /type \"deny\" /url \"*\" }\n/0002 { /type \"allow\" /url \"/content/*\" }\n",
		"conf.dispatcher.d/cache/default_rules.any":                 "/0000 { /glob \"*\" /type \"allow\" }\n",
	}
}

// ManagedSymlinks returns the managed symlinks of the default layout
// (enabled_* entries pointing into available_*), path -> target.
func ManagedSymlinks() map[string]string {
	return map[string]string{
		"conf.d/enabled_vhosts/default.vhost":              "../available_vhosts/default.vhost",
		"conf.dispatcher.d/enabled_farms/default_farm.any": "../available_farms/default_farm.any",
	}
}

// staticImmutableFiles are the immutable files that do not depend on the
// instance (httpd.conf is generated).
var staticImmutableFiles = map[string]string{
	"conf.modules.d/02-dispatcher.conf": "# AMS loads mod_dispatcher here; it is Adobe's module and not in Debian.\n",
	"conf.d/dispatcher_vhost.conf":      "# AMS dispatcher vhost framework (immutable): the enabled vhosts.\nInclude conf.d/enabled_vhosts/*.vhost\n",
	"conf.dispatcher.d/dispatcher.any":  "/farms {\n\t$include \"enabled_farms/*_farm.any\"\n}\n",
}

// ImmutableFiles returns the immutable files of the default layout except
// conf/httpd.conf, which Start generates per instance (a fresh copy).
func ImmutableFiles() map[string]string {
	out := map[string]string{}
	for k, v := range staticImmutableFiles {
		out[k] = v
	}
	return out
}

// DefaultDocRoot is the content served unless Config.DocRoot says
// otherwise: /page is rewritten to v1.html by the default rules.
func DefaultDocRoot() map[string]string {
	return map[string]string{
		"index.html":  "deckhand test index\n",
		"health.html": "ok\n",
		"v1.html":     "version 1\n",
		"v2.html":     "version 2\n",
		"v3.html":     "version 3\n",
	}
}

// Config describes the instance to start. Zero values take the defaults.
type Config struct {
	// Files adds or replaces files of the httpd dir (relative slash
	// paths) after the default layout is written; RemoveFiles deletes
	// some of the defaults.
	Files       map[string]string
	RemoveFiles []string
	// DocRoot replaces DefaultDocRoot.
	DocRoot map[string]string
	// StartTimeout bounds waiting for the first 200 on /health.html.
	// Default 15s.
	StartTimeout time.Duration
}

// Instance is a running Apache. Its fields are read-only.
type Instance struct {
	// URL is the base URL, e.g. "http://127.0.0.1:41234".
	URL  string
	Addr string
	Port int
	// Dir is the httpd dir and ServerRoot.
	Dir string
	// ConfPath is Dir/conf/httpd.conf.
	ConfPath string
	// DocRoot is the document root (outside Dir).
	DocRoot string
	// Binary is the apache2 binary.
	Binary string
	// ErrorLog is Apache's error log.
	ErrorLog string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	outPath string
	stopped bool
	client  *http.Client
}

// ConfigTestArgv is the agent's configtest command for this instance.
func (in *Instance) ConfigTestArgv() []string {
	return []string{in.Binary, "-t", "-f", in.ConfPath}
}

// GracefulArgv is the agent's reload command for this instance.
func (in *Instance) GracefulArgv() []string {
	return []string{in.Binary, "-k", "graceful", "-f", in.ConfPath}
}

const startAttempts = 5

// Start lays out a fresh httpd dir, checks its config, starts Apache in
// the foreground as a child of the test and waits until it serves. It is
// stopped on t.Cleanup; if the test process dies first, the kernel tells
// Apache's parent to stop (Pdeathsig SIGTERM), and it stops its workers.
func Start(t testing.TB, cfg Config) *Instance {
	t.Helper()
	bin := Require(t)
	base := t.TempDir()
	dir, docroot, err := layout(base, cfg)
	if err != nil {
		t.Fatalf("apache harness: %v", err)
	}
	in, err := startRetrying(bin, dir, docroot, cfg, func(attempt int, err error) {
		t.Logf("apache harness: attempt %d: %v; retrying with another port", attempt, err)
	})
	if err != nil {
		t.Fatalf("apache harness: start: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(in.ErrorLog); err == nil && len(b) > 0 {
				t.Logf("apache error_log (%s):\n%s", in.ErrorLog, b)
			}
		}
		if err := in.Stop(); err != nil {
			t.Errorf("apache harness: stop: %v", err)
		}
	})
	return in
}

// Find returns the path of the Apache binary (BinaryEnv, then
// /usr/sbin/apache2, apache2 or httpd on $PATH) after checking that its
// modules directory is there, for programs that cannot use Require.
func Find() (string, error) {
	path, err := findBinary()
	if err != nil {
		return "", err
	}
	if _, err := modulesDir(); err != nil {
		return "", err
	}
	return path, nil
}

// StartProcess is Start for a program rather than a test (e.g. make
// demo): it lays out the instance in base (created if missing; it and its
// parents are made searchable by Apache's workers), starts Apache and
// waits until it serves. The caller must call Stop. Apache's parent dies
// with the calling thread's process (Pdeathsig) and runs in its own
// process group.
func StartProcess(base string, cfg Config) (*Instance, error) {
	bin, err := Find()
	if err != nil {
		return nil, fmt.Errorf("apache not available: %w", err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	dir, docroot, err := layout(base, cfg)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		// layout opened base up to its first world-searchable parent;
		// a 0700 directory further up still locks www-data out.
		for d := filepath.Dir(base); d != "/" && d != "."; d = filepath.Dir(d) {
			if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o001 == 0 {
				return nil, fmt.Errorf("apache: %s is not searchable by other users; Apache's workers (www-data) cannot reach the docroot %s", d, docroot)
			}
		}
	}
	return startRetrying(bin, dir, docroot, cfg, nil)
}

// layout writes the httpd dir and the docroot under base.
func layout(base string, cfg Config) (dir, docroot string, err error) {
	mods, err := modulesDir()
	if err != nil {
		return "", "", err
	}
	// Apache's workers run as www-data: every directory from / down to
	// the docroot must be searchable by it. t.TempDir() and its parent are
	// 0700.
	if err := openUp(base); err != nil {
		return "", "", err
	}
	dir, docroot = filepath.Join(base, "httpd"), filepath.Join(base, "docroot")
	content := cfg.DocRoot
	if content == nil {
		content = DefaultDocRoot()
	}
	for name, body := range content {
		if err := writeFile(filepath.Join(docroot, filepath.FromSlash(name)), body); err != nil {
			return "", "", err
		}
	}
	files := ManagedFiles()
	for k, v := range staticImmutableFiles {
		files[k] = v
	}
	for k, v := range cfg.Files {
		files[k] = v
	}
	for _, k := range cfg.RemoveFiles {
		delete(files, k)
	}
	for name, body := range files {
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(name)), body); err != nil {
			return "", "", err
		}
	}
	for name, target := range ManagedSymlinks() {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", "", err
		}
		if err := os.Symlink(target, p); err != nil {
			return "", "", err
		}
	}
	for _, d := range []string{"logs", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", "", err
		}
	}
	if err := os.Symlink(mods, filepath.Join(dir, "modules")); err != nil {
		return "", "", err
	}
	return dir, docroot, nil
}

// startRetrying starts Apache, trying another port when the one picked
// was taken meanwhile; retry (optional) hears about each retried attempt.
func startRetrying(bin, dir, docroot string, cfg Config, retry func(attempt int, err error)) (*Instance, error) {
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		in, err := start(bin, dir, docroot, cfg)
		if err == nil {
			return in, nil
		}
		lastErr = err
		if !errors.Is(err, errBind) {
			break
		}
		if retry != nil {
			retry(attempt, err)
		}
	}
	return nil, lastErr
}

var errBind = errors.New("port already in use")

// openUp makes p and its parents up to the first world-searchable one
// searchable by everyone (no read or write added).
func openUp(p string) error {
	for d := p; d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 != 0 && d != p {
			return nil
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o055); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(p, body string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(body), 0o644)
}

func (in *Instance) httpdConf() string {
	user := ""
	if os.Geteuid() == 0 {
		// Root starts Apache; its workers must drop to an account.
		user = "User www-data\nGroup www-data\n"
	}
	return fmt.Sprintf(`# Generated by the deckhand apache test harness (immutable in the AMS list).
ServerRoot %q
Listen %s
PidFile %q
ErrorLog %q
Mutex file:%s default
LogLevel warn
%sServerName 127.0.0.1
Include conf.modules.d/*.conf
<IfModule mpm_event_module>
	StartServers 2
	ServerLimit 8
	ThreadsPerChild 16
	MaxRequestWorkers 64
	MinSpareThreads 8
	MaxSpareThreads 48
</IfModule>
GracefulShutdownTimeout 5
DocumentRoot %q
<Directory "/">
	AllowOverride None
	Require all denied
</Directory>
<Directory %q>
	AllowOverride None
	Require all granted
</Directory>
<IfModule mime_module>
	TypesConfig /dev/null
	AddType text/html .html
</IfModule>
IncludeOptional conf.d/*.conf
`, in.Dir, in.Addr, filepath.Join(in.Dir, "run", "httpd.pid"), in.ErrorLog, filepath.Join(in.Dir, "run"), user, in.DocRoot, in.DocRoot)
}

func start(bin, dir, docroot string, cfg Config) (*Instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	in := &Instance{
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Port:     port,
		Dir:      dir,
		ConfPath: filepath.Join(dir, "conf", "httpd.conf"),
		DocRoot:  docroot,
		Binary:   bin,
		ErrorLog: filepath.Join(dir, "logs", "error_log"),
		outPath:  filepath.Join(dir, "logs", "apache.out"),
		exited:   make(chan struct{}),
		client:   &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second},
	}
	in.URL = "http://" + in.Addr
	if err := writeFile(in.ConfPath, in.httpdConf()); err != nil {
		return nil, err
	}
	if out, err := exec.Command(bin, "-t", "-f", in.ConfPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("configtest of the harness layout failed: %v\n%s", err, out)
	}
	logf, err := os.Create(in.outPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-D", "FOREGROUND", "-f", in.ConfPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	in.cmd = cmd
	go func() {
		in.waitErr = cmd.Wait()
		close(in.exited)
	}()
	deadline := time.Now().Add(cfg.StartTimeout)
	for {
		select {
		case <-in.exited:
			out, _ := os.ReadFile(in.outPath)
			elog, _ := os.ReadFile(in.ErrorLog)
			err := fmt.Errorf("apache exited during start (%v):\n%s%s", in.waitErr, out, elog)
			if strings.Contains(string(out)+string(elog), "Address already in use") {
				err = fmt.Errorf("%w: %v", errBind, err)
			}
			return nil, err
		default:
		}
		if code, _, err := in.Get("/health.html"); err == nil && code == http.StatusOK {
			return in, nil
		}
		if time.Now().After(deadline) {
			_ = in.Stop()
			elog, _ := os.ReadFile(in.ErrorLog)
			return nil, fmt.Errorf("apache did not serve /health.html within %v; error_log:\n%s", cfg.StartTimeout, elog)
		}
		select {
		case <-in.exited:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Get fetches path on a new connection and returns the status and body.
// It is safe to call from any goroutine.
func (in *Instance) Get(path string) (int, string, error) {
	resp, err := in.client.Get(in.URL + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Pid is the Apache parent's process id.
func (in *Instance) Pid() int { return in.cmd.Process.Pid }

// Exited reports whether the Apache parent has exited.
func (in *Instance) Exited() bool {
	select {
	case <-in.exited:
		return true
	default:
		return false
	}
}

const stopTimeout = 10 * time.Second

// Stop stops Apache (SIGTERM: the parent stops its workers at once),
// waits for it, and then makes sure no process started from this
// instance's config is left, killing any by pid. Idempotent; called on
// t.Cleanup.
func (in *Instance) Stop() error {
	if in.stopped {
		return nil
	}
	in.stopped = true
	var errs []error
	if !in.Exited() {
		_ = in.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-in.exited:
		case <-time.After(stopTimeout):
			_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
			<-in.exited
			errs = append(errs, fmt.Errorf("apache pid %d ignored SIGTERM for %v and was killed", in.Pid(), stopTimeout))
		}
	}
	// Workers exit when the parent tells them; give stragglers (a worker
	// finishing a request) a moment, then kill them by pid.
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := in.Processes()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			errs = append(errs, fmt.Errorf("apache processes %v were still running after stop and were killed", left))
			break
		}
		time.Sleep(20 * time.Millisecond) // poll, bounded by deadline
	}
	if in.client != nil {
		in.client.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// Processes lists the pids of running processes whose command line names
// this instance's config file (the parent and its workers).
func (in *Instance) Processes() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(in.ConfPath)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			// A zombie waiting for its parent's wait is not running.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				continue
			}
		}
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}

// Artifact describes a dispatcher artifact zip.
type Artifact struct {
	// Files maps entry names (written verbatim, so tests can use unsafe
	// names too) to contents.
	Files map[string]string
	// Symlinks maps entry names to link targets.
	Symlinks map[string]string
	// Modes sets a file's mode (default 0644).
	Modes map[string]fs.FileMode
	// Wrapper, if set, puts everything under one top-level directory, as
	// "zip -r x.zip dispatcher/" does.
	Wrapper string
}

// ArtifactHTTPDConf is the conf/httpd.conf DefaultArtifact carries. Like
// every immutable file in a real AMS artifact it is a stale copy the agent
// must ignore (the instance's own httpd.conf names its port and paths).
const ArtifactHTTPDConf = "# AMS httpd.conf from the archetype: immutable, the host keeps its own.\n"

// DefaultArtifact is an artifact for the default layout, as AMS builds
// them: the managed files plus copies of the immutable ones (which the
// agent ignores). Deploying it changes nothing.
func DefaultArtifact() Artifact {
	files := ManagedFiles()
	for k, v := range staticImmutableFiles {
		files[k] = v
	}
	files["conf/httpd.conf"] = ArtifactHTTPDConf
	return Artifact{Files: files, Symlinks: ManagedSymlinks()}
}

// Write writes the zip to path and returns its sha256 (hex) and size.
func (a Artifact) Write(path string) (string, int64, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(a.Files)+len(a.Symlinks))
	for n := range a.Files {
		names = append(names, n)
	}
	for n := range a.Symlinks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		name := n
		if a.Wrapper != "" {
			name = a.Wrapper + "/" + n
		}
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.Modified = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		body, isFile := a.Files[n]
		if target, ok := a.Symlinks[n]; ok && !isFile {
			h.SetMode(fs.ModeSymlink | 0o777)
			body = target
		} else if m, ok := a.Modes[n]; ok {
			h.SetMode(m)
		} else {
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			return "", 0, err
		}
		if _, err := io.WriteString(w, body); err != nil {
			return "", 0, err
		}
	}
	if err := zw.Close(); err != nil {
		return "", 0, err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", 0, err
	}
	sum := sha256.Sum256(buf.Bytes())
	return hex.EncodeToString(sum[:]), int64(buf.Len()), nil
}

// Build writes the artifact into a new file in t.TempDir() and returns
// its path and sha256.
func (a Artifact) Build(t testing.TB) (path, sha string) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "dispatcher-*.zip")
	if err != nil {
		t.Fatalf("apache harness: %v", err)
	}
	f.Close()
	sha, _, err = a.Write(f.Name())
	if err != nil {
		t.Fatalf("apache harness: build artifact: %v", err)
	}
	return f.Name(), sha
}
