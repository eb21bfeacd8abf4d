package gates

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sleepCtx waits d or until the request is abandoned, so httptest's Close
// never waits on a sleeping handler.
func sleepCtx(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// TestLoadTestMeasures injects a known latency distribution and error
// fraction and checks what the load test reports.
//
//	/a: every 10th request takes 150 ms, the 50th 600 ms, the rest 5 ms; never fails
//	/b: the same latencies; 2 of every 25 requests answer 500 (8 %)
func TestLoadTestMeasures(t *testing.T) {
	var na, nb atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var k int64
		switch r.URL.Path {
		case "/a":
			k = na.Add(1)
		case "/b":
			k = nb.Add(1)
		default:
			http.NotFound(w, r)
			return
		}
		d := 5 * time.Millisecond
		if k%10 == 0 {
			d = 150 * time.Millisecond
		}
		if r.URL.Path == "/a" && k == 50 {
			d = 600 * time.Millisecond
		}
		sleepCtx(r, d)
		if r.URL.Path == "/b" && (k%25 == 1 || k%25 == 2) {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("<html>page</html>"))
	}))
	defer srv.Close()

	rep, ms, err := LoadTest(context.Background(), LoadConfig{
		BaseURL: srv.URL, URLs: []string{"/a", "/b"},
		Duration: 2 * time.Second, Rate: 100, Concurrency: 100,
		KPIs: KPIs{P95: 100 * time.Millisecond, PageViewsPerMinute: 5000, Peak: time.Second},
	})
	require.NoError(t, err)
	t.Logf("report: offered=%d sent=%d dropped=%d errors=%d (%.2f%%) p50=%v p95=%v peak=%v pvm=%.0f elapsed=%v",
		rep.Offered, rep.Sent, rep.Dropped, rep.Errors, rep.ErrorRate, rep.P50, rep.P95, rep.Peak, rep.PageViewsPerMinute, rep.Elapsed)

	require.EqualValues(t, 200, rep.Offered)
	require.EqualValues(t, 200, rep.Sent)
	require.Zero(t, rep.Dropped)
	require.EqualValues(t, 200, rep.Responses)
	require.Zero(t, rep.TransportErrors)
	require.EqualValues(t, 8, rep.Errors)
	require.InDelta(t, 4.0, rep.ErrorRate, 1e-9)
	require.Equal(t, map[int]int64{200: 192, 500: 8}, rep.StatusCounts)
	require.InDelta(t, 192*60/2.0, rep.PageViewsPerMinute, 1e-9)

	// Response times: the client adds to what the server slept (a few ms
	// when idle; more on a loaded machine, where this test shares the
	// CPU). The bounds put each percentile in its own group: p50 among
	// the 5 ms answers, p95 among the 150 ms ones, the peak at the 600 ms
	// outlier.
	require.GreaterOrEqual(t, rep.P50, 5*time.Millisecond)
	require.Less(t, rep.P50, 100*time.Millisecond)
	require.GreaterOrEqual(t, rep.P95, 149*time.Millisecond)
	require.Less(t, rep.P95, 450*time.Millisecond)
	require.GreaterOrEqual(t, rep.Peak, 600*time.Millisecond)
	require.Less(t, rep.Peak, 900*time.Millisecond)
	require.LessOrEqual(t, rep.P99, rep.Peak)

	require.Len(t, rep.URLs, 2)
	a, b := rep.URLs[0], rep.URLs[1]
	require.Equal(t, "/a", a.URL)
	require.EqualValues(t, 100, a.Requests)
	require.Zero(t, a.Errors)
	require.GreaterOrEqual(t, a.Peak, 600*time.Millisecond)
	require.Equal(t, "/b", b.URL)
	require.EqualValues(t, 8, b.Errors)
	require.InDelta(t, 8.0, b.ErrorRate, 1e-9)
	require.Less(t, b.Peak, 600*time.Millisecond)

	got := byKPI(ms)
	require.Equal(t, Metric{ID: "performance.error_rate", KPI: KPIErrorRate, Severity: SeverityCritical,
		Passed: false, ActualValue: "4", ExpectedValue: "2", Comparator: LT}, got[KPIErrorRate])
	require.False(t, got[KPIP95ResponseTime].Passed, "p95 ~150ms is above the 100ms KPI")
	require.Equal(t, "100", got[KPIP95ResponseTime].ExpectedValue)
	require.True(t, got[KPIPeakResponseTime].Passed)
	require.Equal(t, "1000", got[KPIPeakResponseTime].ExpectedValue)
	require.True(t, got[KPIPageViewsPerMinute].Passed)
	require.Equal(t, "5760", got[KPIPageViewsPerMinute].ActualValue)
	require.True(t, Verdict(ms).Failed(), "4 % errors fail the execution")
}

// TestLoadTestOpenModel checks that a slow server still receives the
// configured rate: every request takes 400 ms, yet 50 requests per second
// keep arriving (a closed model with the same concurrency would send only
// as many as come back).
func TestLoadTestOpenModel(t *testing.T) {
	var (
		mu       sync.Mutex
		arrivals []time.Time
		inFlight atomic.Int64
		maxIn    atomic.Int64
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrivals = append(arrivals, time.Now())
		mu.Unlock()
		n := inFlight.Add(1)
		for cur := maxIn.Load(); n > cur && !maxIn.CompareAndSwap(cur, n); cur = maxIn.Load() {
		}
		sleepCtx(r, 400*time.Millisecond)
		inFlight.Add(-1)
	}))
	defer srv.Close()

	start := time.Now()
	rep, ms, err := LoadTest(context.Background(), LoadConfig{
		BaseURL: srv.URL, URLs: []string{"/"},
		Duration: 2 * time.Second, Rate: 50, Concurrency: 60,
		KPIs: KPIs{P95: 300 * time.Millisecond, PageViewsPerMinute: 3000, Peak: 5 * time.Second},
	})
	require.NoError(t, err)
	require.EqualValues(t, 100, rep.Offered)
	require.EqualValues(t, 100, rep.Sent)
	require.Zero(t, rep.Dropped)
	require.InDelta(t, 50, rep.SentRate, 1e-9)
	require.Zero(t, rep.Errors)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, arrivals, 100)
	// The offered rate holds in each second although every response
	// takes 400 ms: ~50 arrivals per second.
	var first, second int
	for _, a := range arrivals {
		if a.Sub(start) < time.Second {
			first++
		} else {
			second++
		}
	}
	require.InDelta(t, 50, first, 8)
	require.InDelta(t, 50, second, 8)
	// Little's law: rate x latency = 20 requests in flight (more for a
	// moment when the scheduler catches up after a late wake-up). A
	// closed model would never exceed its worker count.
	require.GreaterOrEqual(t, maxIn.Load(), int64(16))
	require.LessOrEqual(t, maxIn.Load(), int64(60), "never above the concurrency cap")
	require.GreaterOrEqual(t, rep.P95, 400*time.Millisecond)
	got := byKPI(ms)
	require.False(t, got[KPIP95ResponseTime].Passed)
	require.True(t, got[KPIPageViewsPerMinute].Passed, "3000 page views per minute were served")
	require.True(t, got[KPIErrorRate].Passed)
}

// TestLoadTestConcurrencyCap: a request due while the cap is reached is
// dropped and counted as an error, not queued (which would lower the
// offered load).
func TestLoadTestConcurrencyCap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sleepCtx(r, 500*time.Millisecond)
	}))
	defer srv.Close()
	rep, ms, err := LoadTest(context.Background(), LoadConfig{
		BaseURL: srv.URL, URLs: []string{"/"},
		Duration: time.Second, Rate: 40, Concurrency: 4,
		KPIs: KPIs{P95: time.Second, PageViewsPerMinute: 1, Peak: 5 * time.Second},
	})
	require.NoError(t, err)
	require.EqualValues(t, 40, rep.Offered)
	require.Equal(t, rep.Offered, rep.Sent+rep.Dropped)
	// 4 at once, each 500 ms: 8 (at most 12 with scheduling slack) go out.
	require.GreaterOrEqual(t, rep.Sent, int64(8))
	require.LessOrEqual(t, rep.Sent, int64(12))
	require.Equal(t, rep.Dropped, rep.Errors)
	require.Greater(t, rep.ErrorRate, 50.0)
	require.False(t, byKPI(ms)[KPIErrorRate].Passed)
}

func TestLoadTestTransportErrorsAndTimeouts(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			sleepCtx(r, time.Minute)
		case "/reset":
			hj, ok := w.(http.Hijacker)
			if !ok {
				return
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
			}
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			_, _ = w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()
	rep, ms, err := LoadTest(context.Background(), LoadConfig{
		BaseURL: srv.URL, URLs: []string{"/ok", "/hang", "/reset", "/redirect"},
		Duration: 400 * time.Millisecond, Rate: 20, Timeout: 300 * time.Millisecond,
		KPIs: KPIs{P95: time.Second, PageViewsPerMinute: 1, Peak: 250 * time.Millisecond},
	})
	require.NoError(t, err)
	require.EqualValues(t, 8, rep.Offered)
	byURL := map[string]URLReport{}
	for _, u := range rep.URLs {
		byURL[u.URL] = u
	}
	require.Zero(t, byURL["/ok"].Errors)
	require.Zero(t, byURL["/redirect"].Errors, "a 3xx is a served page view")
	require.EqualValues(t, 2, byURL["/hang"].Errors)
	require.EqualValues(t, 2, byURL["/reset"].Errors)
	require.EqualValues(t, 4, rep.TransportErrors)
	require.EqualValues(t, 2, rep.Timeouts)
	require.EqualValues(t, 4, rep.Successes)
	require.Equal(t, map[int]int64{200: 2, 302: 2}, rep.StatusCounts)
	require.InDelta(t, 50, rep.ErrorRate, 1e-9)
	// A request given up after the timeout took at least that long.
	require.GreaterOrEqual(t, rep.Peak, 300*time.Millisecond)
	require.GreaterOrEqual(t, byURL["/hang"].Peak, 300*time.Millisecond)
	require.False(t, byKPI(ms)[KPIPeakResponseTime].Passed)
}

func TestLoadTestCancelStopsPromptly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sleepCtx(r, time.Minute)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	rep, ms, err := LoadTest(ctx, LoadConfig{
		BaseURL: srv.URL, URLs: []string{"/"},
		Duration: time.Minute, Rate: 20,
		KPIs: KPIs{P95: time.Second, PageViewsPerMinute: 1},
	})
	took := time.Since(start)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "load test stopped after")
	require.Nil(t, ms)
	require.Less(t, took, 2*time.Second, "cancel aborts the requests in flight")
	require.Greater(t, rep.Sent, int64(0), "the partial report shows what was sent")
	require.Less(t, rep.Offered, int64(20*60))
}

func TestLoadTestHostHeaderAndAbsoluteURLs(t *testing.T) {
	hosts := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.URL.Path + " " + r.Host
	}))
	defer srv.Close()
	_, _, err := LoadTest(context.Background(), LoadConfig{
		BaseURL: srv.URL, Host: "www.example.com", URLs: []string{"/path", srv.URL + "/abs"},
		Duration: 100 * time.Millisecond, Rate: 20,
		KPIs: KPIs{P95: time.Second, PageViewsPerMinute: 1},
	})
	require.NoError(t, err)
	close(hosts)
	var got []string
	for h := range hosts {
		got = append(got, h)
	}
	slices.Sort(got)
	require.Equal(t, []string{"/abs " + srv.Listener.Addr().String(), "/path www.example.com"}, got)
}

func TestLoadTestConfigErrors(t *testing.T) {
	kpis := KPIs{P95: time.Second, PageViewsPerMinute: 1}
	tests := []struct {
		name string
		cfg  LoadConfig
		want string
	}{
		{"no urls", LoadConfig{Rate: 1, Duration: time.Second, KPIs: kpis}, "no URLs"},
		{"no rate", LoadConfig{URLs: []string{"http://x/"}, Duration: time.Second, KPIs: kpis}, "rate 0 must be a positive"},
		{"NaN rate", LoadConfig{URLs: []string{"http://x/"}, Rate: math.NaN(), Duration: time.Second, KPIs: kpis}, "must be a positive"},
		{"no duration", LoadConfig{URLs: []string{"http://x/"}, Rate: 1, KPIs: kpis}, "duration 0s must be positive"},
		{"no p95 KPI", LoadConfig{URLs: []string{"http://x/"}, Rate: 1, Duration: time.Second, KPIs: KPIs{PageViewsPerMinute: 1}}, "p95 response time KPI is required"},
		{"no pvm KPI", LoadConfig{URLs: []string{"http://x/"}, Rate: 1, Duration: time.Second, KPIs: KPIs{P95: time.Second}}, "page views per minute KPI is required"},
		{"timeout below peak", LoadConfig{URLs: []string{"http://x/"}, Rate: 1, Duration: time.Second, Timeout: 10 * time.Second, KPIs: kpis}, "timeout 10s must exceed the peak threshold 18s"},
		{"path without base", LoadConfig{URLs: []string{"/x"}, Rate: 1, Duration: time.Second, KPIs: kpis}, `"/x" is a path, but no base URL is set`},
		{"relative url", LoadConfig{URLs: []string{"x.html"}, Rate: 1, Duration: time.Second, KPIs: kpis}, "must be an absolute http(s) URL or a path"},
		{"too short", LoadConfig{URLs: []string{"http://127.0.0.1:1/"}, Rate: 1, Duration: time.Nanosecond, KPIs: kpis}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ms, err := LoadTest(context.Background(), tc.cfg)
			require.Error(t, err)
			require.Nil(t, ms)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestPerformanceMetricBoundaries(t *testing.T) {
	kpis := KPIs{P95: 1500 * time.Millisecond, PageViewsPerMinute: 1000}
	ok := Report{ErrorRate: 1.99, P95: 1499 * time.Millisecond, Peak: 17999 * time.Millisecond, PageViewsPerMinute: 1000}
	ms := PerformanceMetrics(ok, kpis)
	require.Len(t, ms, 4)
	for _, m := range ms {
		require.True(t, m.Passed, "%+v", m)
	}
	got := byKPI(ms)
	require.Equal(t, Metric{ID: "performance.p95_response_time", KPI: KPIP95ResponseTime, Severity: SeverityImportant,
		Passed: true, ActualValue: "1499", ExpectedValue: "1500", Comparator: LT}, got[KPIP95ResponseTime])
	require.Equal(t, Metric{ID: "performance.peak_response_time", KPI: KPIPeakResponseTime, Severity: SeverityImportant,
		Passed: true, ActualValue: "17999", ExpectedValue: "18000", Comparator: LT}, got[KPIPeakResponseTime])
	require.Equal(t, Metric{ID: "performance.page_views_per_minute", KPI: KPIPageViewsPerMinute, Severity: SeverityImportant,
		Passed: true, ActualValue: "1000", ExpectedValue: "1000", Comparator: GTE}, got[KPIPageViewsPerMinute])
	require.Equal(t, Metric{ID: "performance.error_rate", KPI: KPIErrorRate, Severity: SeverityCritical,
		Passed: true, ActualValue: "1.99", ExpectedValue: "2", Comparator: LT}, got[KPIErrorRate])

	bad := Report{ErrorRate: 2, P95: 1500 * time.Millisecond, Peak: 18 * time.Second, PageViewsPerMinute: 999.9}
	for _, m := range PerformanceMetrics(bad, kpis) {
		require.False(t, m.Passed, "%+v at the threshold fails", m)
	}
	v := Verdict(PerformanceMetrics(bad, kpis))
	require.True(t, v.Failed())
	require.Len(t, v.ImportantFailures, 3)

	// Only important failures: the step waits, and overriding all three continues.
	slow := bad
	slow.ErrorRate = 0
	ms = PerformanceMetrics(slow, kpis)
	require.True(t, Verdict(ms).Waiting())
	out, err := Override(ms, []string{KPIP95ResponseTime, KPIPeakResponseTime, KPIPageViewsPerMinute})
	require.NoError(t, err)
	require.True(t, Verdict(out).Passed())
}

func TestHistogram(t *testing.T) {
	h := newHistogram()
	require.Zero(t, h.quantile(0.95))
	rng := rand.New(rand.NewPCG(1, 2))
	var exact []time.Duration
	for range 20000 {
		// Log-uniform from 200 µs to 20 s.
		d := time.Duration(math.Exp(math.Log(200e3) + rng.Float64()*(math.Log(20e9)-math.Log(200e3))))
		exact = append(exact, d)
		h.record(d)
	}
	slices.Sort(exact)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.95, 0.99, 1} {
		want := exact[int(math.Ceil(q*float64(len(exact))))-1]
		got := h.quantile(q)
		require.InEpsilon(t, float64(want), float64(got), 0.005, "q=%v want %v got %v", q, want, got)
	}
	require.Equal(t, exact[len(exact)-1], h.max())
	var sum time.Duration
	for _, d := range exact {
		sum += d
	}
	require.Equal(t, sum/time.Duration(len(exact)), h.mean())

	// Index and midpoint agree across the whole range: within 0.5 µs
	// below 128 µs, within 0.4 % above.
	for _, us := range []uint64{0, 1, 127, 128, 129, 255, 256, 1 << 20, 1<<40 + 12345, math.MaxInt64 / 1000} {
		i := histIndex(us)
		require.Less(t, i, histBuckets)
		if us < histSub {
			require.InDelta(t, float64(us), histMid(i), 0.5, "us=%d", us)
		} else {
			require.InEpsilon(t, float64(us), histMid(i), 0.004, "us=%d", us)
		}
	}
}

func TestHistogramRecordDoesNotAllocate(t *testing.T) {
	h := newHistogram()
	allocs := testing.AllocsPerRun(1000, func() { h.record(1234 * time.Microsecond) })
	require.Zero(t, allocs)
}
