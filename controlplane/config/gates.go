package config

import (
	"errors"
	"fmt"

	"github.com/deckhand-dev/deckhand/controlplane/gates"
)

// CodeQualityGate configures Code Scanning: a scan profile on the builder
// (the command lives in the builder's config) and the thresholds its
// metrics are judged by (Cloud Manager's by default).
type CodeQualityGate struct {
	Profile    string           `yaml:"profile"`
	Thresholds gates.Thresholds `yaml:"thresholds"`
}

// SecurityGate configures Security Testing: the built-in probes of each
// stage dispatcher (docs/gates.md) and, optionally, an extra scan profile
// on the builder whose metrics file holds more checks.
type SecurityGate struct {
	gates.SecurityConfig `yaml:",inline"`
	ExtraProfile         string `yaml:"extra_profile"`
}

// PerformanceGate configures Performance Testing: the built-in load test
// against the stage dispatchers and, optionally, an extra scan profile.
type PerformanceGate struct {
	gates.PerformanceConfig `yaml:",inline"`
	ExtraProfile            string `yaml:"extra_profile"`
}

var errCommandHere = errors.New("command is not allowed in the server config: the server never tells an agent which command to run; add the check as a scan profile in the builder's config and name it in extra_profile")

func (g *CodeQualityGate) validate(file string) error {
	if g == nil {
		return nil
	}
	if g.Profile == "" {
		return fmt.Errorf("code_quality.profile is required (a scan profile in the builder's config)")
	}
	return g.Thresholds.Validate(file)
}

func (g *SecurityGate) validate(file string) error {
	if g == nil {
		return nil
	}
	if len(g.Command) > 0 {
		return fmt.Errorf("security.%w", errCommandHere)
	}
	return g.SecurityConfig.Validate(file)
}

func (g *PerformanceGate) validate(file string) error {
	if g == nil {
		return nil
	}
	if len(g.Command) > 0 {
		return fmt.Errorf("performance.%w", errCommandHere)
	}
	return g.PerformanceConfig.Validate(file)
}
