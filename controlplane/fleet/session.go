package fleet

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// session is one agent's live stream. Messages to the agent go through a
// queue drained by a goroutine that exists only while there is something to
// send, so ten thousand idle sessions cost no extra goroutines and a slow
// agent never blocks the caller that assigned it work.
type session struct {
	f           *Fleet
	host        string
	remote      string
	version     string
	bootID      string
	connectedAt time.Time
	stream      pb.AgentService_ConnectServer
	lastHB      atomic.Int64 // unix nanos

	mu       sync.Mutex
	queue    []*pb.ServerMessage // mu
	draining bool                // mu: a drain goroutine is running
	closed   bool                // mu
}

func (s *session) lastHeartbeat() time.Time { return time.Unix(0, s.lastHB.Load()) }

func (s *session) enqueue(msgs ...*pb.ServerMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.queue = append(s.queue, msgs...)
	if !s.draining {
		s.draining = true
		go s.drain()
	}
}

// drain sends queued messages in order; it is the only caller of
// stream.Send while it runs.
func (s *session) drain() {
	for {
		s.mu.Lock()
		if s.closed || len(s.queue) == 0 {
			s.draining = false
			s.mu.Unlock()
			return
		}
		msg := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		if err := s.stream.Send(msg); err != nil {
			s.f.log.Debug("send to agent failed; dropping the session", "host", s.host, "error", err)
			s.f.drop(s, "send failed")
			return
		}
	}
}

// close stops sending and cuts the connection so the handler's Recv
// returns. Tasks that were queued are persisted and go out again on the
// next session.
func (s *session) close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
	if !already && s.f.cfg.Tracker != nil {
		s.f.cfg.Tracker.CloseConn(s.remote)
	}
}

// Connect implements AgentService.Connect: one call per agent session.
func (f *Fleet) Connect(stream pb.AgentService_ConnectServer) error {
	ctx := stream.Context()
	remote := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	// Bound the wait for Hello without a goroutine: cut the connection if
	// it does not arrive in time.
	helloTimer := time.AfterFunc(f.cfg.HelloTimeout, func() {
		if f.cfg.Tracker != nil {
			f.cfg.Tracker.CloseConn(remote)
		}
	})
	first, err := stream.Recv()
	helloTimer.Stop()
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "no hello: %v", err)
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message on the stream must be Hello")
	}
	host := hello.GetHostId()
	if f.cfg.Authenticate != nil {
		certHost, err := f.cfg.Authenticate(ctx)
		if err != nil {
			f.log.Warn("agent refused: not authenticated", "remote", remote, "error", err)
			return status.Errorf(codes.Unauthenticated, "%v", err)
		}
		if host != "" && host != certHost {
			f.log.Error("agent refused: Hello claims another host than its certificate", "remote", remote, "certificate_host", certHost, "claimed_host", host)
			return status.Errorf(codes.PermissionDenied, "this agent's certificate is for host %q but its Hello claims %q", certHost, host)
		}
		host = certHost
	}
	if host == "" {
		return status.Error(codes.InvalidArgument, "Hello has no host_id")
	}
	if _, ok := f.cfg.Hosts.Lookup(host); !ok {
		f.log.Warn("agent refused: host is not declared", "host", host, "remote", remote)
		return status.Errorf(codes.PermissionDenied, "host %q is not declared in any environment of the server config; add it there or fix the agent's host_id", host)
	}

	now := f.cfg.Now()
	s := &session{f: f, host: host, remote: remote, version: hello.GetVersion(), bootID: hello.GetBootId(), connectedAt: now, stream: stream}
	s.lastHB.Store(now.UnixNano())
	f.mu.Lock()
	old := f.sessions[host]
	f.sessions[host] = s
	f.mu.Unlock()
	if old != nil {
		f.log.Info("agent reconnected; closing its previous stream", "host", host, "old_remote", old.remote)
		old.close()
	}
	defer f.endSession(s)

	f.recordAgent(s, true)
	f.log.Info("agent connected", "host", host, "version", s.version, "remote", remote, "held", len(hello.GetHeld()))
	f.events.publish(Event{Kind: EventOnline, Host: host, At: now})

	s.enqueue(&pb.ServerMessage{Msg: &pb.ServerMessage_Welcome{Welcome: &pb.Welcome{
		HeartbeatInterval: durationpb.New(f.cfg.HeartbeatInterval),
		Epoch:             f.cfg.Epoch,
		ServerVersion:     f.cfg.ServerVersion,
		HostId:            host,
	}}})
	if err := f.resendOpen(s, hello.GetHeld()); err != nil {
		f.log.Error("could not list the agent's open tasks", "host", host, "error", err)
		return status.Errorf(codes.Unavailable, "server store error: %v", err)
	}

	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			f.log.Debug("agent stream ended", "host", host, "error", err)
			return nil
		}
		switch m := msg.Msg.(type) {
		case *pb.AgentMessage_Heartbeat:
			s.lastHB.Store(f.cfg.Now().UnixNano())
		case *pb.AgentMessage_Progress:
			f.handleProgress(s, m.Progress)
		case *pb.AgentMessage_Result:
			f.handleResult(s, m.Result)
		case *pb.AgentMessage_Renew:
			f.handleRenew(s, m.Renew)
		case *pb.AgentMessage_Drift:
			f.handleDrift(s, m.Drift)
		case *pb.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "Hello sent twice on one stream")
		default:
			f.log.Warn("unknown message from agent; ignoring (newer agent?)", "host", host, "type", fmt.Sprintf("%T", msg.Msg))
		}
	}
}

// resendOpen sends the host's persisted tasks that have no result and that
// the agent did not say it holds: sent before a server restart or a dropped
// stream, or created while the agent was away.
func (f *Fleet) resendOpen(s *session, held []*pb.HeldTask) error {
	open, err := f.cfg.Store.OpenTasks(s.host)
	if err != nil {
		return err
	}
	has := make(map[string]bool, len(held))
	for _, h := range held {
		has[h.GetTaskId()] = true
	}
	for _, t := range open {
		if has[t.ID] {
			continue
		}
		f.log.Debug("sending open task", "host", s.host, "task", t.ID)
		if err := f.sendTask(s, t); err != nil {
			f.log.Error("cannot send open task", "task", t.ID, "error", err)
		}
	}
	return nil
}

func (f *Fleet) endSession(s *session) {
	f.mu.Lock()
	current := f.sessions[s.host] == s
	if current {
		delete(f.sessions, s.host)
	}
	f.mu.Unlock()
	s.close()
	f.recordAgent(s, false)
	if current {
		f.log.Info("agent disconnected", "host", s.host)
		f.events.publish(Event{Kind: EventOffline, Host: s.host, At: f.cfg.Now(), Message: "disconnected"})
	}
}

// recordAgent persists what we know of the agent at connect and
// disconnect time (not at every heartbeat: that would be a write per agent
// per interval).
func (f *Fleet) recordAgent(s *session, connecting bool) {
	rec, err := f.cfg.Store.Agent(s.host)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		f.log.Error("read agent record", "host", s.host, "error", err)
		return
	}
	if rec.FirstSeen.IsZero() {
		rec.FirstSeen = s.connectedAt
	}
	rec.HostID, rec.Version, rec.BootID, rec.Address = s.host, s.version, s.bootID, s.remote
	rec.LastHeartbeat = s.lastHeartbeat()
	if connecting {
		f.cfg.Metrics.Session(rec.Sessions > 0)
		rec.ConnectedAt = s.connectedAt
		rec.Sessions++
	} else {
		rec.DisconnectedAt = f.cfg.Now()
	}
	if err := f.cfg.Store.PutAgent(rec); err != nil {
		f.log.Error("persist agent record", "host", s.host, "error", err)
	}
}

func (f *Fleet) handleProgress(s *session, p *pb.TaskProgress) {
	at := f.cfg.Now()
	if p.At != nil {
		at = p.At.AsTime()
	}
	pr := Progress{At: at, Mark: p.GetMark(), Line: p.GetLogLine()}
	f.logs.add(p.GetTaskId(), pr)
	f.events.publish(Event{Kind: EventProgress, Host: s.host, TaskID: p.GetTaskId(), At: at, Mark: pr.Mark, Message: pr.Line})
}

// handleResult stores a result, then acks it: the ack is the agent's
// permission to forget, so it is sent only once the result is durable.
func (f *Fleet) handleResult(s *session, r *pb.TaskResult) {
	res, err := task.ResultFromProto(r)
	if err != nil {
		f.log.Warn("unreadable task result; ignoring", "host", s.host, "error", err)
		return
	}
	raw, err := proto.Marshal(r)
	if err != nil {
		f.log.Error("re-encode task result", "task", res.TaskID, "error", err)
		return
	}
	t, first, err := f.cfg.Store.FinishTask(res.TaskID, s.host, res.Status.String(), raw, f.cfg.Now().UTC())
	switch {
	case errors.Is(err, store.ErrNotFound):
		// The agent holds a result for a task this server never knew (its
		// data dir was replaced). Ack so the agent stops resending it.
		f.log.Warn("result for a task this server does not know; acking and dropping it", "host", s.host, "task", res.TaskID)
	case errors.Is(err, store.ErrWrongHost):
		f.log.Error("agent reported a result for another host's task; refusing it", "host", s.host, "task", res.TaskID)
		return
	case err != nil:
		// Not durable: no ack, the agent will send it again next session.
		f.log.Error("cannot store task result; not acking", "host", s.host, "task", res.TaskID, "error", err)
		return
	case first:
		f.log.Debug("task finished", "host", s.host, "task", t.ID, "status", res.Status, "error", res.Error)
		f.cfg.Metrics.Task(t.Kind, res.Status.String())
		// FinishTask does not decode the task record on its fast path; a
		// dispatcher deploy or restore answers with a DispatcherOutput.
		if _, isDispatcher := res.Output.(*task.DispatcherOutput); isDispatcher && res.Status == task.StatusSucceeded {
			// The deployment replaced the tree: earlier hand edits are gone.
			if n, err := f.cfg.Store.ResolveDrift(s.host, t.ID); err != nil {
				f.log.Error("cannot mark drift resolved", "host", s.host, "error", err)
			} else if n > 0 {
				f.log.Info("drift replaced by a deployment", "host", s.host, "task", t.ID, "changes", n)
			}
		}
		f.logs.finish(t.ID)
		f.notify(t.ID)
		f.events.publish(Event{Kind: EventResult, Host: s.host, TaskID: t.ID, At: f.cfg.Now(), Result: res})
	default:
		f.log.Debug("duplicate task result (already stored); acking again", "host", s.host, "task", t.ID)
	}
	s.enqueue(&pb.ServerMessage{Msg: &pb.ServerMessage_Ack{Ack: &pb.AckResult{TaskId: res.TaskID}}})
}

// handleRenew issues a new certificate for the session's host: the
// identity is the one this stream authenticated, whatever the CSR says.
func (f *Fleet) handleRenew(s *session, r *pb.RenewRequest) {
	resp := &pb.RenewResponse{}
	if f.cfg.Renew == nil {
		resp.Error = "this server does not issue certificates (--dev-insecure)"
	} else if cert, err := f.cfg.Renew(s.host, r.GetCsr()); err != nil {
		f.log.Warn("certificate renewal refused", "host", s.host, "error", err)
		resp.Error = err.Error()
	} else {
		resp.Certificate = cert
	}
	s.enqueue(&pb.ServerMessage{Msg: &pb.ServerMessage_Renewed{Renewed: resp}})
}

// handleDrift stores a drift report and acks it; a report that cannot be
// stored is not acked, so the agent sends it again.
func (f *Fleet) handleDrift(s *session, r *pb.DriftReport) {
	now := f.cfg.Now().UTC()
	recs := make([]store.DriftRecord, 0, len(r.GetEvents()))
	for _, e := range r.GetEvents() {
		rec := store.DriftRecord{Path: e.GetPath(), Kind: e.GetKind(), From: e.GetFrom(), Before: e.GetBeforeSha256(), After: e.GetAfterSha256(), Severity: e.GetSeverity(), ReceivedAt: now}
		if e.GetAt() != nil {
			rec.At = e.GetAt().AsTime()
		}
		recs = append(recs, rec)
		level := f.log.Info
		if rec.Severity == "high" {
			level = f.log.Warn
		}
		level("configuration drift on a host", "host", s.host, "path", rec.Path, "kind", rec.Kind, "severity", rec.Severity)
		f.cfg.Metrics.Drift(rec.Severity, 1)
	}
	if err := f.cfg.Store.AddDrift(s.host, r.GetId(), recs); err != nil {
		f.log.Error("cannot store a drift report; not acking", "host", s.host, "error", err)
		return
	}
	f.events.publish(Event{Kind: EventDrift, Host: s.host, At: now, Message: fmt.Sprintf("%d change(s)", len(recs))})
	s.enqueue(&pb.ServerMessage{Msg: &pb.ServerMessage_DriftAck{DriftAck: &pb.DriftAck{Id: r.GetId()}}})
}
