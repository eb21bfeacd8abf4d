package build

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// gitPath is the git binary; the clone runs outside the sandbox because it
// needs the builder's credentials (SSH keys, credential helpers in HOME).
const gitPath = "/usr/bin/git"

// gitSafety turns off the transports that run commands (ext::, fd::), so
// even an allowed_repositories entry written carelessly cannot make git
// execute something.
var gitSafety = []string{"-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never"}

var commitPattern = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// gitEnv is git's whole environment: a minimal PATH, the agent's HOME
// (where its SSH keys and git credentials live), LANG=C so messages are
// the ones documented, no terminal prompts (a missing credential fails at
// once instead of hanging), SSH in batch mode, and the git_env entries.
func (b *Builder) gitEnv() []string {
	home := os.Getenv("HOME")
	if home == "" {
		home = b.dir
	}
	env := map[string]string{
		"PATH":                cleanPath,
		"HOME":                home,
		"LANG":                "C",
		"LC_ALL":              "C",
		"GIT_TERMINAL_PROMPT": "0",
		"GIT_SSH_COMMAND":     "ssh -o BatchMode=yes",
	}
	applyEnv(env, b.cfg.GitEnv)
	return flattenEnv(env)
}

func (b *Builder) git(ctx context.Context, dir string, out *logSink, args ...string) error {
	cmd := exec.CommandContext(ctx, b.gitBin, append(append([]string(nil), gitSafety...), args...)...)
	cmd.Dir, cmd.Env = dir, b.gitEnv()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = waitDelay
	setProcessGroup(cmd)
	err := cmd.Run()
	out.Close()
	return err
}

// clone makes a shallow clone of one branch into ws.src and returns the
// commit it checked out. The commit is read now, before any build command
// has had a chance to rewrite .git/config (a core.fsmonitor entry there
// would run a command the next time git looks at the checkout).
func (b *Builder) clone(ctx context.Context, repo, branch string, ws workspace, log *logSink) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, b.cfg.GitTimeout.D())
	defer cancel()
	log.Printf("[deckhand] git clone --depth 1 --branch %s %s", branch, repo)
	err := b.git(cctx, ws.root, log, "clone", "--depth", "1", "--single-branch", "--no-tags", "--branch", branch, "--", repo, ws.src)
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if cctx.Err() != nil {
		return "", fmt.Errorf("git clone of %s (branch %s) did not finish within git_timeout %s", repo, branch, b.cfg.GitTimeout.D())
	}
	if err != nil {
		return "", fmt.Errorf("git clone of %s (branch %s) failed: %s", repo, branch, gitMessage(log.Tail(errorTailLines)))
	}
	var buf bytes.Buffer
	rev := exec.CommandContext(cctx, b.gitBin, append(append([]string(nil), gitSafety...), "rev-parse", "HEAD")...)
	rev.Dir, rev.Env, rev.Stdout = ws.src, b.gitEnv(), &buf
	if err := rev.Run(); err != nil {
		return "", fmt.Errorf("git rev-parse HEAD in the new checkout: %w", err)
	}
	commit := strings.TrimSpace(buf.String())
	if !commitPattern.MatchString(commit) {
		return "", fmt.Errorf("git rev-parse HEAD printed %q, not a commit id", commit)
	}
	return commit, nil
}

// gitMessage keeps the lines of git's output that explain a failure
// (fatal:, error:, warning:) and drops our own [deckhand] lines.
func gitMessage(tail string) string {
	var keep []string
	for _, l := range strings.Split(tail, "\n") {
		if l == "" || strings.HasPrefix(l, "[deckhand]") || strings.HasPrefix(l, "Cloning into") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) == 0 {
		return "git gave no message"
	}
	return strings.Join(keep, "; ")
}
