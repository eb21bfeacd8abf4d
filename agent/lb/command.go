package lb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/hashicorp/go-hclog"
)

// CommandConfig configures the command driver, for load balancers driven by
// a site-specific tool (a cloud CLI, an F5 REST script). Commands are argv
// lists executed directly, without a shell; an administrator who wants
// shell syntax writes it explicitly: ["sh", "-c", "..."].
//
// Each command also gets DECKHAND_LB_OP=detach|attach|status in its
// environment, so one script can serve all three.
type CommandConfig struct {
	// Detach must take the host out of rotation and exit 0 only once
	// in-flight requests have drained.
	Detach []string `yaml:"detach" json:"detach"`
	// Attach must put the host back and exit 0 only once the load
	// balancer has it in service.
	Attach []string `yaml:"attach" json:"attach"`
	// Status is optional. It must exit 0 and print one of the State
	// words (in-service, checking, down, draining, detached, unknown) on
	// the first line of stdout; further lines become Status.Detail.
	// Without it, Status reports StateUnknown.
	Status []string `yaml:"status" json:"status"`
	// Timeout bounds each command; at the deadline the command's whole
	// process group is killed. Default 60s.
	Timeout yamlconf.Duration `yaml:"timeout" json:"timeout"`
}

// DefaultCommandTimeout bounds each command when CommandConfig.Timeout is 0.
const DefaultCommandTimeout = 60 * time.Second

// maxCommandOutput bounds the output kept for an error message.
const maxCommandOutput = 16 << 10

func (c *CommandConfig) validate() error {
	var errs []error
	check := func(key string, argv []string, required bool) {
		switch {
		case len(argv) == 0:
			if required {
				errs = append(errs, fmt.Errorf("lb: command.%s is required (an argv list, e.g. [\"/usr/local/bin/lb-ctl\", \"out\"])", key))
			}
		case argv[0] == "":
			errs = append(errs, fmt.Errorf("lb: command.%s: the program (first element) is empty", key))
		default:
			// Resolving now turns a typo into a config error at
			// startup instead of a failed deploy later.
			if _, err := exec.LookPath(argv[0]); err != nil {
				errs = append(errs, fmt.Errorf("lb: command.%s: %w", key, err))
			}
		}
	}
	check("detach", c.Detach, true)
	check("attach", c.Attach, true)
	check("status", c.Status, false)
	errs = append(errs, nonNegative("lb: command.timeout", c.Timeout))
	return errors.Join(errs...)
}

// Command is the command Driver.
type Command struct {
	cfg     CommandConfig
	timeout time.Duration
	log     hclog.Logger
}

var _ Driver = (*Command)(nil)

// NewCommand validates cfg (including that each program is found) and
// returns a driver.
func NewCommand(cfg CommandConfig, logger hclog.Logger) (*Command, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Command{
		cfg:     cfg,
		timeout: orDefault(cfg.Timeout, DefaultCommandTimeout),
		log:     orNull(logger).Named("lb.command"),
	}, nil
}

// CommandError is a configured command that failed to start, exited
// non-zero, or ran out of time.
type CommandError struct {
	Op     string   // "detach", "attach" or "status"
	Argv   []string // the command as configured
	Err    error    // *exec.ExitError, a start error, or wraps ErrTimeout / ctx.Err()
	Output string   // stdout and stderr interleaved, possibly truncated
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("lb/command: %s: %q: %v", e.Op, e.Argv, e.Err)
	if out := strings.TrimSpace(e.Output); out != "" {
		msg += "\noutput:\n" + out
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// Detach runs the detach command.
func (c *Command) Detach(ctx context.Context) error {
	_, err := c.run(ctx, "detach", c.cfg.Detach)
	return err
}

// Attach runs the attach command.
func (c *Command) Attach(ctx context.Context) error {
	_, err := c.run(ctx, "attach", c.cfg.Attach)
	return err
}

// Status runs the status command and parses its first stdout line as a
// State. An unrecognised word is an error rather than StateUnknown, so a
// broken script is noticed.
func (c *Command) Status(ctx context.Context) (Status, error) {
	if len(c.cfg.Status) == 0 {
		return Status{State: StateUnknown, Detail: "no status command configured", Sessions: -1}, nil
	}
	stdout, err := c.run(ctx, "status", c.cfg.Status)
	if err != nil {
		return Status{State: StateUnknown, Sessions: -1}, err
	}
	first, rest, _ := strings.Cut(strings.TrimLeft(stdout, "\n"), "\n")
	word := State(strings.TrimSpace(first))
	switch word {
	case StateInService, StateChecking, StateDown, StateDraining, StateDetached, StateUnknown:
		return Status{State: word, Detail: strings.TrimSpace(rest), Sessions: -1}, nil
	}
	return Status{State: StateUnknown, Sessions: -1}, &CommandError{
		Op: "status", Argv: c.cfg.Status, Output: stdout,
		Err: fmt.Errorf("first line %q is not a state (want in-service, checking, down, draining, detached or unknown)", first),
	}
}

// run executes argv and returns its stdout.
func (c *Command) run(ctx context.Context, op string, argv []string) (string, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, c.timeout, fmt.Errorf("%w after %v", ErrTimeout, c.timeout))
	defer cancel()

	var stdout, combined capBuffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "DECKHAND_LB_OP="+op)
	cmd.Stdout = &teeWriter{&stdout, &combined}
	cmd.Stderr = &combined
	setProcessGroup(cmd)
	// If a grandchild escaped the process group and keeps the output
	// pipes open, stop waiting for them shortly after the kill.
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	c.log.Info("running", "op", op, "argv", argv)
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		c.log.Error("command failed", "op", op, "error", err, "took", time.Since(start))
		return stdout.String(), &CommandError{Op: op, Argv: argv, Err: err, Output: combined.String()}
	}
	c.log.Info("command succeeded", "op", op, "took", time.Since(start))
	return stdout.String(), nil
}

// capBuffer keeps the first maxCommandOutput bytes written to it and notes
// that the rest was dropped. It is safe for the concurrent writes exec
// makes when stdout and stderr share it.
type capBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	truncated bool
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxCommandOutput - b.buf.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil // keep the command running; we only drop
	}
	b.buf.Write(p)
	return len(p), nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.truncated {
		return b.buf.String() + "\n[output truncated]"
	}
	return b.buf.String()
}

// teeWriter writes to both buffers; capBuffer never fails.
type teeWriter struct{ a, b *capBuffer }

func (t *teeWriter) Write(p []byte) (int, error) {
	t.a.Write(p)
	return t.b.Write(p)
}
