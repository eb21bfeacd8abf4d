// Command fleet is the control plane's scale benchmark (make bench): it
// connects N simulated agents, each with its own gRPC client connection over
// loopback, to one deckhand server running in a separate process, and
// reports agents connected, server heap and RSS per agent, and the time to
// fan one HostFacts-like task out to all N and collect every result.
//
//	go run ./e2e/bench/fleet --n 10000
//
// The same binary plays three roles (run, server, agents) so the server and
// the agents live in different processes with their own file limits.
// --bare measures a bare grpc-go stream per connection as the baseline.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/fleet"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	role := "run"
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		role = os.Args[1]
		os.Args = append([]string{os.Args[0]}, os.Args[2:]...)
	}
	var err error
	switch role {
	case "run":
		err = runDriver()
	case "server":
		err = runServer()
	case "agents":
		err = runAgents()
	default:
		err = fmt.Errorf("unknown role %q (run, server, agents)", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet bench:", err)
		os.Exit(1)
	}
}

// stats is what the server process reports about itself.
type stats struct {
	Connected  int    `json:"connected"`
	HeapInuse  uint64 `json:"heap_inuse"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

type fanout struct {
	N     int           `json:"n"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Total time.Duration `json:"total"`
	Fail  int           `json:"failed"`
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func hostID(i int) string { return fmt.Sprintf("h%05d", i) }

// ---- server role ----

func runServer() error {
	n := flag.Int("n", 1000, "hosts to declare")
	listen := flag.String("listen", "127.0.0.1:0", "agent address")
	control := flag.String("control", "127.0.0.1:0", "control HTTP address")
	dataDir := flag.String("data", "", "data dir")
	bare := flag.Bool("bare", false, "serve a bare stream that only reads (baseline)")
	useTLS := flag.Bool("tls", false, "mutual TLS (the production setting) instead of --dev-insecure")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	cln, err := net.Listen("tcp", *control)
	if err != nil {
		return err
	}
	var connected func() int
	var doFanout func(ctx context.Context) fanout
	var gs *grpc.Server
	if *bare {
		var live atomic.Int64
		gs = grpc.NewServer(grpc.SharedWriteBuffer(true), grpc.ReadBufferSize(8<<10), grpc.WriteBufferSize(8<<10))
		pb.RegisterAgentServiceServer(gs, &bareService{live: &live})
		go gs.Serve(ln)
		connected = func() int { return int(live.Load()) }
		doFanout = func(context.Context) fanout { return fanout{} }
	} else {
		var sb strings.Builder
		fmt.Fprintf(&sb, "data_dir: %s\nheartbeat_interval: 10s\nenvironments:\n  - name: bench\n    type: dev\n    hosts:\n", *dataDir)
		for i := 0; i < *n; i++ {
			fmt.Fprintf(&sb, "      - {id: %s, role: author}\n", hostID(i))
		}
		cfg, err := config.Parse("bench.yaml", []byte(sb.String()))
		if err != nil {
			return err
		}
		cfg.HeartbeatInterval = yamlconf.Duration(10 * time.Second)
		srv, err := server.New(cfg, server.Options{Listener: ln, DevInsecure: !*useTLS})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go srv.Serve(ctx)
		connected = srv.Fleet().Connected
		round := 0
		doFanout = func(ctx context.Context) fanout {
			round++
			return runFanout(ctx, srv.Fleet(), *n, round)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		json.NewEncoder(w).Encode(stats{Connected: connected(), HeapInuse: ms.HeapInuse, RSS: rss(), Goroutines: runtime.NumGoroutine()})
	})
	mux.HandleFunc("/connected", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(stats{Connected: connected()})
	})
	mux.HandleFunc("/fanout", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(doFanout(r.Context()))
	})
	fmt.Printf("LISTEN %s %s\n", ln.Addr(), cln.Addr())
	go http.Serve(cln, mux)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	if gs != nil {
		gs.Stop()
	}
	return nil
}

type bareService struct {
	pb.UnimplementedAgentServiceServer
	live *atomic.Int64
}

func (b *bareService) Connect(s pb.AgentService_ConnectServer) error {
	b.live.Add(1)
	defer b.live.Add(-1)
	for {
		if _, err := s.Recv(); err != nil {
			return nil
		}
	}
}

// runFanout assigns one task to each host in one persisted batch and
// awaits all results.
func runFanout(ctx context.Context, fl *fleet.Fleet, n, round int) fanout {
	specs := make([]task.Spec, n)
	exec := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), round)
	for i := range specs {
		id, _ := task.ID(exec, "facts", hostID(i))
		specs[i] = task.Spec{ID: id, ExecutionID: exec, Step: "facts", HostID: hostID(i), Kind: task.HostFacts{}}
	}
	want := make(map[string]int, n)
	for i, sp := range specs {
		want[sp.ID] = i
	}
	events, stop := fl.Subscribe(2*n + 1024)
	defer stop()
	lat := make([]time.Duration, 0, n)
	failed := 0
	start := time.Now()
	if err := fl.Assign(ctx, specs...); err != nil {
		fmt.Fprintln(os.Stderr, "assign:", err)
		return fanout{N: n, Fail: n}
	}
	timeout := time.After(2 * time.Minute)
	for len(lat) < n {
		select {
		case e := <-events:
			if e.Kind != fleet.EventResult {
				continue
			}
			if _, ok := want[e.TaskID]; !ok {
				continue
			}
			lat = append(lat, time.Since(start))
			if e.Result.Err() != nil {
				failed++
			}
		case <-timeout:
			fmt.Fprintf(os.Stderr, "fan-out: only %d of %d results after 2 minutes\n", len(lat), n)
			return fanout{N: n, Fail: n - len(lat)}
		}
	}
	total := time.Since(start)
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	return fanout{N: n, P50: lat[n/2], P99: lat[n*99/100], Total: total, Fail: failed}
}

// ---- agents role ----

func runAgents() error {
	n := flag.Int("n", 1000, "agents")
	from := flag.Int("from", 0, "first host index")
	addr := flag.String("server", "", "server address")
	bare := flag.Bool("bare", false, "open bare streams only")
	caDir := flag.String("ca", "", "with mutual TLS: the server's CA dir, to issue agent certificates (bench only)")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	creds := make([]grpc.DialOption, *n)
	for i := range creds {
		creds[i] = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	if *caDir != "" {
		ca, err := identity.LoadCA(filepath.Join(*caDir, "ca.crt"), filepath.Join(*caDir, "ca.key"))
		if err != nil {
			return err
		}
		host, _, _ := net.SplitHostPort(*addr)
		for i := range creds {
			key, err := identity.NewKey()
			if err != nil {
				return err
			}
			leaf, err := ca.IssueClient(key.Public(), identity.Principal{Kind: identity.KindHost, Name: hostID(*from + i)}, 24*time.Hour)
			if err != nil {
				return err
			}
			cert := identity.TLSCert(leaf, key)
			creds[i] = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
				MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: host, Certificates: []tls.Certificate{cert},
			}))
		}
	}
	fmt.Println("CONNECTING")
	var wg sync.WaitGroup
	for i := *from; i < *from+*n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if *bare {
				bareAgent(ctx, *addr)
				return
			}
			simAgent(ctx, *addr, hostID(i), creds[i-*from])
		}(i)
		if i%200 == 199 {
			time.Sleep(5 * time.Millisecond) // ramp up instead of a SYN flood
		}
	}
	wg.Wait()
	return nil
}

func bareAgent(ctx context.Context, addr string) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	for ctx.Err() == nil {
		s, err := pb.NewAgentServiceClient(conn).Connect(ctx)
		if err == nil {
			s.Send(&pb.AgentMessage{})
			s.Recv() // blocks until the end
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func simAgent(ctx context.Context, addr, host string, cred grpc.DialOption) {
	j, _ := journal.New(kv.NewMemory())
	w := worker.New(worker.Config{Journal: j, Handlers: map[string]worker.Handler{
		task.HostFacts{}.Name(): worker.HandlerFunc(func(context.Context, *worker.Task) (any, error) {
			return &task.Facts{Hostname: host, OS: "bench", CollectedAt: time.Now()}, nil
		}),
	}})
	c := session.New(session.Config{
		Server: addr, HostID: host, Version: "bench", Journal: j, Worker: w,
		DialOptions: []grpc.DialOption{cred},
		BaseBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second, Stagger: time.Second,
	})
	c.Run(ctx)
}

// ---- driver ----

func runDriver() error {
	n := flag.Int("n", 10000, "simulated agents")
	rounds := flag.Int("rounds", 3, "fan-out rounds")
	bare := flag.Bool("bare", false, "also measure bare grpc-go streams as a baseline")
	useTLS := flag.Bool("tls", false, "also measure with mutual TLS (connect rate and memory side by side)")
	flag.Parse()
	if *bare {
		b, err := measure(*n, *rounds, true, false)
		if err != nil {
			return err
		}
		fmt.Printf("baseline bare grpc stream: %d connected, RSS/conn %.1f KiB, heap/conn %.1f KiB\n", b.conn, b.rssPer/1024, b.heapPer/1024)
	}
	modes := []bool{false}
	if *useTLS {
		modes = append(modes, true)
	}
	var rates []float64
	for _, tlsOn := range modes {
		r, err := measure(*n, *rounds, false, tlsOn)
		if err != nil {
			return err
		}
		name := "plain (--dev-insecure)"
		if tlsOn {
			name = "mutual TLS"
		}
		rate := float64(r.conn) / r.connectTime.Seconds()
		rates = append(rates, rate)
		fmt.Printf("deckhand, %s: %d agents connected in %s (%.0f/s), RSS/agent %.1f KiB, heap/agent %.1f KiB, goroutines/agent %.2f\n",
			name, r.conn, r.connectTime.Round(time.Millisecond), rate, r.rssPer/1024, r.heapPer/1024, r.gorPer)
		for i, f := range r.fan {
			fmt.Printf("  fan-out round %d: %d tasks, p50 %s, p99 %s, total %s, failed %d\n", i+1, f.N, f.P50.Round(time.Millisecond), f.P99.Round(time.Millisecond), f.Total.Round(time.Millisecond), f.Fail)
		}
	}
	if len(rates) == 2 {
		fmt.Printf("connect rate, mutual TLS / plain: %.2f\n", rates[1]/rates[0])
	}
	return nil
}

type result struct {
	connectTime             time.Duration
	conn                    int
	rssPer, heapPer, gorPer float64
	fan                     []fanout
}

func measure(n, rounds int, bare, useTLS bool) (result, error) {
	self, err := os.Executable()
	if err != nil {
		return result{}, err
	}
	dir, err := os.MkdirTemp("", "fleet-bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	args := []string{"server", "--n", strconv.Itoa(n), "--data", filepath.Join(dir, "server")}
	if bare {
		args = append(args, "--bare")
	}
	if useTLS {
		args = append(args, "--tls")
	}
	srv := exec.Command(self, args...)
	srv.Stderr = os.Stderr
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		return result{}, err
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	var agentAddr, ctlAddr string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "LISTEN" {
			agentAddr, ctlAddr = f[1], f[2]
			break
		}
	}
	go io.Copy(io.Discard, out)
	if ctlAddr == "" {
		return result{}, fmt.Errorf("server did not start")
	}
	get := func(path string, v any) error {
		resp, err := http.Get("http://" + ctlAddr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(v)
	}
	var before stats
	if err := get("/stats", &before); err != nil {
		return result{}, err
	}
	aargs := []string{"agents", "--n", strconv.Itoa(n), "--server", agentAddr}
	if bare {
		aargs = append(aargs, "--bare")
	}
	if useTLS {
		aargs = append(aargs, "--ca", filepath.Join(dir, "server", "ca"))
	}
	agents := exec.Command(self, aargs...)
	agents.Stderr = os.Stderr
	aout, _ := agents.StdoutPipe()
	if err := agents.Start(); err != nil {
		return result{}, err
	}
	defer func() { agents.Process.Signal(syscall.SIGTERM); agents.Wait() }()
	asc := bufio.NewScanner(aout)
	for asc.Scan() && asc.Text() != "CONNECTING" {
	}
	go io.Copy(io.Discard, aout)
	start := time.Now()
	var now stats
	for {
		if err := get("/connected", &now); err != nil {
			return result{}, err
		}
		if now.Connected >= n {
			break
		}
		if time.Since(start) > 3*time.Minute {
			return result{}, fmt.Errorf("only %d of %d agents connected after 3 minutes", now.Connected, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	connectTime := time.Since(start)
	time.Sleep(2 * time.Second) // let connection set-up garbage settle
	if err := get("/stats", &now); err != nil {
		return result{}, err
	}
	r := result{
		connectTime: connectTime,
		conn:        now.Connected,
		rssPer:      float64(now.RSS-before.RSS) / float64(n),
		heapPer:     float64(int64(now.HeapInuse)-int64(before.HeapInuse)) / float64(n),
		gorPer:      float64(now.Goroutines-before.Goroutines) / float64(n),
	}
	if p := os.Getenv("FLEET_BENCH_PROFILE"); p != "" && !bare {
		go func() {
			resp, err := http.Get("http://" + ctlAddr + "/debug/pprof/profile?seconds=6")
			if err != nil {
				return
			}
			defer resp.Body.Close()
			f, _ := os.Create(p)
			io.Copy(f, resp.Body)
			f.Close()
		}()
	}
	if !bare {
		for i := 0; i < rounds; i++ {
			var f fanout
			if err := get("/fanout", &f); err != nil {
				return result{}, err
			}
			r.fan = append(r.fan, f)
		}
	}
	return r, nil
}
