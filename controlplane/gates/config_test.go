package gates

import (
	"errors"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

// pipelineSection is how the server config embeds the gate configs.
type pipelineSection struct {
	Name            string            `yaml:"name"`
	CodeQuality     CodeQualityConfig `yaml:"code_quality"`
	SecurityTest    SecurityConfig    `yaml:"security_test"`
	PerformanceTest PerformanceConfig `yaml:"performance_test"`
}

func decodePipeline(t *testing.T, src string) pipelineSection {
	t.Helper()
	var p pipelineSection
	require.NoError(t, yamlconf.Decode("server.yaml", []byte(src), &p))
	return p
}

func validateAll(p pipelineSection) error {
	return errors.Join(
		p.CodeQuality.Validate("server.yaml"),
		p.SecurityTest.Validate("server.yaml"),
		p.PerformanceTest.Validate("server.yaml"),
	)
}

func TestGateConfigsDecodeAndValidate(t *testing.T) {
	p := decodePipeline(t, `
name: prod
code_quality:
  command: ["/opt/scan/export", "--out", "target/q.json"]
  metrics_file: target/q.json
  thresholds:
    coverage: 60
    open_issues: 5
    maintainability_rating: B
security_test:
  enabled: true
  base_url: https://10.0.0.12
  host: www.example.com
  home_path: /content/site/en.html
  author_login_url: https://author-stage.example.com
  timeout: 5s
performance_test:
  enabled: true
  base_url: https://stage.example.com
  urls: [/content/site/en.html, "https://cdn.example.com/x.html"]
  duration: 10m
  rate: 20
  concurrency: 400
  timeout: 40s
  kpis:
    p95: 1500ms
    page_views_per_minute: 1000
    peak: 20s
`)
	require.NoError(t, validateAll(p))

	th := p.CodeQuality.Thresholds.Effective()
	require.Equal(t, 60.0, *th.Coverage)
	require.Equal(t, 5, *th.OpenIssues)
	require.Equal(t, Rating("B"), th.MaintainabilityRating)
	require.Equal(t, DefaultSecurityRating, th.SecurityRating, "unset keys keep Cloud Manager's values")
	require.Equal(t, DefaultMaxSkippedTests, *th.SkippedTests)
	require.Equal(t, "target/q.json", p.CodeQuality.MetricsPath())

	require.Equal(t, SecurityTarget{
		BaseURL: "https://10.0.0.12", Host: "www.example.com", HomePath: "/content/site/en.html",
		AuthorLoginURL: "https://author-stage.example.com", Timeout: 5 * time.Second,
	}, p.SecurityTest.Target("https://ignored.example.com"))

	lc := p.PerformanceTest.Load("https://ignored.example.com")
	require.Equal(t, LoadConfig{
		BaseURL: "https://stage.example.com", URLs: []string{"/content/site/en.html", "https://cdn.example.com/x.html"},
		Duration: 10 * time.Minute, Rate: 20, Concurrency: 400, Timeout: 40 * time.Second,
		KPIs: KPIs{P95: 1500 * time.Millisecond, PageViewsPerMinute: 1000, Peak: 20 * time.Second},
	}, lc)
	_, err := lc.withDefaults()
	require.NoError(t, err, "a valid section makes a valid load test")
}

func TestGateConfigDefaults(t *testing.T) {
	p := decodePipeline(t, "name: dev\n")
	require.NoError(t, validateAll(p), "every section is optional; disabled gates need nothing")
	require.Equal(t, DefaultMetricsFile, p.CodeQuality.MetricsPath())
	require.Equal(t, Thresholds{
		SecurityRating: "B", ReliabilityRating: "C", MaintainabilityRating: "A",
		Coverage: ptr(50.0), SkippedTests: ptr(1), OpenIssues: ptr(0), DuplicatedLines: ptr(1.0),
	}, p.CodeQuality.Thresholds.Effective())
	require.Equal(t, "https://stage.example.com", p.SecurityTest.Target("https://stage.example.com").BaseURL)
	require.False(t, p.SecurityTest.Enabled)
	lc := p.PerformanceTest.Load("https://stage.example.com")
	require.Equal(t, DefaultLoadDuration, lc.Duration)
	require.Equal(t, "https://stage.example.com", lc.BaseURL)
}

func TestGateConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"bad rating", `
code_quality:
  thresholds:
    security_rating: F
`, []string{`server.yaml:4: thresholds.security_rating: "F" is not a rating; use one of A, B, C, D, E`}},
		{"coverage out of range", `
code_quality:
  thresholds:
    coverage: 150
    duplicated_lines: -1
    skipped_tests: -3
`, []string{"server.yaml:4: thresholds.coverage: 150 is not a percentage", "server.yaml:5: thresholds.duplicated_lines", "server.yaml:6: thresholds.skipped_tests: -3 must not be negative"}},
		{"metrics file escapes the workspace", `
code_quality:
  metrics_file: ../../etc/passwd
`, []string{"server.yaml:3: metrics_file \"../../etc/passwd\" must be a relative path inside the build workspace"}},
		{"empty command", `
code_quality:
  command: []
`, []string{"server.yaml:3: command is empty"}},
		{"security base url", `
security_test:
  enabled: true
  base_url: stage.example.com
  host: http://www.example.com/
  home_path: index.html
  author_login_url: ftp://author
  timeout: 1ms
`, []string{
			`server.yaml:4: base_url "stage.example.com": must be an absolute http or https URL`,
			`server.yaml:5: host "http://www.example.com/" must be a host name`,
			`server.yaml:6: home_path "index.html" must start with /`,
			`server.yaml:7: author_login_url "ftp://author"`,
			`server.yaml:8: timeout 1ms is below the minimum of 100ms`,
		}},
		{"enabled performance needs its fields", `
performance_test:
  enabled: true
`, []string{"urls: at least one page", "rate (requests per second) is required", "kpis.p95", "kpis.page_views_per_minute is required"}},
		{"performance values", `
performance_test:
  urls: [x.html]
  duration: 10ms
  rate: -1
  concurrency: -2
  timeout: 10s
  kpis:
    p95: 1s
    page_views_per_minute: 100
`, []string{
			`server.yaml:3: urls: "x.html" must be a path starting with / or an absolute http(s) URL`,
			"server.yaml:4: duration 10ms is below the minimum of 1s",
			"server.yaml:5: rate -1 must be a positive number",
			"server.yaml:6: concurrency -2 must not be negative",
			"server.yaml:7: timeout 10s must exceed the peak threshold 18s",
		}},
		{"pvm KPI the rate cannot reach", `
performance_test:
  enabled: true
  urls: [/]
  rate: 1
  kpis:
    p95: 1s
    page_views_per_minute: 100
`, []string{"server.yaml:8: kpis.page_views_per_minute 100 exceeds what rate 1 offers (60 per minute)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateAll(decodePipeline(t, tc.src))
			require.Error(t, err)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			var ye *yamlconf.Error
			require.ErrorAs(t, err, &ye, "errors name file and line")
		})
	}
}

func TestGateConfigUnknownKey(t *testing.T) {
	var p pipelineSection
	err := yamlconf.Decode("server.yaml", []byte("performance_test:\n  kpis:\n    p59: 1s\n"), &p)
	require.ErrorContains(t, err, `server.yaml:3: unknown key "p59" (did you mean "p95"?)`)
}
