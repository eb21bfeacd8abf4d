package config

// The gate sections are placeholders until the gates package's own config
// types take their place; for now they hold what the pipeline engine needs.

// CodeQualityGate configures Code Scanning.
type CodeQualityGate struct {
	// Profile names a scan profile in the builder's config.
	Profile string `yaml:"profile"`
}

// SecurityGate configures Security Testing.
type SecurityGate struct {
	Enabled bool `yaml:"enabled"`
}

// PerformanceGate configures Performance Testing.
type PerformanceGate struct {
	URLs []string `yaml:"urls"`
}

func (g *CodeQualityGate) validate() error { return nil }
func (g *SecurityGate) validate() error    { return nil }
func (g *PerformanceGate) validate() error { return nil }
