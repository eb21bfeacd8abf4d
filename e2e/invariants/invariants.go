// Package invariants checks a deployment's event log — as `deckctl
// deployments logs -o json` prints it — against the rules every rollout
// must keep. It is deliberately independent of the runner's code: it reads
// only the log, so a bug in the runner cannot also hide in the checker.
//
// The rules:
//   - production: never more than max_unavailable pairs out of the load
//     balancer at once (a pair is out from the start of its detach until its
//     attach succeeded);
//   - production: AEM packages reach the author before any publish;
//   - production: a pair's publish and dispatcher change only while that
//     dispatcher is detached;
//   - every detach is followed by a successful attach, unless the deployment
//     failed and said the host stays detached;
//   - no step ran twice: one start and one end per step, and the agent
//     started each task's work once.
package invariants

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Event is one line of the log (the JSON field names deckctl prints).
type Event struct {
	Seq      uint64    `json:"seq"`
	At       time.Time `json:"at"`
	Kind     string    `json:"kind"`
	Step     string    `json:"step"`
	Task     string    `json:"task"`
	Host     string    `json:"host"`
	Pair     int       `json:"pair"`
	Status   string    `json:"status"`
	Attempts int       `json:"attempts"`
	Message  string    `json:"message"`
	State    string    `json:"state"`
}

// Parse reads JSON lines.
func Parse(r io.Reader) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var e Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("event log line %q: %w", line, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Options say what the deployment was.
type Options struct {
	Production     bool
	MaxUnavailable int
	// Hosts maps host id to role ("author", "publish", "dispatcher").
	Hosts map[string]string
}

// Check returns every broken rule, joined; nil when the log is clean.
func Check(events []Event, o Options) error {
	if o.MaxUnavailable < 1 {
		o.MaxUnavailable = 1
	}
	evs := append([]Event(nil), events...)
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].Seq < evs[b].Seq })
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	starts := map[string]int{}
	ends := map[string]int{}
	out := map[int]bool{}        // pairs currently out of the load balancer
	detached := map[string]int{} // dispatcher -> pair, while out
	maxOut := 0
	authorInstalls, authorDone := 0, 0
	var finished *Event
	for i := range evs {
		e := evs[i]
		switch e.Kind {
		case "step.started":
			starts[e.Step]++
			if starts[e.Step] > 1 {
				fail("step %s started %d times", e.Step, starts[e.Step])
			}
			if e.Task == "lb_detach" {
				out[e.Pair] = true
				detached[e.Host] = e.Pair
				if o.Production && len(out) > maxOut {
					maxOut = len(out)
				}
				if o.Production && len(out) > o.MaxUnavailable {
					fail("seq %d: %d pairs out of the load balancer at once (max_unavailable %d): %v", e.Seq, len(out), o.MaxUnavailable, keys(out))
				}
			}
			if o.Production && e.Task == "package_install" && o.Hosts[e.Host] == "author" {
				authorInstalls++
			}
			if o.Production && e.Task == "package_install" && o.Hosts[e.Host] == "publish" && authorDone < authorInstalls {
				fail("seq %d: %s started installing before the author finished", e.Seq, e.Host)
			}
			if o.Production && (e.Task == "package_install" && o.Hosts[e.Host] == "publish" || e.Task == "dispatcher_deploy" || e.Task == "dispatcher_restore") {
				if !out[e.Pair] {
					fail("seq %d: %s changed %s while pair %d was in the load balancer", e.Seq, e.Step, e.Host, e.Pair)
				}
			}
		case "step.finished":
			ends[e.Step]++
			if ends[e.Step] > 1 {
				fail("step %s finished %d times", e.Step, ends[e.Step])
			}
			if starts[e.Step] == 0 {
				fail("step %s finished without starting", e.Step)
			}
			if e.Attempts > 1 {
				fail("step %s: the agent started its work %d times", e.Step, e.Attempts)
			}
			if e.Task == "lb_attach" && e.Status == "succeeded" {
				delete(out, e.Pair)
				delete(detached, e.Host)
			}
			if o.Production && e.Task == "package_install" && o.Hosts[e.Host] == "author" && e.Status == "succeeded" {
				authorDone++
			}
		case "deployment.finished":
			finished = &evs[i]
		}
	}
	if finished == nil {
		fail("the log has no deployment.finished event")
	} else {
		for host, pair := range detached {
			if finished.State == "SUCCEEDED" {
				fail("%s (pair %d) is still detached at the end of a successful deployment", host, pair)
				continue
			}
			if !saysDetached(evs, host) {
				fail("%s (pair %d) was left detached but the log never says so", host, pair)
			}
		}
	}
	for step, n := range starts {
		if n == 1 && ends[step] == 0 && finished != nil {
			fail("step %s started but never finished", step)
		}
	}
	return errors.Join(errs...)
}

// saysDetached reports whether a note or the final message explains why
// host stays out of the load balancer.
func saysDetached(evs []Event, host string) bool {
	for _, e := range evs {
		if (e.Kind == "note" || e.Kind == "deployment.finished" || (e.Kind == "step.finished" && e.Status == "failed")) &&
			(strings.Contains(e.Message, host) || e.Host == host) {
			return true
		}
	}
	return false
}

func keys(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}
