// Package session keeps the agent's one stream to the control plane: dial,
// Hello, heartbeats, assignments in, progress and results out, and
// reconnecting with capped, fully jittered exponential backoff when the
// stream goes away — with the first attempt after losing an established
// session staggered so a server restart does not bring every agent back in
// the same instant.
package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/backoff"
	"github.com/deckhand-dev/deckhand/pkg/failpoint"
	"github.com/deckhand-dev/deckhand/pkg/task"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ClientKeepalive is the agent's gRPC keepalive. It must stay inside the
// server's enforcement policy (server.KeepaliveEnforcement: MinTime 10 s,
// pings allowed without streams) or the server closes the connection with
// "too_many_pings". Pings start after 20 s without any read from the server
// and a missing answer for 10 s closes the transport, so a half-open stream
// is noticed in about 30 s even if the server's heartbeats go silent.
var ClientKeepalive = keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// Config wires a Client.
type Config struct {
	Server       string
	HostID       string
	Version      string
	BootID       string
	Capabilities []string
	// DialOptions carry the transport credentials.
	DialOptions []grpc.DialOption
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	Stagger     time.Duration
	// WelcomeTimeout bounds the wait for the server's answer to Hello.
	WelcomeTimeout time.Duration
	Logger         hclog.Logger
	Journal        *journal.Journal
	Worker         *worker.Worker
	// OnConnected is called after each Welcome (tests, systemd status).
	OnConnected func(welcome *pb.Welcome)
	// OnDisconnected is called when an established session ends.
	OnDisconnected func(err error)
	// Alive is called at least every few seconds while the session loop is
	// healthy (heartbeat ticks, backoff waits): the systemd watchdog's
	// proof of life. A stuck loop stops calling it.
	Alive func()
	// Credentials, when set, is called before each dial and its option
	// added (mutual TLS with the current certificate).
	Credentials func() (grpc.DialOption, error)
	// Renewer, when set, renews the client certificate over the stream
	// before it expires.
	Renewer Renewer
	// Drift, when set, supplies drift reports to send (and forget once
	// acked).
	Drift DriftSource
	// Hooks let tests simulate a crash between two durable steps.
	Hooks Hooks
	// FatalCodes lists gRPC codes that end Run instead of retrying
	// (a refused identity will not fix itself). Default:
	// PermissionDenied, Unauthenticated.
	FatalCodes []codes.Code
}

// Renewer is the agent's certificate, seen from the session.
type Renewer interface {
	// RenewAt is when the current certificate should be replaced.
	RenewAt() time.Time
	// NewCSR starts a renewal with a fresh key.
	NewCSR() ([]byte, error)
	// Install stores the certificate the server issued for that key.
	Install(certDER []byte) error
}

// DriftSource is the agent's journaled drift reports.
type DriftSource interface {
	// Pending lists reports not acked yet.
	Pending() ([]*pb.DriftReport, error)
	// Ack forgets a report the server stored.
	Ack(id string)
	// Changed is signalled when a new report is journaled.
	Changed() <-chan struct{}
}

// Hooks are failure injection points for tests; nil fields do nothing.
type Hooks struct {
	// DropResult, returning true, drops a result instead of sending it (as
	// if the agent died right after journaling it).
	DropResult func(taskID string) bool
	// DropAck, returning true, ignores an ack (as if the agent died before
	// journaling it).
	DropAck func(taskID string) bool
}

// Client is one agent's connection manager.
type Client struct {
	cfg       Config
	log       hclog.Logger
	bo        *backoff.Backoff
	connected atomic.Bool
	sessions  atomic.Int64
	connMu    sync.Mutex
	conn      *grpc.ClientConn // connMu; the current session's connection
	connCh    chan struct{}    // connMu; closed when conn becomes non-nil
}

// New builds a Client.
func New(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.WelcomeTimeout <= 0 {
		cfg.WelcomeTimeout = 15 * time.Second
	}
	if cfg.FatalCodes == nil {
		cfg.FatalCodes = []codes.Code{codes.PermissionDenied, codes.Unauthenticated}
	}
	return &Client{cfg: cfg, log: cfg.Logger.Named("session"), bo: backoff.New(cfg.BaseBackoff, cfg.MaxBackoff), connCh: make(chan struct{})}
}

// Connected reports whether a session is established now.
func (c *Client) Connected() bool { return c.connected.Load() }

// Sessions counts sessions established since start.
func (c *Client) Sessions() int64 { return c.sessions.Load() }

// Conn returns the current session's gRPC connection, waiting for one
// (bounded by ctx). Handlers use it for artifact downloads.
func (c *Client) Conn(ctx context.Context) (*grpc.ClientConn, error) {
	for {
		c.connMu.Lock()
		conn, ch := c.conn, c.connCh
		c.connMu.Unlock()
		if conn != nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no connection to the server: %w", ctx.Err())
		case <-ch:
		}
	}
}

func (c *Client) setConn(conn *grpc.ClientConn) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	c.conn = conn
	if conn != nil {
		close(c.connCh)
	} else {
		c.connCh = make(chan struct{})
	}
}

// FatalError is returned by Run when the server refused this agent in a
// way retrying cannot fix.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Run connects and keeps reconnecting until ctx ends (nil) or the server
// refuses the agent for good (*FatalError).
func (c *Client) Run(ctx context.Context) error {
	for {
		welcomed, err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if st, ok := status.FromError(err); ok && err != nil {
			for _, code := range c.cfg.FatalCodes {
				if st.Code() == code {
					c.log.Error("the server refused this agent", "code", st.Code(), "reason", st.Message())
					return &FatalError{Err: fmt.Errorf("server refused the agent: %s", st.Message())}
				}
			}
		}
		var wait time.Duration
		if welcomed && c.cfg.OnDisconnected != nil {
			c.cfg.OnDisconnected(err)
		}
		if welcomed {
			// The server was there and went away: it is probably
			// restarting, and every agent noticed at the same moment.
			c.bo.Reset()
			wait = backoff.Jitter(c.cfg.Stagger)
			c.log.Warn("lost the server; reconnecting", "error", err, "in", wait.Round(time.Millisecond))
		} else {
			wait = c.bo.Next()
			c.log.Warn("cannot reach the server; retrying", "error", err, "in", wait.Round(time.Millisecond), "attempt", c.bo.Attempts())
		}
		if c.sleepAlive(ctx, wait) != nil {
			return nil
		}
	}
}

// alive reports liveness to the watchdog hook.
func (c *Client) alive() {
	if c.cfg.Alive != nil {
		c.cfg.Alive()
	}
}

// sleepAlive waits d in slices of at most 5 s, reporting liveness between
// them, so a long backoff is not mistaken for a stuck loop.
func (c *Client) sleepAlive(ctx context.Context, d time.Duration) error {
	for d > 0 {
		step := min(d, 5*time.Second)
		if err := backoff.Sleep(ctx, step, nil); err != nil {
			return err
		}
		c.alive()
		d -= step
	}
	return ctx.Err()
}

// session runs one stream from dial to its end; welcomed says whether the
// server accepted it.
func (c *Client) session(ctx context.Context) (welcomed bool, err error) {
	opts := append([]grpc.DialOption{grpc.WithKeepaliveParams(ClientKeepalive)}, artifacts.DialOptions()...)
	opts = append(opts, c.cfg.DialOptions...)
	if c.cfg.Credentials != nil {
		cred, err := c.cfg.Credentials()
		if err != nil {
			return false, err
		}
		opts = append(opts, cred)
	}
	conn, err := grpc.NewClient(c.cfg.Server, opts...)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", c.cfg.Server, err)
	}
	defer conn.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return false, err
	}
	held, err := c.cfg.Worker.Held()
	if err != nil {
		return false, fmt.Errorf("read journal: %w", err)
	}
	hello := &pb.Hello{HostId: c.cfg.HostID, Version: c.cfg.Version, Capabilities: c.cfg.Capabilities, BootId: c.cfg.BootID}
	for _, e := range held {
		st := pb.HeldState_HELD_STATE_RUNNING
		if e.State == journal.Finished {
			st = pb.HeldState_HELD_STATE_FINISHED
		}
		hello.Held = append(hello.Held, &pb.HeldTask{TaskId: e.ID, State: st})
	}
	if err := stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: hello}}); err != nil {
		return false, recvErr(stream, err)
	}
	timer := time.AfterFunc(c.cfg.WelcomeTimeout, cancel)
	first, err := stream.Recv()
	timer.Stop()
	if err != nil {
		if sctx.Err() != nil && ctx.Err() == nil {
			return false, fmt.Errorf("no Welcome within %s", c.cfg.WelcomeTimeout)
		}
		return false, err
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return false, errors.New("protocol error: the server's first message is not Welcome")
	}
	if prev, err := c.cfg.Journal.ObserveEpoch(welcome.Epoch); err != nil {
		return false, fmt.Errorf("journal epoch: %w", err)
	} else if welcome.Epoch < prev {
		c.log.Warn("server epoch went backwards: was its data dir restored from a backup?", "epoch", welcome.Epoch, "seen", prev)
	}
	interval := welcome.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 10 * time.Second
	}
	c.log.Info("connected", "server", c.cfg.Server, "epoch", welcome.Epoch, "server_version", welcome.ServerVersion, "heartbeat", interval, "held", len(held))
	c.connected.Store(true)
	c.sessions.Add(1)
	c.setConn(conn)
	defer func() {
		c.connected.Store(false)
		c.setConn(nil)
	}()

	out := &sender{stream: stream, log: c.log, dropResult: c.cfg.Hooks.DropResult}
	c.cfg.Worker.SetSink(out)
	defer c.cfg.Worker.SetSink(nil)
	if c.cfg.OnConnected != nil {
		c.cfg.OnConnected(welcome)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.heartbeat(sctx, out, interval)
	}()
	if c.cfg.Drift != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.sendDrift(sctx, out)
		}()
	}
	renewed := make(chan *pb.RenewResponse, 1)
	if c.cfg.Renewer != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.renew(sctx, out, renewed)
		}()
	}
	defer wg.Wait()
	defer cancel()

	for {
		msg, err := stream.Recv()
		if err != nil {
			return true, err
		}
		switch m := msg.Msg.(type) {
		case *pb.ServerMessage_Assign:
			if m.Assign.Epoch != welcome.Epoch {
				c.log.Warn("ignoring a stale assignment from another server epoch", "task", m.Assign.GetTask().GetId(), "epoch", m.Assign.Epoch, "session_epoch", welcome.Epoch)
				continue
			}
			c.submit(m.Assign)
		case *pb.ServerMessage_Cancel:
			c.cfg.Worker.Cancel(m.Cancel.TaskId, m.Cancel.Reason)
		case *pb.ServerMessage_Ack:
			if c.cfg.Hooks.DropAck != nil && c.cfg.Hooks.DropAck(m.Ack.TaskId) {
				continue
			}
			c.cfg.Worker.Ack(m.Ack.TaskId)
		case *pb.ServerMessage_DriftAck:
			if c.cfg.Drift != nil {
				c.cfg.Drift.Ack(m.DriftAck.GetId())
			}
		case *pb.ServerMessage_Renewed:
			select {
			case renewed <- m.Renewed:
			default:
				c.log.Warn("unexpected certificate renewal answer; ignoring")
			}
		case *pb.ServerMessage_Welcome:
			return true, errors.New("protocol error: Welcome sent twice")
		default:
			c.log.Warn("unknown message from the server; ignoring (newer server?)", "type", fmt.Sprintf("%T", msg.Msg))
		}
	}
}

func (c *Client) submit(a *pb.Assign) {
	raw, err := proto.Marshal(a.GetTask())
	if err != nil {
		c.log.Error("cannot re-encode an assignment", "error", err)
		return
	}
	spec, derr := task.SpecFromProto(a.GetTask())
	if spec.ID == "" {
		c.log.Error("assignment without a task id; ignoring", "error", derr)
		return
	}
	c.cfg.Worker.Submit(spec, raw, a.Epoch, derr)
}

// heartbeat sends one heartbeat per interval; the first after a connect
// waits a random part of the interval so reconnecting agents spread out.
func (c *Client) heartbeat(ctx context.Context, out *sender, interval time.Duration) {
	if backoff.Sleep(ctx, backoff.Jitter(interval), nil) != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		failpoint.Hit("session/heartbeat")
		c.alive()
		out.send(&pb.AgentMessage{Msg: &pb.AgentMessage_Heartbeat{Heartbeat: &pb.Heartbeat{
			SentAt: timestamppb.Now(), Running: uint32(c.cfg.Worker.Running()),
		}}})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sendDrift sends every pending drift report now and again whenever a new
// one is journaled; reports stay journaled until the server acks them, so
// a lost stream only delays them.
func (c *Client) sendDrift(ctx context.Context, out *sender) {
	sent := map[string]bool{}
	for {
		reports, err := c.cfg.Drift.Pending()
		if err != nil {
			c.log.Error("cannot read pending drift reports", "error", err)
		}
		for _, r := range reports {
			if sent[r.Id] {
				continue
			}
			sent[r.Id] = true
			out.send(&pb.AgentMessage{Msg: &pb.AgentMessage_Drift{Drift: r}})
		}
		select {
		case <-ctx.Done():
			return
		case <-c.cfg.Drift.Changed():
		}
	}
}

// renew replaces the client certificate at its RenewAt over this stream;
// the stream itself is unaffected, new connections use the new
// certificate. A failed attempt is retried with backoff (1 s to 1 min)
// while the old certificate is still valid.
func (c *Client) renew(ctx context.Context, out *sender, answers <-chan *pb.RenewResponse) {
	bo := backoff.New(time.Second, time.Minute)
	for {
		wait := time.Until(c.cfg.Renewer.RenewAt())
		if backoff.Sleep(ctx, wait, nil) != nil {
			return
		}
		err := c.renewOnce(ctx, out, answers)
		if err == nil {
			bo.Reset()
			c.log.Info("renewed the agent certificate", "next_renewal", c.cfg.Renewer.RenewAt().Format(time.RFC3339))
			continue
		}
		if ctx.Err() != nil {
			return
		}
		retry := max(bo.Next(), 500*time.Millisecond)
		c.log.Error("certificate renewal failed; retrying", "error", err, "in", retry)
		if backoff.Sleep(ctx, retry, nil) != nil {
			return
		}
	}
}

func (c *Client) renewOnce(ctx context.Context, out *sender, answers <-chan *pb.RenewResponse) error {
	csr, err := c.cfg.Renewer.NewCSR()
	if err != nil {
		return err
	}
	out.send(&pb.AgentMessage{Msg: &pb.AgentMessage_Renew{Renew: &pb.RenewRequest{Csr: csr}}})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("no answer to the renewal request in 30s")
	case a := <-answers:
		if a.GetError() != "" {
			return errors.New(a.GetError())
		}
		return c.cfg.Renewer.Install(a.GetCertificate())
	}
}

func recvErr(stream pb.AgentService_ConnectClient, sendErr error) error {
	// A failed Send hides the real status; Recv returns it.
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return sendErr
}

// sender serialises sends on the stream (gRPC allows one sender at a time)
// and implements worker.Sink.
type sender struct {
	mu         sync.Mutex
	stream     pb.AgentService_ConnectClient
	log        hclog.Logger
	dropResult func(string) bool
}

func (s *sender) send(m *pb.AgentMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stream.Send(m); err != nil {
		// The stream is broken; Recv sees it too and ends the session.
		// Results stay in the journal and go out on the next session.
		s.log.Debug("send failed", "error", err)
	}
}

func (s *sender) Progress(id, mark, line string, at time.Time) {
	s.send(&pb.AgentMessage{Msg: &pb.AgentMessage_Progress{Progress: &pb.TaskProgress{TaskId: id, Mark: mark, LogLine: line, At: timestamppb.New(at)}}})
}

func (s *sender) Result(r *task.Result) {
	if s.dropResult != nil && s.dropResult(r.TaskID) {
		return
	}
	p, err := task.ResultToProto(r)
	if err != nil {
		s.log.Error("cannot encode result", "task", r.TaskID, "error", err)
		return
	}
	s.send(&pb.AgentMessage{Msg: &pb.AgentMessage_Result{Result: p}})
}
