package rollout

import (
	"fmt"
	"strings"
	"testing"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

func env(typ config.EnvType, pairs int, opts ...func(*config.Environment)) config.Environment {
	e := config.Environment{Name: string(typ) + "-env", Type: typ, MaxUnavailable: 1}
	e.Hosts = append(e.Hosts, config.Host{ID: "author1", Role: config.RoleAuthor})
	for i := 1; i <= pairs; i++ {
		e.Hosts = append(e.Hosts,
			config.Host{ID: fmt.Sprintf("publish%d", i), Role: config.RolePublish, Pair: i},
			config.Host{ID: fmt.Sprintf("dispatcher%d", i), Role: config.RoleDispatcher, Pair: i})
	}
	for _, o := range opts {
		o(&e)
	}
	return e
}

var (
	disp = &task.Artifact{SHA256: strings.Repeat("d", 64), Name: "dispatcher.zip"}
	pkgs = []task.Artifact{{SHA256: strings.Repeat("1", 64)}, {SHA256: strings.Repeat("2", 64)}}
	both = Artifacts{Dispatcher: disp, Packages: pkgs}
)

func withFlush(e *config.Environment) { e.InvalidatePaths = []string{"/content/site"} }
func skipLB(e *config.Environment)    { e.SkipLBChanges = true }
func maxUnavailable(n int) func(*config.Environment) {
	return func(e *config.Environment) { e.MaxUnavailable = n }
}

// shape renders a plan as one line per group: "kind:host kind:host".
func shape(p *Plan) []string {
	out := make([]string, p.Groups)
	for _, s := range p.Steps {
		k := strings.TrimPrefix(strings.TrimPrefix(s.Kind(), "lb_"), "dispatcher_")
		k = strings.TrimPrefix(k, "package_")
		k = strings.TrimPrefix(k, "cache_")
		if out[s.Group] != "" {
			out[s.Group] += " "
		}
		out[s.Group] += k + ":" + s.Host
	}
	return out
}

func TestPlans(t *testing.T) {
	cases := []struct {
		name string
		req  Request
		want []string
	}{
		{"production rolls pair by pair, author first", Request{Env: env(config.EnvProd, 2, withFlush), Action: ActionDeploy, Artifacts: both}, []string{
			"install:author1",
			"detach:dispatcher1", "install:publish1 deploy:dispatcher1", "flush:dispatcher1", "attach:dispatcher1",
			"detach:dispatcher2", "install:publish2 deploy:dispatcher2", "flush:dispatcher2", "attach:dispatcher2",
		}},
		{"production prepares the dispatcher artifact everywhere first (plan version 2)", Request{Env: env(config.EnvProd, 2, withFlush), Action: ActionDeploy, Artifacts: both, PlanVersion: CurrentPlanVersion}, []string{
			"prepare:dispatcher1 prepare:dispatcher2",
			"install:author1",
			"detach:dispatcher1", "install:publish1 deploy:dispatcher1", "flush:dispatcher1", "attach:dispatcher1",
			"detach:dispatcher2", "install:publish2 deploy:dispatcher2", "flush:dispatcher2", "attach:dispatcher2",
		}},
		{"non-production prepares before detaching (plan version 2)", Request{Env: env(config.EnvStage, 2), Action: ActionDeploy, Artifacts: both, PlanVersion: CurrentPlanVersion}, []string{
			"prepare:dispatcher1 prepare:dispatcher2",
			"detach:dispatcher1 detach:dispatcher2",
			"install:author1 install:publish1 install:publish2 deploy:dispatcher1 deploy:dispatcher2",
			"attach:dispatcher1 attach:dispatcher2",
		}},
		{"nothing to prepare without a dispatcher artifact", Request{Env: env(config.EnvProd, 1), Action: ActionDeploy, Artifacts: Artifacts{Packages: pkgs}, PlanVersion: CurrentPlanVersion}, []string{
			"install:author1", "detach:dispatcher1", "install:publish1", "attach:dispatcher1",
		}},
		{"nothing to prepare for a rollback", Request{Env: env(config.EnvProd, 1), Action: ActionRollback, PlanVersion: CurrentPlanVersion}, []string{
			"detach:dispatcher1", "restore:dispatcher1", "attach:dispatcher1",
		}},
		{"production, two pairs at a time", Request{Env: env(config.EnvProd, 3, maxUnavailable(2)), Action: ActionDeploy, Artifacts: both}, []string{
			"install:author1",
			"detach:dispatcher1 detach:dispatcher2", "install:publish1 deploy:dispatcher1 install:publish2 deploy:dispatcher2", "attach:dispatcher1 attach:dispatcher2",
			"detach:dispatcher3", "install:publish3 deploy:dispatcher3", "attach:dispatcher3",
		}},
		{"production, dispatcher config only", Request{Env: env(config.EnvProd, 2), Action: ActionDeploy, Artifacts: Artifacts{Dispatcher: disp}}, []string{
			"detach:dispatcher1", "deploy:dispatcher1", "attach:dispatcher1",
			"detach:dispatcher2", "deploy:dispatcher2", "attach:dispatcher2",
		}},
		{"production, packages only still detaches each pair", Request{Env: env(config.EnvProd, 1), Action: ActionDeploy, Artifacts: Artifacts{Packages: pkgs}}, []string{
			"install:author1", "detach:dispatcher1", "install:publish1", "attach:dispatcher1",
		}},
		{"non-production at once", Request{Env: env(config.EnvStage, 2, withFlush), Action: ActionDeploy, Artifacts: both}, []string{
			"detach:dispatcher1 detach:dispatcher2",
			"install:author1 install:publish1 install:publish2 deploy:dispatcher1 deploy:dispatcher2",
			"flush:dispatcher1 flush:dispatcher2",
			"attach:dispatcher1 attach:dispatcher2",
		}},
		{"non-production skipping load balancer changes", Request{Env: env(config.EnvDev, 1, skipLB), Action: ActionDeploy, Artifacts: both}, []string{
			"install:author1 install:publish1 deploy:dispatcher1",
		}},
		{"production rollback", Request{Env: env(config.EnvProd, 2, withFlush), Action: ActionRollback, BackupID: "b1"}, []string{
			"detach:dispatcher1", "restore:dispatcher1", "flush:dispatcher1", "attach:dispatcher1",
			"detach:dispatcher2", "restore:dispatcher2", "flush:dispatcher2", "attach:dispatcher2",
		}},
		{"non-production rollback", Request{Env: env(config.EnvStage, 2), Action: ActionRollback}, []string{
			"detach:dispatcher1 detach:dispatcher2", "restore:dispatcher1 restore:dispatcher2", "attach:dispatcher1 attach:dispatcher2",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPlan(tc.req)
			require.NoError(t, err)
			require.Equal(t, tc.want, shape(p))
			// Numbering is dense and keys are unique.
			keys := map[string]bool{}
			for i, s := range p.Steps {
				require.Equal(t, i+1, s.N)
				require.False(t, keys[s.Key], "duplicate key %s", s.Key)
				keys[s.Key] = true
			}
			// Pure: the same request yields the same plan.
			again, err := NewPlan(tc.req)
			require.NoError(t, err)
			require.Equal(t, p, again)
		})
	}
}

func TestPlanKeysAreStableAndTaskIDsValid(t *testing.T) {
	p, err := NewPlan(Request{Env: env(config.EnvProd, 1, withFlush), Action: ActionDeploy, Artifacts: both})
	require.NoError(t, err)
	var keys []string
	for _, s := range p.Steps {
		keys = append(keys, s.Key)
		_, err := task.ID("d1", s.Key, s.Host)
		require.NoError(t, err)
	}
	require.Equal(t, []string{"author.install.author1", "pair1.detach.dispatcher1", "pair1.install.publish1", "pair1.deploy.dispatcher1", "pair1.flush.dispatcher1", "pair1.attach.dispatcher1"}, keys)
}

func TestPlanErrors(t *testing.T) {
	_, err := NewPlan(Request{Env: env(config.EnvProd, 1), Action: ActionDeploy})
	require.ErrorContains(t, err, "the artifact set is empty")
	authorOnly := config.Environment{Name: "a", Type: config.EnvDev, Hosts: []config.Host{{ID: "author1", Role: config.RoleAuthor}}}
	_, err = NewPlan(Request{Env: authorOnly, Action: ActionDeploy, Artifacts: Artifacts{Dispatcher: disp}})
	require.ErrorContains(t, err, "has no host that this artifact set applies to")
	_, err = NewPlan(Request{Env: authorOnly, Action: ActionRollback})
	require.ErrorContains(t, err, "has no dispatchers to roll back")
	_, err = NewPlan(Request{Env: authorOnly, Action: "explode"})
	require.ErrorContains(t, err, `unknown action "explode"`)
}

func TestFormat(t *testing.T) {
	p, err := NewPlan(Request{Env: env(config.EnvProd, 1), Action: ActionDeploy, Artifacts: both})
	require.NoError(t, err)
	out := p.String()
	require.Contains(t, out, "Plan: deploy to prod-env (prod), production: author first, then 1 pair(s) at a time; 5 steps in 4 groups")
	require.Regexp(t, `3\s+3 \(parallel x2\)\s+publish1\s+publish\s+1\s+install 2 AEM package\(s\) in dependency order`, out)
	require.Regexp(t, `4\s+3 \(parallel x2\)\s+dispatcher1\s+dispatcher\s+1\s+deploy dispatcher config dispatcher.zip`, out)
}
