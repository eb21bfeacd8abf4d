// Package rollout plans and runs deployments of an artifact set to an
// environment, the seed's "Deployment Process": non-production all at once
// (detach every dispatcher, deploy everywhere in parallel, flush, attach),
// production pair by pair (author first; then detach a dispatcher, deploy
// its publish and itself in parallel, flush, attach, wait until it is back
// in service, next pair). The planner is a pure function; the runner walks
// a plan through the fleet, persisting every step before and after, so a
// control-plane crash resumes where it stopped without running a finished
// step again.
package rollout

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// Action is what a deployment does to the dispatchers.
type Action string

const (
	// ActionDeploy installs AEM packages and deploys a dispatcher config.
	ActionDeploy Action = "deploy"
	// ActionRollback restores each dispatcher's config backup (the same
	// rolling plan with DispatcherRestore instead of DispatcherDeploy).
	ActionRollback Action = "rollback"
)

// Artifacts is what a deployment ships.
type Artifacts struct {
	// Dispatcher is the dispatcher configuration; nil when the set has none.
	Dispatcher *task.Artifact `json:"dispatcher,omitempty"`
	// Packages are the AEM content packages in dependency order.
	Packages []task.Artifact `json:"packages,omitempty"`
}

// Request is everything the planner needs. It is stored with the
// deployment so a resumed runner re-derives exactly the same plan.
type Request struct {
	Env       config.Environment `json:"env"`
	Action    Action             `json:"action"`
	SetID     string             `json:"set_id,omitempty"`
	Artifacts Artifacts          `json:"artifacts"`
	// BackupID names the backup to restore on rollback ("" = the one
	// before the most recent deployment).
	BackupID string `json:"backup_id,omitempty"`
	// PlanVersion is the planner revision the deployment was started
	// with, so a deployment resumed by a newer server keeps its plan: 0
	// (stored before versions existed) and 1 plan no prepare steps, 2
	// (CurrentPlanVersion) prepares the dispatcher artifact on every
	// dispatcher before the first host is touched. Manager.Start stamps
	// new requests.
	PlanVersion int `json:"plan_version,omitempty"`
}

// CurrentPlanVersion is the PlanVersion of new deployments.
const CurrentPlanVersion = 2

// Step is one task on one host.
type Step struct {
	// N is the 1-based position in the plan.
	N int
	// Group orders steps: all steps of a group run in parallel, groups run
	// one after the other.
	Group int
	// Key is unique within the deployment, e.g. "pair1.deploy.dispatcher1";
	// with the deployment id and host it derives the task id.
	Key  string
	Host string
	Role config.Role
	// Pair is the publish/dispatcher pair (0 for authors).
	Pair int
	// Batch is the production batch of pairs the step belongs to (-1 for
	// the author step and non-production plans).
	Batch int
	Task  task.Kind
}

// Kind is the task kind's name.
func (s Step) Kind() string { return s.Task.Name() }

// Plan is an ordered set of step groups.
type Plan struct {
	Env            string
	EnvType        config.EnvType
	Production     bool
	Action         Action
	MaxUnavailable int
	Steps          []Step
	Groups         int
}

// Group returns the steps of group g.
func (p *Plan) Group(g int) []Step {
	var out []Step
	for _, s := range p.Steps {
		if s.Group == g {
			out = append(out, s)
		}
	}
	return out
}

// Step finds a step by key.
func (p *Plan) Step(key string) (Step, bool) {
	for _, s := range p.Steps {
		if s.Key == key {
			return s, true
		}
	}
	return Step{}, false
}

type pair struct {
	n                   int
	publish, dispatcher string
}

// NewPlan builds the plan for req. It is pure: same request, same plan.
func NewPlan(req Request) (*Plan, error) {
	env := req.Env
	p := &Plan{Env: env.Name, EnvType: env.Type, Production: env.Type == config.EnvProd, Action: req.Action, MaxUnavailable: max(env.MaxUnavailable, 1)}
	var authors []string
	pairsByN := map[int]*pair{}
	for _, h := range env.Hosts {
		switch h.Role {
		case config.RoleAuthor:
			authors = append(authors, h.ID)
		case config.RolePublish, config.RoleDispatcher:
			pr := pairsByN[h.Pair]
			if pr == nil {
				pr = &pair{n: h.Pair}
				pairsByN[h.Pair] = pr
			}
			if h.Role == config.RolePublish {
				pr.publish = h.ID
			} else {
				pr.dispatcher = h.ID
			}
		}
	}
	pairs := make([]*pair, 0, len(pairsByN))
	for _, pr := range pairsByN {
		pairs = append(pairs, pr)
	}
	sort.Slice(pairs, func(a, b int) bool { return pairs[a].n < pairs[b].n })

	var pkgs *task.PackageInstall
	var dispatcherTask task.Kind
	switch req.Action {
	case ActionDeploy:
		if req.Artifacts.Dispatcher == nil && len(req.Artifacts.Packages) == 0 {
			return nil, errors.New("the artifact set is empty: nothing to deploy")
		}
		if len(req.Artifacts.Packages) > 0 {
			pkgs = &task.PackageInstall{Packages: req.Artifacts.Packages}
		}
		if req.Artifacts.Dispatcher != nil {
			dispatcherTask = task.DispatcherDeploy{Artifact: *req.Artifacts.Dispatcher}
		}
	case ActionRollback:
		if len(pairs) == 0 {
			return nil, fmt.Errorf("environment %q has no dispatchers to roll back", env.Name)
		}
		dispatcherTask = task.DispatcherRestore{BackupID: req.BackupID}
	default:
		return nil, fmt.Errorf("unknown action %q", req.Action)
	}
	var flush task.Kind
	if len(env.InvalidatePaths)+len(env.FlushPaths) > 0 {
		flush = task.CacheFlush{InvalidatePaths: env.InvalidatePaths, FlushPaths: env.FlushPaths}
	}
	lbChanges := !env.SkipLBChanges

	group := -1
	add := func(key, host string, role config.Role, pairN, batch int, k task.Kind) {
		p.Steps = append(p.Steps, Step{N: len(p.Steps) + 1, Group: group, Key: key, Host: host, Role: role, Pair: pairN, Batch: batch, Task: k})
	}
	next := func() { group++ }

	// Before anything changes: fetch, extract and validate the dispatcher
	// artifact on every dispatcher at once, while they all still serve. A
	// broken artifact fails here with every host untouched, and each
	// dispatcher's detach window later holds only the swap, configtest
	// and reload.
	if d, ok := dispatcherTask.(task.DispatcherDeploy); ok && req.PlanVersion >= 2 && len(pairs) > 0 {
		next()
		for _, pr := range pairs {
			add("prepare."+pr.dispatcher, pr.dispatcher, config.RoleDispatcher, pr.n, -1, task.DispatcherPrepare(d))
		}
	}
	if !p.Production {
		// Non-production: as fast as possible, everything at once.
		if lbChanges && len(pairs) > 0 {
			next()
			for _, pr := range pairs {
				add("detach."+pr.dispatcher, pr.dispatcher, config.RoleDispatcher, pr.n, -1, task.LBDetach{})
			}
		}
		next()
		if pkgs != nil {
			for _, a := range authors {
				add("install."+a, a, config.RoleAuthor, 0, -1, *pkgs)
			}
			for _, pr := range pairs {
				add("install."+pr.publish, pr.publish, config.RolePublish, pr.n, -1, *pkgs)
			}
		}
		if dispatcherTask != nil {
			for _, pr := range pairs {
				add(string(req.Action)+"."+pr.dispatcher, pr.dispatcher, config.RoleDispatcher, pr.n, -1, dispatcherTask)
			}
		}
		if flush != nil && len(pairs) > 0 {
			next()
			for _, pr := range pairs {
				add("flush."+pr.dispatcher, pr.dispatcher, config.RoleDispatcher, pr.n, -1, flush)
			}
		}
		if lbChanges && len(pairs) > 0 {
			next()
			for _, pr := range pairs {
				add("attach."+pr.dispatcher, pr.dispatcher, config.RoleDispatcher, pr.n, -1, task.LBAttach{})
			}
		}
	} else {
		// Production: author first, then rolling batches of pairs.
		if pkgs != nil && len(authors) > 0 {
			next()
			for _, a := range authors {
				add("author.install."+a, a, config.RoleAuthor, 0, -1, *pkgs)
			}
		}
		k := p.MaxUnavailable
		for b := 0; b*k < len(pairs); b++ {
			batch := pairs[b*k : min((b+1)*k, len(pairs))]
			pre := func(pr *pair, what, host string) string { return fmt.Sprintf("pair%d.%s.%s", pr.n, what, host) }
			next()
			for _, pr := range batch {
				add(pre(pr, "detach", pr.dispatcher), pr.dispatcher, config.RoleDispatcher, pr.n, b, task.LBDetach{})
			}
			next()
			for _, pr := range batch {
				if pkgs != nil {
					add(pre(pr, "install", pr.publish), pr.publish, config.RolePublish, pr.n, b, *pkgs)
				}
				if dispatcherTask != nil {
					add(pre(pr, string(req.Action), pr.dispatcher), pr.dispatcher, config.RoleDispatcher, pr.n, b, dispatcherTask)
				}
			}
			if flush != nil {
				next()
				for _, pr := range batch {
					add(pre(pr, "flush", pr.dispatcher), pr.dispatcher, config.RoleDispatcher, pr.n, b, flush)
				}
			}
			next()
			for _, pr := range batch {
				add(pre(pr, "attach", pr.dispatcher), pr.dispatcher, config.RoleDispatcher, pr.n, b, task.LBAttach{})
			}
		}
	}
	// Drop empty groups (e.g. nothing to install) and renumber.
	used := map[int]int{}
	for i := range p.Steps {
		g, ok := used[p.Steps[i].Group]
		if !ok {
			g = len(used)
			used[p.Steps[i].Group] = g
		}
		p.Steps[i].Group = g
	}
	p.Groups = len(used)
	if len(p.Steps) == 0 {
		return nil, fmt.Errorf("environment %q has no host that this artifact set applies to", env.Name)
	}
	return p, nil
}

// Describe is a one-line summary of what a step does.
func Describe(s Step) string {
	switch k := s.Task.(type) {
	case task.LBDetach:
		return "detach from the load balancer (drain)"
	case task.LBAttach:
		return "attach to the load balancer, wait until in service"
	case task.PackageInstall:
		return fmt.Sprintf("install %d AEM package(s) in dependency order", len(k.Packages))
	case task.DispatcherDeploy:
		name := k.Artifact.Name
		if name == "" {
			name = k.Artifact.SHA256[:12]
		}
		return "deploy dispatcher config " + name
	case task.DispatcherPrepare:
		name := k.Artifact.Name
		if name == "" {
			name = k.Artifact.SHA256[:12]
		}
		return "prepare dispatcher config " + name + " (fetch, extract, validate; live config untouched)"
	case task.DispatcherRestore:
		if k.BackupID == "" {
			return "restore the config backup from before the last deployment"
		}
		return "restore config backup " + k.BackupID
	case task.CacheFlush:
		return fmt.Sprintf("flush cache: %d invalidate, %d flush path(s)", len(k.InvalidatePaths), len(k.FlushPaths))
	}
	return s.Kind()
}

// Format writes the plan as numbered steps with their parallel groups.
func (p *Plan) Format(w io.Writer) error {
	mode := "non-production: all hosts at once"
	if p.Production {
		mode = fmt.Sprintf("production: author first, then %d pair(s) at a time", p.MaxUnavailable)
	}
	fmt.Fprintf(w, "Plan: %s to %s (%s), %s; %d steps in %d groups\n", p.Action, p.Env, p.EnvType, mode, len(p.Steps), p.Groups)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tGROUP\tHOST\tROLE\tPAIR\tACTION")
	for _, s := range p.Steps {
		pairS := "-"
		if s.Pair > 0 {
			pairS = fmt.Sprint(s.Pair)
		}
		par := ""
		if n := len(p.Group(s.Group)); n > 1 {
			par = fmt.Sprintf(" (parallel x%d)", n)
		}
		fmt.Fprintf(tw, "%d\t%d%s\t%s\t%s\t%s\t%s\n", s.N, s.Group+1, par, s.Host, s.Role, pairS, Describe(s))
	}
	return tw.Flush()
}

// String is Format into a string.
func (p *Plan) String() string {
	var b strings.Builder
	p.Format(&b)
	return b.String()
}
