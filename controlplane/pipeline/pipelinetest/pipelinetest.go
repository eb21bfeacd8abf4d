// Package pipelinetest holds what tests of pipelines share: a topology with
// a stage, a production and a builder environment, gates that return what
// the test sets, and a bare git repository with a main branch.
package pipelinetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
)

// Topology is the environments part of a server config: stage (one pair),
// prod (one pair) and a builder.
const Topology = `
environments:
  - name: stage
    type: stage
    hosts:
      - {id: s-author, role: author}
      - {id: s-publish1, role: publish, pair: 1}
      - {id: s-dispatcher1, role: dispatcher, pair: 1, url: "http://127.0.0.1:9"}
  - name: prod
    type: prod
    hosts:
      - {id: author1, role: author}
      - {id: publish1, role: publish, pair: 1}
      - {id: dispatcher1, role: dispatcher, pair: 1}
  - name: tools
    type: dev
    hosts:
      - {id: builder1, role: builder}
`

// Hosts lists every host of Topology.
var Hosts = []string{"s-author", "s-publish1", "s-dispatcher1", "author1", "publish1", "dispatcher1", "builder1"}

// Gates returns the metrics a test set per action: the real gates have
// their own tests; pipeline tests care how verdicts are handled.
type Gates struct {
	mu      sync.Mutex
	metrics map[string][]pipeline.Metric
}

// NewGates returns Gates with no metrics set.
func NewGates() *Gates { return &Gates{metrics: map[string][]pipeline.Metric{}} }

// Set makes the gate of action return ms.
func (g *Gates) Set(action string, ms ...pipeline.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.metrics[action] = ms
}

func (g *Gates) get(action string) []pipeline.Metric {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.metrics[action]
}

// CodeQuality implements pipeline.Gates.
func (g *Gates) CodeQuality(context.Context, *config.Pipeline, []byte) ([]pipeline.Metric, error) {
	return g.get(pipeline.ActionCodeQuality), nil
}

// Security implements pipeline.Gates.
func (g *Gates) Security(context.Context, *config.Pipeline, *config.Environment) ([]pipeline.Metric, error) {
	return g.get(pipeline.ActionSecurityTest), nil
}

// Performance implements pipeline.Gates.
func (g *Gates) Performance(context.Context, *config.Pipeline, *config.Environment) ([]pipeline.Metric, error) {
	return g.get(pipeline.ActionLoadTest), nil
}

// Pass is a passing important metric.
func Pass(kpi string) pipeline.Metric {
	return pipeline.Metric{ID: kpi, KPI: kpi, Severity: "important", Passed: true, ActualValue: "A", ExpectedValue: "A", Comparator: "GTE"}
}

// GitRepo makes a bare repository with a main branch and returns its path.
func GitRepo(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	bare := filepath.Join(dir, "site.git")
	work := filepath.Join(dir, "work")
	run := func(d string, args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Dir = d
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "git %v: %s", args, out)
	}
	require.NoError(t, os.MkdirAll(work, 0o755))
	run(dir, "init", "-q", "--bare", bare)
	run(work, "init", "-q", "-b", "main")
	require.NoError(t, os.WriteFile(filepath.Join(work, "pom.xml"), []byte("<project/>"), 0o644))
	run(work, "add", ".")
	run(work, "commit", "-q", "-m", "init")
	run(work, "push", "-q", bare, "main")
	return bare
}

// Program is the programs part of a server config that the pipeline tests
// share: program wknd with pipeline main building repo, stage and prod,
// every gate on; extra is appended (more pipeline keys, indented by 8, or
// more config).
func Program(repo, extra string) string {
	return fmt.Sprintf(`
programs:
  - name: wknd
    pipelines:
      - name: main
        repository: %s
        branch: main
        stage_environment: stage
        production_environment: prod
        build: {profile: maven}
        code_quality: {profile: scan}
        security: {enabled: true}
        performance: {enabled: true, urls: [/], rate: 10, kpis: {p95: 1s, page_views_per_minute: 60}}
%s`, repo, extra)
}
