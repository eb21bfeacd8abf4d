package topology

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a client loop hammering a URL, as visitors of the site would.
type Load struct {
	total, failed atomic.Int64
	mu            sync.Mutex
	failures      []string // the first few, for the test log
	bodies        map[string]int
	stop          chan struct{}
	wg            sync.WaitGroup
}

// Hammer requests url from workers goroutines until Stop.
func Hammer(url string, workers int) *Load {
	l := &Load{stop: make(chan struct{}), bodies: map[string]int{}}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers, DisableKeepAlives: false}}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.total.Add(1)
				resp, err := client.Get(url)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					l.fail(fmt.Sprintf("HTTP %d %v", resp.StatusCode, err))
					continue
				}
				l.mu.Lock()
				l.bodies[string(body)]++
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *Load) fail(msg string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.failures) < 10 {
		l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+msg)
	}
	l.mu.Unlock()
}

// LoadResult is what a client loop saw.
type LoadResult struct {
	Total, Failed int64
	Failures      []string
	Bodies        map[string]int
}

// Stop ends the loop and reports.
func (l *Load) Stop() LoadResult {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return LoadResult{Total: l.total.Load(), Failed: l.failed.Load(), Failures: append([]string(nil), l.failures...), Bodies: l.bodies}
}
