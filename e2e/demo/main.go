// Command demo is `make demo`: it starts a control plane and one agent per
// host of the example config in a temp dir, shows them with deckctl, and
// stops everything on Ctrl-C (or at once with DEMO_EXIT=1, for CI).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/config"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type proc struct {
	name string
	cmd  *exec.Cmd
}

func run() error {
	bin := flag.String("bin", "bin", "directory with deckhand-server, deckhand-agent and deckctl")
	example := flag.String("config", "packaging/deckhand-server.yaml", "example server config to run")
	keep := flag.Bool("keep", false, "keep the temp dir after stopping")
	flag.Parse()
	exitAtOnce := os.Getenv("DEMO_EXIT") == "1"

	for _, b := range []string{"deckhand-server", "deckhand-agent", "deckctl"} {
		if _, err := os.Stat(filepath.Join(*bin, b)); err != nil {
			return fmt.Errorf("%s not built in %s (run make build): %w", b, *bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "deckhand-demo-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(*example)
	if err != nil {
		return err
	}
	cfgText := strings.Replace(string(raw), "/var/lib/deckhand-server", filepath.Join(dir, "server"), 1)
	cfgText = strings.Replace(cfgText, "listen: 127.0.0.1:7443", "listen: "+addr, 1)
	cfgText = strings.Replace(cfgText, "heartbeat_interval: 10s", "heartbeat_interval: 2s", 1)
	serverCfg := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(serverCfg, []byte(cfgText), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(serverCfg)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			if p.cmd.Process != nil {
				p.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, p := range procs {
			waitOrKill(p.cmd, 10*time.Second)
		}
		fmt.Printf("demo: stopped %d processes; temp dir %s %s\n", len(procs), dir, map[bool]string{true: "kept", false: "removed"}[*keep])
	}()

	logs := filepath.Join(dir, "logs")
	os.MkdirAll(logs, 0o700)
	start := func(name string, args ...string) error {
		lf, err := os.Create(filepath.Join(logs, name+".log"))
		if err != nil {
			return err
		}
		cmd := exec.Command(filepath.Join(*bin, args[0]), args[1:]...)
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, &proc{name: name, cmd: cmd})
		return nil
	}

	fmt.Printf("demo: working in %s (logs in %s)\n", dir, logs)
	fmt.Printf("demo: starting deckhand-server on %s\n", addr)
	if err := start("server", "deckhand-server", "--config", serverCfg); err != nil {
		return err
	}
	creds := filepath.Join(dir, "server", "admin-credentials.yaml")
	if err := waitFile(ctx, creds, 15*time.Second); err != nil {
		return fmt.Errorf("the server did not write %s: %w (see %s)", creds, err, logs)
	}
	deckctl := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(*bin, "deckctl"), append([]string{"--credentials", creds}, args...)...)
		cmd.Stderr = os.Stderr
		return cmd.Output()
	}
	show := func(args ...string) error {
		fmt.Printf("\n$ deckctl --credentials %s %s\n", creds, strings.Join(args, " "))
		out, err := deckctl(args...)
		os.Stdout.Write(out)
		return err
	}
	for _, h := range cfg.Hosts() {
		out, err := deckctl("tokens", "create", "--host", h.ID, "--ttl", "10m", "-o", "json")
		if err != nil {
			return fmt.Errorf("join token for %s: %w", h.ID, err)
		}
		var tok struct {
			Token         string `json:"token"`
			CAFingerprint string `json:"ca_fingerprint"`
		}
		if err := json.Unmarshal(out, &tok); err != nil {
			return err
		}
		acfg := filepath.Join(dir, h.ID+".yaml")
		text := fmt.Sprintf("host_id: %s\nserver: %s\ndata_dir: %s\njoin_token: %s\nca_fingerprint: %s\nreconnect:\n  stagger: 500ms\n",
			h.ID, addr, filepath.Join(dir, "agents", h.ID), tok.Token, tok.CAFingerprint)
		if err := os.WriteFile(acfg, []byte(text), 0o600); err != nil {
			return err
		}
		fmt.Printf("demo: enrolling and starting deckhand-agent for %s (%s, %s) with a one-time join token\n", h.ID, h.Env, h.Role)
		if err := start("agent-"+h.ID, "deckhand-agent", "--config", acfg); err != nil {
			return err
		}
	}

	want := len(cfg.Hosts())
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.CommandContext(ctx, filepath.Join(*bin, "deckctl"), "--credentials", creds, "agents", "list", "-o", "json").Output()
		online := 0
		if err == nil {
			var agents []struct{ Online bool }
			if json.Unmarshal(out, &agents) == nil {
				for _, a := range agents {
					if a.Online {
						online++
					}
				}
			}
		}
		if online == want {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents came online in 30s; see %s", online, want, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := show("agents", "list"); err != nil {
		return err
	}
	if err := show("agents", "facts", cfg.Hosts()[0].ID); err != nil {
		return err
	}
	if err := show("audit", "--limit", "6"); err != nil {
		return err
	}

	if exitAtOnce {
		fmt.Println("\ndemo: DEMO_EXIT=1, stopping")
		return nil
	}
	fmt.Printf("\ndemo: everything is running. Try:\n  %s --credentials %s agents list -o json\n  %s --credentials %s whoami\nPress Ctrl-C to stop.\n",
		filepath.Join(*bin, "deckctl"), creds, filepath.Join(*bin, "deckctl"), creds)
	<-ctx.Done()
	return nil
}

func waitFile(ctx context.Context, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitOrKill(cmd *exec.Cmd, d time.Duration) {
	if cmd.Process == nil {
		return
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(d):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
