package gates

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Performance metric KPIs.
const (
	KPIErrorRate          = "error_rate"
	KPIP95ResponseTime    = "p95_response_time"
	KPIPeakResponseTime   = "peak_response_time"
	KPIPageViewsPerMinute = "page_views_per_minute"
)

// Performance thresholds and load-test defaults.
const (
	// MaxErrorRate is Cloud Manager's critical limit: an error rate of
	// 2 % or more fails the execution.
	MaxErrorRate = 2.0
	// DefaultPeakThreshold is Cloud Manager's important limit on the
	// slowest response: 18 s or more fails.
	DefaultPeakThreshold = 18 * time.Second
	// DefaultLoadTimeout bounds one request when LoadConfig.Timeout is
	// zero. It must exceed the peak threshold, or a slow page would be
	// counted as an error instead of measured.
	DefaultLoadTimeout = 30 * time.Second
	// maxDefaultConcurrency caps the derived default concurrency.
	maxDefaultConcurrency = 1000
)

// KPIs are the program's performance KPIs a load test is judged by.
type KPIs struct {
	// P95 is the 95th-percentile response time KPI: a p95 at or above it
	// fails (important). Required.
	P95 time.Duration
	// PageViewsPerMinute is the throughput KPI: fewer successful page
	// views per minute fail (important). Required.
	PageViewsPerMinute float64
	// Peak is the slowest acceptable response: a peak at or above it
	// fails (important). Default DefaultPeakThreshold (Cloud Manager's
	// fixed 18 s).
	Peak time.Duration
}

// LoadConfig describes one load test.
type LoadConfig struct {
	// BaseURL is the stage site (load balancer or dispatcher), e.g.
	// "https://stage.example.com". Required when a URL is a path.
	BaseURL string
	// Host, when set, is the Host header (and TLS server name) of the
	// requests made against BaseURL. Absolute URLs are requested as
	// written.
	Host string
	// URLs are the pages requested, in turn (request i goes to
	// URLs[i % len(URLs)]): absolute http(s) URLs, or paths starting with
	// "/" resolved against BaseURL. Required.
	URLs []string
	// Duration is how long load is offered. Required.
	Duration time.Duration
	// Rate is the offered load in requests per second. Requests start on
	// a fixed schedule (an open model): a slow response does not delay
	// the next request, so a struggling server still receives the whole
	// load, as it would from independent visitors. Required.
	Rate float64
	// Concurrency caps requests in flight. A request due while the cap
	// is reached is not sent: it is counted as dropped, and as an error,
	// because a server that cannot keep up with the offered load fails
	// its visitors too. Size it above Rate x the slowest acceptable
	// response. Default: Rate x KPIs.Peak, between 10 and 1000.
	Concurrency int
	// Timeout bounds one request, body included; it must exceed
	// KPIs.Peak. A request that times out is an error. Default
	// DefaultLoadTimeout.
	Timeout time.Duration
	// KPIs are the thresholds the metrics are judged by.
	KPIs KPIs
	// Transport, when set, sends the requests. Nil: a private transport
	// sized for Concurrency, closed when LoadTest returns.
	Transport http.RoundTripper
}

// Report is what a load test measured. Response times are measured from
// the request's start to the last byte of its body. Percentiles come
// from a log-linear histogram (at most 0.4 % off, or 0.5 µs below
// 128 µs); Peak and Mean are exact.
type Report struct {
	Start time.Time `json:"start"`
	// Duration is the window in which load was offered; Elapsed adds the
	// time taken by requests still in flight at its end.
	Duration time.Duration `json:"duration"`
	Elapsed  time.Duration `json:"elapsed"`
	// Rate is the configured offered rate (requests per second);
	// SentRate is what was actually sent (Sent / Duration).
	Rate     float64 `json:"rate"`
	SentRate float64 `json:"sentRate"`
	// Offered counts requests due in the window: Sent + Dropped.
	Offered int64 `json:"offered"`
	Sent    int64 `json:"sent"`
	// Dropped counts requests not sent because Concurrency requests were
	// already in flight.
	Dropped int64 `json:"dropped"`
	// Responses counts requests that got a status; Successes those with
	// 2xx or 3xx (the page views).
	Responses int64 `json:"responses"`
	Successes int64 `json:"successes"`
	// TransportErrors counts connection errors, timeouts and cut-off
	// bodies; Timeouts is the part that hit Timeout.
	TransportErrors int64 `json:"transportErrors"`
	Timeouts        int64 `json:"timeouts"`
	// Errors = non-2xx/3xx responses + TransportErrors + Dropped;
	// ErrorRate is Errors / Offered in percent.
	Errors    int64   `json:"errors"`
	ErrorRate float64 `json:"errorRate"`
	// StatusCounts counts responses by HTTP status.
	StatusCounts map[int]int64 `json:"statusCounts"`
	// Response times over all responses (any status). Peak also counts
	// requests that timed out, at the time they were given up: the page
	// took at least that long.
	Mean time.Duration `json:"mean"`
	P50  time.Duration `json:"p50"`
	P90  time.Duration `json:"p90"`
	P95  time.Duration `json:"p95"`
	P99  time.Duration `json:"p99"`
	Peak time.Duration `json:"peak"`
	// PageViewsPerMinute is Successes per minute of Duration.
	PageViewsPerMinute float64 `json:"pageViewsPerMinute"`
	// URLs breaks the results down by configured URL, in config order.
	URLs []URLReport `json:"urls"`
}

// URLReport is one URL's share of a Report.
type URLReport struct {
	URL       string        `json:"url"`
	Requests  int64         `json:"requests"` // sent or dropped
	Errors    int64         `json:"errors"`
	ErrorRate float64       `json:"errorRate"`
	Mean      time.Duration `json:"mean"`
	P50       time.Duration `json:"p50"`
	P95       time.Duration `json:"p95"`
	Peak      time.Duration `json:"peak"`
}

// withDefaults fills defaults and checks cfg.
func (cfg LoadConfig) withDefaults() (LoadConfig, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.KPIs.Peak == 0 {
		cfg.KPIs.Peak = DefaultPeakThreshold
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = max(DefaultLoadTimeout, cfg.KPIs.Peak+time.Second)
	}
	if len(cfg.URLs) == 0 {
		bad("no URLs to request")
	}
	if !(cfg.Rate > 0) || math.IsInf(cfg.Rate, 0) {
		bad("rate %v must be a positive number of requests per second", cfg.Rate)
	}
	if cfg.Duration <= 0 {
		bad("duration %v must be positive", cfg.Duration)
	}
	if cfg.Concurrency < 0 {
		bad("concurrency %d must not be negative", cfg.Concurrency)
	}
	if cfg.Concurrency == 0 && cfg.Rate > 0 {
		cfg.Concurrency = int(min(maxDefaultConcurrency, max(10, math.Ceil(cfg.Rate*cfg.KPIs.Peak.Seconds()))))
	}
	if cfg.KPIs.P95 <= 0 {
		bad("the p95 response time KPI is required")
	}
	if !(cfg.KPIs.PageViewsPerMinute > 0) {
		bad("the page views per minute KPI is required")
	}
	if cfg.KPIs.Peak < 0 {
		bad("peak threshold %v must be positive", cfg.KPIs.Peak)
	}
	if cfg.Timeout <= cfg.KPIs.Peak {
		bad("timeout %v must exceed the peak threshold %v, or slow pages count as errors instead of being measured", cfg.Timeout, cfg.KPIs.Peak)
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("load test: %w", err)
	}
	return cfg, nil
}

// target is one configured URL with its request template and counters.
type target struct {
	raw    string
	onBase bool              // a path resolved against BaseURL
	rt     http.RoundTripper // set by LoadTest
	req    *http.Request     // shared, read-only template
	hist   *histogram
	sent   atomic.Int64
	drops  atomic.Int64
	errors atomic.Int64
}

func buildTargets(cfg LoadConfig) ([]*target, error) {
	var base *url.URL
	if cfg.BaseURL != "" {
		var err error
		if base, err = parseHTTPURL("base URL", cfg.BaseURL); err != nil {
			return nil, fmt.Errorf("load test: %w", err)
		}
	}
	header := http.Header{"User-Agent": {"deckhand-loadtest/1"}}
	var errs []error
	targets := make([]*target, 0, len(cfg.URLs))
	for _, raw := range cfg.URLs {
		var u *url.URL
		host := ""
		switch {
		case strings.HasPrefix(raw, "/"):
			if base == nil {
				errs = append(errs, fmt.Errorf("load test: URL %q is a path, but no base URL is set", raw))
				continue
			}
			var err error
			if u, err = url.Parse(base.Scheme + "://" + base.Host + base.EscapedPath() + raw); err != nil {
				errs = append(errs, fmt.Errorf("load test: URL %q: %w", raw, err))
				continue
			}
			host = cfg.Host
		default:
			var err error
			u, err = url.Parse(raw)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("load test: URL %q must be an absolute http(s) URL or a path starting with /", raw))
				continue
			}
		}
		if host == "" {
			host = u.Host
		}
		req := &http.Request{
			Method: http.MethodGet, URL: u, Host: host, Header: header,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}
		targets = append(targets, &target{raw: raw, onBase: strings.HasPrefix(raw, "/"), req: req, hist: newHistogram()})
	}
	return targets, errors.Join(errs...)
}

// loadRun holds one test's shared state. Counters are atomics so the
// request goroutines never contend on a lock while measuring.
type loadRun struct {
	cfg       LoadConfig
	targets   []*target
	all       *histogram
	responses atomic.Int64
	successes atomic.Int64
	transport atomic.Int64
	timeouts  atomic.Int64
	status    [600]atomic.Int64 // by status code; 0 holds codes outside 100..599
}

// LoadTest offers cfg.Rate requests per second to cfg.URLs for
// cfg.Duration, waits for the requests in flight, and returns what it
// measured and the metrics judged against cfg.KPIs:
//
//	performance.error_rate            critical   passes when < 2 %
//	performance.p95_response_time     important  passes when < KPIs.P95 (ms)
//	performance.peak_response_time    important  passes when < KPIs.Peak (ms, default 18000)
//	performance.page_views_per_minute important  passes when >= KPIs.PageViewsPerMinute
//
// Errors are responses other than 2xx and 3xx (redirects are not
// followed: a 3xx is a served page view), transport errors and timeouts,
// and dropped requests (see LoadConfig.Concurrency).
//
// Cancelling ctx stops the test at once, aborting the requests in
// flight: LoadTest returns the partial report, no metrics, and ctx's
// error. A config error returns before any request is sent.
func LoadTest(ctx context.Context, cfg LoadConfig) (Report, []Metric, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Report{}, nil, err
	}
	targets, err := buildTargets(cfg)
	if err != nil {
		return Report{}, nil, err
	}
	siteRT, otherRT := cfg.Transport, cfg.Transport
	if siteRT == nil {
		newTransport := func() *http.Transport {
			t := http.DefaultTransport.(*http.Transport).Clone()
			// Keep a connection per concurrent request: the default of two
			// idle connections per host would make most requests pay for
			// a new connection, measuring the client's churn, not the
			// server.
			t.MaxIdleConns = cfg.Concurrency + 16
			t.MaxIdleConnsPerHost = cfg.Concurrency
			return t
		}
		site, other := newTransport(), newTransport()
		if cfg.Host != "" && strings.HasPrefix(cfg.BaseURL, "https:") {
			// The site's certificate names the virtual host. Absolute
			// URLs (other hosts) use their own transport, verified
			// against their own names.
			site.TLSClientConfig = &tls.Config{ServerName: hostOnly(cfg.Host), MinVersion: tls.VersionTLS12}
		}
		defer site.CloseIdleConnections()
		defer other.CloseIdleConnections()
		siteRT, otherRT = site, other
	}
	for _, t := range targets {
		t.rt = otherRT
		if t.onBase {
			t.rt = siteRT
		}
	}
	run := &loadRun{cfg: cfg, targets: targets, all: newHistogram()}
	start := time.Now()
	offered := run.offer(ctx, start)
	elapsed := time.Since(start)
	rep := run.report(start, offered, elapsed)
	if err := ctx.Err(); err != nil {
		return rep, nil, fmt.Errorf("load test stopped after %v: %w", elapsed.Round(time.Millisecond), err)
	}
	if rep.Offered == 0 {
		return rep, nil, errors.New("load test: no request was due: rate x duration is below one request")
	}
	return rep, PerformanceMetrics(rep, cfg.KPIs), nil
}

// offer runs the schedule: request i is due at start + i/Rate. It sends
// every request that is due when it wakes (catching up at once if it
// woke late), never waits for responses, and returns the number of
// requests due once the window has ended and the requests in flight
// have finished (or ctx was cancelled).
func (run *loadRun) offer(ctx context.Context, start time.Time) int64 {
	cfg := run.cfg
	total := int64(math.Ceil(cfg.Rate*cfg.Duration.Seconds() - 1e-9))
	due := func(i int64) time.Time {
		return start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
	}
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var next int64
	for next < total && ctx.Err() == nil {
		if wait := time.Until(due(next)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				continue
			case <-timer.C:
			}
		}
		now := time.Now()
		for next < total && !due(next).After(now) {
			t := run.targets[next%int64(len(run.targets))]
			select {
			case sem <- struct{}{}:
				t.sent.Add(1)
				wg.Go(func() {
					defer func() { <-sem }()
					run.request(ctx, t)
				})
			default:
				t.drops.Add(1)
			}
			next++
		}
	}
	wg.Wait()
	return next
}

// request sends one request and records it.
func (run *loadRun) request(ctx context.Context, t *target) {
	rctx, cancel := context.WithTimeout(ctx, run.cfg.Timeout)
	defer cancel()
	t0 := time.Now()
	resp, err := t.rt.RoundTrip(t.req.WithContext(rctx))
	if err == nil {
		// Time to the last byte: the page is not viewed until it has
		// arrived.
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	d := time.Since(t0)
	if ctx.Err() != nil {
		return // cancelled by the caller: not the server's doing
	}
	if err != nil {
		run.transport.Add(1)
		t.errors.Add(1)
		if errors.Is(rctx.Err(), context.DeadlineExceeded) {
			run.timeouts.Add(1)
			run.all.observeMax(d)
			t.hist.observeMax(d)
		}
		return
	}
	run.responses.Add(1)
	code := resp.StatusCode
	if code < 100 || code > 599 {
		code = 0
	}
	run.status[code].Add(1)
	run.all.record(d)
	t.hist.record(d)
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		run.successes.Add(1)
	} else {
		t.errors.Add(1)
	}
}

func (run *loadRun) report(start time.Time, offered int64, elapsed time.Duration) Report {
	cfg := run.cfg
	r := Report{
		Start: start, Duration: cfg.Duration, Elapsed: elapsed, Rate: cfg.Rate,
		Offered: offered, Responses: run.responses.Load(), Successes: run.successes.Load(),
		TransportErrors: run.transport.Load(), Timeouts: run.timeouts.Load(),
		StatusCounts: map[int]int64{},
	}
	for _, t := range run.targets {
		r.Sent += t.sent.Load()
		r.Dropped += t.drops.Load()
	}
	for code := range run.status {
		if n := run.status[code].Load(); n > 0 {
			r.StatusCounts[code] = n
		}
	}
	r.Errors = (r.Responses - r.Successes) + r.TransportErrors + r.Dropped
	r.ErrorRate = percent(r.Errors, r.Offered)
	r.SentRate = float64(r.Sent) / cfg.Duration.Seconds()
	r.PageViewsPerMinute = float64(r.Successes) * 60 / cfg.Duration.Seconds()
	r.Mean, r.Peak = run.all.mean(), run.all.max()
	r.P50, r.P90, r.P95, r.P99 = run.all.quantile(0.50), run.all.quantile(0.90), run.all.quantile(0.95), run.all.quantile(0.99)
	for _, t := range run.targets {
		reqs := t.sent.Load() + t.drops.Load()
		errs := t.errors.Load() + t.drops.Load()
		r.URLs = append(r.URLs, URLReport{
			URL: t.raw, Requests: reqs, Errors: errs, ErrorRate: percent(errs, reqs),
			Mean: t.hist.mean(), P50: t.hist.quantile(0.50), P95: t.hist.quantile(0.95), Peak: t.hist.max(),
		})
	}
	return r
}

func percent(n, of int64) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) * 100 / float64(of)
}

// PerformanceMetrics judges a load-test report against kpis (a zero Peak
// means DefaultPeakThreshold). Response times are written in
// milliseconds, the error rate in percent.
func PerformanceMetrics(r Report, kpis KPIs) []Metric {
	if kpis.Peak == 0 {
		kpis.Peak = DefaultPeakThreshold
	}
	return []Metric{
		{
			ID: "performance." + KPIErrorRate, KPI: KPIErrorRate, Severity: SeverityCritical,
			Passed:      r.ErrorRate < MaxErrorRate,
			ActualValue: fmtRounded(r.ErrorRate, 2), ExpectedValue: fmtFloat(MaxErrorRate), Comparator: LT,
		},
		{
			ID: "performance." + KPIP95ResponseTime, KPI: KPIP95ResponseTime, Severity: SeverityImportant,
			Passed:      r.P95 < kpis.P95,
			ActualValue: fmtMillis(r.P95), ExpectedValue: fmtMillis(kpis.P95), Comparator: LT,
		},
		{
			ID: "performance." + KPIPeakResponseTime, KPI: KPIPeakResponseTime, Severity: SeverityImportant,
			Passed:      r.Peak < kpis.Peak,
			ActualValue: fmtMillis(r.Peak), ExpectedValue: fmtMillis(kpis.Peak), Comparator: LT,
		},
		{
			ID: "performance." + KPIPageViewsPerMinute, KPI: KPIPageViewsPerMinute, Severity: SeverityImportant,
			Passed:      r.PageViewsPerMinute >= kpis.PageViewsPerMinute,
			ActualValue: fmtRounded(r.PageViewsPerMinute, 1), ExpectedValue: fmtFloat(kpis.PageViewsPerMinute), Comparator: GTE,
		},
	}
}

func fmtRounded(f float64, digits int) string {
	p := math.Pow10(digits)
	return fmtFloat(math.Round(f*p) / p)
}

func fmtMillis(d time.Duration) string {
	return fmtRounded(float64(d)/float64(time.Millisecond), 1)
}
