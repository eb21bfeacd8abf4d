package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/gates"
	"github.com/deckhand-dev/deckhand/controlplane/rollout"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/hashicorp/go-hclog"
)

// run drives one execution. Its goroutine owns the step sequence; Advance
// and Cancel change the record under mu and wake it through signal.
type run struct {
	m                     *Manager
	id, program, pipeline string
	log                   hclog.Logger
	signal                chan struct{}

	mu sync.Mutex
	e  *Execution // mu
	// cancelBy is set when someone cancelled a running step; mu.
	cancelBy string
}

func (r *run) wake() {
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// save persists the execution and announces a step's status.
func (r *run) save(s *Step, msg string) error {
	r.e.UpdatedAt = r.m.d.Clock.Now().UTC()
	if err := r.m.rec.save(r.e); err != nil {
		r.log.Error("cannot persist the execution", "error", err)
		return err
	}
	ev := Event{At: r.e.UpdatedAt, ExecutionID: r.id, ProgramID: r.program, PipelineID: r.pipeline, Status: r.e.Status, Message: msg,
		Execution: r.m.copyOf(r.e)}
	if s != nil {
		ev.StepID, ev.Action, ev.Status = s.ID, s.Action, s.Status
	}
	r.m.publish(ev)
	return nil
}

// logf appends a line to a step's log.
func (r *run) logf(s *Step, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	stamp := r.m.d.Clock.Now().UTC().Format("2006-01-02 15:04:05")
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(line, "\n"), "\n") {
		lines = append(lines, stamp+" "+l)
	}
	if err := r.m.rec.appendLog(r.id, s.ID, lines...); err != nil {
		r.log.Error("cannot write a step log", "step", s.Action, "error", err)
	}
}

func (r *run) pipelineConfig() (*config.Pipeline, error) {
	_, pl, ok := r.m.d.Config.Pipeline(r.program, r.pipeline)
	if !ok {
		return nil, fmt.Errorf("pipeline %s/%s is no longer in the server config", r.program, r.pipeline)
	}
	return pl, nil
}

// outcome is how a step's work ended.
type outcome int

const (
	done    outcome = iota // FINISHED, go on
	failed                 // FAILED: the execution fails
	waiting                // WAITING for a person
	stopped                // the control plane is shutting down
)

func (r *run) loop(ctx context.Context) {
	for {
		r.mu.Lock()
		if r.e.Done() {
			r.mu.Unlock()
			return
		}
		s := r.e.Current()
		if s == nil {
			r.e.Status, r.e.FinishedAt = ExecFinished, r.m.d.Clock.Now().UTC()
			r.m.d.Metrics.Execution(ExecFinished)
			r.save(nil, "finished")
			r.mu.Unlock()
			return
		}
		if r.e.Status == ExecCancelling && s.Status != StepRunning {
			// The step that was running when the cancel came has ended;
			// the next one never starts.
			r.endLocked(ExecCancelled, nil, "", "cancelled by "+r.cancelBy)
			r.mu.Unlock()
			return
		}
		stepID := s.ID
		if s.Status == StepNotStarted {
			s.Status, s.StartedAt = StepRunning, r.m.d.Clock.Now().UTC()
			r.save(s, "")
		}
		r.mu.Unlock()

		var out outcome
		var err error
		if s.Status == StepWaiting || (s.Action == ActionSchedule && !s.ScheduledAt.IsZero()) {
			out, err = r.wait(ctx, stepID)
		} else {
			out, err = r.work(ctx, stepID)
		}
		if out == stopped || ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		s = r.e.Step(stepID)
		switch out {
		case done:
			if s.Status == StepRunning || s.Status == StepWaiting {
				s.Status, s.FinishedAt = StepFinished, r.m.d.Clock.Now().UTC()
				r.m.d.Metrics.PipelineStep(s.Action, StepFinished, s.FinishedAt.Sub(s.StartedAt))
				r.save(s, "")
			}
		case failed:
			msg := "failed"
			if err != nil {
				msg = err.Error()
				r.logf(s, "FAILED: %s", msg)
			}
			r.endLocked(ExecFailed, s, StepFailed, fmt.Sprintf("%s step failed: %s", s.Action, msg))
		case waiting:
			if s.Status != StepWaiting {
				s.Status, s.WaitingSince = StepWaiting, r.m.d.Clock.Now().UTC()
				r.save(s, "waiting")
			}
		}
		r.mu.Unlock()
	}
}

// endLocked ends the execution with status, marking step s.
func (r *run) endLocked(status string, s *Step, stepStatus, reason string) {
	now := r.m.d.Clock.Now().UTC()
	if s != nil {
		s.Status = stepStatus
		if s.FinishedAt.IsZero() {
			s.FinishedAt = now
		}
		if s.Details == nil {
			s.Details = map[string]string{}
		}
		s.Details["reason"] = reason
	}
	r.e.Status, r.e.FinishedAt, r.e.Reason = status, now, reason
	if s != nil && !s.StartedAt.IsZero() {
		r.m.d.Metrics.PipelineStep(s.Action, stepStatus, s.FinishedAt.Sub(s.StartedAt))
	}
	r.m.d.Metrics.Execution(status)
	r.save(s, reason)
	r.log.Info("execution ended", "status", status, "reason", reason)
}

// wait parks a waiting (or scheduled) step until it is answered, its
// timeout passes or its scheduled time comes.
func (r *run) wait(ctx context.Context, stepID string) (outcome, error) {
	pl, err := r.pipelineConfig()
	if err != nil {
		return failed, err
	}
	for {
		r.mu.Lock()
		s := r.e.Step(stepID)
		if r.e.Done() {
			r.mu.Unlock()
			return stopped, nil
		}
		if s.Status == StepFinished {
			r.mu.Unlock()
			return done, nil
		}
		now := r.m.d.Clock.Now()
		var due time.Time
		switch {
		case s.Status == StepWaiting:
			due = s.WaitingSince.Add(pl.WaitingTimeout.D())
			if !now.Before(due) {
				r.logf(s, "timed out after %s waiting for %s", pl.WaitingTimeout.D(), s.Action)
				r.endLocked(ExecCancelled, s, StepCancelled, fmt.Sprintf("timed out: the %s step waited %s without an answer", s.Action, pl.WaitingTimeout.D()))
				r.mu.Unlock()
				return stopped, nil
			}
		case !s.ScheduledAt.IsZero():
			due = s.ScheduledAt
			if !now.Before(due) {
				r.logf(s, "scheduled time %s reached; starting the production deployment", s.ScheduledAt.UTC().Format(time.RFC3339))
				r.mu.Unlock()
				return done, nil
			}
		default:
			r.mu.Unlock()
			return done, nil
		}
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return stopped, nil
		case <-r.signal:
		case <-r.m.d.Clock.After(due.Sub(now)):
		}
	}
}

// advance answers a waiting step.
func (r *run) advance(stepID string, in AdvanceInput, by string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.e.Step(stepID)
	if s == nil {
		return ErrNotFound
	}
	if s.Status != StepWaiting {
		return fmt.Errorf("%w: step %s (%s) is %s", ErrNotWaiting, s.ID, s.Action, s.Status)
	}
	if s.Details == nil {
		s.Details = map[string]string{}
	}
	now := r.m.d.Clock.Now().UTC()
	switch s.Action {
	case ActionApproval:
		if in.Approved == nil {
			return fmt.Errorf("%w: an approval needs {\"approved\": true|false}", ErrBadInput)
		}
		if !*in.Approved {
			r.logf(s, "rejected by %s", by)
			r.endLocked(ExecCancelled, s, StepCancelled, "approval rejected by "+by)
			r.wake()
			return nil
		}
		s.Details["approvedBy"] = by
		r.logf(s, "approved by %s", by)
		s.Status, s.FinishedAt = StepFinished, now
	case ActionSchedule:
		switch {
		case in.Immediate:
			s.Details["scheduledBy"], s.Details["schedule"] = by, "IMMEDIATE"
			r.logf(s, "%s chose Now", by)
			s.Status, s.FinishedAt = StepFinished, now
		case !in.At.IsZero():
			if !in.At.After(now) {
				return fmt.Errorf("%w: the scheduled time %s is in the past", ErrBadInput, in.At.UTC().Format(time.RFC3339))
			}
			s.ScheduledAt = in.At.UTC()
			s.Details["scheduledBy"], s.Details["schedule"] = by, s.ScheduledAt.Format(time.RFC3339)
			s.Status = StepRunning
			r.logf(s, "%s scheduled the production deployment for %s", by, s.ScheduledAt.Format(time.RFC3339))
		default:
			return fmt.Errorf("%w: a schedule needs {\"type\":\"IMMEDIATE\"} or {\"type\":\"SCHEDULED\",\"schedule\":TIME}", ErrBadInput)
		}
	case ActionManaged:
		if !in.Start {
			return fmt.Errorf("%w: CSE support needs {\"start\": true}", ErrBadInput)
		}
		s.Details["startedBy"] = by
		r.logf(s, "CSE support given by %s", by)
		s.Status, s.FinishedAt = StepFinished, now
	case ActionCodeQuality, ActionSecurityTest, ActionLoadTest:
		ms, err := gates.Override(s.Metrics, in.Overrides)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadInput, err)
		}
		s.Metrics = ms
		s.Details["overriddenBy"] = by
		r.logf(s, "%s overrode: %s", by, strings.Join(in.Overrides, ", "))
		s.Status, s.FinishedAt = StepFinished, now
	default:
		return fmt.Errorf("%w: step %s cannot be advanced", ErrNotWaiting, s.Action)
	}
	r.save(s, "advanced by "+by)
	r.wake()
	return nil
}

// cancel rejects a waiting step or cancels a running deployment.
func (r *run) cancel(stepID, by string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.e.Step(stepID)
	if s == nil {
		return ErrNotFound
	}
	switch s.Status {
	case StepWaiting:
		r.logf(s, "rejected by %s", by)
		reason := s.Action + " rejected by " + by
		if s.Action == ActionApproval {
			reason = "approval rejected by " + by
		}
		r.endLocked(ExecCancelled, s, StepCancelled, reason)
		r.wake()
		return nil
	case StepRunning:
		r.cancelBy = by
		r.e.Status = ExecCancelling
		r.logf(s, "cancel requested by %s", by)
		if id := s.Details["deploymentId"]; id != "" {
			if err := r.m.d.Rollouts.Cancel(id, by); err != nil {
				r.log.Warn("cancel deployment", "deployment", id, "error", err)
			}
		}
		if s.Action == ActionSchedule {
			r.endLocked(ExecCancelled, s, StepCancelled, "schedule cancelled by "+by)
		} else {
			r.save(s, "cancelling")
		}
		r.wake()
		return nil
	}
	return fmt.Errorf("%w: step %s (%s) is %s", ErrNotWaiting, s.ID, s.Action, s.Status)
}

// verdict turns gate metrics into an outcome.
func verdict(ms []Metric) (outcome, error) {
	v := gates.Verdict(ms)
	if v.Failed() {
		var crit []string
		for _, m := range v.CriticalFailures {
			crit = append(crit, fmt.Sprintf("%s (%s, expected %s %s)", m.KPI, m.ActualValue, m.Comparator, m.ExpectedValue))
		}
		return failed, fmt.Errorf("critical gate failure: %s", strings.Join(crit, "; "))
	}
	if v.Waiting() {
		return waiting, nil
	}
	return done, nil
}

// work does a non-waiting step.
func (r *run) work(ctx context.Context, stepID string) (outcome, error) {
	pl, err := r.pipelineConfig()
	if err != nil {
		return failed, err
	}
	r.mu.Lock()
	s := *r.e.Step(stepID)
	r.mu.Unlock()
	switch s.Action {
	case ActionValidate:
		return r.validate(ctx, &s, pl)
	case ActionBuild:
		return r.build(ctx, &s, pl)
	case ActionCodeQuality:
		return r.codeQuality(ctx, &s, pl)
	case ActionDeploy:
		return r.deploy(ctx, &s, pl)
	case ActionSecurityTest, ActionLoadTest:
		return r.test(ctx, &s, pl)
	case ActionApproval, ActionManaged:
		r.mu.Lock()
		r.logf(&s, "waiting for %s (role %s); times out after %s", map[string]string{ActionApproval: "approval", ActionManaged: "CSE support"}[s.Action], RequiredRole(s.Action), pl.WaitingTimeout.D())
		r.mu.Unlock()
		return waiting, nil
	case ActionSchedule:
		r.mu.Lock()
		r.logf(&s, "waiting for a schedule (a date and time, or Now); times out after %s", pl.WaitingTimeout.D())
		r.mu.Unlock()
		return waiting, nil
	}
	return failed, fmt.Errorf("unknown action %q", s.Action)
}

// setDetail records a detail on a step and persists it.
func (r *run) setDetail(stepID string, kv ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.e.Step(stepID)
	if s.Details == nil {
		s.Details = map[string]string{}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Details[kv[i]] = kv[i+1]
	}
	r.save(s, "")
}

func (r *run) setMetrics(stepID string, ms []Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.e.Step(stepID).Metrics = ms
	r.save(r.e.Step(stepID), "")
}

func (r *run) lockedLog(s *Step, format string, args ...any) {
	r.logf(s, format, args...)
}

// validate checks the pipeline can run: the branch exists, every host of
// the stage and production environments has an agent online that answers
// HostFacts, the artifact set is consistent.
func (r *run) validate(ctx context.Context, s *Step, pl *config.Pipeline) (outcome, error) {
	var problems []string
	r.mu.Lock()
	manual, set := r.e.ManualArtifacts, r.e.ArtifactSet
	r.mu.Unlock()
	if !manual {
		r.lockedLog(s, "checking that branch %q exists in %s", pl.Branch, pl.Repository)
		if err := r.m.d.GitCheck(ctx, pl.Repository, pl.Branch); err != nil {
			problems = append(problems, err.Error())
		}
		if _, err := r.pickBuilder(pl); err != nil {
			problems = append(problems, err.Error())
		}
	} else {
		r.lockedLog(s, "artifacts were pushed by hand (set %s); the branch is not checked", set)
		arts, err := r.m.d.Artifacts.Resolve(set)
		if err != nil {
			problems = append(problems, fmt.Sprintf("artifact set %s: %v", set, err))
		} else if arts.Dispatcher == nil && len(arts.Packages) == 0 {
			problems = append(problems, fmt.Sprintf("artifact set %s is empty", set))
		}
	}
	var hosts []string
	for _, envName := range []string{pl.StageEnvironment, pl.ProductionEnvironment} {
		env, _ := r.m.d.Config.Environment(envName)
		for _, h := range env.Hosts {
			hosts = append(hosts, h.ID)
		}
	}
	type answer struct {
		host string
		err  error
		f    *task.Facts
	}
	answers := make(chan answer, len(hosts))
	for _, h := range hosts {
		go func() {
			if !r.m.d.Fleet.Online(h) {
				answers <- answer{host: h, err: errors.New("its agent is not online")}
				return
			}
			id, _ := task.ID("x"+r.id, "validate", h)
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res, err := r.m.d.Fleet.Run(fctx, task.Spec{ID: id, ExecutionID: "x" + r.id, Step: "validate", HostID: h, Timeout: 30 * time.Second, Kind: task.HostFacts{}})
			if err == nil {
				err = res.Err()
			}
			var f *task.Facts
			if res != nil {
				f, _ = res.Output.(*task.Facts)
			}
			answers <- answer{host: h, err: err, f: f}
		}()
	}
	if r.m.d.Drift != nil {
		for _, h := range hosts {
			notes, err := r.m.d.Drift(h)
			if err != nil || len(notes) == 0 {
				continue
			}
			var paths []string
			high := false
			for _, n := range notes {
				paths = append(paths, n.Kind+" "+n.Path)
				high = high || n.Severity == "high"
			}
			sev := ""
			if high {
				sev = " (HIGH: immutable files changed)"
			}
			r.lockedLog(s, "WARNING host %s: %d change(s) made by hand since its last deployment%s: %s; this deployment will replace them", h, len(notes), sev, strings.Join(paths, ", "))
		}
	}
	var lines []string
	for range hosts {
		a := <-answers
		if a.err != nil {
			problems = append(problems, fmt.Sprintf("host %s: %v", a.host, a.err))
			continue
		}
		l := fmt.Sprintf("host %s: online (%s", a.host, a.f.OS)
		if a.f.ApacheVersion != "" {
			l += ", " + a.f.ApacheVersion
		}
		lines = append(lines, l+")")
	}
	sort.Strings(lines)
	r.mu.Lock()
	for _, l := range lines {
		r.logf(s, "%s", l)
	}
	r.mu.Unlock()
	if ctx.Err() != nil {
		return stopped, nil
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return failed, fmt.Errorf("validation failed: %s", strings.Join(problems, "; "))
	}
	return done, nil
}

// pickBuilder chooses the configured builder, or any online one.
func (r *run) pickBuilder(pl *config.Pipeline) (string, error) {
	if pl.Build.Builder != "" {
		if !r.m.d.Fleet.Online(pl.Build.Builder) {
			return "", fmt.Errorf("builder %s is not online", pl.Build.Builder)
		}
		return pl.Build.Builder, nil
	}
	var declared []string
	for _, h := range r.m.d.Config.Hosts() {
		if h.Role == config.RoleBuilder {
			declared = append(declared, h.ID)
			if r.m.d.Fleet.Online(h.ID) {
				return h.ID, nil
			}
		}
	}
	if len(declared) == 0 {
		return "", errors.New("no builder host is declared (role: builder)")
	}
	return "", fmt.Errorf("no builder is online (declared: %s)", strings.Join(declared, ", "))
}

// follow copies a task's progress lines into the step log while it runs.
func (r *run) follow(ctx context.Context, s *Step, taskID string) func() {
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		seen := 0
		for {
			lines := r.m.d.Fleet.Progress(taskID)
			var out []string
			for _, p := range lines[min(seen, len(lines)):] {
				if p.Line != "" {
					out = append(out, p.Line)
				}
			}
			seen = len(lines)
			if len(out) > 0 {
				r.mu.Lock()
				r.logf(s, "%s", strings.Join(out, "\n"))
				r.mu.Unlock()
			}
			if fctx.Err() != nil {
				return // that was the last copy, after the task ended
			}
			select {
			case <-fctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (r *run) build(ctx context.Context, s *Step, pl *config.Pipeline) (outcome, error) {
	r.mu.Lock()
	manual, set := r.e.ManualArtifacts, r.e.ArtifactSet
	r.mu.Unlock()
	if manual {
		r.lockedLog(s, "build skipped: the artifacts were pushed by hand (set %s)", set)
		r.setDetail(s.ID, "skipped", "artifacts pushed by hand", "artifactSet", set)
		return done, nil
	}
	builder := s.Details["builder"]
	if builder == "" {
		var err error
		if builder, err = r.pickBuilder(pl); err != nil {
			return failed, err
		}
		r.setDetail(s.ID, "builder", builder)
	}
	id, _ := task.ID("x"+r.id, "build", builder)
	r.setDetail(s.ID, "taskId", id)
	r.lockedLog(s, "building %s at %s on %s with profile %s", pl.Repository, pl.Branch, builder, pl.Build.Profile)
	stop := r.follow(ctx, s, id)
	res, err := r.m.d.Fleet.Run(ctx, task.Spec{ID: id, ExecutionID: "x" + r.id, Step: "build", HostID: builder, Timeout: pl.Build.Timeout.D(),
		Kind: task.Build{Repository: pl.Repository, Branch: pl.Branch, Profile: pl.Build.Profile}})
	stop()
	if ctx.Err() != nil {
		return stopped, nil
	}
	if err != nil {
		return failed, err
	}
	if err := res.Err(); err != nil {
		return failed, errors.New(res.Error)
	}
	out, _ := res.Output.(*task.BuildOutput)
	if out == nil || len(out.Artifacts) == 0 {
		return failed, errors.New("the build produced no target/*.zip artifacts")
	}
	var digests, names []string
	for _, a := range out.Artifacts {
		digests = append(digests, a.SHA256)
		names = append(names, a.Name)
	}
	version := r.id
	if out.Commit != "" {
		version = fmt.Sprintf("%s-%.12s", r.id, out.Commit)
	}
	setID, err := r.m.d.Artifacts.CreateSet(version, digests, "pipeline:"+r.id)
	if err != nil {
		return failed, fmt.Errorf("the build's artifacts are not a consistent set: %v", err)
	}
	r.lockedLog(s, "uploaded %d artifact(s): %s; artifact set %s", len(names), strings.Join(names, ", "), setID)
	r.mu.Lock()
	r.e.ArtifactSet, r.e.ArtifactsVersion = setID, version
	r.mu.Unlock()
	r.setDetail(s.ID, "commit", out.Commit, "artifactSet", setID)
	return done, nil
}

func (r *run) codeQuality(ctx context.Context, s *Step, pl *config.Pipeline) (outcome, error) {
	r.mu.Lock()
	manual := r.e.ManualArtifacts
	var buildStep *Step
	for i := range r.e.Steps {
		if r.e.Steps[i].Action == ActionBuild {
			buildStep = &r.e.Steps[i]
		}
	}
	buildTask, builder := buildStep.Details["taskId"], buildStep.Details["builder"]
	r.mu.Unlock()
	if manual {
		r.lockedLog(s, "code scanning skipped: no build ran (artifacts pushed by hand)")
		r.setDetail(s.ID, "skipped", "no build")
		return done, nil
	}
	if pl.CodeQuality == nil || pl.CodeQuality.Profile == "" {
		r.lockedLog(s, "code scanning skipped: the pipeline configures no scan")
		r.setDetail(s.ID, "skipped", "not configured")
		return done, nil
	}
	if len(s.Metrics) == 0 {
		id, _ := task.ID("x"+r.id, "scan", builder)
		stop := r.follow(ctx, s, id)
		res, err := r.m.d.Fleet.Run(ctx, task.Spec{ID: id, ExecutionID: "x" + r.id, Step: "scan", HostID: builder, Timeout: pl.Build.Timeout.D(),
			Kind: task.CodeScan{BuildTaskID: buildTask, Profile: pl.CodeQuality.Profile}})
		stop()
		if ctx.Err() != nil {
			return stopped, nil
		}
		if err != nil {
			return failed, err
		}
		if err := res.Err(); err != nil {
			return failed, errors.New(res.Error)
		}
		out, _ := res.Output.(*task.CodeScanOutput)
		if out == nil {
			return failed, errors.New("the scan returned no metrics")
		}
		ms, err := r.m.d.Gates.CodeQuality(ctx, pl, out.Metrics)
		if err != nil {
			return failed, err
		}
		r.setMetrics(s.ID, ms)
		s.Metrics = ms
	}
	r.logMetrics(s, s.Metrics)
	return verdict(s.Metrics)
}

func (r *run) logMetrics(s *Step, ms []Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range ms {
		st := "passed"
		if !m.Passed {
			st = "FAILED"
			if m.Override {
				st = "failed, overridden"
			}
		}
		r.logf(s, "%-14s %-30s %s (actual %s, expected %s %s)", m.Severity, m.KPI, st, m.ActualValue, m.Comparator, m.ExpectedValue)
	}
}

func (r *run) test(ctx context.Context, s *Step, pl *config.Pipeline) (outcome, error) {
	stage, _ := r.m.d.Config.Environment(pl.StageEnvironment)
	if len(s.Metrics) == 0 {
		var ms []Metric
		var err error
		if s.Action == ActionSecurityTest {
			if pl.Security == nil || !pl.Security.Enabled {
				r.lockedLog(s, "security testing skipped: not configured")
				r.setDetail(s.ID, "skipped", "not configured")
				return done, nil
			}
			ms, err = r.m.d.Gates.Security(ctx, pl, stage)
		} else {
			if pl.Performance == nil || !pl.Performance.Enabled {
				r.lockedLog(s, "performance testing skipped: not configured")
				r.setDetail(s.ID, "skipped", "not configured")
				return done, nil
			}
			ms, err = r.m.d.Gates.Performance(ctx, pl, stage)
		}
		if ctx.Err() != nil {
			return stopped, nil
		}
		if err != nil {
			return failed, err
		}
		extra := ""
		if s.Action == ActionSecurityTest {
			extra = pl.Security.ExtraProfile
		} else {
			extra = pl.Performance.ExtraProfile
		}
		if extra != "" {
			more, out, err := r.extraChecks(ctx, s, extra)
			if out != done {
				return out, err
			}
			ms = append(ms, more...)
		}
		r.setMetrics(s.ID, ms)
		s.Metrics = ms
	}
	r.logMetrics(s, s.Metrics)
	return verdict(s.Metrics)
}

// extraChecks runs a scan profile on the builder whose metrics file is a
// JSON list of metrics (docs/gates.md) and returns them.
func (r *run) extraChecks(ctx context.Context, s *Step, profile string) ([]Metric, outcome, error) {
	r.mu.Lock()
	var buildTask, builder string
	for _, st := range r.e.Steps {
		if st.Action == ActionBuild {
			buildTask, builder = st.Details["taskId"], st.Details["builder"]
		}
	}
	r.mu.Unlock()
	if buildTask == "" {
		r.lockedLog(s, "extra checks (%s) skipped: no build workspace (artifacts pushed by hand)", profile)
		return nil, done, nil
	}
	id, _ := task.ID("x"+r.id, s.Action+"-extra", builder)
	stop := r.follow(ctx, s, id)
	res, err := r.m.d.Fleet.Run(ctx, task.Spec{ID: id, ExecutionID: "x" + r.id, Step: s.Action + "-extra", HostID: builder, Timeout: time.Hour,
		Kind: task.CodeScan{BuildTaskID: buildTask, Profile: profile}})
	stop()
	if ctx.Err() != nil {
		return nil, stopped, nil
	}
	if err == nil {
		err = res.Err()
	}
	if err != nil {
		return nil, failed, fmt.Errorf("extra checks %s: %v", profile, err)
	}
	out, _ := res.Output.(*task.CodeScanOutput)
	var ms []Metric
	if out == nil || json.Unmarshal(out.Metrics, &ms) != nil {
		return nil, failed, fmt.Errorf("extra checks %s: the metrics file is not a JSON list of metrics", profile)
	}
	return ms, done, nil
}

func (r *run) deploy(ctx context.Context, s *Step, pl *config.Pipeline) (outcome, error) {
	depID := s.Details["deploymentId"]
	if depID == "" {
		r.mu.Lock()
		set := r.e.ArtifactSet
		r.mu.Unlock()
		env, _ := r.m.d.Config.Environment(s.Environment)
		arts, err := r.m.d.Artifacts.Resolve(set)
		if err != nil {
			return failed, fmt.Errorf("artifact set %s: %v", set, err)
		}
		depID, err = r.m.d.Rollouts.Start(rollout.Request{Env: *env, Action: rollout.ActionDeploy, SetID: set, Artifacts: arts}, "pipeline:"+r.id)
		if err != nil {
			return failed, err
		}
		r.setDetail(s.ID, "deploymentId", depID)
		r.lockedLog(s, "deployment %s of set %s to %s started (deckctl deployments show %s)", depID, set, s.Environment, depID)
	}
	d, err := r.m.d.Rollouts.Wait(ctx, depID)
	if ctx.Err() != nil {
		return stopped, nil
	}
	if err != nil {
		return failed, err
	}
	r.mu.Lock()
	hosts := make([]string, 0, len(d.Hosts))
	for h := range d.Hosts {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		r.logf(s, "%s: %s", h, d.Hosts[h])
	}
	cancelling := r.e.Status == ExecCancelling
	r.mu.Unlock()
	switch d.State {
	case rollout.StateSucceeded:
		return done, nil
	case rollout.StateCancelled:
		if cancelling {
			r.mu.Lock()
			r.endLocked(ExecCancelled, r.e.Step(s.ID), StepCancelled, "cancelled by "+r.cancelBy)
			r.mu.Unlock()
			return stopped, nil
		}
		return failed, fmt.Errorf("deployment %s was cancelled", depID)
	}
	return failed, fmt.Errorf("deployment %s %s: %s", depID, d.State, d.Error)
}

// GitLsRemote checks that branch exists in repo with `git ls-remote`.
func GitLsRemote(ctx context.Context, repo, branch string) error {
	if strings.HasPrefix(branch, "-") || strings.HasPrefix(repo, "-") {
		return fmt.Errorf("refusing repository %q / branch %q", repo, branch)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "git", "ls-remote", "--heads", "--", repo, "refs/heads/"+branch)
	cmd.Env = []string{"GIT_TERMINAL_PROMPT=0", "PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("git ls-remote %s: %v: %s", repo, err, strings.TrimSpace(string(out)))
	}
	if !strings.Contains(string(out), "refs/heads/"+branch) {
		return fmt.Errorf("branch %q does not exist in %s", branch, repo)
	}
	return nil
}
