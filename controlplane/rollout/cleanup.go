package rollout

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

// Task kind names, as map keys and in comparisons.
var (
	kindDetach  = task.LBDetach{}.Name()
	kindAttach  = task.LBAttach{}.Name()
	kindInstall = task.PackageInstall{}.Name()
	kindDeploy  = task.DispatcherDeploy{}.Name()
	kindRestore = task.DispatcherRestore{}.Name()
	kindPrepare = task.DispatcherPrepare{}.Name()
	kindFlush   = task.CacheFlush{}.Name()
)

// stepsOf finds the plan's steps for one dispatcher by kind.
func (r *run) stepsOf(host string) map[string]Step {
	out := map[string]Step{}
	for _, s := range r.plan.Steps {
		if s.Host == host {
			out[s.Kind()] = s
		}
	}
	return out
}

func started(st StepState) bool {
	return st.Status == StepRunning || st.Status == StepSucceeded || st.Status == StepFailed
}

// decideCleanup runs when the plan stopped early (a failure or a cancel):
// for each dispatcher this deployment detached and did not re-attach, it
// decides to flush and re-attach it, to re-attach it (the attach itself
// checks the host is back in service: health URL, then the load balancer),
// or to leave it out of the load balancer because its publish failed. The
// decision is persisted before any of it runs.
func (r *run) decideCleanup() error {
	var flushes, attaches []CleanupStep
	var notes []string
	for _, pr := range r.pairs() {
		ds := r.stepsOf(pr.dispatcher)
		det, ok := ds[kindDetach]
		if !ok || !started(r.state(det.Key)) {
			continue // never detached by us (or no load balancer changes)
		}
		if att, ok := ds[kindAttach]; ok && r.state(att.Key).Status == StepSucceeded {
			continue
		}
		if inst, ok := r.stepsOf(pr.publish)[kindInstall]; ok && r.state(inst.Key).Status == StepFailed && r.d.Request.Env.KeepPublishDetached() {
			notes = append(notes, fmt.Sprintf("%s (pair %d) stays out of the load balancer: %s failed to install packages (keep_failed_publish_detached)", pr.dispatcher, pr.n, pr.publish))
			continue
		}
		deployed := false
		for _, kind := range []string{kindDeploy, kindRestore} {
			if s, ok := ds[kind]; ok && r.state(s.Key).Status == StepSucceeded {
				deployed = true
			}
		}
		if fl, ok := ds[kindFlush]; ok && deployed && r.state(fl.Key).Status != StepSucceeded {
			flushes = append(flushes, CleanupStep{Key: "cleanup.flush." + pr.dispatcher, Host: pr.dispatcher, Pair: pr.n, Kind: kindFlush})
		}
		attaches = append(attaches, CleanupStep{Key: "cleanup.attach." + pr.dispatcher, Host: pr.dispatcher, Pair: pr.n, Kind: kindAttach})
	}
	r.mu.Lock()
	r.d.Cleanup = append(flushes, attaches...)
	steps := make([]StepState, 0, len(r.d.Cleanup))
	for _, c := range r.d.Cleanup {
		g := r.plan.Groups
		if c.Kind == kindAttach {
			g++
		}
		steps = append(steps, StepState{Key: c.Key, Host: c.Host, Kind: c.Kind, Pair: c.Pair, Group: g, Status: StepPending})
	}
	msg := "stopping: no further pairs"
	if len(r.d.Cleanup) > 0 {
		var what []string
		for _, c := range r.d.Cleanup {
			what = append(what, strings.TrimPrefix(c.Kind, "lb_")+" "+c.Host)
		}
		msg += "; then " + strings.Join(what, ", ")
	}
	if len(notes) > 0 {
		msg += "; " + strings.Join(notes, "; ")
	}
	ev := Event{Kind: EventNote, Message: msg}
	err := r.m.rec.b.Update(func(tx kv.Tx) error {
		for _, s := range steps {
			s.V = 1
			if err := put(tx, bucketSteps, stepKey(r.d.ID, s.Key), s); err != nil {
				return err
			}
		}
		return r.m.rec.appendEvent(tx, r.d, ev)
	})
	if err == nil {
		for _, s := range steps {
			r.states[s.Key] = s
		}
		ev.Seq = r.d.EventSeq
	}
	r.mu.Unlock()
	if err == nil {
		r.m.publish(r.d.ID, []Event{ev})
	}
	return err
}

// runCleanup runs the persisted cleanup: flushes, then attaches.
func (r *run) runCleanup(ctx context.Context) error {
	r.mu.Lock()
	cleanup := append([]CleanupStep(nil), r.d.Cleanup...)
	env := r.d.Request.Env
	r.mu.Unlock()
	for _, kind := range []string{kindFlush, kindAttach} {
		var batch []Step
		for _, c := range cleanup {
			if c.Kind != kind {
				continue
			}
			var k task.Kind = task.LBAttach{}
			if kind == kindFlush {
				k = task.CacheFlush{InvalidatePaths: env.InvalidatePaths, FlushPaths: env.FlushPaths}
			}
			batch = append(batch, Step{Key: c.Key, Host: c.Host, Pair: c.Pair, Task: k})
		}
		if err := r.runGroup(ctx, batch); errors.Is(err, errShutdown) {
			return err
		}
	}
	return nil
}

func (r *run) pairs() []pair {
	m := map[int]*pair{}
	for _, h := range r.d.Request.Env.Hosts {
		if h.Pair == 0 {
			continue
		}
		p := m[h.Pair]
		if p == nil {
			p = &pair{n: h.Pair}
			m[h.Pair] = p
		}
		if h.Role == "publish" {
			p.publish = h.ID
		} else {
			p.dispatcher = h.ID
		}
	}
	out := make([]pair, 0, len(m))
	for _, p := range m {
		out = append(out, *p)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].n < out[b].n })
	return out
}

// finish records the end state and every host's state.
func (r *run) finish() {
	r.mu.Lock()
	d := r.d
	cancelled := d.State == StateCancelling
	var firstErr string
	allOK := len(d.Cleanup) == 0
	for _, s := range r.plan.Steps {
		st := r.states[s.Key]
		if st.Status != StepSucceeded && st.Status != StepSkipped {
			allOK = false
		}
		if st.Status == StepFailed && firstErr == "" {
			firstErr = fmt.Sprintf("%s on %s failed: %s", s.Key, s.Host, st.Error)
		}
	}
	switch {
	case cancelled:
		d.State = StateCancelled
		d.Error = "cancelled"
	case allOK:
		d.State = StateSucceeded
	default:
		d.State = StateFailed
		d.Error = firstErr
		if d.Error == "" {
			d.Error = "stopped before the end of the plan"
		}
	}
	d.FinishedAt = r.m.now().UTC()
	d.Hosts = r.hostStates()
	ev := Event{Kind: EventDeploymentFinished, State: d.State, Message: d.Error}
	err := r.m.rec.saveDeployment(d, &ev)
	ev.Seq = d.EventSeq
	r.mu.Unlock()
	if err != nil {
		r.log.Error("cannot persist the end of the deployment", "error", err)
		return
	}
	r.m.publish(d.ID, []Event{ev})
	r.m.Metrics.Deployment(string(d.State))
	r.log.Info("deployment ended", "state", d.State, "error", d.Error)
	r.m.mu.Lock()
	if ch := r.m.notify[d.ID]; ch != nil {
		close(ch)
		delete(r.m.notify, d.ID)
	}
	r.m.mu.Unlock()
}

// hostStates describes each host after the deployment; mu must be held.
func (r *run) hostStates() map[string]string {
	out := map[string]string{}
	lbState := map[string]string{}
	for _, h := range r.d.Request.Env.Hosts {
		var parts []string
		detachedByUs, attached, attachFailed, rejected := false, false, "", false
		keys := r.keysOf(h.ID)
		for _, key := range keys {
			st := r.states[key]
			switch st.Kind {
			case kindDetach:
				if started(st) {
					detachedByUs = true
				}
			case kindAttach:
				if st.Status == StepSucceeded {
					attached = true
				} else if st.Status == StepFailed {
					attachFailed = st.Error
				}
			case kindPrepare:
				// Prepare leaves the live config alone; only its failure
				// is worth a word.
				if st.Status == StepFailed {
					rejected = true
				}
			default:
				verb := map[string]string{kindDeploy: "deploy", kindRestore: "restore", kindInstall: "install", kindFlush: "flush"}[st.Kind]
				switch st.Status {
				case StepSucceeded:
					parts = append(parts, verb+" ok")
				case StepFailed:
					p := verb + " failed"
					if strings.Contains(st.Summary, "old config restored") {
						p += " (old config restored)"
					}
					parts = append(parts, p)
				case StepRunning:
					parts = append(parts, verb+" interrupted")
				}
			}
		}
		switch {
		case !detachedByUs:
		case attached:
			lbState[h.ID] = "in service"
		case attachFailed != "":
			lbState[h.ID] = "left detached: re-attach failed: " + attachFailed
		default:
			lbState[h.ID] = "left detached"
		}
		if l, ok := lbState[h.ID]; ok {
			parts = append(parts, l)
		}
		touched := false
		for _, key := range keys {
			if st := r.states[key]; started(st) && st.Kind != kindPrepare {
				touched = true
			}
		}
		if !touched {
			parts = []string{"untouched"}
			if rejected {
				parts = []string{"untouched (artifact rejected in prepare)"}
			}
		}
		out[h.ID] = strings.Join(parts, "; ")
	}
	return out
}

// keysOf lists the step keys (plan, then cleanup) of a host; mu held.
func (r *run) keysOf(host string) []string {
	var out []string
	for _, s := range r.plan.Steps {
		if s.Host == host {
			out = append(out, s.Key)
		}
	}
	for _, c := range r.d.Cleanup {
		if c.Host == host {
			out = append(out, c.Key)
		}
	}
	return out
}
