package packaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// unit is a parsed unit file: "Section.Key" -> values in order (a key may
// repeat, as ReadWritePaths= does).
type unit map[string][]string

func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("line %d: %q is not Key=Value in a section", i+1, line)
			}
			u[section+"."+k] = append(u[section+"."+k], v)
		}
	}
	return u
}

// span parses the systemd time spans the units use ("90s", "5min").
func span(v string) (time.Duration, error) {
	return time.ParseDuration(strings.ReplaceAll(strings.ReplaceAll(v, " ", ""), "min", "m"))
}

func (u unit) last(key string) string {
	v := u[key]
	if len(v) == 0 {
		return "<unset>"
	}
	return v[len(v)-1]
}

// TestUnitFiles checks the settings of packaging/*.service (TestDeb and
// TestRPM check that the packages carry these very files), so it runs even
// where the packages cannot be built.
func TestUnitFiles(t *testing.T) {
	common := map[string]string{
		// sd_notify: READY/STOPPING/STATUS and the watchdog (pkg/sysd).
		"Service.Type":         "notify",
		"Service.NotifyAccess": "main",
		"Service.WatchdogSec":  "30s",
		"Service.Restart":      "on-failure",
		"Service.ExecReload":   "/bin/kill -HUP $MAINPID",
		"Service.KillSignal":   "SIGTERM",
		// Hardening.
		"Service.ProtectSystem":           "strict",
		"Service.NoNewPrivileges":         "yes",
		"Service.PrivateTmp":              "yes",
		"Service.ProtectHome":             "yes",
		"Service.ProtectKernelTunables":   "yes",
		"Service.ProtectControlGroups":    "yes",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"Service.LockPersonality":         "yes",
		"Service.RestrictRealtime":        "yes",
		"Service.SystemCallArchitectures": "native",
		"Service.AmbientCapabilities":     "",
		"Install.WantedBy":                "multi-user.target",
	}
	specific := map[string]map[string]string{
		"deckhand-server": {
			"Service.ExecStart":                "/usr/bin/deckhand-server --config /etc/deckhand/server.yaml",
			"Service.User":                     "deckhand",
			"Service.Group":                    "deckhand",
			"Service.StateDirectory":           "deckhand-server",
			"Service.StateDirectoryMode":       "0700",
			"Service.CapabilityBoundingSet":    "", // no capability at all
			"Service.RestartPreventExitStatus": "2",
		},
		"deckhand-agent": {
			"Service.ExecStart":                "/usr/bin/deckhand-agent --config /etc/deckhand/agent.yaml",
			"Service.User":                     "root",
			"Service.StateDirectory":           "deckhand-agent",
			"Service.StateDirectoryMode":       "0700",
			"Service.CapabilityBoundingSet":    "CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_LINUX_IMMUTABLE CAP_KILL",
			"Service.KillMode":                 "mixed",
			"Service.RestartPreventExitStatus": "2 3",
		},
	}
	for name, want := range specific {
		t.Run(name, func(t *testing.T) {
			text := readRepo(t, "packaging", name+".service")
			u := parseUnit(t, text)
			for k, v := range common {
				if got := u.last(k); got != v {
					t.Errorf("%s=%s, want %q", k, got, v)
				}
			}
			for k, v := range want {
				if got := u.last(k); got != v {
					t.Errorf("%s=%s, want %q", k, got, v)
				}
			}
			for _, k := range []string{"Service.RestartSec", "Service.TimeoutStopSec", "Service.TimeoutStartSec"} {
				if _, err := span(u.last(k)); err != nil {
					t.Errorf("%s=%s: %v", k, u.last(k), err)
				}
			}
			if name == "deckhand-agent" {
				// The agent gives its running task up to 30 s to checkpoint
				// (agent.Run); systemd must wait longer than that.
				d, _ := span(u.last("Service.TimeoutStopSec"))
				if d <= 45*time.Second {
					t.Errorf("TimeoutStopSec=%v leaves the agent no time to checkpoint a task", d)
				}
				var rw []string
				for _, v := range u["Service.ReadWritePaths"] {
					rw = append(rw, strings.Fields(v)...)
				}
				for _, p := range []string{"-/etc/httpd", "-/etc/apache2", "-/run/httpd", "-/var/log/httpd"} {
					if !slices.Contains(rw, p) {
						t.Errorf("ReadWritePaths lacks %s (has %v)", p, rw)
					}
				}
			}
		})
	}
}

// systemd-analyze verify checks every directive's syntax and value. It
// also wants ExecStart='s binary to exist; nothing is installed in
// /usr/bin here, so that one path points at an executable that does exist
// (this test binary).
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"deckhand-agent", "deckhand-server"} {
		text := readRepo(t, "packaging", name+".service")
		fixed := strings.ReplaceAll(text, "ExecStart=/usr/bin/"+name, "ExecStart="+self)
		if fixed == text {
			t.Fatalf("%s.service: no ExecStart=/usr/bin/%s", name, name)
		}
		p := filepath.Join(dir, name+".service")
		if err := os.WriteFile(p, []byte(fixed), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, p)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
