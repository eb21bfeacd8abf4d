// Package metrics holds the Prometheus metrics of both daemons and serves
// them on /metrics. Each daemon builds its own Registry (no global state),
// so tests and in-process restarts do not collide.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Serve serves reg on http://addr/metrics until ctx ends. A port already
// in use is logged, not fatal: metrics must never stop a deployment.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, log hclog.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("metrics endpoint not started", "listen", addr, "error", err)
		return "", err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics endpoint stopped", "error", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("metrics on", "url", "http://"+ln.Addr().String()+"/metrics")
	return ln.Addr().String(), nil
}

// DurationBuckets fit task and step durations: 10 ms to ~45 min.
var DurationBuckets = prometheus.ExponentialBuckets(0.01, 2.5, 14)
