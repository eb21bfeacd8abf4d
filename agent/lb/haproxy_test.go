package lb_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/deckhand-dev/deckhand/e2e/harness/haproxy"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

// These tests put a real HAProxy (the thing whose behaviour matters) in
// front of two tiny Go HTTP backends on loopback. HAProxy checks the
// backends every 200ms with rise 2 fall 2, as in REAL-COMPONENTS.md.

const (
	checkInter = 200 * time.Millisecond
	waitLong   = 10 * time.Second // upper bound for anything HAProxy does here
	tick       = 20 * time.Millisecond
)

// backend is a dispatcher stand-in: "/" answers its name, "/health" is
// HAProxy's check (503 when unhealthy), "/slow" blocks until released.
type backend struct {
	name        string
	srv         *httptest.Server
	healthy     atomic.Bool
	hits        atomic.Int64
	slowStarted chan struct{}
	release     chan struct{}
	releaseOnce sync.Once
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name, slowStarted: make(chan struct{}, 16), release: make(chan struct{})}
	b.healthy.Store(true)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			if !b.healthy.Load() {
				http.Error(w, "unhealthy", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "OK")
		case "/slow":
			b.slowStarted <- struct{}{}
			select {
			case <-b.release:
			case <-r.Context().Done():
				return
			}
			fmt.Fprint(w, b.name)
		default:
			b.hits.Add(1)
			fmt.Fprint(w, b.name)
		}
	}))
	// Registered before HAProxy starts, so it runs after HAProxy stopped.
	t.Cleanup(func() {
		b.releaseSlow()
		b.srv.Close()
	})
	return b
}

func (b *backend) releaseSlow() { b.releaseOnce.Do(func() { close(b.release) }) }

type rig struct {
	hap    *haproxy.Instance
	d1, d2 *backend
	client *http.Client
}

func newRig(t *testing.T) *rig {
	r := &rig{d1: newBackend(t, "d1"), d2: newBackend(t, "d2")}
	r.hap = haproxy.Start(t, haproxy.Config{
		Servers: []haproxy.Server{
			{Name: "d1", Addr: r.d1.srv.Listener.Addr().String()},
			{Name: "d2", Addr: r.d2.srv.Listener.Addr().String()},
		},
		CheckPath:  "/health",
		CheckInter: checkInter,
		Rise:       2,
		Fall:       2,
	})
	r.hap.WaitStatus(t, "d1", "UP", waitLong)
	r.hap.WaitStatus(t, "d2", "UP", waitLong)
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	r.client = &http.Client{Transport: tr, Timeout: waitLong}
	return r
}

func (r *rig) driver(t *testing.T, server string, mod func(*lb.HAProxyConfig)) *lb.HAProxy {
	cfg := lb.HAProxyConfig{
		Socket:       r.hap.Socket,
		Backend:      haproxy.Backend,
		Server:       server,
		PollInterval: yamlconf.Duration(tick),
		UpTimeout:    yamlconf.Duration(waitLong),
		DrainTimeout: yamlconf.Duration(waitLong),
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := lb.NewHAProxy(cfg, testLogger(t, "lb."+server))
	require.NoError(t, err)
	return d
}

// status reads server's status column without failing the test, for use
// inside require.Eventually/Never conditions.
func (r *rig) status(server string) string {
	st, err := r.hap.ReadStat(server)
	if err != nil {
		return "error: " + err.Error()
	}
	return st.Status
}

// get fetches path through HAProxy and returns the body of a 200.
func (r *rig) get(path string) (string, error) {
	resp, err := r.client.Get(r.hap.URL + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

func TestHAProxyDetachSendsAllTrafficToTheOtherServer(t *testing.T) {
	r := newRig(t)
	d1 := r.driver(t, "d1", nil)
	ctx := context.Background()

	st, err := d1.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateInService, st.State)
	require.Equal(t, 0, st.Sessions)

	start := time.Now()
	rep, err := d1.DetachReport(ctx)
	detachTook := time.Since(start)
	require.NoError(t, err)
	require.True(t, rep.Drained)
	require.Equal(t, 0, rep.Remaining)
	require.Equal(t, "MAINT", r.hap.Status(t, "d1"), "HAProxy itself must show d1 in MAINT")
	st, err = d1.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateDetached, st.State)
	require.Equal(t, "MAINT", st.Detail)

	for i := 0; i < 20; i++ {
		body, err := r.get("/")
		require.NoError(t, err)
		require.Equal(t, "d2", body, "request %d went to a detached server", i)
	}

	// A second Detach changes nothing (setting drain would clear maint).
	rep, err = d1.DetachReport(ctx)
	require.NoError(t, err)
	require.True(t, rep.AlreadyDetached)
	require.Equal(t, "MAINT", r.hap.Status(t, "d1"))

	start = time.Now()
	require.NoError(t, d1.Attach(ctx))
	attachTook := time.Since(start)
	require.Equal(t, "UP", r.hap.Status(t, "d1"), "Attach must return only once HAProxy reports UP")
	st, err = d1.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateInService, st.State)
	t.Logf("measured (inter %v rise 2 fall 2, idle server): detach %v, attach %v", checkInter, detachTook, attachTook)

	seen := map[string]bool{}
	for i := 0; i < 10; i++ {
		body, err := r.get("/")
		require.NoError(t, err)
		seen[body] = true
	}
	require.Equal(t, map[string]bool{"d1": true, "d2": true}, seen, "round robin must use d1 again")
}

func TestHAProxyNoFailedRequestsDuringDetachAttachCycles(t *testing.T) {
	r := newRig(t)
	drivers := []*lb.HAProxy{r.driver(t, "d1", nil), r.driver(t, "d2", nil)}
	ctx := context.Background()

	const workers = 4
	const maxPerWorker = 200000 // bounds the loop if stop never came
	var (
		total, failed atomic.Int64
		mu            sync.Mutex
		failures      []string
		wg            sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxPerWorker; i++ {
				select {
				case <-stop:
					return
				default:
				}
				total.Add(1)
				if _, err := r.get("/"); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(failures) < 5 {
						failures = append(failures, err.Error())
					}
					mu.Unlock()
				}
			}
		}()
	}
	// Traffic must be flowing before the first detach.
	require.Eventually(t, func() bool { return total.Load() > 50 }, waitLong, tick)

	var detachTimes, attachTimes []time.Duration
	for cycle := 0; cycle < 3; cycle++ {
		for i, d := range drivers {
			start := time.Now()
			require.NoError(t, d.Detach(ctx))
			detachTimes = append(detachTimes, time.Since(start))
			require.Equal(t, "MAINT", r.hap.Status(t, fmt.Sprintf("d%d", i+1)))

			start = time.Now()
			require.NoError(t, d.Attach(ctx))
			attachTimes = append(attachTimes, time.Since(start))
			require.Equal(t, "UP", r.hap.Status(t, fmt.Sprintf("d%d", i+1)))
		}
	}
	close(stop)
	wg.Wait()

	t.Logf("measured under load: %d requests, %d failed; detach %v; attach %v", total.Load(), failed.Load(), detachTimes, attachTimes)
	require.Zero(t, failed.Load(), "failed requests during detach/attach: %v", failures)
	require.Positive(t, r.d1.hits.Load())
	require.Positive(t, r.d2.hits.Load())
}

// slowThroughD1 starts a /slow request that HAProxy is certain to send to
// d1 (d2 is held in maint until it is in flight) and returns a channel
// with its outcome.
func slowThroughD1(t *testing.T, r *rig) <-chan error {
	r.hap.SetState(t, "d2", "maint")
	done := make(chan error, 1)
	go func() {
		body, err := r.get("/slow")
		if err == nil && body != "d1" {
			err = fmt.Errorf("slow request answered by %q", body)
		}
		done <- err
	}()
	select {
	case <-r.d1.slowStarted:
	case <-time.After(waitLong):
		t.Fatal("slow request never reached d1")
	}
	r.hap.SetState(t, "d2", "ready")
	r.hap.WaitStatus(t, "d2", "UP", waitLong)
	require.Equal(t, 1, r.hap.Stat(t, "d1").Scur)
	return done
}

func TestHAProxyDetachWaitsForInFlightRequest(t *testing.T) {
	r := newRig(t)
	slow := slowThroughD1(t, r)
	d1 := r.driver(t, "d1", nil)

	type result struct {
		rep lb.DrainReport
		err error
		at  time.Time
	}
	detached := make(chan result, 1)
	go func() {
		rep, err := d1.DetachReport(context.Background())
		detached <- result{rep, err, time.Now()}
	}()

	require.Eventually(t, func() bool { return strings.HasPrefix(r.status("d1"), "DRAIN") }, waitLong, tick)
	// New requests go to d2 while d1 drains.
	for i := 0; i < 5; i++ {
		body, err := r.get("/")
		require.NoError(t, err)
		require.Equal(t, "d2", body)
	}
	// While the request is open, Detach must not return and must not
	// have set maint. (A bounded observation window, ~25 polls.)
	require.Never(t, func() bool {
		select {
		case res := <-detached:
			detached <- res
			return true
		default:
		}
		return !strings.HasPrefix(r.status("d1"), "DRAIN")
	}, 25*tick, tick, "Detach finished or set maint while a session was open")

	released := time.Now()
	r.d1.releaseSlow()
	require.NoError(t, <-slow, "the in-flight request must complete")

	var res result
	select {
	case res = <-detached:
	case <-time.After(waitLong):
		t.Fatal("Detach did not return after the request finished")
	}
	require.NoError(t, res.err)
	require.True(t, res.rep.Drained)
	require.True(t, res.at.After(released), "Detach returned before the request was released")
	require.Equal(t, "MAINT", r.hap.Status(t, "d1"))
	t.Logf("measured: detach returned %v after the in-flight request was released (poll %v)", res.at.Sub(released), tick)
}

func TestHAProxyDrainTimeoutProceedsToMaint(t *testing.T) {
	r := newRig(t)
	slow := slowThroughD1(t, r)
	const drainTimeout = 500 * time.Millisecond
	d1 := r.driver(t, "d1", func(c *lb.HAProxyConfig) { c.DrainTimeout = yamlconf.Duration(drainTimeout) })

	start := time.Now()
	rep, err := d1.DetachReport(context.Background())
	took := time.Since(start)
	require.NoError(t, err, "a drain timeout is reported, not an error")
	require.False(t, rep.Drained)
	require.Equal(t, 1, rep.Remaining)
	require.GreaterOrEqual(t, took, drainTimeout)
	require.Less(t, took, drainTimeout+2*time.Second)
	require.GreaterOrEqual(t, rep.Waited, drainTimeout)

	stat := r.hap.Stat(t, "d1")
	require.Equal(t, "MAINT", stat.Status)
	require.Equal(t, 1, stat.Scur, "maint must not cut the open session")
	st, err := d1.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, lb.StateDetached, st.State)
	require.Equal(t, 1, st.Sessions)

	r.d1.releaseSlow()
	require.NoError(t, <-slow, "the request open at maint still completes")
	t.Logf("measured: detach with drain timeout %v took %v", drainTimeout, took)
}

func TestHAProxyDetachInterruptedLeavesServerDraining(t *testing.T) {
	r := newRig(t)
	slow := slowThroughD1(t, r)
	d1 := r.driver(t, "d1", nil)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := d1.DetachReport(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "left in drain")
	require.True(t, strings.HasPrefix(r.hap.Status(t, "d1"), "DRAIN"))
	st, err := d1.Status(context.Background())
	require.NoError(t, err)
	require.Equal(t, lb.StateDraining, st.State)

	r.d1.releaseSlow()
	require.NoError(t, <-slow)
	// Detach again continues from drain.
	require.NoError(t, d1.Detach(context.Background()))
	require.Equal(t, "MAINT", r.hap.Status(t, "d1"))
}

func TestHAProxyAttachWaitsForHealthCheckNotJustReady(t *testing.T) {
	r := newRig(t)
	d1 := r.driver(t, "d1", func(c *lb.HAProxyConfig) { c.UpTimeout = yamlconf.Duration(1500 * time.Millisecond) })
	ctx := context.Background()
	require.NoError(t, d1.Detach(ctx))

	// d1 now fails its health check. Right after "ready" HAProxy shows
	// it "UP 1/2"; an Attach that accepted that would return nil here.
	r.d1.healthy.Store(false)
	start := time.Now()
	err := d1.Attach(ctx)
	require.ErrorIs(t, err, lb.ErrTimeout)
	require.ErrorContains(t, err, "be/d1 not UP within 1.5s")
	require.ErrorContains(t, err, `last status "DOWN"`)
	// Normally L7STS (the 503); under heavy load possibly a timeout.
	require.Regexp(t, `check L[4-7][A-Z]+ "`, err.Error(), "the error names the failed check")
	require.GreaterOrEqual(t, time.Since(start), 1500*time.Millisecond)
	st, err := d1.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, lb.StateDown, st.State)

	// Healthy again: Attach succeeds once rise (2) checks passed.
	r.d1.healthy.Store(true)
	d1 = r.driver(t, "d1", nil)
	start = time.Now()
	require.NoError(t, d1.Attach(ctx))
	t.Logf("measured: attach of a DOWN server that recovered took %v (rise 2 × inter %v)", time.Since(start), checkInter)
	require.Equal(t, "UP", r.hap.Status(t, "d1"))
}

func TestHAProxyAttachWhenReady(t *testing.T) {
	r := newRig(t)
	d1 := r.driver(t, "d1", nil)
	ctx := context.Background()
	require.NoError(t, d1.Detach(ctx))

	// The host's own health URL refuses the first probes, like Apache in
	// its graceful gap; the attach must wait for it.
	var probes atomic.Int64
	direct := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if probes.Add(1) <= 3 {
			http.Error(w, "reloading", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "OK")
	}))
	defer direct.Close()

	require.NoError(t, lb.AttachWhenReady(ctx, d1, direct.URL+"/health", tick))
	require.EqualValues(t, 4, probes.Load(), "attach happened only after the first 200")
	require.Equal(t, "UP", r.hap.Status(t, "d1"))
}

func TestHAProxyErrors(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()

	t.Run("missing socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "nope.sock")
		d := r.driver(t, "d1", func(c *lb.HAProxyConfig) { c.Socket = sock })
		for name, err := range map[string]error{
			"detach": d.Detach(ctx),
			"attach": d.Attach(ctx),
			"status": statusErr(d.Status(ctx)),
		} {
			require.ErrorContains(t, err, "connect to runtime API socket "+sock, name)
			require.ErrorContains(t, err, "no such file or directory", name)
		}
	})

	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "file.sock")
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		d := r.driver(t, "d1", func(c *lb.HAProxyConfig) { c.Socket = path })
		err := d.Detach(ctx)
		require.ErrorContains(t, err, "connect to runtime API socket "+path)
	})

	t.Run("unknown server", func(t *testing.T) {
		d := r.driver(t, "nope", nil)
		require.ErrorContains(t, d.Attach(ctx), `"set server be/nope state ready": HAProxy answered "No such server."`)
		require.ErrorContains(t, d.Detach(ctx), "no server be/nope")
		require.ErrorContains(t, statusErr(d.Status(ctx)), "no server be/nope in show stat")
	})

	t.Run("unknown backend", func(t *testing.T) {
		d := r.driver(t, "d1", func(c *lb.HAProxyConfig) { c.Backend = "nobe" })
		require.ErrorContains(t, d.Attach(ctx), `HAProxy answered "No such backend."`)
		require.ErrorContains(t, d.Detach(ctx), `HAProxy answered "Can't find backend."`)
		require.ErrorContains(t, statusErr(d.Status(ctx)), `HAProxy answered "No such proxy."`)
	})

	t.Run("cancelled context", func(t *testing.T) {
		d := r.driver(t, "d1", nil)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.ErrorIs(t, d.Detach(cctx), context.Canceled)
		require.ErrorIs(t, d.Attach(cctx), context.Canceled)
	})

	// None of the failures above changed the real servers.
	require.Equal(t, "UP", r.hap.Status(t, "d1"))
	require.Equal(t, "UP", r.hap.Status(t, "d2"))
}

func statusErr(_ lb.Status, err error) error {
	if err == nil {
		return errors.New("no error")
	}
	return err
}
