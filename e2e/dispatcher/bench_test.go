package dispatcher_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	disp "github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/e2e/harness/apache"
)

// genConfig is a dispatcher config of n files (counting the immutable
// copies an AMS artifact carries): rewrite rules and variables Apache
// includes and dispatcher filters the agent's include check follows, each
// about a kilobyte. version "a" serves /page as version 1, "b" as 2.
func genConfig(n int, version string) apache.Artifact {
	a := apache.DefaultArtifact()
	page := map[string]string{"a": "v1", "b": "v2"}[version]
	a.Files[rulesPath] = "RewriteEngine On\nRewriteRule ^/page$ /" + page + ".html [PT]\n"
	a.Files["conf.d/available_vhosts/default.vhost"] = "<VirtualHost *:*>\n\tServerName default\n\tInclude conf.d/rewrites/default_rewrite.rules\n\tInclude conf.d/rewrites/gen/*.rules\n</VirtualHost>\n"
	a.Files["conf.d/zz_gen.conf"] = "Include conf.d/variables/gen/*.vars\n"
	a.Files["conf.dispatcher.d/available_farms/default_farm.any"] += "/genfarm { /filter { $include \"../filters/gen/*.any\" } }\n"
	pad := strings.Repeat("# generated for the deployment benchmark: comment lines bring the file to a realistic size\n", 10)
	for i := 0; len(a.Files)+len(a.Symlinks) < n; i++ {
		switch i % 5 {
		case 0, 1:
			a.Files[fmt.Sprintf("conf.d/rewrites/gen/rule_%05d.rules", i)] = pad + fmt.Sprintf("RewriteRule ^/gen/%d/%s$ /v1.html [PT]\n", i, version)
		case 2:
			a.Files[fmt.Sprintf("conf.d/variables/gen/var_%05d.vars", i)] = pad + fmt.Sprintf("Define GEN_%d %s\n", i, version)
		default:
			a.Files[fmt.Sprintf("conf.dispatcher.d/filters/gen/filter_%05d.any", i)] = pad + fmt.Sprintf("/%05d { /type \"allow\" /url \"/content/gen/%d/%s/*\" }\n", i, i, version)
		}
	}
	return a
}

// byHandScript is the seed's deployment steps done by hand: back up with
// cp -a, delete every config but the immutable files, unzip without them,
// configtest, then graceful reload (or restore, reload and fail).
func byHandScript(in *apache.Instance, managed, immutable []string) string {
	var keep, excl []string
	for _, p := range immutable {
		keep = append(keep, "! -path "+shq(p))
		excl = append(excl, shq(p))
	}
	return fmt.Sprintf(`#!/bin/bash
# Deploy a dispatcher artifact by hand: usage: deploy.sh ZIP BACKUP_DIR
set -euo pipefail
zip=$1 backup=$2
apache=%s conf=%s
cd %s
dirs=(%s)
clear() {
	find "${dirs[@]}" -mindepth 1 ! -type d %s -delete
	find "${dirs[@]}" -mindepth 1 -depth -type d -empty -delete
}
mkdir -p "$backup"
cp -a "${dirs[@]}" "$backup/"
clear
unzip -q -o "$zip" -x %s
if ! "$apache" -t -f "$conf"; then
	clear
	cp -a "$backup/." .
	"$apache" -k graceful -f "$conf"
	exit 1
fi
"$apache" -k graceful -f "$conf"
`, shq(in.Binary), shq(in.ConfPath), shq(in.Dir), strings.Join(managed, " "), strings.Join(keep, " "), strings.Join(excl, " "))
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// median of durations (the upper one of an even count).
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkDeployAgentVsScript deploys a generated 2,000-file dispatcher
// config through the real agent (a DispatcherDeploy assigned on the
// control plane; timed from Assign until the result is stored) and with a
// bash script doing the same steps by hand (timed from exec to exit), on
// the same real Apache, alternately: each round the agent replaces the
// script's tree and the script the agent's. The agent is stopped while
// the script runs (its drift watcher would otherwise spend CPU on the
// script's writes) and started again, untimed, before its turn.
// E2E_BENCH_ROUNDS sets the rounds (default 5). Reported: medians and
// the ratio agent/script (goal ≤ 1.2).
//
// E2E_BENCH_COMPARE=label=path[,label=path...] names other deckhand-agent
// binaries (e.g. built before an optimization) that take a turn in every
// round too, so before and after are measured under the same load; their
// figures are reported with the label as a prefix. go test keeps only 10
// lines of a benchmark's log: with more than two binaries, read the
// metrics.
func BenchmarkDeployAgentVsScript(b *testing.B) {
	const files = 2000
	h := newHost(b, hostOptions{logLevel: "debug"})
	rounds := envInt(b, "E2E_BENCH_ROUNDS", 5)
	artA, artB := genConfig(files, "a"), genConfig(files, "b")
	a, bb := h.upload(artA), h.upload(artB)
	zipA := filepath.Join(h.dir, "a.zip")
	_, _, err := artA.Write(zipA)
	require.NoError(b, err)
	cfg := disp.Config{}
	cfg.ApplyDefaults(h.dataDir)
	script := filepath.Join(h.dir, "deploy.sh")
	require.NoError(b, os.WriteFile(script, []byte(byHandScript(h.in, cfg.ManagedDirs, cfg.Immutable)), 0o755))
	type variant struct {
		name, bin string
		tasks     map[string]bool
		times     []time.Duration
		script    []time.Duration // the script's run right after this variant's
	}
	variants := []*variant{{name: "", bin: h.bin, tasks: map[string]bool{}}}
	for _, kv := range strings.Split(os.Getenv("E2E_BENCH_COMPARE"), ",") {
		if name, bin, ok := strings.Cut(kv, "="); ok {
			variants = append(variants, &variant{name: name + "-", bin: bin, tasks: map[string]bool{}})
		}
	}

	// Warm-up, untimed: enrollment, both artifacts fetched once, the
	// script's tools in the page cache.
	require.NoError(b, h.deploy("warm-a", a).Err())
	require.NoError(b, h.deploy("warm-b", bb).Err())
	runScript := func(i int) time.Duration {
		backup := filepath.Join(h.dir, fmt.Sprintf("script-backup-%d", i))
		start := time.Now()
		out, err := exec.Command("/bin/bash", script, zipA, backup).CombinedOutput()
		took := time.Since(start)
		require.NoError(b, err, "%s", out)
		require.NoError(b, os.RemoveAll(backup))
		return took
	}
	runScript(-1)
	h.requireServes(pageV1)

	n := 0
	for i := 0; i < rounds; i++ {
		for _, v := range variants {
			h.bin = v.bin
			p := h.start()
			require.Eventually(b, func() bool { return h.cp.Server.Fleet().Online(hostID) }, 30*time.Second, 5*time.Millisecond)
			start := time.Now()
			id := h.assign(fmt.Sprintf("bench-%d", n), bb)
			v.tasks[id] = true
			r := h.await(id, 5*time.Minute)
			took := time.Since(start)
			require.NoError(b, r.Err())
			require.GreaterOrEqual(b, output(r).Files, files-len(cfg.Immutable))
			p.stop()
			v.times = append(v.times, took)
			h.requireServes(pageV2, pageV1)

			st := runScript(n)
			v.script = append(v.script, st)
			h.requireServes(pageV1, pageV2)
			n++
		}
	}
	h.bin = variants[0].bin
	// go test keeps 10 lines of a benchmark's log: 3 per variant.
	round := func(ds []time.Duration) string {
		var s []string
		for _, d := range ds {
			s = append(s, d.Round(time.Millisecond).String())
		}
		return strings.Join(s, " ")
	}
	for _, v := range variants {
		b.Logf("%sagent rounds: %s; script rounds: %s", v.name, round(v.times), round(v.script))
		h.logPhases(b, v.name, v.tasks)
		ma, ms := median(v.times), median(v.script)
		ratio := float64(ma) / float64(ms)
		b.Logf("%smedians over %d rounds: agent %v, script %v, ratio agent/script %.2f (goal <= 1.2)", v.name, rounds, ma.Round(time.Millisecond), ms.Round(time.Millisecond), ratio)
		if v.name == "" {
			b.ReportMetric(float64(ma.Nanoseconds()), "ns/op")
		}
		b.ReportMetric(float64(ma.Milliseconds()), v.name+"agent-ms")
		b.ReportMetric(float64(ms.Milliseconds()), v.name+"script-ms")
		b.ReportMetric(ratio, v.name+"agent/script")
	}
	b.ReportMetric(files, "files")
}

// phaseLine matches the agent's log lines that time a deployment's steps;
// taskLine the lines that name the task.
var (
	phaseLine = regexp.MustCompile(`(artifact staged and validated|backed up the config tree|configtest passed|apache reloaded|dispatcher config deployed): .*?took="?([0-9.]+[a-zµ]+)"?`)
	taskLine  = regexp.MustCompile(`task=(\S+)`)
	// stepField are the staging sub-steps on the "staged" line.
	stepField = regexp.MustCompile(` (fetch|extract|immutables|validate)="?([0-9.]+[a-zµ]+)"?`)
)

// logPhases logs where the agent's time went in the given tasks, medians
// per step, from its log (staging = fetch, extract, host immutables,
// sync, validation).
func (h *host) logPhases(b *testing.B, label string, tasks map[string]bool) {
	raw, err := os.ReadFile(h.logPath)
	require.NoError(b, err)
	steps := map[string][]time.Duration{}
	var order []string
	cur := ""
	deployedAt := map[string]time.Time{}
	for _, line := range strings.Split(string(raw), "\n") {
		if m := taskLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
		}
		// From the handler's last line to the journaled result: what runs
		// around the handler (the drift watcher renewing its watches and
		// snapshotting the new tree; the hashing runs after the result).
		if at, err := time.Parse("2006-01-02T15:04:05.000Z0700", strings.SplitN(line, " ", 2)[0]); err == nil && tasks[cur] {
			switch {
			case strings.Contains(line, "dispatcher config deployed:"):
				deployedAt[cur] = at
			case strings.Contains(line, "task finished:") && !deployedAt[cur].IsZero():
				if _, ok := steps["handler to result"]; !ok {
					order = append(order, "handler to result")
				}
				steps["handler to result"] = append(steps["handler to result"], at.Sub(deployedAt[cur]))
			}
		}
		m := phaseLine.FindStringSubmatch(line)
		if m == nil || !tasks[cur] {
			continue
		}
		d, err := time.ParseDuration(m[2])
		if err != nil {
			continue
		}
		if _, ok := steps[m[1]]; !ok {
			order = append(order, m[1])
		}
		steps[m[1]] = append(steps[m[1]], d)
		for _, f := range stepField.FindAllStringSubmatch(line, -1) {
			if d, err := time.ParseDuration(f[2]); err == nil {
				name := "(" + f[1] + ")"
				if _, ok := steps[name]; !ok {
					order = append(order, name)
				}
				steps[name] = append(steps[name], d)
			}
		}
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s %v", n, median(steps[n]).Round(time.Millisecond)))
	}
	b.Logf("%sagent steps (medians, from its log): %s", label, strings.Join(parts, "; "))
}
