package gates

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// goodReport passes every default threshold exactly at its boundary.
func qualityJSON(t *testing.T, change map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"security_rating": "B", "reliability_rating": "C", "maintainability_rating": "A",
		"coverage": 50, "skipped_tests": 1, "open_issues": 0, "duplicated_lines": 1,
	}
	for k, v := range change {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func byKPI(ms []Metric) map[string]Metric {
	out := map[string]Metric{}
	for _, m := range ms {
		out[m.KPI] = m
	}
	return out
}

func TestCodeQualityDefaultThresholdBoundaries(t *testing.T) {
	// Every key at its boundary passes.
	ms, err := EvaluateCodeQuality(qualityJSON(t, nil), Thresholds{})
	require.NoError(t, err)
	require.Len(t, ms, 7)
	for _, m := range ms {
		require.True(t, m.Passed, "%s at its boundary must pass: %+v", m.KPI, m)
	}
	require.True(t, Verdict(ms).Passed())

	tests := []struct {
		kpi      string
		value    any
		passed   bool
		severity Severity
		actual   string
		expected string
		cmp      Comparator
	}{
		{KPISecurityRating, "A", true, SeverityCritical, "A", "B", GTE},
		{KPISecurityRating, "B", true, SeverityCritical, "B", "B", GTE},
		{KPISecurityRating, "C", false, SeverityCritical, "C", "B", GTE},
		{KPISecurityRating, "E", false, SeverityCritical, "E", "B", GTE},
		{KPIReliabilityRating, "C", true, SeverityImportant, "C", "C", GTE},
		{KPIReliabilityRating, "D", false, SeverityImportant, "D", "C", GTE},
		{KPIMaintainabilityRating, "A", true, SeverityImportant, "A", "A", GTE},
		{KPIMaintainabilityRating, "B", false, SeverityImportant, "B", "A", GTE},
		{KPICoverage, 50, true, SeverityImportant, "50", "50", GTE},
		{KPICoverage, 49.9, false, SeverityImportant, "49.9", "50", GTE},
		{KPICoverage, 100, true, SeverityImportant, "100", "50", GTE},
		{KPISkippedTests, 1, true, SeverityInformational, "1", "1", LTE},
		{KPISkippedTests, 2, false, SeverityInformational, "2", "1", LTE},
		{KPIOpenIssues, 0, true, SeverityInformational, "0", "0", LTE},
		{KPIOpenIssues, 1, false, SeverityInformational, "1", "0", LTE},
		{KPIDuplicatedLines, 1, true, SeverityInformational, "1", "1", LTE},
		{KPIDuplicatedLines, 1.01, false, SeverityInformational, "1.01", "1", LTE},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s=%v", tc.kpi, tc.value), func(t *testing.T) {
			ms, err := EvaluateCodeQuality(qualityJSON(t, map[string]any{tc.kpi: tc.value}), Thresholds{})
			require.NoError(t, err)
			m := byKPI(ms)[tc.kpi]
			require.Equal(t, Metric{
				ID: "code_quality." + tc.kpi, KPI: tc.kpi, Severity: tc.severity, Passed: tc.passed,
				ActualValue: tc.actual, ExpectedValue: tc.expected, Comparator: tc.cmp,
			}, m)
			for _, other := range ms {
				if other.KPI != tc.kpi {
					require.True(t, other.Passed, "only %s changed, %s must still pass", tc.kpi, other.KPI)
				}
			}
		})
	}
}

func TestCodeQualityVerdicts(t *testing.T) {
	ms, err := EvaluateCodeQuality([]byte(`{"security_rating":"A","reliability_rating":"B","maintainability_rating":"A",
		"coverage":63.5,"skipped_tests":0,"open_issues":3,"duplicated_lines":0.4}`), Thresholds{})
	require.NoError(t, err)
	v := Verdict(ms)
	require.True(t, v.Passed(), "open issues are informational only")
	require.Len(t, v.InformationalFailures, 1)

	ms, err = EvaluateCodeQuality(qualityJSON(t, map[string]any{"coverage": 10, "maintainability_rating": "B"}), Thresholds{})
	require.NoError(t, err)
	v = Verdict(ms)
	require.True(t, v.Waiting())
	out, err := Override(ms, []string{"coverage", "maintainability_rating"})
	require.NoError(t, err)
	require.True(t, Verdict(out).Passed())

	ms, err = EvaluateCodeQuality(qualityJSON(t, map[string]any{"security_rating": "C"}), Thresholds{})
	require.NoError(t, err)
	require.True(t, Verdict(ms).Failed())
	_, err = Override(ms, []string{"security_rating"})
	require.Error(t, err, "a critical security rating cannot be overridden")
}

func TestCodeQualityRatingForms(t *testing.T) {
	for in, want := range map[string]string{`"a"`: "A", `" b "`: "B", `1`: "A", `2.0`: "B", `"5"`: "E", `5`: "E"} {
		ms, err := EvaluateCodeQuality([]byte(strings.Replace(string(qualityJSON(t, nil)), `"security_rating":"B"`, `"security_rating":`+in, 1)), Thresholds{})
		require.NoError(t, err, in)
		require.Equal(t, want, byKPI(ms)[KPISecurityRating].ActualValue, in)
	}
}

func TestCodeQualityCustomThresholds(t *testing.T) {
	th := Thresholds{
		SecurityRating: "A", ReliabilityRating: "A", MaintainabilityRating: "C",
		Coverage: ptr(80.0), SkippedTests: ptr(0), OpenIssues: ptr(10), DuplicatedLines: ptr(5.0),
	}
	data := []byte(`{"security_rating":"B","reliability_rating":"A","maintainability_rating":"C",
		"coverage":79.99,"skipped_tests":1,"open_issues":10,"duplicated_lines":5}`)
	ms, err := EvaluateCodeQuality(data, th)
	require.NoError(t, err)
	got := byKPI(ms)
	require.False(t, got[KPISecurityRating].Passed, "B is worse than the custom A")
	require.Equal(t, "A", got[KPISecurityRating].ExpectedValue)
	require.True(t, got[KPIReliabilityRating].Passed)
	require.True(t, got[KPIMaintainabilityRating].Passed, "C meets a relaxed C")
	require.False(t, got[KPICoverage].Passed)
	require.Equal(t, "80", got[KPICoverage].ExpectedValue)
	require.False(t, got[KPISkippedTests].Passed)
	require.True(t, got[KPIOpenIssues].Passed)
	require.True(t, got[KPIDuplicatedLines].Passed)

	// Zero is a real limit, not "unset": coverage 0 lets anything pass,
	// while an unset coverage keeps 50.
	ms, err = EvaluateCodeQuality(qualityJSON(t, map[string]any{"coverage": 0}), Thresholds{Coverage: ptr(0.0)})
	require.NoError(t, err)
	require.True(t, byKPI(ms)[KPICoverage].Passed)
	ms, err = EvaluateCodeQuality(qualityJSON(t, map[string]any{"coverage": 0}), Thresholds{SecurityRating: "C"})
	require.NoError(t, err)
	require.False(t, byKPI(ms)[KPICoverage].Passed)

	_, err = EvaluateCodeQuality(qualityJSON(t, nil), Thresholds{SecurityRating: "F", Coverage: ptr(101.0)})
	require.ErrorContains(t, err, `thresholds.security_rating: "F" is not a rating`)
	require.ErrorContains(t, err, "thresholds.coverage: 101 is not a percentage")
}

func TestCodeQualityMalformed(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"empty", "", []string{"the file is empty"}},
		{"not json", "coverage: 50", []string{"not valid JSON"}},
		{"truncated", `{"coverage": 5`, []string{"code-quality metrics"}},
		{"array", `[1,2]`, []string{"expected a JSON object"}},
		{"null", `null`, []string{"expected a JSON object", "got null"}},
		{"missing key", string(qualityJSON(t, map[string]any{"coverage": nil})), []string{"coverage: missing"}},
		{"unknown key", string(qualityJSON(t, map[string]any{"coverge": 50})), []string{`coverge: unknown key`}},
		{"null value", strings.Replace(string(qualityJSON(t, nil)), `"coverage":50`, `"coverage":null`, 1), []string{"coverage: is null"}},
		{"coverage as string", string(qualityJSON(t, map[string]any{"coverage": "63%"})), []string{`coverage: expected a percentage`, `"63%"`}},
		{"coverage above 100", string(qualityJSON(t, map[string]any{"coverage": 120})), []string{"coverage: expected a percentage", "120"}},
		{"negative duplication", string(qualityJSON(t, map[string]any{"duplicated_lines": -1})), []string{"duplicated_lines: expected a percentage"}},
		{"rating F", string(qualityJSON(t, map[string]any{"security_rating": "F"})), []string{`security_rating: expected a rating A to E, got "F"`}},
		{"rating 6", string(qualityJSON(t, map[string]any{"reliability_rating": 6})), []string{"reliability_rating: expected a rating A to E (or 1 to 5), got 6"}},
		{"rating 1.5", string(qualityJSON(t, map[string]any{"maintainability_rating": 1.5})), []string{"maintainability_rating: expected a rating"}},
		{"fractional count", string(qualityJSON(t, map[string]any{"skipped_tests": 1.5})), []string{"skipped_tests: expected a whole number >= 0, got 1.5"}},
		{"negative count", string(qualityJSON(t, map[string]any{"open_issues": -2})), []string{"open_issues: expected a whole number >= 0"}},
		{"several at once", string(qualityJSON(t, map[string]any{"open_issues": "x", "coverage": nil})), []string{"open_issues: expected", "coverage: missing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := EvaluateCodeQuality([]byte(tc.data), Thresholds{})
			require.Error(t, err)
			require.Nil(t, ms)
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
		})
	}
}

func FuzzParseCodeQuality(f *testing.F) {
	f.Add([]byte(`{"security_rating":"A","reliability_rating":"B","maintainability_rating":"A","coverage":63.5,"skipped_tests":0,"open_issues":3,"duplicated_lines":0.4}`))
	f.Add([]byte(`{"security_rating":1e308,"coverage":-0}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseCodeQuality(data)
		if err != nil {
			return
		}
		// Whatever parses must evaluate to seven well-formed metrics.
		ms := CodeQualityMetrics(r, Thresholds{})
		if len(ms) != 7 {
			t.Fatalf("got %d metrics", len(ms))
		}
		for _, m := range ms {
			if m.ActualValue == "" || m.ExpectedValue == "" {
				t.Fatalf("empty value in %+v", m)
			}
		}
	})
}
