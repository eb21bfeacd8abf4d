package packaging_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// The scripts tested here are packaging/scripts/*; TestDeb and TestRPM check
// that the packages carry them unchanged.

// The agent's postinst may enable or start the unit only under the
// enrollment guard. A static check, which holds even where the sandboxed
// runs below cannot happen.
func TestAgentPostinstGuard(t *testing.T) {
	text := readRepo(t, "packaging", "scripts", "agent-postinstall.sh")
	if !strings.Contains(text, "cert=$datadir/tls/agent.crt") || !strings.Contains(text, "datadir=/var/lib/deckhand-agent") {
		t.Fatal("postinst does not look for /var/lib/deckhand-agent/tls/agent.crt")
	}
	if !strings.Contains(text, `[ -f "$cert" ] && enrolled=true`) {
		t.Fatal("postinst has no enrollment guard")
	}
	// Every enable/start of the unit sits inside `if $enrolled; then ... fi`.
	inGuard, depth := false, 0
	// A command, not the help text that tells the operator what to run.
	starts := regexp.MustCompile(`(^|[;&|]\s*)systemctl (enable|start|restart|reenable)\b`)
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if inGuard {
			if strings.HasPrefix(line, "if ") {
				depth++
			}
			if line == "fi" {
				if depth == 0 {
					inGuard = false
				} else {
					depth--
				}
			}
		} else if line == "if $enrolled; then" {
			inGuard, depth = true, 0
			continue
		}
		if starts.MatchString(line) && !inGuard {
			t.Errorf("postinst line %d enables or starts the agent outside the enrollment guard: %s", n, line)
		}
	}
	if !strings.Contains(text, "systemctl enable --now deckhand-agent") {
		t.Error("postinst does not tell the operator how to start the agent after enrolling")
	}
}

// sandbox runs a maintainer script as dpkg or rpm would, inside bubblewrap:
// the real system read-only, with its own /var/lib, /etc/deckhand,
// /etc/passwd, /etc/group and /run, and stub systemctl/useradd/groupadd that
// record their calls instead of acting.
type sandbox struct {
	t       *testing.T
	dir     string
	systemd bool // /run/systemd/system exists: systemd is PID 1
}

func newSandbox(t *testing.T, systemd bool) *sandbox {
	t.Helper()
	needTool(t, "bwrap")
	s := &sandbox{t: t, dir: t.TempDir(), systemd: systemd}
	for _, d := range []string{"varlib", "etcdeckhand", "stubs", "log"} {
		if err := os.Mkdir(filepath.Join(s.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The host's users and groups, without any deckhand of its own.
	for _, name := range []string{"passwd", "group"} {
		data, err := os.ReadFile("/etc/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for _, l := range strings.SplitAfter(string(data), "\n") {
			if !strings.HasPrefix(l, "deckhand:") && l != "" {
				keep = append(keep, l)
			}
		}
		s.write(name, strings.Join(keep, ""), 0o644)
	}
	log := filepath.Join(s.dir, "log", "calls")
	stub := func(name, body string) {
		s.write(filepath.Join("stubs", name), "#!/bin/sh\necho \""+name+" $*\" >> "+log+"\n"+body, 0o755)
	}
	stub("systemctl", "[ ! -e "+filepath.Join(s.dir, "log", "systemctl-fails")+" ] || exit 1\n")
	stub("groupadd", "for a; do name=$a; done\necho \"$name:x:990:\" >> /etc/group\n")
	stub("useradd", "for a; do name=$a; done\necho \"$name:x:990:990:Deckhand:/nonexistent:/usr/sbin/nologin\" >> /etc/passwd\n")
	return s
}

func (s *sandbox) write(rel, content string, mode os.FileMode) {
	s.t.Helper()
	p := filepath.Join(s.dir, rel)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		s.t.Fatal(err)
	}
}

// run runs script with args and returns its output; it fails the test if
// the script fails.
func (s *sandbox) run(script string, args ...string) string {
	s.t.Helper()
	os.Remove(filepath.Join(s.dir, "log", "calls"))
	b := []string{
		"--ro-bind", "/", "/",
		"--dev", "/dev", "--proc", "/proc",
		"--tmpfs", "/run",
		"--tmpfs", "/etc",
		"--ro-bind-try", "/etc/nsswitch.conf", "/etc/nsswitch.conf",
		"--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
		"--bind", filepath.Join(s.dir, "passwd"), "/etc/passwd",
		"--bind", filepath.Join(s.dir, "group"), "/etc/group",
		"--bind", filepath.Join(s.dir, "etcdeckhand"), "/etc/deckhand",
		"--bind", filepath.Join(s.dir, "varlib"), "/var/lib",
		"--bind", filepath.Join(s.dir, "log"), filepath.Join(s.dir, "log"),
		"--setenv", "PATH", filepath.Join(s.dir, "stubs") + ":/usr/sbin:/usr/bin:/sbin:/bin",
		"--die-with-parent",
	}
	if s.systemd {
		b = append(b, "--dir", "/run/systemd/system")
	}
	b = append(b, "/bin/sh", script)
	b = append(b, args...)
	out, err := exec.Command("bwrap", b...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("sh %s %s: %v\n%s", filepath.Base(script), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// calls returns what the stubs were asked to do in the last run.
func (s *sandbox) calls() []string {
	data, err := os.ReadFile(filepath.Join(s.dir, "log", "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func (s *sandbox) systemctl() []string {
	var out []string
	for _, c := range s.calls() {
		if v, ok := strings.CutPrefix(c, "systemctl "); ok {
			out = append(out, v)
		}
	}
	return out
}

func (s *sandbox) stat(rel string) (os.FileMode, uint32, uint32) {
	s.t.Helper()
	fi, err := os.Stat(filepath.Join(s.dir, rel))
	if err != nil {
		s.t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

// script is the path of packaging/scripts/<name>.
func script(name string) string { return filepath.Join(repoRoot, "packaging", "scripts", name) }

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the install scripts create users and chown: run as root (CI does)")
	}
}

func TestAgentPostinstall(t *testing.T) {
	needRoot(t)
	postinst := script("agent-postinstall.sh")

	for _, tc := range []struct {
		name     string
		args     []string // deb postinst or rpm %post arguments
		enrolled bool
		systemd  bool
		want     []string // systemctl calls
		wantHelp bool     // prints how to enroll
	}{
		{"deb install, not enrolled", []string{"configure", ""}, false, true, []string{"daemon-reload"}, true},
		{"rpm install, not enrolled", []string{"1"}, false, true, []string{"daemon-reload"}, true},
		{"install without systemd, not enrolled", []string{"configure", ""}, false, false, nil, true},
		{"deb install, enrolled", []string{"configure", ""}, true, true,
			[]string{"daemon-reload", "enable deckhand-agent.service", "start deckhand-agent.service"}, false},
		{"rpm install, enrolled, no systemd", []string{"1"}, true, false, []string{"enable deckhand-agent.service"}, false},
		{"deb upgrade", []string{"configure", "1.0.0"}, true, true, []string{"daemon-reload", "try-restart deckhand-agent.service"}, false},
		{"rpm upgrade", []string{"2"}, true, true, []string{"daemon-reload", "try-restart deckhand-agent.service"}, false},
		{"deb upgrade, not enrolled", []string{"configure", "1.0.0"}, false, true, []string{"daemon-reload", "try-restart deckhand-agent.service"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t, tc.systemd)
			if tc.enrolled {
				if err := os.MkdirAll(filepath.Join(s.dir, "varlib/deckhand-agent/tls"), 0o700); err != nil {
					t.Fatal(err)
				}
				s.write("varlib/deckhand-agent/tls/agent.crt", "cert", 0o600)
			}
			out := s.run(postinst, tc.args...)
			if got := s.systemctl(); !slices.Equal(got, tc.want) {
				t.Errorf("systemctl calls %q, want %q", got, tc.want)
			}
			if help := strings.Contains(out, "NOT enrolled"); help != tc.wantHelp {
				t.Errorf("enrollment help printed: %v, want %v\n%s", help, tc.wantHelp, out)
			}
			if tc.wantHelp && !strings.Contains(out, "systemctl enable --now deckhand-agent") {
				t.Errorf("help does not say how to start the agent:\n%s", out)
			}
			mode, uid, _ := s.stat("varlib/deckhand-agent")
			if mode != os.ModeDir|0o700 || uid != 0 {
				t.Errorf("/var/lib/deckhand-agent: %v uid %d, want drwx------ root", mode, uid)
			}
			if !tc.enrolled {
				if _, err := os.Stat(filepath.Join(s.dir, "varlib/deckhand-agent/tls")); err == nil {
					t.Error("postinst created the tls dir")
				}
			}
			// Run again, as dpkg does after a failed configure: no error, no second user.
			s.run(postinst, tc.args...)
			if n := strings.Count(s.read("passwd"), "\ndeckhand:"); n != 1 {
				t.Errorf("%d deckhand users after two runs, want 1", n)
			}
		})
	}
}

func (s *sandbox) read(rel string) string {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.dir, rel))
	if err != nil {
		s.t.Fatal(err)
	}
	return "\n" + string(data)
}

func TestServerPostinstall(t *testing.T) {
	needRoot(t)
	postinst := script("server-postinstall.sh")
	for _, tc := range []struct {
		name    string
		args    []string
		systemd bool
		want    []string
	}{
		{"deb install", []string{"configure", ""}, true,
			[]string{"daemon-reload", "enable deckhand-server.service", "start deckhand-server.service"}},
		{"rpm install", []string{"1"}, true,
			[]string{"daemon-reload", "enable deckhand-server.service", "start deckhand-server.service"}},
		{"install without systemd", []string{"configure", ""}, false, []string{"enable deckhand-server.service"}},
		{"deb upgrade", []string{"configure", "1.0.0"}, true, []string{"daemon-reload", "try-restart deckhand-server.service"}},
		{"rpm upgrade", []string{"2"}, true, []string{"daemon-reload", "try-restart deckhand-server.service"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t, tc.systemd)
			s.write("etcdeckhand/server.yaml", "listen: 127.0.0.1:7443\n", 0o640)
			s.run(postinst, tc.args...)
			if got := s.systemctl(); !slices.Equal(got, tc.want) {
				t.Errorf("systemctl calls %q, want %q", got, tc.want)
			}
			if !strings.Contains(s.read("passwd"), "\ndeckhand:") || !strings.Contains(s.read("group"), "\ndeckhand:") {
				t.Fatal("no deckhand user and group")
			}
			calls := strings.Join(s.calls(), "\n")
			if !strings.Contains(calls, "useradd --system") || !strings.Contains(calls, "groupadd --system") {
				t.Errorf("user and group not created as system accounts:\n%s", calls)
			}
			mode, uid, gid := s.stat("varlib/deckhand-server")
			if mode != os.ModeDir|0o700 || uid != 990 || gid != 990 {
				t.Errorf("/var/lib/deckhand-server: %v %d:%d, want drwx------ deckhand:deckhand (990)", mode, uid, gid)
			}
			mode, uid, gid = s.stat("etcdeckhand/server.yaml")
			if mode != 0o640 || uid != 0 || gid != 990 {
				t.Errorf("/etc/deckhand/server.yaml: %v %d:%d, want -rw-r----- root:deckhand", mode, uid, gid)
			}
			// Idempotent: a second run neither fails nor adds a user.
			s.run(postinst, tc.args...)
			if n := strings.Count(s.read("passwd"), "\ndeckhand:"); n != 1 {
				t.Errorf("%d deckhand users after two runs, want 1", n)
			}
			if strings.Contains(strings.Join(s.calls(), "\n"), "useradd") {
				t.Error("second run created the user again")
			}
		})
	}
}

func TestPreremove(t *testing.T) {
	needRoot(t)
	for _, name := range []string{"deckhand-agent", "deckhand-server"} {
		prerm := script(strings.TrimPrefix(name, "deckhand-") + "-preremove.sh")
		unit := name + ".service"
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"remove"}, []string{"disable " + unit, "stop " + unit}},
			{[]string{"0"}, []string{"disable " + unit, "stop " + unit}}, // rpm erase
			{[]string{"upgrade", "1.3.0"}, nil},                          // the new postinst restarts it
			{[]string{"1"}, nil},                                         // rpm upgrade
			{[]string{"failed-upgrade", "1.3.0"}, nil},
		} {
			t.Run(fmt.Sprintf("%s %s", name, strings.Join(tc.args, " ")), func(t *testing.T) {
				s := newSandbox(t, true)
				s.run(prerm, tc.args...)
				if got := s.systemctl(); !slices.Equal(got, tc.want) {
					t.Errorf("systemctl calls %q, want %q", got, tc.want)
				}
			})
		}
	}
}

// A systemd that refuses (a broken unit, a container with systemctl but
// no manager) must not fail the package installation: the files are in
// place and the operator is told.
func TestPostinstallSurvivesSystemctlFailures(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		script   string
		enrolled bool
	}{
		{"server-postinstall.sh", false},
		{"agent-postinstall.sh", true},
	} {
		t.Run(tc.script, func(t *testing.T) {
			s := newSandbox(t, true)
			s.write("log/systemctl-fails", "", 0o644)
			if tc.enrolled {
				if err := os.MkdirAll(filepath.Join(s.dir, "varlib/deckhand-agent/tls"), 0o700); err != nil {
					t.Fatal(err)
				}
				s.write("varlib/deckhand-agent/tls/agent.crt", "cert", 0o600)
			}
			out := s.run(script(tc.script), "configure", "")
			if !strings.Contains(out, "could not enable") {
				t.Errorf("no word about the failed enable:\n%s", out)
			}
		})
	}
}
