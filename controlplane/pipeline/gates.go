package pipeline

import (
	"context"
	"fmt"
	"sync"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/gates"
)

// BuiltinGates evaluates the gates with controlplane/gates: the Cloud
// Manager code-quality thresholds, the dispatcher security checklist and an
// HTTP load test, each against every stage dispatcher (by its url).
type BuiltinGates struct{}

// CodeQuality implements Gates.
func (BuiltinGates) CodeQuality(_ context.Context, pl *config.Pipeline, data []byte) ([]Metric, error) {
	return gates.EvaluateCodeQuality(data, pl.CodeQuality.Thresholds)
}

// dispatchers lists the stage dispatchers with their site URLs.
func dispatchers(stage *config.Environment) []config.Host {
	var out []config.Host
	for _, h := range stage.Hosts {
		if h.Role == config.RoleDispatcher {
			out = append(out, h)
		}
	}
	return out
}

// perHost runs check against each dispatcher in parallel; with more than
// one, each metric's KPI names its host so overrides stay unambiguous.
func perHost(ctx context.Context, stage *config.Environment, baseURL string, check func(ctx context.Context, url string) ([]Metric, error)) ([]Metric, error) {
	hosts := dispatchers(stage)
	if baseURL != "" {
		return check(ctx, baseURL)
	}
	if len(hosts) == 0 {
		return nil, fmt.Errorf("environment %s has no dispatcher to test", stage.Name)
	}
	results := make([][]Metric, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = check(ctx, h.URL)
		}()
	}
	wg.Wait()
	var out []Metric
	for i, h := range hosts {
		if errs[i] != nil {
			return nil, fmt.Errorf("%s: %w", h.ID, errs[i])
		}
		for _, m := range results[i] {
			if len(hosts) > 1 {
				m.KPI += "@" + h.ID
				m.ID += "@" + h.ID
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// Security implements Gates.
func (BuiltinGates) Security(ctx context.Context, pl *config.Pipeline, stage *config.Environment) ([]Metric, error) {
	return perHost(ctx, stage, pl.Security.BaseURL, func(ctx context.Context, url string) ([]Metric, error) {
		return gates.SecurityProbe(ctx, pl.Security.Target(url))
	})
}

// Performance implements Gates.
func (BuiltinGates) Performance(ctx context.Context, pl *config.Pipeline, stage *config.Environment) ([]Metric, error) {
	return perHost(ctx, stage, pl.Performance.BaseURL, func(ctx context.Context, url string) ([]Metric, error) {
		_, ms, err := gates.LoadTest(ctx, pl.Performance.Load(url))
		return ms, err
	})
}
