package gates

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// The gate configs are sections of a pipeline in deckhand-server's config
// file. Each Validate reports every problem, joined, as *yamlconf.Error
// values naming file and the line of the offending key (0 when the config
// was built in Go); messages name keys relative to the section. Validate
// never changes the config: defaults are applied by the accessors
// (MetricsPath, Target, Load) when the runner uses it.
//
// An optional command is an argv (no shell) the pipeline runner runs in
// addition to the built-in evaluation; this package only holds it.

// DefaultMetricsFile is where the code scan writes its metrics, relative
// to the build workspace, when metrics_file is not set.
const DefaultMetricsFile = "target/deckhand/code-quality.json"

// DefaultLoadDuration is the load test's length when duration is not set:
// Cloud Manager's performance test offers load for 30 minutes.
const DefaultLoadDuration = 30 * time.Minute

// CodeQualityConfig is a pipeline's code_quality section.
//
//	code_quality:
//	  command: ["/opt/scan/export-sonar-metrics", "--out", "target/deckhand/code-quality.json"]
//	  metrics_file: target/deckhand/code-quality.json
//	  thresholds: {coverage: 60}
type CodeQualityConfig struct {
	Pos yamlconf.Pos `yaml:"-"`

	// Command, when set, runs in the build workspace after the build and
	// must write MetricsFile. Empty: the build itself writes it.
	Command []string `yaml:"command"`
	// MetricsFile is the code-quality metrics file (format in
	// codequality.go and docs/gates.md), a relative path inside the build
	// workspace. Default DefaultMetricsFile.
	MetricsFile string `yaml:"metrics_file"`
	// Thresholds override Cloud Manager's limits; unset ones keep them.
	Thresholds Thresholds `yaml:"thresholds"`
}

// MetricsPath is MetricsFile with its default.
func (c CodeQualityConfig) MetricsPath() string {
	if c.MetricsFile == "" {
		return DefaultMetricsFile
	}
	return c.MetricsFile
}

// Validate checks c; see the package's config notes.
func (c CodeQualityConfig) Validate(file string) error {
	var errs []error
	errs = append(errs, validateCommand(file, c.Pos, c.Command))
	if c.MetricsFile != "" && !filepath.IsLocal(filepath.FromSlash(c.MetricsFile)) {
		errs = append(errs, yamlconf.Errorf(file, c.Pos.Of("metrics_file"),
			"metrics_file %q must be a relative path inside the build workspace (no .., not absolute)", c.MetricsFile))
	}
	errs = append(errs, c.Thresholds.Validate(file))
	return errors.Join(errs...)
}

// SecurityConfig is a pipeline's security_test section. The step is
// skipped in emergency mode (the runner's decision).
//
//	security_test:
//	  enabled: true
//	  base_url: https://stage.example.com
//	  host: www.example.com
//	  home_path: /content/site/en.html
//	  author_login_url: https://author-stage.example.com
//	  timeout: 10s
type SecurityConfig struct {
	Pos yamlconf.Pos `yaml:"-"`

	// Enabled turns the built-in probes on. Default false: a pipeline
	// opts in once base_url reaches its stage site.
	Enabled bool `yaml:"enabled"`
	// BaseURL is the stage site as the probes reach it: the load
	// balancer or a dispatcher, e.g. https://stage.example.com. Empty:
	// the runner passes the stage environment's URL to Target.
	BaseURL string `yaml:"base_url"`
	// Host is sent as the Host header when BaseURL is an address rather
	// than the site's name. Empty: BaseURL's host.
	Host string `yaml:"host"`
	// HomePath is the page checked for clickjacking headers. Default "/".
	HomePath string `yaml:"home_path"`
	// AuthorLoginURL is where admin/admin is tried: the author's URL
	// (the login handler path is appended) or the handler's full URL.
	// Empty: the check is skipped and shown as informational.
	AuthorLoginURL string `yaml:"author_login_url"`
	// Timeout bounds each probe request. Default 10s.
	Timeout yamlconf.Duration `yaml:"timeout"`
	// Command, when set, runs in addition to the built-in probes (for
	// example a vulnerability scanner against the stage site).
	Command []string `yaml:"command"`
}

// Validate checks c; see the package's config notes. A disabled section
// is still checked, so a mistake shows before the day it is enabled.
func (c SecurityConfig) Validate(file string) error {
	var errs []error
	errs = append(errs, validateBaseURL(file, c.Pos, "base_url", c.BaseURL))
	errs = append(errs, validateBaseURL(file, c.Pos, "author_login_url", c.AuthorLoginURL))
	errs = append(errs, validateHost(file, c.Pos, c.Host))
	if c.HomePath != "" && !strings.HasPrefix(c.HomePath, "/") {
		errs = append(errs, yamlconf.Errorf(file, c.Pos.Of("home_path"), "home_path %q must start with /", c.HomePath))
	}
	if c.Timeout < 0 || (c.Timeout > 0 && c.Timeout.D() < 100*time.Millisecond) {
		errs = append(errs, yamlconf.Errorf(file, c.Pos.Of("timeout"), "timeout %s is below the minimum of 100ms", c.Timeout.D()))
	}
	errs = append(errs, validateCommand(file, c.Pos, c.Command))
	return errors.Join(errs...)
}

// Target builds the probe target; stageURL is used when BaseURL is empty.
func (c SecurityConfig) Target(stageURL string) SecurityTarget {
	base := c.BaseURL
	if base == "" {
		base = stageURL
	}
	return SecurityTarget{
		BaseURL: base, Host: c.Host, HomePath: c.HomePath,
		AuthorLoginURL: c.AuthorLoginURL, Timeout: c.Timeout.D(),
	}
}

// PerformanceConfig is a pipeline's performance_test section. The step is
// skipped in emergency mode (the runner's decision).
//
//	performance_test:
//	  enabled: true
//	  base_url: https://stage.example.com
//	  urls: [/content/site/en.html, /content/site/en/products.html]
//	  duration: 30m
//	  rate: 20            # requests per second
//	  concurrency: 400
//	  kpis:
//	    p95: 1500ms
//	    page_views_per_minute: 1000
type PerformanceConfig struct {
	Pos yamlconf.Pos `yaml:"-"`

	// Enabled turns the built-in load test on.
	Enabled bool `yaml:"enabled"`
	// BaseURL is the stage site the paths in URLs are resolved against.
	// Empty: the runner passes the stage environment's URL to Load.
	BaseURL string `yaml:"base_url"`
	// Host is the Host header for requests to BaseURL. Empty: BaseURL's.
	Host string `yaml:"host"`
	// URLs are the pages requested in turn: paths ("/content/x.html")
	// against BaseURL, or absolute http(s) URLs. Required when enabled.
	URLs []string `yaml:"urls"`
	// Duration is how long load is offered. Default 30m.
	Duration yamlconf.Duration `yaml:"duration"`
	// Rate is the offered load in requests per second, kept up however
	// slowly the site answers. Required when enabled.
	Rate float64 `yaml:"rate"`
	// Concurrency caps requests in flight; a request due beyond it is
	// dropped and counted as an error. Default rate x kpis.peak, between
	// 10 and 1000.
	Concurrency int `yaml:"concurrency"`
	// Timeout bounds one request; it must exceed kpis.peak. Default 30s.
	Timeout yamlconf.Duration `yaml:"timeout"`
	// KPIs are the program's performance KPIs. Required when enabled.
	KPIs PerformanceKPIs `yaml:"kpis"`
	// Command, when set, runs in addition to the built-in load test.
	Command []string `yaml:"command"`
}

// PerformanceKPIs is the kpis section of performance_test.
type PerformanceKPIs struct {
	Pos yamlconf.Pos `yaml:"-"`

	// P95 is the 95th-percentile response time KPI, e.g. "1500ms".
	P95 yamlconf.Duration `yaml:"p95"`
	// PageViewsPerMinute is the throughput KPI.
	PageViewsPerMinute float64 `yaml:"page_views_per_minute"`
	// Peak is the slowest acceptable response. Default 18s (Cloud
	// Manager's).
	Peak yamlconf.Duration `yaml:"peak"`
}

// Validate checks c; see the package's config notes. The load-test fields
// are required only when Enabled, but a value that is set is always
// checked.
func (c PerformanceConfig) Validate(file string) error {
	var errs []error
	bad := func(p yamlconf.Pos, key, format string, args ...any) {
		errs = append(errs, yamlconf.Errorf(file, p.Of(key), format, args...))
	}
	errs = append(errs, validateBaseURL(file, c.Pos, "base_url", c.BaseURL))
	errs = append(errs, validateHost(file, c.Pos, c.Host))
	if c.Enabled && len(c.URLs) == 0 {
		bad(c.Pos, "urls", "urls: at least one page to request is required")
	}
	for _, u := range c.URLs {
		if strings.HasPrefix(u, "/") {
			if _, err := url.Parse(u); err != nil {
				bad(c.Pos, "urls", "urls: %q is not a valid path: %v", u, err)
			}
			continue
		}
		if err := checkHTTPURL(u); err != nil {
			bad(c.Pos, "urls", "urls: %q must be a path starting with / or an absolute http(s) URL", u)
		}
	}
	if c.Duration < 0 || (c.Duration > 0 && c.Duration.D() < time.Second) {
		bad(c.Pos, "duration", "duration %s is below the minimum of 1s", c.Duration.D())
	}
	switch {
	case math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate < 0:
		bad(c.Pos, "rate", "rate %v must be a positive number of requests per second", c.Rate)
	case c.Enabled && c.Rate == 0:
		bad(c.Pos, "rate", "rate (requests per second) is required")
	}
	if c.Concurrency < 0 {
		bad(c.Pos, "concurrency", "concurrency %d must not be negative", c.Concurrency)
	}
	k := c.KPIs
	if c.Enabled && k.P95 == 0 {
		bad(k.Pos, "p95", "kpis.p95 (the 95th-percentile response time KPI, e.g. 1500ms) is required")
	}
	switch {
	case math.IsNaN(k.PageViewsPerMinute) || math.IsInf(k.PageViewsPerMinute, 0) || k.PageViewsPerMinute < 0:
		bad(k.Pos, "page_views_per_minute", "kpis.page_views_per_minute %v must be a positive number", k.PageViewsPerMinute)
	case c.Enabled && k.PageViewsPerMinute == 0:
		bad(k.Pos, "page_views_per_minute", "kpis.page_views_per_minute is required")
	case c.Rate > 0 && k.PageViewsPerMinute > c.Rate*60:
		// Page views cannot outnumber requests: this test could never pass.
		bad(k.Pos, "page_views_per_minute", "kpis.page_views_per_minute %v exceeds what rate %v offers (%v per minute); raise rate or the test can never pass",
			k.PageViewsPerMinute, c.Rate, c.Rate*60)
	}
	peak := k.Peak.D()
	if peak == 0 {
		peak = DefaultPeakThreshold
	}
	if k.Peak < 0 {
		bad(k.Pos, "peak", "kpis.peak must be positive")
	}
	if c.Timeout < 0 || (c.Timeout > 0 && c.Timeout.D() <= peak) {
		bad(c.Pos, "timeout", "timeout %s must exceed the peak threshold %s, or slow pages count as errors instead of being measured", c.Timeout.D(), peak)
	}
	errs = append(errs, validateCommand(file, c.Pos, c.Command))
	return errors.Join(errs...)
}

// Load builds the load-test config; stageURL is used when BaseURL is
// empty. Defaults not filled here are filled by LoadTest.
func (c PerformanceConfig) Load(stageURL string) LoadConfig {
	base := c.BaseURL
	if base == "" {
		base = stageURL
	}
	d := c.Duration.D()
	if d == 0 {
		d = DefaultLoadDuration
	}
	return LoadConfig{
		BaseURL: base, Host: c.Host, URLs: append([]string(nil), c.URLs...),
		Duration: d, Rate: c.Rate, Concurrency: c.Concurrency, Timeout: c.Timeout.D(),
		KPIs: KPIs{P95: c.KPIs.P95.D(), PageViewsPerMinute: c.KPIs.PageViewsPerMinute, Peak: c.KPIs.Peak.D()},
	}
}

func validateCommand(file string, p yamlconf.Pos, argv []string) error {
	if p.Has("command") && len(argv) == 0 {
		return yamlconf.Errorf(file, p.Of("command"), "command is empty; give an argv list such as [\"/path/to/tool\", \"arg\"] or leave the key out")
	}
	if len(argv) > 0 && strings.TrimSpace(argv[0]) == "" {
		return yamlconf.Errorf(file, p.Of("command"), "command: the program (first element) is empty")
	}
	return nil
}

func validateBaseURL(file string, p yamlconf.Pos, key, s string) error {
	if s == "" {
		return nil
	}
	if err := checkHTTPURL(s); err != nil {
		return yamlconf.Errorf(file, p.Of(key), "%s %q: %v", key, s, err)
	}
	if u, _ := url.Parse(s); u.RawQuery != "" || u.Fragment != "" {
		return yamlconf.Errorf(file, p.Of(key), "%s %q must not carry a query or a fragment", key, s)
	}
	return nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an absolute http or https URL")
	}
	if u.User != nil {
		return fmt.Errorf("must not carry credentials")
	}
	return nil
}

func validateHost(file string, p yamlconf.Pos, host string) error {
	if host == "" {
		return nil
	}
	if strings.ContainsAny(host, "/ \t@?#") {
		return yamlconf.Errorf(file, p.Of("host"), "host %q must be a host name, optionally with :port, not a URL", host)
	}
	return nil
}
