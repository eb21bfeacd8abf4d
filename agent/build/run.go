package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// cleanPath is the PATH every command starts with; a profile may replace
// it through env.
const cleanPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// waitDelay bounds how long Wait waits for the output pipe after the
// command exited or was killed: a background process that inherited the
// pipe must not hold the task forever.
const waitDelay = 5 * time.Second

// outcome is how a step's command ended.
type outcome struct {
	exitCode int
	timedOut bool
}

// stepEnv is the whole environment of a build or scan command: a minimal
// PATH, HOME and TMPDIR inside the workspace, LANG, and the profile's own
// entries. Nothing else of the agent's environment leaks in.
func stepEnv(s Step, ws workspace) []string {
	env := map[string]string{
		"PATH":   cleanPath,
		"HOME":   ws.home,
		"TMPDIR": ws.tmp,
		"LANG":   "C.UTF-8",
	}
	applyEnv(env, s.Env)
	return flattenEnv(env)
}

// applyEnv adds config entries: NAME=VALUE sets, NAME copies the agent's
// value when it has one.
func applyEnv(env map[string]string, entries []string) {
	for _, e := range entries {
		if name, val, ok := strings.Cut(e, "="); ok {
			env[name] = val
		} else if v, ok := os.LookupEnv(name); ok {
			env[name] = v
		}
	}
}

func flattenEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// lookPath finds name in the directories of pathEnv: the command must be
// found where it will run, not in the agent's own PATH.
func lookPath(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, pathEnv)
}

func envValue(env []string, name string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v
		}
	}
	return ""
}

// runStep runs s in ws.src with its clean environment and timeout, in the
// sandbox when one is configured, writing combined output to log. A
// non-zero exit or a timeout is an outcome, not an error; the error is for
// a command that could not start and for ctx ending (the task was
// cancelled or the agent is shutting down).
func (b *Builder) runStep(ctx context.Context, s Step, ws workspace, log *logSink) (outcome, error) {
	argv := s.Command
	view := ws // the workspace where the command sees it
	if b.bwrap != "" {
		view = ws.sandboxView()
	}
	env := stepEnv(s, view)
	if b.bwrap != "" {
		argv = bwrapArgs(b.bwrap, s, ws, b.cfg.SandboxReadOnly)
	} else {
		p, err := lookPath(argv[0], envValue(env, "PATH"))
		if err != nil {
			return outcome{exitCode: -1}, err
		}
		argv = append([]string{p}, argv[1:]...)
	}
	for _, d := range s.CacheDirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return outcome{exitCode: -1}, fmt.Errorf("cache dir: %w", err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.Timeout.D())
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = ws.src, env
	cmd.Stdin = nil
	// One writer for both streams: exec then uses a single pipe, so the
	// lines keep the order the command wrote them in.
	cmd.Stdout, cmd.Stderr = log, log
	cmd.WaitDelay = waitDelay
	setProcessGroup(cmd)
	err := cmd.Run()
	_ = killGroup(cmd)
	log.Close()
	if ctx.Err() != nil {
		return outcome{exitCode: -1}, ctx.Err()
	}
	if cctx.Err() != nil {
		return outcome{exitCode: -1, timedOut: true}, nil
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return outcome{}, nil
	case errors.As(err, &exitErr):
		return outcome{exitCode: exitErr.ExitCode()}, nil
	case errors.Is(err, exec.ErrWaitDelay):
		// The command exited 0 but something it started kept the output
		// open; that something has been killed with the group.
		return outcome{}, nil
	}
	return outcome{exitCode: -1}, fmt.Errorf("start %s: %w", s.Command[0], err)
}
