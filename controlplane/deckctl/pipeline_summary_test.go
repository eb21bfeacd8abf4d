package deckctl

import (
	"testing"

	"github.com/stretchr/testify/require"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

func TestMetricSummary(t *testing.T) {
	pass := &pb.GateMetric{Kpi: "a", Passed: true}
	fail := &pb.GateMetric{Kpi: "coverage", Severity: "important"}
	over := &pb.GateMetric{Kpi: "open_issues", Severity: "important", Override: true}
	skip := &pb.GateMetric{Kpi: "default_credentials", Severity: "informational", ActualValue: "skipped: no author login URL configured"}
	for _, tc := range []struct {
		ms   []*pb.GateMetric
		want string
	}{
		{[]*pb.GateMetric{pass}, "1 metric passed"},
		{[]*pb.GateMetric{pass, pass}, "all 2 metrics passed"},
		{[]*pb.GateMetric{pass, pass, skip}, "2 metrics passed, 1 skipped: default_credentials"},
		{[]*pb.GateMetric{pass, fail, over, skip}, "2 of 3 metrics failing: important coverage, important open_issues (overridden), 1 skipped: default_credentials"},
		{[]*pb.GateMetric{pass, fail}, "1 of 2 metrics failing: important coverage"},
	} {
		require.Equal(t, tc.want, plMetricSummary(tc.ms))
	}
}
