// Package failpoint marks the places where data becomes durable so crash
// tests can kill the real binary exactly there. It is inert unless the
// process was started with DECKHAND_FAILPOINTS set; production builds pay
// one map lookup per point.
//
// DECKHAND_FAILPOINTS is a comma-separated list of name=action, where
// action is "kill" (SIGKILL this process at the first hit), "kill@N" (at
// the Nth hit), "panic", "hang" (block the calling goroutine forever: a
// stuck loop) or "sleep:DURATION" (e.g. sleep:2s, a slow step). A name may end in "*" to match a prefix. With
// DECKHAND_FAILPOINT_LOG=path, every hit is appended to that file as
// "name\n" (tests use it to enumerate the points a run passes).
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type rule struct {
	prefix bool
	name   string
	action string
	at     int
}

var (
	once  sync.Once
	rules []rule
	mu    sync.Mutex
	hits  = map[string]int{}
	logf  *os.File
)

func load() {
	spec := os.Getenv("DECKHAND_FAILPOINTS")
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, action, _ := strings.Cut(item, "=")
		r := rule{name: name, action: action, at: 1}
		if strings.HasSuffix(name, "*") {
			r.prefix, r.name = true, strings.TrimSuffix(name, "*")
		}
		if a, n, ok := strings.Cut(action, "@"); ok {
			r.action = a
			if v, err := strconv.Atoi(n); err == nil && v > 0 {
				r.at = v
			}
		}
		rules = append(rules, r)
	}
	if p := os.Getenv("DECKHAND_FAILPOINT_LOG"); p != "" {
		logf, _ = os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	}
}

// Enabled reports whether any failpoint configuration is active.
func Enabled() bool {
	once.Do(load)
	return len(rules) > 0 || logf != nil
}

// Hit marks that execution reached the named point.
func Hit(name string) {
	if !Enabled() {
		return
	}
	mu.Lock()
	hits[name]++
	n := hits[name]
	if logf != nil {
		fmt.Fprintln(logf, name)
		logf.Sync()
	}
	mu.Unlock()
	for _, r := range rules {
		if (r.prefix && strings.HasPrefix(name, r.name)) || name == r.name {
			if n != r.at && !r.prefix {
				continue
			}
			switch r.action {
			case "kill":
				if r.prefix {
					// For prefixes, count hits across all matching names.
					mu.Lock()
					hits["*"+r.name]++
					total := hits["*"+r.name]
					mu.Unlock()
					if total != r.at {
						continue
					}
				}
				fmt.Fprintf(os.Stderr, "failpoint %s: killing the process\n", name)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			case "panic":
				panic("failpoint " + name)
			case "hang":
				fmt.Fprintf(os.Stderr, "failpoint %s: hanging\n", name)
				select {}
			default:
				if d, ok := strings.CutPrefix(r.action, "sleep:"); ok {
					if dur, err := time.ParseDuration(d); err == nil {
						time.Sleep(dur)
					}
				}
			}
		}
	}
}
