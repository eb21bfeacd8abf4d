package rollout_test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	"github.com/stretchr/testify/require"
)

// BenchmarkOrchestration100Pairs measures the runner's own overhead: a
// production rollout over 1 author + 100 pairs of hosts whose executors
// return at once (real agents, real gRPC and mutual TLS, real bbolt), so
// all the time is orchestration. It reports ns per step and p50/p99 of a
// step's time from "started" to "finished" as the runner records them.
//
//	go test -run XXX -bench Orchestration -benchtime 3x ./controlplane/rollout/
func BenchmarkOrchestration100Pairs(b *testing.B) {
	const pairs = 100
	var sb strings.Builder
	sb.WriteString("environments:\n  - name: big\n    type: prod\n    invalidate_paths: [/content]\n    hosts:\n      - {id: author1, role: author}\n")
	hosts := []string{"author1"}
	for i := 1; i <= pairs; i++ {
		fmt.Fprintf(&sb, "      - {id: p%d, role: publish, pair: %d}\n      - {id: d%d, role: dispatcher, pair: %d}\n", i, i, i, i)
		hosts = append(hosts, fmt.Sprintf("p%d", i), fmt.Sprintf("d%d", i))
	}
	e := startWith(b, sb.String(), hosts...)
	m := e.c.Server.Rollouts()
	b.ResetTimer()
	var stepDur []time.Duration
	byKind := map[string][]time.Duration{}
	steps, prepares := 0, 0
	for i := 0; i < b.N; i++ {
		req := e.request("big", rollout.ActionDeploy)
		id, err := m.Start(req, "bench")
		require.NoError(b, err)
		d, sts, _ := e.wait(id)
		require.Equal(b, rollout.StateSucceeded, d.State, d.Error)
		for _, s := range sts {
			stepDur = append(stepDur, s.FinishedAt.Sub(s.StartedAt))
			byKind[s.Kind] = append(byKind[s.Kind], s.FinishedAt.Sub(s.StartedAt))
			if s.Kind == "dispatcher_prepare" {
				prepares++
			}
		}
		steps += len(sts)
	}
	b.StopTimer()
	sort.Slice(stepDur, func(a, c int) bool { return stepDur[a] < stepDur[c] })
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(steps), "ns/step")
	// The prepare steps all run at once in the first group; per step of
	// the rolling part, they are not counted.
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(steps-prepares)/1e6, "ms/rolling-step")
	b.ReportMetric(float64(stepDur[len(stepDur)/2].Microseconds())/1000, "p50-step-ms")
	b.ReportMetric(float64(stepDur[len(stepDur)*99/100].Microseconds())/1000, "p99-step-ms")
	b.ReportMetric(float64(steps)/float64(b.N), "steps/rollout")
	var kinds []string
	for k, ds := range byKind {
		sort.Slice(ds, func(a, c int) bool { return ds[a] < ds[c] })
		kinds = append(kinds, fmt.Sprintf("%s p50 %s p99 %s", k, ds[len(ds)/2].Round(10*time.Microsecond), ds[len(ds)*99/100].Round(10*time.Microsecond)))
	}
	sort.Strings(kinds)
	b.Logf("step durations by kind: %s", strings.Join(kinds, "; "))
}
