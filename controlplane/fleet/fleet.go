// Package fleet owns the connected agents: one session per host over
// AgentService.Connect, who is online, and the exactly-once path of a task
// from the control plane's store to an agent and of its result back. Later
// layers (rollouts, pipelines) use Assign, Await and Run and never touch the
// stream.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/metrics"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"
)

// Directory says which hosts are declared. The server config implements it.
type Directory interface {
	Lookup(id string) (config.HostInfo, bool)
	Hosts() []config.HostInfo
}

// Config wires a Fleet.
type Config struct {
	Store *store.Store
	Hosts Directory
	// Epoch is this server start's epoch (store.NextEpoch).
	Epoch             uint64
	HeartbeatInterval time.Duration
	// MissedHeartbeats is how many silent intervals make an agent offline;
	// default 3.
	MissedHeartbeats int
	// HelloTimeout bounds how long a new stream may stay silent before its
	// Hello; default 10 s.
	HelloTimeout time.Duration
	// Authenticate returns the host id proven by the stream's credentials
	// (the client certificate). Nil trusts the id in Hello — only for
	// --dev-insecure and tests.
	Authenticate func(ctx context.Context) (string, error)
	// Renew issues a fresh certificate for a session's host from a CSR;
	// nil refuses renewals (--dev-insecure).
	Renew func(host string, csr []byte) ([]byte, error)
	// Blobs serves FetchArtifact; nil refuses downloads.
	Blobs *artifacts.Blobs
	// Sets stores what builders upload (UploadArtifact); nil refuses uploads.
	Sets *artifacts.Sets
	// Tracker, when set, lets the fleet cut a session's connection.
	Tracker       *ConnTracker
	Logger        hclog.Logger
	ServerVersion string
	Now           func() time.Time
	// Metrics records sessions, results and drift (nil: none).
	Metrics *metrics.Server
	// Tick is called on every supervision tick (the systemd watchdog's
	// proof that the server's main loop is alive).
	Tick func()
}

// Fleet tracks agent sessions and moves tasks to them.
type Fleet struct {
	pb.UnimplementedAgentServiceServer

	cfg Config
	log hclog.Logger

	mu       sync.Mutex
	sessions map[string]*session // current session per host; mu

	wmu     sync.Mutex
	waiters map[string]chan struct{} // closed when the task's first result is stored; wmu

	events *bus
	logs   *progressLog
}

// New builds a Fleet. Call Supervise to start heartbeat supervision.
func New(cfg Config) (*Fleet, error) {
	if cfg.Store == nil || cfg.Hosts == nil {
		return nil, errors.New("fleet: Store and Hosts are required")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = config.DefaultHeartbeatInterval
	}
	if cfg.MissedHeartbeats <= 0 {
		cfg.MissedHeartbeats = 3
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Fleet{
		cfg:      cfg,
		log:      cfg.Logger.Named("fleet"),
		sessions: map[string]*session{},
		waiters:  map[string]chan struct{}{},
		events:   newBus(),
		logs:     newProgressLog(),
	}, nil
}

// Epoch is the epoch this fleet stamps on assignments.
func (f *Fleet) Epoch() uint64 { return f.cfg.Epoch }

// Supervise watches heartbeats until ctx ends: an agent silent for
// MissedHeartbeats intervals is marked offline and its connection cut, so a
// half-open stream does not linger.
func (f *Fleet) Supervise(ctx context.Context) error {
	t := time.NewTicker(f.cfg.HeartbeatInterval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			f.sweep()
			if f.cfg.Tick != nil {
				f.cfg.Tick()
			}
		}
	}
}

func (f *Fleet) offlineAfter() time.Duration {
	return time.Duration(f.cfg.MissedHeartbeats) * f.cfg.HeartbeatInterval
}

func (f *Fleet) sweep() {
	now := f.cfg.Now()
	f.mu.Lock()
	var stale []*session
	for _, s := range f.sessions {
		if now.Sub(s.lastHeartbeat()) > f.offlineAfter() {
			stale = append(stale, s)
		}
	}
	f.mu.Unlock()
	for _, s := range stale {
		f.log.Warn("agent missed heartbeats; marking it offline and closing its stream",
			"host", s.host, "last_heartbeat", s.lastHeartbeat().Format(time.RFC3339), "missed", f.cfg.MissedHeartbeats)
		f.drop(s, "missed heartbeats")
	}
}

// drop removes s as its host's session (if still current) and cuts its
// connection.
func (f *Fleet) drop(s *session, why string) {
	f.mu.Lock()
	current := f.sessions[s.host] == s
	if current {
		delete(f.sessions, s.host)
	}
	f.mu.Unlock()
	s.close()
	if current {
		f.events.publish(Event{Kind: EventOffline, Host: s.host, At: f.cfg.Now(), Message: why})
	}
}

// Disconnect cuts host's current stream, if any (revocation, tests).
func (f *Fleet) Disconnect(host, why string) bool {
	f.mu.Lock()
	s := f.sessions[host]
	f.mu.Unlock()
	if s == nil {
		return false
	}
	f.drop(s, why)
	return true
}

// AgentStatus is one declared host and what the fleet knows of its agent.
type AgentStatus struct {
	config.HostInfo
	// State is "online", "offline" or "never" (declared, never connected).
	State         string
	Online        bool
	Version       string
	Address       string
	ConnectedAt   time.Time
	LastHeartbeat time.Time
}

// Agents lists every declared host in declaration order.
func (f *Fleet) Agents() ([]AgentStatus, error) {
	recs, err := f.cfg.Store.Agents()
	if err != nil {
		return nil, err
	}
	byHost := make(map[string]store.Agent, len(recs))
	for _, r := range recs {
		byHost[r.HostID] = r
	}
	now := f.cfg.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []AgentStatus
	for _, h := range f.cfg.Hosts.Hosts() {
		st := AgentStatus{HostInfo: h, State: "never"}
		if r, ok := byHost[h.ID]; ok {
			st.State = "offline"
			st.Version, st.Address = r.Version, r.Address
			st.ConnectedAt, st.LastHeartbeat = r.ConnectedAt, r.LastHeartbeat
		}
		if s := f.sessions[h.ID]; s != nil {
			st.Version, st.Address, st.ConnectedAt = s.version, s.remote, s.connectedAt
			st.LastHeartbeat = s.lastHeartbeat()
			if now.Sub(st.LastHeartbeat) <= f.offlineAfter() {
				st.State, st.Online = "online", true
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// Online reports whether host has a live session.
func (f *Fleet) Online(host string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.sessions[host]
	return s != nil && f.cfg.Now().Sub(s.lastHeartbeat()) <= f.offlineAfter()
}

// ErrUnknownHost is returned when a task names a host that is not declared.
var ErrUnknownHost = errors.New("host is not declared in the server config")

// Assign persists each task (idempotently: a task id that exists keeps its
// stored state) and sends the newly created ones to their hosts' agents if
// they are connected; agents that are not get them when they connect.
// It returns once every task is durable.
func (f *Fleet) Assign(ctx context.Context, specs ...task.Spec) error {
	return f.AssignWith(ctx, nil, specs...)
}

// AssignWith is Assign with the caller's own writes committed in the same
// transaction as the tasks (see store.CreateTasksWith).
func (f *Fleet) AssignWith(ctx context.Context, extra func(store.Tx) error, specs ...task.Spec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	recs := make([]store.Task, 0, len(specs))
	now := f.cfg.Now().UTC()
	for _, sp := range specs {
		if _, ok := f.cfg.Hosts.Lookup(sp.HostID); !ok {
			return fmt.Errorf("assign %s: %w: %q", sp.ID, ErrUnknownHost, sp.HostID)
		}
		if sp.CreatedAt.IsZero() {
			sp.CreatedAt = now
		}
		raw, err := task.MarshalSpec(sp)
		if err != nil {
			return fmt.Errorf("assign %s: %w", sp.ID, err)
		}
		recs = append(recs, store.Task{
			ID: sp.ID, HostID: sp.HostID, ExecutionID: sp.ExecutionID, Step: sp.Step,
			Kind: sp.Kind.Name(), Epoch: f.cfg.Epoch, CreatedAt: sp.CreatedAt, Spec: raw,
		})
	}
	stored, created, err := f.cfg.Store.CreateTasksWith(recs, extra)
	if err != nil {
		return fmt.Errorf("persist tasks: %w", err)
	}
	for i, t := range stored {
		if !created[i] {
			continue
		}
		f.logs.open(t.ID)
		f.mu.Lock()
		s := f.sessions[t.HostID]
		f.mu.Unlock()
		if s == nil {
			f.log.Debug("task persisted; host offline, will send on connect", "task", t.ID, "host", t.HostID)
			continue
		}
		if err := f.sendTask(s, t); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fleet) sendTask(s *session, t store.Task) error {
	var wire pb.Task
	if err := proto.Unmarshal(t.Spec, &wire); err != nil {
		return fmt.Errorf("task %s: stored spec is unreadable: %w", t.ID, err)
	}
	s.enqueue(&pb.ServerMessage{Msg: &pb.ServerMessage_Assign{Assign: &pb.Assign{Task: &wire, Epoch: f.cfg.Epoch}}})
	return nil
}

// Await blocks until the task has a result or ctx ends. A task finished
// before the call (even before a server restart) returns at once.
func (f *Fleet) Await(ctx context.Context, id string) (*task.Result, error) {
	for {
		ch := f.waiter(id)
		t, err := f.cfg.Store.Task(id)
		if err != nil {
			return nil, fmt.Errorf("await %s: %w", id, err)
		}
		if t.Done {
			return task.UnmarshalResult(t.Result)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// Run assigns one task and awaits its result.
func (f *Fleet) Run(ctx context.Context, spec task.Spec) (*task.Result, error) {
	if err := f.Assign(ctx, spec); err != nil {
		return nil, err
	}
	return f.Await(ctx, spec.ID)
}

// Cancel asks the agent running the task to stop it. The task still ends
// with a result (cancelled, or whatever it reached first).
func (f *Fleet) Cancel(id, reason string) error {
	t, err := f.cfg.Store.Task(id)
	if err != nil {
		return err
	}
	if t.Done {
		return nil
	}
	f.mu.Lock()
	s := f.sessions[t.HostID]
	f.mu.Unlock()
	if s == nil {
		return fmt.Errorf("cancel %s: host %s is offline", id, t.HostID)
	}
	s.enqueue(&pb.ServerMessage{Msg: &pb.ServerMessage_Cancel{Cancel: &pb.Cancel{TaskId: id, Reason: reason}}})
	return nil
}

// Progress returns the progress lines received for a task so far (kept in
// memory for open and recently finished tasks).
func (f *Fleet) Progress(id string) []Progress { return f.logs.get(id) }

// Subscribe returns a channel of fleet events and a function to stop. A
// subscriber that does not keep up loses events rather than slowing agents.
func (f *Fleet) Subscribe(buffer int) (<-chan Event, func()) { return f.events.subscribe(buffer) }

func (f *Fleet) waiter(id string) chan struct{} {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	ch := f.waiters[id]
	if ch == nil {
		ch = make(chan struct{})
		f.waiters[id] = ch
	}
	return ch
}

func (f *Fleet) notify(id string) {
	f.wmu.Lock()
	ch := f.waiters[id]
	delete(f.waiters, id)
	f.wmu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// Connected is the number of live sessions.
func (f *Fleet) Connected() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sessions)
}
