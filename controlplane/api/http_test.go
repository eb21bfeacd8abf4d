package api_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/api"
	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline"
	"github.com/deckhand-dev/deckhand/controlplane/pipeline/pipelinetest"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/clock"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	topology = pipelinetest.Topology
	allHosts = pipelinetest.Hosts
	pass     = pipelinetest.Pass
	gitRepo  = pipelinetest.GitRepo
)

// The pipeline configures code scanning only: the security and
// performance steps are planned (and skipped), and this test does not
// depend on how their config sections look.

var lowCoverage = pipeline.Metric{ID: "coverage", KPI: "coverage", Severity: "important", ActualValue: "30", ExpectedValue: "50", Comparator: "GTE"}

// Operators, one per role, and one without any.
const (
	viewer   = "vera"
	deployer = "dave"
	approver = "anna"
	cse      = "cole"
	admin    = "root"
	noRoles  = "nora"
	nobody   = "" // no credentials
)

var roleOf = map[string]string{viewer: "viewer", deployer: "deployer", approver: "approver", cse: "cse", admin: "admin"}

type fixture struct {
	t      *testing.T
	c      *servertest.Control
	sim    *servertest.Sim
	clock  *clock.Fake
	gates  *pipelinetest.Gates
	base   string
	client *http.Client
}

// setup starts a control plane with the HTTP API on a loopback port; with
// agents, it also starts simulated hosts and a pipeline that can run.
func setup(t *testing.T, agents bool) *fixture {
	f := &fixture{t: t, sim: servertest.NewSim(), clock: clock.NewFake(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)),
		gates: pipelinetest.NewGates()}
	f.gates.Set(pipeline.ActionCodeQuality, pass("coverage"))
	repo := "/nonexistent"
	if agents {
		repo = gitRepo(t)
	}
	extra := fmt.Sprintf(`
http_listen: 127.0.0.1:0
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
        approval: true
        schedule: true
        cse_support: true
  - name: intranet
    pipelines: []
`, repo)
	f.c = servertest.Start(t, servertest.Options{Topology: topology, Extra: extra, HeartbeatInterval: 200 * time.Millisecond,
		Server: func(o *server.Options) { o.Clock, o.Gates = f.clock, f.gates }})
	f.base = "https://" + f.c.Server.HTTPAddr()
	f.client = f.newClient(nil)
	st := f.c.Server.Store()
	for name, role := range roleOf {
		require.NoError(t, st.PutAdmin(store.Admin{Name: name, Roles: []string{role}, CreatedAt: time.Now()}, "tok-"+name))
	}
	require.NoError(t, st.PutAdmin(store.Admin{Name: noRoles, CreatedAt: time.Now()}, "tok-"+noRoles))
	if agents {
		f.c.StartSimAgents(t, f.sim, allHosts...)
		// The simulated build "uploads" a package.
		sets := artifacts.NewSets(f.c.Server.Blobs(), f.c.Server.Store().Backend())
		pkgPath := aempkgtest.WriteFile(t, t.TempDir(), "core.zip", aempkgtest.Package(aempkgtest.Spec{Group: "wknd", Name: "core", Version: "1.0"}))
		pr, err := sets.PutFile(pkgPath)
		require.NoError(t, err)
		f.sim.Output("build", &task.BuildOutput{Commit: "0123456789abcdef", Artifacts: []task.Artifact{pr.Artifact.Ref()}})
	}
	return f
}

// newClient trusts the control plane CA and presents cert when given. It
// speaks HTTP/2, like curl and browsers do against the server.
func (f *fixture) newClient(cert *tls.Certificate) *http.Client {
	tr := &http.Transport{TLSClientConfig: f.c.TLSConfig(cert), ForceAttemptHTTP2: true}
	f.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// answer is a response read in full.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(a.body, v), "%s", a.body)
}

// problem checks an error answer: its status, problem+json shape, and that
// its detail contains want.
func (a answer) problem(t *testing.T, code int, want string) {
	t.Helper()
	require.Equal(t, code, a.code, "%s", a.body)
	require.Equal(t, "application/problem+json", a.header.Get("Content-Type"))
	var p api.Problem
	a.json(t, &p)
	require.Equal(t, code, p.Status)
	require.Equal(t, http.StatusText(code), p.Title)
	require.Contains(t, p.Detail, want)
}

// call sends a request as user (its bearer token; nobody sends none).
func (f *fixture) call(method, path, user, body string) answer {
	return f.callWith(f.client, method, path, user, body)
}

func (f *fixture) callWith(c *http.Client, method, path, user, body string) answer {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.base+path, rd)
	require.NoError(f.t, err)
	if user != nobody {
		req.Header.Set("Authorization", "Bearer tok-"+user)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return answer{code: resp.StatusCode, header: resp.Header, body: b}
}

const pl = "/api/program/wknd/pipeline/main"

func (f *fixture) execution(path string) api.ExecutionJSON {
	f.t.Helper()
	a := f.call("GET", path, viewer, "")
	require.Equal(f.t, http.StatusOK, a.code, "%s", a.body)
	require.Equal(f.t, "application/hal+json", a.header.Get("Content-Type"))
	var e api.ExecutionJSON
	a.json(f.t, &e)
	return e
}

// lastStep is the execution's step with action (the last one when two
// share it, as both deploys do).
func lastStep(e api.ExecutionJSON, action string) *api.StepState {
	var found *api.StepState
	for i := range e.Embedded.StepStates {
		if e.Embedded.StepStates[i].Action == action {
			found = &e.Embedded.StepStates[i]
		}
	}
	return found
}

func firstStep(e api.ExecutionJSON, action string) *api.StepState {
	for i := range e.Embedded.StepStates {
		if e.Embedded.StepStates[i].Action == action {
			return &e.Embedded.StepStates[i]
		}
	}
	return nil
}

// waitStep polls the execution over HTTP until step (picked by pick) has
// status.
func (f *fixture) waitStep(path string, pick func(api.ExecutionJSON) *api.StepState, status string) (api.ExecutionJSON, *api.StepState) {
	f.t.Helper()
	var e api.ExecutionJSON
	var s *api.StepState
	require.Eventually(f.t, func() bool {
		e = f.execution(path)
		s = pick(e)
		return s != nil && s.Status == status
	}, 30*time.Second, 20*time.Millisecond, "never %s: %+v", status, s)
	return e, s
}

func (f *fixture) waitStatus(path, status string) api.ExecutionJSON {
	f.t.Helper()
	var e api.ExecutionJSON
	require.Eventually(f.t, func() bool {
		e = f.execution(path)
		return e.Status == status
	}, 30*time.Second, 20*time.Millisecond, "execution never %s", status)
	return e
}

func by(action string) func(api.ExecutionJSON) *api.StepState {
	return func(e api.ExecutionJSON) *api.StepState { return lastStep(e, action) }
}

// stepOf decodes a step state answer (into a fresh value: decoding into a
// used one would merge its _links map).
func stepOf(t *testing.T, a answer) api.StepState {
	t.Helper()
	var s api.StepState
	a.json(t, &s)
	return s
}

func hasLinks(t *testing.T, s *api.StepState, advance, cancel bool) {
	t.Helper()
	_, a := s.Links["advance"]
	_, c := s.Links["cancel"]
	require.Equal(t, advance, a, "advance link of %s step (%s): %v", s.Action, s.Status, s.Links)
	require.Equal(t, cancel, c, "cancel link of %s step (%s): %v", s.Action, s.Status, s.Links)
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	name string
	data api.EventJSON
}

// stream reads an event stream until ctx ends; events and comments go to
// the returned channels, and done closes when the stream ends.
func stream(t *testing.T, c *http.Client, url, token string) (events chan sseEvent, comments chan string, stop func(), done chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	events, comments, done = make(chan sseEvent, 1000), make(chan string, 1000), make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, ":"):
				comments <- strings.TrimSpace(line[1:])
			case strings.HasPrefix(line, "event: "):
				ev.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[len("data: "):]), &ev.data); err != nil {
					t.Errorf("event data %q: %v", line, err)
				}
			case line == "":
				if ev.name != "" {
					events <- ev
				}
				ev = sseEvent{}
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return events, comments, stop, done
}

// TestExecutionAPI drives three executions through every route: a full
// one answering each kind of waiting step, one scheduled and then
// cancelled, and an emergency one rejected at approval.
func TestExecutionAPI(t *testing.T) {
	f := setup(t, true)

	// Programs and pipelines.
	a := f.call("GET", "/api/programs", viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	var programs struct {
		Total    int `json:"_totalNumberOfItems"`
		Embedded struct {
			Programs []api.ProgramJSON `json:"programs"`
		} `json:"_embedded"`
	}
	a.json(t, &programs)
	require.Equal(t, 2, programs.Total)
	require.Equal(t, "wknd", programs.Embedded.Programs[0].ID)
	require.False(t, programs.Embedded.Programs[0].EmergencyModeEnabled)
	require.Equal(t, "/api/program/wknd/pipelines", programs.Embedded.Programs[0].Links["pipelines"].Href)
	type pipelines struct {
		ProgramID            string `json:"programId"`
		EmergencyModeEnabled bool   `json:"emergencyModeEnabled"`
		Total                int    `json:"_totalNumberOfItems"`
		Embedded             struct {
			Pipelines []api.PipelineJSON `json:"pipelines"`
		} `json:"_embedded"`
	}
	listPipelines := func() pipelines {
		a := f.call("GET", "/api/program/wknd/pipelines", viewer, "")
		require.Equal(t, http.StatusOK, a.code, "%s", a.body)
		var p pipelines
		a.json(t, &p)
		return p
	}
	p := listPipelines()
	require.Equal(t, 1, p.Total)
	mainPl := p.Embedded.Pipelines[0]
	require.Equal(t, "main", mainPl.ID)
	require.Equal(t, "IDLE", mainPl.Status)
	require.True(t, mainPl.Approval && mainPl.Schedule && mainPl.CSESupport && mainPl.CodeQuality)
	require.False(t, mainPl.SecurityTesting || mainPl.PerformanceTesting, "not configured")
	require.Equal(t, "168h0m0s", mainPl.WaitingTimeout)
	require.Equal(t, pl+"/events", mainPl.Links["events"].Href)
	f.call("GET", "/api/program/nope/pipelines", viewer, "").problem(t, 404, `program "nope" is not declared`)
	require.Equal(t, http.StatusOK, f.call("GET", "/api/program/intranet", viewer, "").code)
	require.Equal(t, http.StatusOK, f.call("GET", pl, viewer, "").code)
	f.call("GET", "/api/program/wknd/pipeline/nope", viewer, "").problem(t, 404, `program "wknd" has no pipeline "nope"`)

	// Nothing has run yet.
	f.call("GET", pl+"/execution", viewer, "").problem(t, 404, "no execution running")
	a = f.call("GET", pl+"/executions", viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	require.JSONEq(t, `{"_totalNumberOfItems":0,"_page":{"start":0,"limit":20},"_embedded":{"executions":[]},
		"_links":{"self":{"href":"/api/program/wknd/pipeline/main/executions?start=0&limit=20"},"pipeline":{"href":"/api/program/wknd/pipeline/main"}}}`, string(a.body))

	// The event stream, opened before anything starts.
	events, _, stopStream, streamDone := stream(t, f.client, f.base+pl+"/events", "tok-"+viewer)

	// Starting: who may, and what is refused.
	start := pl + "/execution"
	f.call("PUT", start, viewer, "").problem(t, 403, "StartExecution needs the deployer role; vera has viewer")
	f.call("PUT", start+"?pipelineExecutionMode=EMERGENCY", deployer, "").problem(t, 400, "emergency mode is not enabled for this program")
	f.call("PUT", start+"?pipelineExecutionMode=EMERGENCY", deployer, "").problem(t, 400, "deckctl program set-emergency wknd on")
	f.call("PUT", start+"?pipelineExecutionMode=FAST", deployer, "").problem(t, 400, `pipelineExecutionMode "FAST"`)
	f.call("PUT", "/api/program/wknd/pipeline/nope/execution", deployer, "").problem(t, 404, `pipeline "nope"`)
	f.call("PUT", "/api/program/nope/pipeline/main/execution", deployer, "").problem(t, 404, `program "nope"`)
	f.call("PUT", start, deployer, `{"artifactSet":`).problem(t, 400, "not valid")
	f.call("PUT", start, deployer, `{"artifactSet":"x","force":true}`).problem(t, 400, `unknown field "force"`)
	f.call("PUT", start, deployer, `{"artifactSet":"x"} {}`).problem(t, 400, "data after the JSON object")
	f.call("PUT", start, deployer, `{"artifactSet":"no-such-set"}`).problem(t, 400, `artifact set "no-such-set"`)
	f.call("PUT", start+"?artifactSet=a", deployer, `{"artifactSet":"b"}`).problem(t, 400, "in the query")

	// Execution 1 stops at the code quality gate.
	f.gates.Set(pipeline.ActionCodeQuality, lowCoverage)
	a = f.call("PUT", start+"?pipelineExecutionMode=NORMAL", deployer, "")
	require.Equal(t, http.StatusCreated, a.code, "%s", a.body)
	var e1 api.ExecutionJSON
	a.json(t, &e1)
	loc := a.header.Get("Location")
	require.Equal(t, pl+"/execution/"+e1.ID, loc)
	require.Equal(t, "wknd", e1.ProgramID)
	require.Equal(t, "main", e1.PipelineID)
	require.Equal(t, "dave", e1.User)
	require.Equal(t, "RUNNING", e1.Status)
	require.Equal(t, "MANUAL", e1.Trigger)
	require.Equal(t, "NORMAL", e1.Mode)
	_, err := time.Parse(time.RFC3339, e1.CreatedAt)
	require.NoError(t, err, "createdAt is RFC 3339")
	require.Equal(t, "2026-12-01T08:00:00.000Z", e1.CreatedAt, "the server's clock, in Cloud Manager's format")
	var acts []string
	for _, s := range e1.Embedded.StepStates {
		acts = append(acts, s.Action)
	}
	require.Equal(t, []string{"validate", "build", "codeQuality", "deploy", "securityTest", "loadTest", "approval", "schedule", "managed", "deploy"}, acts)
	f.call("PUT", start, deployer, "").problem(t, 412, "execution "+e1.ID)

	require.Equal(t, e1.ID, f.execution(loc).ID)
	require.Equal(t, e1.ID, f.execution(pl+"/execution").ID)
	f.call("GET", pl+"/execution/999", viewer, "").problem(t, 404, `execution "999"`)

	e, cq := f.waitStep(loc, by("codeQuality"), "WAITING")
	hasLinks(t, cq, true, true)
	require.Equal(t, cq.Links["advance"], e.Links["advance"], "the execution links its current step's advance")
	require.Equal(t, cq.Links["cancel"], e.Links["cancel"])
	hasLinks(t, firstStep(e, "validate"), false, false) // FINISHED
	hasLinks(t, lastStep(e, "deploy"), false, false)    // NOT_STARTED
	require.Equal(t, "STAGE_DEPLOYMENT", cq.Phase)
	require.Equal(t, cq.ID, cq.StepID)
	require.NotEmpty(t, cq.WaitingSince)

	stepURL := cq.Links["self"].Href
	require.Equal(t, fmt.Sprintf("%s/phase/%s/step/%s", loc, cq.PhaseID, cq.ID), stepURL)
	a = f.call("GET", stepURL, viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	var got api.StepState
	got = stepOf(t, a)
	require.Equal(t, "WAITING", got.Status)
	hasLinks(t, &got, true, true)
	f.call("GET", fmt.Sprintf("%s/phase/2/step/%s", loc, cq.ID), viewer, "").problem(t, 404, `no step "3" in phase "2"`)
	f.call("GET", loc+"/phase/1/step/77", viewer, "").problem(t, 404, `no step "77"`)

	a = f.call("GET", cq.Links["metrics"].Href, viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	var metrics struct {
		Metrics []pipeline.Metric `json:"metrics"`
	}
	a.json(t, &metrics)
	require.Equal(t, []pipeline.Metric{lowCoverage}, metrics.Metrics)
	a = f.call("GET", loc+"/phase/1/step/1/metrics", viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	require.JSONEq(t, `{"metrics":[]}`, string(a.body), "a step without metrics has an empty list")

	p = listPipelines()
	require.Equal(t, "WAITING", p.Embedded.Pipelines[0].Status)
	require.Equal(t, e1.ID, p.Embedded.Pipelines[0].CurrentExecutionID)

	// Gate override: malformed bodies, the wrong role, then a deployer.
	adv := cq.Links["advance"].Href
	f.call("PUT", cq.Links["cancel"].Href, viewer, "").problem(t, 403, "CancelStep (codeQuality) needs the deployer or approver role")
	f.call("PUT", adv, viewer, `{"metrics":[{"kpi":"coverage","override":true}]}`).problem(t, 403, "needs the approver or deployer role; vera has viewer")
	f.call("PUT", adv, deployer, "").problem(t, 400, "a JSON request body is required")
	f.call("PUT", adv, deployer, `{"metrics":`).problem(t, 400, "not valid")
	f.call("PUT", adv, deployer, `{"metrics":[{"kpi":"coverage","override":true,"why":"x"}]}`).problem(t, 400, `unknown field "why"`)
	f.call("PUT", adv, deployer, `{"approved":true}`).problem(t, 400, `"approved" does not apply to the codeQuality step`)
	f.call("PUT", adv, deployer, `{"metrics":[]}`).problem(t, 400, "a gate override lists the failing important metrics")
	f.call("PUT", adv, deployer, `{"metrics":[{"kpi":"security_rating","override":true}]}`).problem(t, 400, "missing: coverage")
	f.call("PUT", adv, deployer, `{"metrics":[{"kpi":"`+strings.Repeat("x", api.MaxBodyBytes)+`"}]}`).problem(t, 413, "larger than")
	// Clients send back whole metrics with override set; that is accepted.
	whole, err := json.Marshal(map[string]any{"metrics": []pipeline.Metric{func() pipeline.Metric { m := lowCoverage; m.Override = true; return m }()}})
	require.NoError(t, err)
	a = f.call("PUT", adv, deployer, string(whole))
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)
	got = stepOf(t, a)
	require.Equal(t, "FINISHED", got.Status)
	require.Equal(t, "dave", got.Details["overriddenBy"])
	hasLinks(t, &got, false, false)
	f.call("PUT", adv, deployer, string(whole)).problem(t, 409, "is not waiting")

	// Approval: a deployer may not approve; an approver does.
	_, ap := f.waitStep(loc, by("approval"), "WAITING")
	require.Equal(t, "PRODUCTION_DEPLOYMENT", ap.Phase)
	require.Equal(t, "prod", ap.Environment)
	require.Equal(t, "prod", ap.EnvironmentType)
	f.call("PUT", ap.Links["advance"].Href, deployer, `{"approved":true}`).problem(t, 403, "AdvanceStep (approval) needs the approver role; dave has deployer")
	f.call("PUT", ap.Links["advance"].Href, approver, `{"start":true}`).problem(t, 400, `"start" does not apply to the approval step`)
	f.call("PUT", ap.Links["advance"].Href, approver, `{}`).problem(t, 400, `an approval needs {"approved": true}`)
	a = f.call("PUT", ap.Links["advance"].Href, approver, `{"approved":true}`)
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)

	// Schedule IMMEDIATE, by an approver with an admin client certificate.
	_, sch := f.waitStep(loc, by("schedule"), "WAITING")
	carol := f.adminCert("carol", "approver")
	a = f.callWith(carol, "PUT", sch.Links["advance"].Href, nobody, `{"type":"LATER"}`)
	a.problem(t, 400, `a schedule needs {"type":"IMMEDIATE"}`)
	a = f.callWith(carol, "PUT", sch.Links["advance"].Href, nobody, `{"type":"IMMEDIATE"}`)
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)
	got = stepOf(t, a)
	require.Equal(t, "carol", got.Details["scheduledBy"])
	require.Equal(t, "IMMEDIATE", got.Details["schedule"])

	// CSE support: an approver may not give it; a cse does.
	_, mg := f.waitStep(loc, by("managed"), "WAITING")
	f.call("PUT", mg.Links["advance"].Href, approver, `{"start":true}`).problem(t, 403, "needs the cse role; anna has approver")
	f.call("PUT", mg.Links["advance"].Href, cse, `{"start":false}`).problem(t, 400, `CSE support needs {"start": true}`)
	a = f.call("PUT", mg.Links["advance"].Href, cse, `{"start":true}`)
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)

	e = f.waitStatus(loc, "FINISHED")
	require.NotEmpty(t, e.FinishedAt)
	require.NotEmpty(t, e.ArtifactSet)
	for _, s := range e.Embedded.StepStates {
		require.Equal(t, "FINISHED", s.Status, s.Action)
		hasLinks(t, &s, false, false)
	}
	_, hasCancel := e.Links["cancel"]
	require.False(t, hasCancel)
	f.call("GET", pl+"/execution", viewer, "").problem(t, 404, "no execution running")
	f.call("PUT", lastStep(e, "deploy").Links["self"].Href+"/cancel", deployer, "").problem(t, 409, "has ended")

	// Logs.
	build := firstStep(e, "build")
	a = f.call("GET", build.Links["logs"].Href, viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "text/plain; charset=utf-8", a.header.Get("Content-Type"))
	require.Contains(t, string(a.body), "BUILD SUCCESS (simulated)")
	a = f.call("GET", lastStep(e, "approval").Links["logs"].Href, viewer, "")
	require.Contains(t, string(a.body), "approved by anna")
	f.call("GET", loc+"/phase/1/step/99/logs", viewer, "").problem(t, 404, `no step "99"`)
	f.call("GET", pl+"/execution/999/phase/1/step/1/logs", viewer, "").problem(t, 404, "not found")

	// The stream saw execution 1 wait at the gate, go on and finish.
	var seen []string
	timeout := time.After(10 * time.Second)
	for finished := false; !finished; {
		select {
		case ev := <-events:
			require.Equal(t, "execution", ev.name)
			require.Equal(t, e1.ID, ev.data.ExecutionID)
			require.Equal(t, loc, ev.data.Links["execution"].Href)
			seen = append(seen, ev.data.Action+":"+ev.data.Status)
			finished = ev.data.StepID == "" && ev.data.Status == "FINISHED"
		case <-timeout:
			t.Fatalf("the stream did not deliver the end of execution %s; saw %v", e1.ID, seen)
		}
	}
	require.Contains(t, seen, ":RUNNING", "the start")
	require.Contains(t, seen, "codeQuality:WAITING")
	require.Contains(t, seen, "codeQuality:FINISHED")
	require.Contains(t, seen, "approval:WAITING")
	stopStream()
	select {
	case <-streamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end when the client went away")
	}

	// Execution 2: a running stage deployment can be cancelled but not
	// advanced; then a schedule for later, cancelled while it waits for
	// its time.
	f.gates.Set(pipeline.ActionCodeQuality, pass("coverage"))
	hold := f.sim.Gate("install.s-author")
	a = f.call("PUT", start, admin, "")
	require.Equal(t, http.StatusCreated, a.code, "%s", a.body)
	loc2 := a.header.Get("Location")
	e, dep := f.waitStep(loc2, func(e api.ExecutionJSON) *api.StepState { return firstStep(e, "deploy") }, "RUNNING")
	hasLinks(t, dep, false, true)
	require.Equal(t, dep.Links["cancel"], e.Links["cancel"])
	_, hasAdvance := e.Links["advance"]
	require.False(t, hasAdvance)
	f.call("PUT", dep.Links["self"].Href+"/advance", admin, `{}`).problem(t, 409, "never waits")
	f.call("PUT", dep.Links["cancel"].Href, approver, "").problem(t, 403, "CancelStep (deploy) needs the deployer role; anna has approver")
	close(hold)
	_, ap = f.waitStep(loc2, by("approval"), "WAITING")
	require.Equal(t, http.StatusAccepted, f.call("PUT", ap.Links["advance"].Href, admin, `{"approved":true}`).code)
	_, sch = f.waitStep(loc2, by("schedule"), "WAITING")
	f.call("PUT", sch.Links["advance"].Href, approver, `{"type":"SCHEDULED","schedule":"tomorrow"}`).problem(t, 400, "not an RFC 3339 time")
	f.call("PUT", sch.Links["advance"].Href, approver, `{"type":"SCHEDULED","schedule":"2026-11-30T21:00:00Z"}`).problem(t, 400, "in the past")
	f.call("PUT", sch.Links["advance"].Href, approver, `{"type":"IMMEDIATE","schedule":"2026-12-01T21:00:00Z"}`).problem(t, 400, "takes no schedule time")
	a = f.call("PUT", sch.Links["advance"].Href, approver, `{"type":"SCHEDULED","schedule":"2026-12-01T22:00:00.000+01:00"}`)
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)
	got = stepOf(t, a)
	require.Equal(t, "RUNNING", got.Status)
	require.Equal(t, "2026-12-01T21:00:00.000Z", got.ScheduledAt, "the instant, in UTC")
	hasLinks(t, &got, false, true)
	f.call("PUT", got.Links["cancel"].Href, viewer, "").problem(t, 403, "CancelStep (schedule) needs the deployer or approver role")
	f.call("PUT", got.Links["cancel"].Href, deployer, `{"cancel":true,"now":1}`).problem(t, 400, `unknown field "now"`)
	f.call("PUT", got.Links["cancel"].Href, deployer, `{"cancel":false}`).problem(t, 400, "does not ask for a cancel")
	a = f.call("PUT", got.Links["cancel"].Href, deployer, `{"cancel":true}`)
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)
	e = f.waitStatus(loc2, "CANCELLED")
	require.Contains(t, e.Reason, "schedule cancelled by dave")
	require.Equal(t, "NOT_STARTED", lastStep(e, "deploy").Status, "production untouched")

	// Emergency mode: only cse and admin switch it.
	em := "/api/program/wknd/emergency"
	for _, u := range []string{viewer, deployer, approver} {
		f.call("PUT", em, u, `{"enabled":true}`).problem(t, 403, "SetEmergency needs the cse role")
	}
	f.call("PUT", em, cse, `{}`).problem(t, 400, `{"enabled": true}`)
	f.call("PUT", em, cse, `{"enabled":"yes"}`).problem(t, 400, "not valid")
	f.call("PUT", "/api/program/nope/emergency", cse, `{"enabled":true}`).problem(t, 404, `program "nope"`)
	a = f.call("PUT", em, cse, `{"enabled":true}`)
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	var prog api.ProgramJSON
	a.json(t, &prog)
	require.True(t, prog.EmergencyModeEnabled)
	require.True(t, listPipelines().EmergencyModeEnabled)

	// Execution 3, in emergency mode, skips the two testing steps and is
	// rejected at approval by a deployer cancelling it.
	a = f.call("PUT", start+"?pipelineExecutionMode=EMERGENCY", deployer, "")
	require.Equal(t, http.StatusCreated, a.code, "%s", a.body)
	var e3 api.ExecutionJSON
	a.json(t, &e3)
	require.Equal(t, "EMERGENCY", e3.Mode)
	require.Nil(t, firstStep(e3, "securityTest"))
	require.Nil(t, firstStep(e3, "loadTest"))
	loc3 := a.header.Get("Location")
	_, ap = f.waitStep(loc3, by("approval"), "WAITING")
	f.call("PUT", ap.Links["cancel"].Href, viewer, "").problem(t, 403, "needs the deployer or approver role")
	a = f.call("PUT", ap.Links["cancel"].Href, deployer, "")
	require.Equal(t, http.StatusAccepted, a.code, "%s", a.body)
	got = stepOf(t, a)
	require.Equal(t, "CANCELLED", got.Status)
	hasLinks(t, &got, false, false)
	require.Equal(t, "CANCELLED", f.waitStatus(loc3, "CANCELLED").Status)

	a = f.call("PUT", em, admin, `{"enabled":false}`)
	require.Equal(t, http.StatusOK, a.code, "%s", a.body)
	require.False(t, listPipelines().EmergencyModeEnabled)

	// Paging, newest first.
	type page struct {
		Total    int `json:"_totalNumberOfItems"`
		Embedded struct {
			Executions []api.ExecutionJSON `json:"executions"`
		} `json:"_embedded"`
		Links map[string]struct {
			Href string `json:"href"`
		} `json:"_links"`
	}
	var pg page
	a = f.call("GET", pl+"/executions?limit=2", viewer, "")
	require.Equal(t, http.StatusOK, a.code)
	a.json(t, &pg)
	require.Equal(t, 3, pg.Total)
	require.Len(t, pg.Embedded.Executions, 2)
	require.Equal(t, e3.ID, pg.Embedded.Executions[0].ID)
	require.Equal(t, pl+"/executions?start=2&limit=2", pg.Links["next"].Href)
	require.NotContains(t, pg.Links, "prev")
	pg = page{}
	f.call("GET", pl+"/executions?start=2&limit=2", viewer, "").json(t, &pg)
	require.Len(t, pg.Embedded.Executions, 1)
	require.Equal(t, e1.ID, pg.Embedded.Executions[0].ID)
	require.Len(t, pg.Embedded.Executions[0].Embedded.StepStates, 10, "listed executions carry their steps")
	require.Equal(t, pl+"/executions?start=0&limit=2", pg.Links["prev"].Href)
	require.NotContains(t, pg.Links, "next")
	f.call("GET", pl+"/executions?limit=abc", viewer, "").problem(t, 400, `limit="abc"`)
	f.call("GET", pl+"/executions?limit=1000", viewer, "").problem(t, 400, "from 0 to 100")
	f.call("GET", pl+"/executions?start=-1", viewer, "").problem(t, 400, `start="-1"`)
	f.call("GET", "/api/program/wknd/pipeline/nope/executions", viewer, "").problem(t, 404, "nope")

	// Every action, allowed or not, is in the audit log.
	entries, err := f.c.Server.Store().Audit(time.Time{}, 0)
	require.NoError(t, err)
	var audit []string
	for _, x := range entries {
		if x.Action == "enroll" {
			continue // the sim agents joining
		}
		require.Contains(t, x.Detail, "via http")
		audit = append(audit, x.Who+" "+x.Action+" "+strings.SplitN(x.Result, ":", 2)[0])
	}
	for _, want := range []string{
		"vera StartExecution denied", "dave StartExecution error", "dave StartExecution ok",
		"vera AdvanceStep (codeQuality) denied", "dave AdvanceStep (codeQuality) ok",
		"dave AdvanceStep (approval) denied", "anna AdvanceStep (approval) ok",
		"carol AdvanceStep (schedule) ok", "anna AdvanceStep (managed) denied", "cole AdvanceStep (managed) ok",
		"dave CancelStep (schedule) ok", "vera CancelStep (approval) denied", "dave CancelStep (approval) ok",
		"anna SetEmergency denied", "cole SetEmergency ok", "root SetEmergency ok",
	} {
		require.Contains(t, audit, want)
	}
}

// adminCert issues a client certificate for a new operator with role and
// returns a client presenting it (and no token).
func (f *fixture) adminCert(name, role string) *http.Client {
	f.t.Helper()
	require.NoError(f.t, f.c.Server.Store().PutAdmin(store.Admin{Name: name, Roles: []string{role}, CreatedAt: time.Now()}, ""))
	key, err := identity.NewKey()
	require.NoError(f.t, err)
	csr, err := identity.NewCSR(key, name)
	require.NoError(f.t, err)
	leaf, err := f.c.Server.PKI().IssueAdmin(name, csr, time.Hour)
	require.NoError(f.t, err)
	cert := identity.TLSCert(leaf, key)
	return f.newClient(&cert)
}

// TestAuthentication: who gets in, and the answers of routes that do not
// exist.
func TestAuthentication(t *testing.T) {
	f := setup(t, false)
	a := f.call("GET", "/api/programs", nobody, "")
	a.problem(t, 401, "give a bearer token")
	require.Equal(t, `Bearer realm="deckhand"`, a.header.Get("WWW-Authenticate"))
	f.call("PUT", pl+"/execution", nobody, "").problem(t, 401, "give a bearer token")

	req := func(hdr string) answer {
		r, err := http.NewRequest("GET", f.base+"/api/programs", nil)
		require.NoError(t, err)
		r.Header.Set("Authorization", hdr)
		resp, err := f.client.Do(r)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header, b}
	}
	req("Basic YWRtaW46YWRtaW4=").problem(t, 401, `must be "Bearer <token>"`)
	req("Bearer not-a-token").problem(t, 401, "the bearer token is not valid")
	a = req("Bearer " + f.c.Credentials().Token)
	require.Equal(t, http.StatusOK, a.code, "the first admin's token works")

	// An operator without roles may not even read.
	f.call("GET", "/api/programs", noRoles, "").problem(t, 403, "needs the viewer role; nora has no roles")
	f.call("GET", pl+"/execution/1/phase/1/step/1", noRoles, "").problem(t, 403, "needs the viewer role")

	// A host certificate is not an operator credential.
	hc := f.c.HostCert("publish1", time.Hour)
	host := f.newClient(&hc)
	f.callWith(host, "GET", "/api/programs", nobody, "").problem(t, 403, "host:publish1 presented a host certificate")
	f.callWith(host, "PUT", pl+"/execution", nobody, "").problem(t, 403, "host certificate")
	// An admin certificate is, until its operator is gone.
	carol := f.adminCert("carol", "viewer")
	require.Equal(t, http.StatusOK, f.callWith(carol, "GET", "/api/programs", nobody, "").code)
	f.callWith(carol, "PUT", pl+"/execution", nobody, "").problem(t, 403, "StartExecution needs the deployer role; carol has viewer")

	entries, err := f.c.Server.Store().Audit(time.Time{}, 0)
	require.NoError(t, err)
	var denied []string
	for _, x := range entries {
		denied = append(denied, x.Who+" "+x.Action)
	}
	require.Contains(t, denied, "unauthenticated StartExecution")
	require.Contains(t, denied, "host:publish1 StartExecution")
	require.Contains(t, denied, "nora http GET /api/programs")

	// Routes that do not exist answer in the same shape.
	f.call("GET", "/api/nothing", viewer, "").problem(t, 404, "no such route: /api/nothing")
	a = f.call("DELETE", pl+"/execution", viewer, "")
	a.problem(t, 405, "DELETE is not allowed")
	require.Contains(t, a.header.Get("Allow"), "PUT")

	// Stopping the server ends open event streams at once.
	_, comments, _, done := stream(t, f.client, f.base+pl+"/events", "tok-"+viewer)
	require.Equal(t, "events of wknd/main", <-comments)
	began := time.Now()
	f.c.Stop()
	require.Less(t, time.Since(began), 4*time.Second, "Stop waited for the stream")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream stayed open after the server stopped")
	}
}

// TestEventStreamHeartbeatAndDisconnect runs the handler on its own to
// use a short heartbeat, and checks the handler returns (unsubscribing)
// when the client goes away.
func TestEventStreamHeartbeatAndDisconnect(t *testing.T) {
	f := setup(t, false)
	h := &api.HTTP{Pipelines: f.c.Server.Pipelines(), Config: f.c.Config, Auth: &auth.Authorizer{Store: f.c.Server.Store()}, Heartbeat: 20 * time.Millisecond}
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if strings.HasSuffix(r.URL.Path, "/events") {
			returned <- struct{}{}
		}
	}))
	defer srv.Close()
	defer srv.Client().Transport.(*http.Transport).CloseIdleConnections()

	_, comments, stop, done := stream(t, srv.Client(), srv.URL+pl+"/events", "tok-"+viewer)
	require.Equal(t, "events of wknd/main", <-comments)
	for i := 0; i < 3; i++ {
		select {
		case c := <-comments:
			require.Equal(t, "heartbeat", c)
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
	stop()
	<-done
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not return after the client went away")
	}

	// A stream of a pipeline that does not exist is a 404, not a stream.
	r, err := http.NewRequest("GET", srv.URL+"/api/program/wknd/pipeline/nope/events", nil)
	require.NoError(t, err)
	r.Header.Set("Authorization", "Bearer tok-"+viewer)
	resp, err := srv.Client().Do(r)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	<-returned
}

// TestDevInsecure: plain HTTP on loopback with everyone an admin, and no
// plain HTTP anywhere else.
func TestDevInsecure(t *testing.T) {
	c := servertest.Start(t, servertest.Options{DevInsecure: true, Extra: "http_listen: 127.0.0.1:0\n"})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + c.Server.HTTPAddr() + "/api/programs")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	_, err = api.ListenHTTP("0.0.0.0:0", nil, http.NotFoundHandler(), nil)
	require.ErrorContains(t, err, "refusing plain HTTP")
}
