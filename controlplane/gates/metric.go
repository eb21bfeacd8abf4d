package gates

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Severity is a metric's tier. It decides what a failure does to the step.
type Severity string

const (
	// SeverityCritical: a failure fails the execution; it cannot be
	// overridden.
	SeverityCritical Severity = "critical"
	// SeverityImportant: a failure puts the step in WAITING until an
	// authorised user overrides it (continue) or rejects it (fail).
	SeverityImportant Severity = "important"
	// SeverityInformational: shown only; never changes the outcome.
	SeverityInformational Severity = "informational"
)

// Comparator states the passing condition of a metric, as Cloud Manager
// writes it: the metric passes when "actualValue <comparator>
// expectedValue". For letter ratings the order is goodness (A is the
// highest), so "GTE B" reads "B or better".
type Comparator string

// Comparators, as Cloud Manager spells them.
const (
	GT  Comparator = "GT"
	GTE Comparator = "GTE"
	LT  Comparator = "LT"
	LTE Comparator = "LTE"
	EQ  Comparator = "EQ"
	NEQ Comparator = "NEQ"
)

// Metric is one measured value of a gate, in Cloud Manager's shape (the
// body of GET .../step/{stepId}/metrics lists them).
//
// ID is stable across executions ("<gate>.<kpi>", e.g.
// "code_quality.coverage"); KPI is the name an override lists (the
// advance body {"metrics":[{"kpi":"coverage","override":true}]}) and is
// unique within one step. ActualValue and ExpectedValue are strings
// because ratings ("B"), percentages ("63.5") and findings ("exposed:
// /system/console (200)") share the field.
type Metric struct {
	ID            string     `json:"id"`
	Severity      Severity   `json:"severity"`
	Passed        bool       `json:"passed"`
	Override      bool       `json:"override"`
	ActualValue   string     `json:"actualValue"`
	ExpectedValue string     `json:"expectedValue"`
	Comparator    Comparator `json:"comparator"`
	KPI           string     `json:"kpi"`
}

// Outcome is a step's verdict: its failing metrics sorted by what they do
// to the step. (The type cannot share the name of the Verdict function
// that builds it.)
type Outcome struct {
	// CriticalFailures are failing critical metrics. A metric with a
	// severity this package does not know counts as critical: a gate fed
	// by an extra command must not pass because of a typo.
	CriticalFailures []Metric
	// ImportantFailures are failing important metrics not yet overridden.
	ImportantFailures []Metric
	// Overridden are failing important metrics a user has overridden.
	Overridden []Metric
	// InformationalFailures are failing informational metrics (shown only).
	InformationalFailures []Metric
}

// Passed reports whether the step may continue: no critical failure and
// every important failure overridden.
func (v Outcome) Passed() bool {
	return len(v.CriticalFailures) == 0 && len(v.ImportantFailures) == 0
}

// Failed reports whether the execution must fail: a critical failure,
// which no override can lift.
func (v Outcome) Failed() bool { return len(v.CriticalFailures) > 0 }

// Waiting reports whether the step must wait for a user: no critical
// failure, but important failures not yet overridden.
func (v Outcome) Waiting() bool {
	return len(v.CriticalFailures) == 0 && len(v.ImportantFailures) > 0
}

// Verdict sorts metrics into an Outcome. Passing metrics appear nowhere.
func Verdict(metrics []Metric) Outcome {
	var v Outcome
	for _, m := range metrics {
		if m.Passed {
			continue
		}
		switch m.Severity {
		case SeverityImportant:
			if m.Override {
				v.Overridden = append(v.Overridden, m)
			} else {
				v.ImportantFailures = append(v.ImportantFailures, m)
			}
		case SeverityInformational:
			v.InformationalFailures = append(v.InformationalFailures, m)
		default:
			v.CriticalFailures = append(v.CriticalFailures, m)
		}
	}
	return v
}

// ErrOverride is wrapped by every error Override returns, so the API can
// answer 400 (a bad advance body) rather than 500.
var ErrOverride = errors.New("override refused")

// Override returns a copy of metrics with the failing important metrics
// named in kpis marked overridden (the user chose to continue). It follows
// Cloud Manager's rule that every failing important metric must be
// listed: a partial override would leave the step waiting on metrics the
// user never looked at. Metrics already overridden need not be listed
// again, and listing them is harmless, so a repeated advance succeeds.
//
// It refuses, changing nothing, when a critical metric failed (critical
// failures cannot be overridden), when a failing important metric is not
// listed, or when a listed kpi is not a failing important metric (unknown,
// passing, critical or informational). Every problem is reported, joined;
// each error wraps ErrOverride. Duplicate kpis are ignored.
func Override(metrics []Metric, kpis []string) ([]Metric, error) {
	listed := map[string]bool{}
	for _, k := range kpis {
		listed[k] = true
	}
	byKPI := map[string][]Metric{}
	for _, m := range metrics {
		byKPI[m.KPI] = append(byKPI[m.KPI], m)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrOverride, fmt.Sprintf(format, args...)))
	}
	v := Verdict(metrics)
	if len(v.CriticalFailures) > 0 {
		bad("critical metric(s) failed and cannot be overridden: %s", kpiList(v.CriticalFailures))
	}
	var missing []Metric
	for _, m := range v.ImportantFailures {
		if !listed[m.KPI] {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		bad("every failing important metric must be listed; missing: %s", kpiList(missing))
	}
	sorted := slices.Sorted(func(yield func(string) bool) {
		for k := range listed {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range sorted {
		ms, ok := byKPI[k]
		if !ok {
			bad("no metric has kpi %q", k)
			continue
		}
		overridable := false
		for _, m := range ms {
			if !m.Passed && m.Severity == SeverityImportant {
				overridable = true
			}
		}
		if overridable {
			continue
		}
		m := ms[0]
		switch {
		case m.Passed:
			bad("kpi %q passed; only failing important metrics can be overridden", k)
		case m.Severity == SeverityInformational:
			bad("kpi %q is informational; it does not block the step and needs no override", k)
		default:
			bad("kpi %q is %s; only important metrics can be overridden", k, m.Severity)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	out := slices.Clone(metrics)
	for i := range out {
		if !out[i].Passed && out[i].Severity == SeverityImportant && listed[out[i].KPI] {
			out[i].Override = true
		}
	}
	return out, nil
}

func kpiList(ms []Metric) string {
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, m.KPI)
	}
	return strings.Join(names, ", ")
}
