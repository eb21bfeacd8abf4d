package lb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/hashicorp/go-hclog"
)

// HealthFileConfig configures the healthfile driver, for load balancers
// that decide from an HTTP health check which serves a file from this host
// (e.g. an F5 or ELB monitor on /lb-health.html): removing the file fails
// the check and takes the host out, restoring it brings it back.
//
// The driver cannot see the load balancer, so it waits fixed times instead
// of observing it; both must be set from the load balancer's check timing.
type HealthFileConfig struct {
	// Path is the absolute path of the file the health check reads. Its
	// directory must exist.
	Path string `yaml:"path" json:"path"`
	// Content is written on Attach. Empty means "OK\n".
	Content string `yaml:"content" json:"content"`
	// Mode is the file's permission bits. Zero means 0644, because the
	// web server serving it usually runs as another user (www-data).
	Mode fs.FileMode `yaml:"mode" json:"mode"`
	// DrainTime is how long Detach waits after removing the file: the
	// check interval × the failures the LB needs to mark the host down,
	// plus the longest request that should be allowed to finish.
	// Required.
	DrainTime yamlconf.Duration `yaml:"drain_time" json:"drain_time"`
	// RiseTime is how long Attach waits after restoring the file: the
	// check interval × the successes the LB needs to mark it up.
	// Required.
	RiseTime yamlconf.Duration `yaml:"rise_time" json:"rise_time"`
}

// DefaultHealthFileContent is written when HealthFileConfig.Content is empty.
const DefaultHealthFileContent = "OK\n"

func (c *HealthFileConfig) validate() error {
	var errs []error
	switch {
	case c.Path == "":
		errs = append(errs, errors.New("lb: healthfile.path is required"))
	case !filepath.IsAbs(c.Path):
		errs = append(errs, fmt.Errorf("lb: healthfile.path must be an absolute path, got %q", c.Path))
	}
	if c.Mode&^fs.ModePerm != 0 {
		errs = append(errs, fmt.Errorf("lb: healthfile.mode %v may hold permission bits only", c.Mode))
	}
	// Zero waits would make Detach return while the load balancer still
	// sends requests, which is exactly what detaching is meant to avoid;
	// there is no safe default without knowing the LB's check timing.
	if c.DrainTime <= 0 {
		errs = append(errs, fmt.Errorf("lb: healthfile.drain_time must be > 0 (the LB's check interval × fall + the longest request), got %v", c.DrainTime.D()))
	}
	if c.RiseTime <= 0 {
		errs = append(errs, fmt.Errorf("lb: healthfile.rise_time must be > 0 (the LB's check interval × rise), got %v", c.RiseTime.D()))
	}
	return errors.Join(errs...)
}

// HealthFile is the healthfile Driver.
type HealthFile struct {
	cfg HealthFileConfig
	log hclog.Logger
}

var _ Driver = (*HealthFile)(nil)

// NewHealthFile validates cfg and returns a driver.
func NewHealthFile(cfg HealthFileConfig, logger hclog.Logger) (*HealthFile, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Content == "" {
		cfg.Content = DefaultHealthFileContent
	}
	if cfg.Mode == 0 {
		cfg.Mode = 0o644
	}
	return &HealthFile{cfg: cfg, log: orNull(logger).Named("lb.healthfile").With("path", cfg.Path)}, nil
}

// Detach removes the health file, then waits DrainTime so the load
// balancer notices and in-flight requests finish. A missing file is not an
// error, but the wait still happens: a previous Detach may have been
// interrupted during its own wait.
func (h *HealthFile) Detach(ctx context.Context) error {
	err := os.Remove(h.cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.log.Info("health file already absent")
	case err != nil:
		return fmt.Errorf("lb/healthfile: detach: %w", err)
	default:
		h.log.Info("health file removed; waiting for the load balancer to drain", "drain_time", h.cfg.DrainTime.D())
	}
	if err := sleepCtx(ctx, h.cfg.DrainTime.D()); err != nil {
		return fmt.Errorf("lb/healthfile: detach interrupted during drain wait (file is removed): %w", err)
	}
	return nil
}

// Attach writes the health file and waits RiseTime. The file is written to
// a temporary name and renamed into place, so the health check never reads
// a half-written file.
func (h *HealthFile) Attach(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := h.writeFile(); err != nil {
		return fmt.Errorf("lb/healthfile: attach: %w", err)
	}
	h.log.Info("health file restored; waiting for the load balancer to mark the host up", "rise_time", h.cfg.RiseTime.D())
	if err := sleepCtx(ctx, h.cfg.RiseTime.D()); err != nil {
		return fmt.Errorf("lb/healthfile: attach interrupted during rise wait (file is restored): %w", err)
	}
	return nil
}

func (h *HealthFile) writeFile() error {
	dir, base := filepath.Split(h.cfg.Path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.WriteString(h.cfg.Content); err != nil {
		f.Close()
		return err
	}
	// CreateTemp makes the file 0600, which the web server user could not
	// read.
	if err := f.Chmod(h.cfg.Mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, h.cfg.Path)
}

// Status reports StateInService when the file exists and StateDetached when
// it does not. It says what this host offers the load balancer, not what
// the load balancer has concluded; Sessions is always -1.
func (h *HealthFile) Status(ctx context.Context) (Status, error) {
	if err := ctx.Err(); err != nil {
		return Status{State: StateUnknown, Sessions: -1}, err
	}
	fi, err := os.Stat(h.cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Status{State: StateDetached, Detail: "health file absent", Sessions: -1}, nil
	case err != nil:
		return Status{State: StateUnknown, Sessions: -1}, fmt.Errorf("lb/healthfile: status: %w", err)
	case !fi.Mode().IsRegular():
		return Status{State: StateUnknown, Detail: "health file path is not a regular file", Sessions: -1},
			fmt.Errorf("lb/healthfile: status: %s is not a regular file (%v)", h.cfg.Path, fi.Mode().Type())
	}
	return Status{State: StateInService, Detail: "health file present", Sessions: -1}, nil
}
