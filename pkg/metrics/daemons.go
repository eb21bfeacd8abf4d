package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Server is the control plane's metrics. Methods are safe on nil.
type Server struct {
	Reg         *prometheus.Registry
	sessions    *prometheus.CounterVec
	tasks       *prometheus.CounterVec
	steps       *prometheus.HistogramVec
	deployments *prometheus.CounterVec
	executions  *prometheus.CounterVec
	pipeSteps   *prometheus.HistogramVec
	drift       *prometheus.CounterVec
}

// AgentCounts reports agents by state for the gauges.
type AgentCounts func() (online, offline, never int)

// NewServer registers the server's metrics. agents and running are read
// at scrape time.
func NewServer(agents AgentCounts, runningExecutions func() int) *Server {
	reg := NewRegistry()
	m := &Server{
		Reg: reg,
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deckhand_agent_sessions_total",
			Help: "Agent streams accepted; kind=reconnect when the host had a session before (since this server started)."}, []string{"kind"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deckhand_tasks_total",
			Help: "Task results stored, by task kind and outcome."}, []string{"kind", "outcome"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deckhand_rollout_step_duration_seconds",
			Help: "Rollout step durations, by task kind and status.", Buckets: DurationBuckets}, []string{"kind", "status"}),
		deployments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deckhand_deployments_total",
			Help: "Deployments that ended, by state."}, []string{"state"}),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deckhand_executions_total",
			Help: "Pipeline executions that ended, by status."}, []string{"status"}),
		pipeSteps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deckhand_pipeline_step_duration_seconds",
			Help: "Pipeline step durations, by action and status.", Buckets: DurationBuckets}, []string{"action", "status"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deckhand_drift_events_total",
			Help: "Configuration drift events received from agents, by severity."}, []string{"severity"}),
	}
	reg.MustRegister(m.sessions, m.tasks, m.steps, m.deployments, m.executions, m.pipeSteps, m.drift)
	for _, state := range []string{"online", "offline", "never"} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deckhand_agents", Help: "Declared agents by state.",
			ConstLabels: prometheus.Labels{"state": state}}, func() float64 {
			on, off, nv := agents()
			return float64(map[string]int{"online": on, "offline": off, "never": nv}[state])
		}))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deckhand_executions_running", Help: "Pipeline executions running now."},
		func() float64 { return float64(runningExecutions()) }))
	return m
}

// Session counts an accepted agent stream.
func (m *Server) Session(reconnect bool) {
	if m == nil {
		return
	}
	kind := "first"
	if reconnect {
		kind = "reconnect"
	}
	m.sessions.WithLabelValues(kind).Inc()
}

// Task counts a stored task result.
func (m *Server) Task(kind, outcome string) {
	if m != nil {
		m.tasks.WithLabelValues(kind, outcome).Inc()
	}
}

// Step records a rollout step's duration.
func (m *Server) Step(kind, status string, d time.Duration) {
	if m != nil {
		m.steps.WithLabelValues(kind, status).Observe(d.Seconds())
	}
}

// Deployment counts a deployment that ended.
func (m *Server) Deployment(state string) {
	if m != nil {
		m.deployments.WithLabelValues(state).Inc()
	}
}

// Execution counts a pipeline execution that ended.
func (m *Server) Execution(status string) {
	if m != nil {
		m.executions.WithLabelValues(status).Inc()
	}
}

// PipelineStep records a pipeline step's duration.
func (m *Server) PipelineStep(action, status string, d time.Duration) {
	if m != nil {
		m.pipeSteps.WithLabelValues(action, status).Observe(d.Seconds())
	}
}

// Drift counts drift events received.
func (m *Server) Drift(severity string, n int) {
	if m != nil {
		m.drift.WithLabelValues(severity).Add(float64(n))
	}
}

// Agent is an agent's metrics. Methods are safe on nil.
type Agent struct {
	Reg        *prometheus.Registry
	tasks      *prometheus.HistogramVec
	drift      *prometheus.CounterVec
	lastResult *prometheus.GaugeVec
	lastTime   *prometheus.GaugeVec
}

// NewAgent registers the agent's metrics; journalBytes and connected are
// read at scrape time.
func NewAgent(journalBytes func() float64, connected func() bool) *Agent {
	reg := NewRegistry()
	m := &Agent{
		Reg: reg,
		tasks: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deckhand_agent_task_duration_seconds",
			Help: "Task durations on this host, by kind and status.", Buckets: DurationBuckets}, []string{"kind", "status"}),
		drift: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deckhand_agent_drift_events_total",
			Help: "Changes to the dispatcher config tree made outside Deckhand, by severity."}, []string{"severity"}),
		lastResult: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deckhand_agent_last_deploy_success",
			Help: "1 when the last task of the kind succeeded, 0 when it failed."}, []string{"kind"}),
		lastTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "deckhand_agent_last_deploy_timestamp_seconds",
			Help: "When the last task of the kind finished (Unix time)."}, []string{"kind"}),
	}
	reg.MustRegister(m.tasks, m.drift, m.lastResult, m.lastTime,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deckhand_agent_journal_bytes", Help: "Size of the agent's journal file."}, journalBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "deckhand_agent_connected", Help: "1 while the stream to the control plane is up."}, func() float64 {
			if connected() {
				return 1
			}
			return 0
		}))
	return m
}

// deployKinds are the kinds whose last result is exported.
var deployKinds = map[string]bool{"dispatcher_deploy": true, "dispatcher_restore": true, "package_install": true, "build": true}

// Task records a finished task.
func (m *Agent) Task(kind, status string, d time.Duration, at time.Time) {
	if m == nil {
		return
	}
	m.tasks.WithLabelValues(kind, status).Observe(d.Seconds())
	if deployKinds[kind] {
		v := 0.0
		if status == "succeeded" {
			v = 1
		}
		m.lastResult.WithLabelValues(kind).Set(v)
		m.lastTime.WithLabelValues(kind).Set(float64(at.Unix()))
	}
}

// Drift counts drift events.
func (m *Agent) Drift(severity string) {
	if m != nil {
		m.drift.WithLabelValues(severity).Inc()
	}
}
