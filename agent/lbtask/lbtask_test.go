package lbtask

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/lb"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/yamlconf"
	"github.com/stretchr/testify/require"
)

type sink struct{ ch chan *task.Result }

func (s sink) Progress(string, string, string, time.Time) {}
func (s sink) Result(r *task.Result)                      { s.ch <- r }

func run(t *testing.T, h worker.Handler, k task.Kind) *task.Result {
	j, err := journal.New(kv.NewMemory())
	require.NoError(t, err)
	w := worker.New(worker.Config{Journal: j, Handlers: map[string]worker.Handler{k.Name(): h}})
	defer w.Shutdown(context.Background())
	s := sink{ch: make(chan *task.Result, 1)}
	w.SetSink(s)
	spec := task.Spec{ID: "x/" + k.Name() + "/h", Kind: k}
	raw, _ := task.MarshalSpec(spec)
	w.Submit(spec, raw, 1, nil)
	select {
	case r := <-s.ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
		return nil
	}
}

func TestHealthFileDetachAttachWaitsForReadiness(t *testing.T) {
	dir := t.TempDir()
	var ready atomic.Bool
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	}))
	defer health.Close()
	file := filepath.Join(dir, "health")
	cfg := &Config{HealthURL: health.URL, ReadyInterval: yamlconf.Duration(10 * time.Millisecond)}
	cfg.Kind = lb.KindHealthFile
	cfg.HealthFile = &lb.HealthFileConfig{Path: file, DrainTime: yamlconf.Duration(time.Millisecond), RiseTime: yamlconf.Duration(time.Millisecond)}
	require.NoError(t, cfg.Validate("a.yaml"))
	detach, attach, err := New(cfg, nil)
	require.NoError(t, err)

	r := run(t, detach, task.LBDetach{})
	require.NoError(t, r.Err())
	require.NoFileExists(t, file)
	require.Equal(t, "detached", r.Output.(*task.LBOutput).State)

	go func() { time.Sleep(100 * time.Millisecond); ready.Store(true) }()
	start := time.Now()
	r = run(t, attach, task.LBAttach{})
	require.NoError(t, r.Err())
	require.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond, "attach must wait for the host's own health URL")
	require.FileExists(t, file)
	require.Equal(t, "in-service", r.Output.(*task.LBOutput).State)
}

func TestAttachRefusedWhenHostNeverReady(t *testing.T) {
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer health.Close()
	file := filepath.Join(t.TempDir(), "health")
	cfg := &Config{HealthURL: health.URL, ReadyTimeout: yamlconf.Duration(200 * time.Millisecond), ReadyInterval: yamlconf.Duration(10 * time.Millisecond)}
	cfg.Kind = lb.KindHealthFile
	cfg.HealthFile = &lb.HealthFileConfig{Path: file, DrainTime: yamlconf.Duration(time.Millisecond), RiseTime: yamlconf.Duration(time.Millisecond)}
	_, attach, err := New(cfg, nil)
	require.NoError(t, err)
	r := run(t, attach, task.LBAttach{})
	require.ErrorContains(t, r.Err(), "not attaching")
	_, err = os.Stat(file)
	require.True(t, os.IsNotExist(err), "an unready host must stay detached")
}

func TestConfigFromYAML(t *testing.T) {
	var wrap struct {
		LB *Config `yaml:"lb"`
	}
	err := yamlconf.Decode("a.yaml", []byte("lb:\n  kind: haproxy\n  haproxy:\n    socket: /run/haproxy/admin.sock\n    backend: be\n    server: d1\n  health_url: http://127.0.0.1/health\n"), &wrap)
	require.NoError(t, err)
	require.NoError(t, wrap.LB.Validate("a.yaml"))
	require.Equal(t, "d1", wrap.LB.HAProxy.Server)
	err = yamlconf.Decode("a.yaml", []byte("lb:\n  kind: haproxy\n  helth_url: x\n"), &wrap)
	require.ErrorContains(t, err, `unknown key "helth_url" (did you mean "health_url"?)`)
	bad := &Config{}
	bad.Kind = lb.KindHAProxy
	require.ErrorContains(t, bad.Validate("a.yaml"), "lb.health_url is required")
}
