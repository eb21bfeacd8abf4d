package gates

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMetricJSONShape(t *testing.T) {
	m := Metric{
		ID: "code_quality.coverage", Severity: SeverityImportant, Passed: false, Override: true,
		ActualValue: "49.9", ExpectedValue: "50", Comparator: GTE, KPI: "coverage",
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"code_quality.coverage","severity":"important","passed":false,"override":true,
		"actualValue":"49.9","expectedValue":"50","comparator":"GTE","kpi":"coverage"}`, string(b))
	var back Metric
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, m, back)
}

func metric(kpi string, sev Severity, passed bool) Metric {
	return Metric{ID: "x." + kpi, KPI: kpi, Severity: sev, Passed: passed}
}

func TestVerdict(t *testing.T) {
	t.Run("all passed", func(t *testing.T) {
		v := Verdict([]Metric{metric("a", SeverityCritical, true), metric("b", SeverityImportant, true)})
		require.True(t, v.Passed())
		require.False(t, v.Failed())
		require.False(t, v.Waiting())
	})
	t.Run("informational failures never block", func(t *testing.T) {
		v := Verdict([]Metric{metric("a", SeverityInformational, false)})
		require.True(t, v.Passed())
		require.Len(t, v.InformationalFailures, 1)
	})
	t.Run("important failure waits", func(t *testing.T) {
		v := Verdict([]Metric{metric("a", SeverityImportant, false), metric("b", SeverityCritical, true)})
		require.False(t, v.Passed())
		require.False(t, v.Failed())
		require.True(t, v.Waiting())
		require.Equal(t, "a", v.ImportantFailures[0].KPI)
	})
	t.Run("overridden important passes", func(t *testing.T) {
		m := metric("a", SeverityImportant, false)
		m.Override = true
		v := Verdict([]Metric{m})
		require.True(t, v.Passed())
		require.Empty(t, v.ImportantFailures)
		require.Len(t, v.Overridden, 1)
	})
	t.Run("critical failure fails even with important ones pending", func(t *testing.T) {
		v := Verdict([]Metric{metric("a", SeverityImportant, false), metric("b", SeverityCritical, false)})
		require.False(t, v.Passed())
		require.True(t, v.Failed())
		require.False(t, v.Waiting(), "a failed execution does not wait for an override")
	})
	t.Run("an override flag on a critical metric does not lift it", func(t *testing.T) {
		m := metric("a", SeverityCritical, false)
		m.Override = true
		require.True(t, Verdict([]Metric{m}).Failed())
	})
	t.Run("unknown severity counts as critical", func(t *testing.T) {
		v := Verdict([]Metric{metric("a", "blocker", false)})
		require.True(t, v.Failed())
	})
}

func TestOverride(t *testing.T) {
	base := []Metric{
		metric("security_rating", SeverityCritical, true),
		metric("coverage", SeverityImportant, false),
		metric("reliability_rating", SeverityImportant, false),
		metric("maintainability_rating", SeverityImportant, true),
		metric("open_issues", SeverityInformational, false),
	}

	t.Run("every failing important metric listed", func(t *testing.T) {
		out, err := Override(base, []string{"coverage", "reliability_rating", "coverage"})
		require.NoError(t, err)
		require.True(t, Verdict(out).Passed())
		require.True(t, out[1].Override)
		require.True(t, out[2].Override)
		require.False(t, out[3].Override, "a passing metric is not marked")
		require.False(t, base[1].Override, "the input is not changed")
	})
	t.Run("a failing important metric left out", func(t *testing.T) {
		out, err := Override(base, []string{"coverage"})
		require.ErrorIs(t, err, ErrOverride)
		require.ErrorContains(t, err, "every failing important metric must be listed; missing: reliability_rating")
		require.Nil(t, out)
	})
	t.Run("nothing listed", func(t *testing.T) {
		_, err := Override(base, nil)
		require.ErrorContains(t, err, "missing: coverage, reliability_rating")
	})
	t.Run("listed kpi is passing", func(t *testing.T) {
		_, err := Override(base, []string{"coverage", "reliability_rating", "maintainability_rating"})
		require.ErrorContains(t, err, `kpi "maintainability_rating" passed`)
	})
	t.Run("listed kpi is informational", func(t *testing.T) {
		_, err := Override(base, []string{"coverage", "reliability_rating", "open_issues"})
		require.ErrorContains(t, err, `kpi "open_issues" is informational`)
	})
	t.Run("listed kpi is unknown", func(t *testing.T) {
		_, err := Override(base, []string{"coverage", "reliability_rating", "coverge"})
		require.ErrorContains(t, err, `no metric has kpi "coverge"`)
	})
	t.Run("critical failure cannot be overridden", func(t *testing.T) {
		ms := append([]Metric{metric("error_rate", SeverityCritical, false)}, base[1:]...)
		_, err := Override(ms, []string{"coverage", "reliability_rating"})
		require.ErrorIs(t, err, ErrOverride)
		require.ErrorContains(t, err, "critical metric(s) failed and cannot be overridden: error_rate")

		_, err = Override(ms, []string{"coverage", "reliability_rating", "error_rate"})
		require.ErrorContains(t, err, `kpi "error_rate" is critical; only important metrics can be overridden`)
	})
	t.Run("repeated override is accepted, with or without relisting", func(t *testing.T) {
		out, err := Override(base, []string{"coverage", "reliability_rating"})
		require.NoError(t, err)
		again, err := Override(out, []string{"coverage", "reliability_rating"})
		require.NoError(t, err)
		require.Equal(t, out, again)
		again, err = Override(out, nil)
		require.NoError(t, err, "already overridden metrics need not be listed again")
		require.Equal(t, out, again)
	})
	t.Run("nothing to override", func(t *testing.T) {
		ms := []Metric{metric("a", SeverityImportant, true)}
		out, err := Override(ms, nil)
		require.NoError(t, err)
		require.Equal(t, ms, out)
	})
}
