package gates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
)

// The code-quality metrics file is what the code scan writes and
// EvaluateCodeQuality reads: one JSON object with exactly these keys.
//
//	{
//	  "security_rating": "A",        // A (best) .. E, or SonarQube's 1 .. 5
//	  "reliability_rating": "B",     // A .. E
//	  "maintainability_rating": "A", // A .. E (SonarQube's sqale_rating)
//	  "coverage": 63.5,              // percent of lines covered, 0 .. 100
//	  "skipped_tests": 0,            // unit tests skipped, a whole number >= 0
//	  "open_issues": 3,              // open issues, a whole number >= 0
//	  "duplicated_lines": 0.4        // percent of duplicated lines, 0 .. 100
//	}
//
// Every key is required and unknown keys are refused: a misspelt key must
// not silently leave a metric unmeasured.
const (
	KPISecurityRating        = "security_rating"
	KPIReliabilityRating     = "reliability_rating"
	KPIMaintainabilityRating = "maintainability_rating"
	KPICoverage              = "coverage"
	KPISkippedTests          = "skipped_tests"
	KPIOpenIssues            = "open_issues"
	KPIDuplicatedLines       = "duplicated_lines"
)

// codeQualityKeys is the file's key order, which is also the metric order.
var codeQualityKeys = []string{
	KPISecurityRating, KPIReliabilityRating, KPIMaintainabilityRating,
	KPICoverage, KPISkippedTests, KPIOpenIssues, KPIDuplicatedLines,
}

// Rating is a letter rating, "A" (best) to "E" (worst).
type Rating string

// rank orders ratings by goodness: A is 5, E is 1; 0 means invalid.
func (r Rating) rank() int {
	if len(r) != 1 || r[0] < 'A' || r[0] > 'E' {
		return 0
	}
	return int('E'-r[0]) + 1
}

// Cloud Manager's code-quality thresholds, used for every Thresholds field
// left unset.
const (
	DefaultSecurityRating        Rating = "B"
	DefaultReliabilityRating     Rating = "C"
	DefaultMaintainabilityRating Rating = "A"
	DefaultMinCoverage                  = 50.0
	DefaultMaxSkippedTests              = 1
	DefaultMaxOpenIssues                = 0
	DefaultMaxDuplicatedLines           = 1.0
)

// Thresholds are the code-quality limits. The zero value (and every field
// left out of the YAML) means Cloud Manager's value. Numbers are pointers
// because 0 is a meaningful limit (open_issues: 0 is the default), so
// "absent" must differ from "zero".
//
//	thresholds:
//	  security_rating: B         # critical: worse than this fails the execution
//	  reliability_rating: C      # important
//	  maintainability_rating: A  # important
//	  coverage: 50               # important: percent, at least
//	  skipped_tests: 1           # informational: at most
//	  open_issues: 0             # informational: at most
//	  duplicated_lines: 1        # informational: percent, at most
type Thresholds struct {
	Pos yamlconf.Pos `yaml:"-"`

	// SecurityRating is the worst passing security rating (critical).
	// Default B.
	SecurityRating Rating `yaml:"security_rating"`
	// ReliabilityRating is the worst passing reliability rating
	// (important). Default C.
	ReliabilityRating Rating `yaml:"reliability_rating"`
	// MaintainabilityRating is the worst passing maintainability rating
	// (important). Default A.
	MaintainabilityRating Rating `yaml:"maintainability_rating"`
	// Coverage is the lowest passing line coverage in percent
	// (important). Default 50.
	Coverage *float64 `yaml:"coverage"`
	// SkippedTests is the most skipped unit tests that pass
	// (informational). Default 1.
	SkippedTests *int `yaml:"skipped_tests"`
	// OpenIssues is the most open issues that pass (informational).
	// Default 0.
	OpenIssues *int `yaml:"open_issues"`
	// DuplicatedLines is the highest passing duplicated-lines density in
	// percent (informational). Default 1.
	DuplicatedLines *float64 `yaml:"duplicated_lines"`
}

// Effective returns t with every unset field at its default; its pointer
// fields are never nil.
func (t Thresholds) Effective() Thresholds {
	if t.SecurityRating == "" {
		t.SecurityRating = DefaultSecurityRating
	}
	if t.ReliabilityRating == "" {
		t.ReliabilityRating = DefaultReliabilityRating
	}
	if t.MaintainabilityRating == "" {
		t.MaintainabilityRating = DefaultMaintainabilityRating
	}
	if t.Coverage == nil {
		t.Coverage = ptr(DefaultMinCoverage)
	}
	if t.SkippedTests == nil {
		t.SkippedTests = ptr(DefaultMaxSkippedTests)
	}
	if t.OpenIssues == nil {
		t.OpenIssues = ptr(DefaultMaxOpenIssues)
	}
	if t.DuplicatedLines == nil {
		t.DuplicatedLines = ptr(DefaultMaxDuplicatedLines)
	}
	return t
}

func ptr[T any](v T) *T { return &v }

// Validate reports every problem in t, joined, as *yamlconf.Error values
// naming file and the line of the offending key (0 when t was not decoded
// from YAML). Unset fields are valid (they take the defaults).
func (t Thresholds) Validate(file string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, yamlconf.Errorf(file, t.Pos.Of(key), "thresholds."+key+": "+format, args...))
	}
	for _, r := range []struct {
		key string
		v   Rating
	}{
		{KPISecurityRating, t.SecurityRating},
		{KPIReliabilityRating, t.ReliabilityRating},
		{KPIMaintainabilityRating, t.MaintainabilityRating},
	} {
		if r.v != "" && r.v.rank() == 0 {
			bad(r.key, "%q is not a rating; use one of A, B, C, D, E (A is best)", string(r.v))
		}
	}
	for _, p := range []struct {
		key string
		v   *float64
	}{{KPICoverage, t.Coverage}, {KPIDuplicatedLines, t.DuplicatedLines}} {
		if p.v != nil && (math.IsNaN(*p.v) || *p.v < 0 || *p.v > 100) {
			bad(p.key, "%v is not a percentage (0 to 100)", *p.v)
		}
	}
	for _, c := range []struct {
		key string
		v   *int
	}{{KPISkippedTests, t.SkippedTests}, {KPIOpenIssues, t.OpenIssues}} {
		if c.v != nil && *c.v < 0 {
			bad(c.key, "%d must not be negative", *c.v)
		}
	}
	return errors.Join(errs...)
}

// CodeQualityReport is a parsed code-quality metrics file.
type CodeQualityReport struct {
	SecurityRating        Rating
	ReliabilityRating     Rating
	MaintainabilityRating Rating
	Coverage              float64
	SkippedTests          int
	OpenIssues            int
	DuplicatedLines       float64
}

// ParseCodeQuality parses a code-quality metrics file (format above). An
// error names the offending key and says what was expected.
func ParseCodeQuality(data []byte) (CodeQualityReport, error) {
	var r CodeQualityReport
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return r, errors.New("code-quality metrics: the file is empty")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return r, fmt.Errorf("code-quality metrics: not valid JSON at byte %d: %v", se.Offset, err)
		}
		return r, fmt.Errorf("code-quality metrics: expected a JSON object with keys %s: %v", strings.Join(codeQualityKeys, ", "), err)
	}
	if raw == nil {
		return r, fmt.Errorf("code-quality metrics: expected a JSON object with keys %s, got null", strings.Join(codeQualityKeys, ", "))
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("code-quality metrics: %s: %s", key, fmt.Sprintf(format, args...)))
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range raw {
			if !yield(k) {
				return
			}
		}
	}) {
		if !slices.Contains(codeQualityKeys, k) {
			bad(k, "unknown key (expected %s)", strings.Join(codeQualityKeys, ", "))
		}
	}
	for _, k := range codeQualityKeys {
		v, ok := raw[k]
		if !ok {
			bad(k, "missing")
			continue
		}
		// encoding/json decodes null into a number as 0: refuse it here so
		// an unmeasured coverage is not read as 0 %.
		if string(bytes.TrimSpace(v)) == "null" {
			bad(k, "is null; a value is required")
			continue
		}
		switch k {
		case KPISecurityRating, KPIReliabilityRating, KPIMaintainabilityRating:
			rt, err := parseRating(v)
			if err != nil {
				bad(k, "%v", err)
			}
			switch k {
			case KPISecurityRating:
				r.SecurityRating = rt
			case KPIReliabilityRating:
				r.ReliabilityRating = rt
			default:
				r.MaintainabilityRating = rt
			}
		case KPICoverage, KPIDuplicatedLines:
			f, err := parsePercent(v)
			if err != nil {
				bad(k, "%v", err)
			}
			if k == KPICoverage {
				r.Coverage = f
			} else {
				r.DuplicatedLines = f
			}
		case KPISkippedTests, KPIOpenIssues:
			n, err := parseCount(v)
			if err != nil {
				bad(k, "%v", err)
			}
			if k == KPISkippedTests {
				r.SkippedTests = n
			} else {
				r.OpenIssues = n
			}
		}
	}
	return r, errors.Join(errs...)
}

// parseRating accepts "A".."E" (any case) and SonarQube's numeric ratings
// 1..5 (1 is A), as a number or a string, since scanners export either.
func parseRating(v json.RawMessage) (Rating, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		var f float64
		if err := json.Unmarshal(v, &f); err != nil {
			return "", fmt.Errorf("expected a rating A to E, got %s", v)
		}
		s = strconv.FormatFloat(f, 'f', -1, 64)
	}
	s = strings.ToUpper(strings.TrimSpace(s))
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f != math.Trunc(f) || f < 1 || f > 5 {
			return "", fmt.Errorf("expected a rating A to E (or 1 to 5), got %s", v)
		}
		return Rating(rune('A' + int(f) - 1)), nil
	}
	if r := Rating(s); r.rank() > 0 {
		return r, nil
	}
	return "", fmt.Errorf("expected a rating A to E, got %s", v)
}

func parsePercent(v json.RawMessage) (float64, error) {
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		return 0, fmt.Errorf("expected a percentage (a number from 0 to 100), got %s", v)
	}
	if f < 0 || f > 100 {
		return 0, fmt.Errorf("expected a percentage (a number from 0 to 100), got %s", v)
	}
	return f, nil
}

func parseCount(v json.RawMessage) (int, error) {
	var f float64
	if err := json.Unmarshal(v, &f); err != nil || f != math.Trunc(f) || f < 0 || f > math.MaxInt32 {
		return 0, fmt.Errorf("expected a whole number >= 0, got %s", v)
	}
	return int(f), nil
}

// EvaluateCodeQuality parses a code-quality metrics file and returns one
// metric per key, in the file's key order, judged against t (unset fields
// take Cloud Manager's defaults). Malformed input is an error naming the
// key; so are invalid thresholds.
func EvaluateCodeQuality(data []byte, t Thresholds) ([]Metric, error) {
	if err := t.Validate("code-quality thresholds"); err != nil {
		return nil, err
	}
	r, err := ParseCodeQuality(data)
	if err != nil {
		return nil, err
	}
	return CodeQualityMetrics(r, t), nil
}

// CodeQualityMetrics judges a parsed report against t (unset fields take
// the defaults; t is assumed valid).
func CodeQualityMetrics(r CodeQualityReport, t Thresholds) []Metric {
	t = t.Effective()
	rating := func(kpi string, sev Severity, actual, worst Rating) Metric {
		return Metric{
			ID: "code_quality." + kpi, KPI: kpi, Severity: sev,
			Passed:      actual.rank() >= worst.rank(),
			ActualValue: string(actual), ExpectedValue: string(worst), Comparator: GTE,
		}
	}
	return []Metric{
		rating(KPISecurityRating, SeverityCritical, r.SecurityRating, t.SecurityRating),
		rating(KPIReliabilityRating, SeverityImportant, r.ReliabilityRating, t.ReliabilityRating),
		rating(KPIMaintainabilityRating, SeverityImportant, r.MaintainabilityRating, t.MaintainabilityRating),
		{
			ID: "code_quality." + KPICoverage, KPI: KPICoverage, Severity: SeverityImportant,
			Passed:      r.Coverage >= *t.Coverage,
			ActualValue: fmtFloat(r.Coverage), ExpectedValue: fmtFloat(*t.Coverage), Comparator: GTE,
		},
		{
			ID: "code_quality." + KPISkippedTests, KPI: KPISkippedTests, Severity: SeverityInformational,
			Passed:      r.SkippedTests <= *t.SkippedTests,
			ActualValue: strconv.Itoa(r.SkippedTests), ExpectedValue: strconv.Itoa(*t.SkippedTests), Comparator: LTE,
		},
		{
			ID: "code_quality." + KPIOpenIssues, KPI: KPIOpenIssues, Severity: SeverityInformational,
			Passed:      r.OpenIssues <= *t.OpenIssues,
			ActualValue: strconv.Itoa(r.OpenIssues), ExpectedValue: strconv.Itoa(*t.OpenIssues), Comparator: LTE,
		},
		{
			ID: "code_quality." + KPIDuplicatedLines, KPI: KPIDuplicatedLines, Severity: SeverityInformational,
			Passed:      r.DuplicatedLines <= *t.DuplicatedLines,
			ActualValue: fmtFloat(r.DuplicatedLines), ExpectedValue: fmtFloat(*t.DuplicatedLines), Comparator: LTE,
		},
	}
}

// fmtFloat writes the shortest exact form ("50", "63.5"), as Cloud Manager
// shows values.
func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
