package rollout_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
	"github.com/deckhand-dev/deckhand/e2e/harness/haproxy"
	"github.com/deckhand-dev/deckhand/e2e/topology"
	"github.com/stretchr/testify/require"
)

// byHand is the hand-written limit: what an operator's script does per
// dispatcher, with the same HAProxy settings (httpchk every 200 ms, rise 2,
// fall 2): drain to 0 sessions, maint, backup, delete all but the immutable
// files, unzip without them, configtest, graceful, direct readiness GET,
// ready, wait until HAProxy says UP.
const byHand = `#!/bin/bash
set -euo pipefail
SOCK=$1 BACKEND=$2 SERVER=$3 HTTPD=$4 CONF=$5 ZIP=$6 HEALTH=$7 BACKUP=$8 APACHE=$9 IMMUTABLE=${10}
hap() { echo "$1" | socat - "UNIX-CONNECT:$SOCK"; }
field() { hap "show stat" | awk -F, -v b="$BACKEND" -v s="$SERVER" -v f="$1" '$1==b && $2==s {print $f}'; }
hap "set server $BACKEND/$SERVER state drain" >/dev/null
until [ "$(field 5)" = 0 ]; do sleep 0.02; done
hap "set server $BACKEND/$SERVER state maint" >/dev/null
rm -rf "$BACKUP"; mkdir -p "$BACKUP"
cd "$HTTPD"
cp -a conf conf.d conf.dispatcher.d conf.modules.d "$BACKUP/"
find conf conf.d conf.dispatcher.d conf.modules.d \( -type f -o -type l \) | grep -vxF -f "$IMMUTABLE" | xargs -r rm -f
unzip -o -q "$ZIP" -d "$HTTPD" -x $(tr '\n' ' ' < "$IMMUTABLE")
"$APACHE" -t -f "$CONF" 2>/dev/null
"$APACHE" -k graceful -f "$CONF"
until curl -sf -o /dev/null "$HEALTH"; do sleep 0.02; done
hap "set server $BACKEND/$SERVER state ready" >/dev/null
until [ "$(field 18)" = "UP" ]; do sleep 0.02; done
`

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	return s[len(s)/2]
}

// BenchmarkRollingDeploy10 deploys a dispatcher config across 10 real
// Apache dispatchers behind one real HAProxy, through Deckhand (a
// production rollout, pair by pair) and through the byHand script run
// host after host, alternately in one run, while a client loop counts
// failed requests. Run with -benchtime 3x for medians of 3.
//
//	go test -run XXX -bench RollingDeploy10 -benchtime 3x ./e2e/rollout/
func BenchmarkRollingDeploy10(b *testing.B) {
	const n = 10
	tp := topology.Start(b, topology.Options{Pairs: n})
	dir := b.TempDir()
	script := filepath.Join(dir, "by-hand.sh")
	require.NoError(b, os.WriteFile(script, []byte(byHand), 0o755))
	immutable := filepath.Join(dir, "immutable.list")
	var imm []string
	for f := range apache.ImmutableFiles() {
		imm = append(imm, f)
	}
	imm = append(imm, "conf/httpd.conf")
	sort.Strings(imm)
	require.NoError(b, os.WriteFile(immutable, []byte(strings.Join(imm, "\n")+"\n"), 0o644))

	artifact := func(v int) string {
		art := apache.DefaultArtifact()
		art.Files["conf.d/rewrites/default_rewrite.rules"] = fmt.Sprintf("RewriteEngine On\nRewriteRule ^/page$ /v%d.html [PT]\n", v)
		p := filepath.Join(dir, fmt.Sprintf("dispatcher-%d.zip", v))
		_, _, err := art.Write(p)
		require.NoError(b, err)
		return p
	}
	load := topology.Hammer(tp.HAProxy.URL+"/page", 4)
	var agentTimes, scriptTimes []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Deckhand.
		v := i%2 + 2
		set := push(b, tp, fmt.Sprint(i+100), []string{artifact(v)})
		start := time.Now()
		id, err := deploy(b, tp, "deploy", "--env", tp.Env, "--artifacts", set)
		agentTimes = append(agentTimes, time.Since(start))
		require.NoError(b, err)
		if i == b.N-1 {
			logStepTimes(b, tp, id)
		}

		// The script, same work, host after host.
		zip := artifact(5 - v)
		start = time.Now()
		for h := 1; h <= n; h++ {
			host := fmt.Sprintf("dispatcher%d", h)
			in := tp.Apache[host]
			cmd := exec.Command("bash", script, tp.HAProxy.Socket, haproxy.Backend, host, in.Dir, in.ConfPath, zip, in.URL+"/health.html", filepath.Join(dir, "backup-"+host), in.Binary, immutable)
			out, err := cmd.CombinedOutput()
			require.NoError(b, err, "%s", out)
		}
		scriptTimes = append(scriptTimes, time.Since(start))
	}
	b.StopTimer()
	res := load.Stop()
	a, s := median(agentTimes), median(scriptTimes)
	b.ReportMetric(a.Seconds()/n, "deckhand-s/host")
	b.ReportMetric(s.Seconds()/n, "script-s/host")
	b.ReportMetric(a.Seconds()/s.Seconds(), "ratio")
	b.ReportMetric(float64(res.Failed), "failed-requests")
	b.ReportMetric(float64(res.Total), "requests")
	b.Logf("deckhand %v, script %v (medians of %d), %d requests, %d failed %v", agentTimes, scriptTimes, b.N, res.Total, res.Failed, res.Failures)
}

// logStepTimes prints how long each kind of step took (median), to show
// where a rollout's time goes.
func logStepTimes(b *testing.B, tp *topology.Topology, id string) {
	out, err := tp.Deckctl("deployments", "show", id, "-o", "json")
	require.NoError(b, err)
	var d struct {
		Steps []struct {
			Kind       string    `json:"kind"`
			StartedAt  time.Time `json:"started_at"`
			FinishedAt time.Time `json:"finished_at"`
		} `json:"steps"`
	}
	require.NoError(b, json.Unmarshal(out, &d))
	byKind := map[string][]time.Duration{}
	var first, last time.Time
	for _, s := range d.Steps {
		byKind[s.Kind] = append(byKind[s.Kind], s.FinishedAt.Sub(s.StartedAt))
		if first.IsZero() || s.StartedAt.Before(first) {
			first = s.StartedAt
		}
		if s.FinishedAt.After(last) {
			last = s.FinishedAt
		}
	}
	var parts []string
	var sum time.Duration
	for k, ds := range byKind {
		parts = append(parts, fmt.Sprintf("%s median %s", k, median(ds).Round(time.Millisecond)))
		for _, x := range ds {
			sum += x
		}
	}
	sort.Strings(parts)
	b.Logf("deployment %s: %s; steps %s of %s wall (the rest is orchestration between steps)", id, strings.Join(parts, ", "), sum.Round(time.Millisecond), last.Sub(first).Round(time.Millisecond))
	if p := os.Getenv("BENCH_KEEP_LOG"); p != "" {
		log, _ := os.ReadFile(tp.Agents["dispatcher1"].Log)
		os.WriteFile(p, log, 0o644)
		srv, _ := os.ReadFile(tp.Server.Log)
		os.WriteFile(p+".server", srv, 0o644)
	}
}
