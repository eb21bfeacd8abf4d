package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// readyAttemptTimeout bounds one probe of WaitReady. It is longer than
// Apache's graceful gap (up to ~1 s during which a new connection waits in
// the listen backlog), so a probe that would succeed is not abandoned.
const readyAttemptTimeout = 3 * time.Second

// WaitReady polls url (the host's own health URL, not the load balancer's)
// every interval until it answers 200, and returns nil then. It returns an
// error wrapping ctx.Err(), with the last result, when ctx ends first.
// interval <= 0 means DefaultPollInterval.
//
// Why: after "apache2 -k graceful", Apache accepts no new connections for
// up to about a second. Attaching in that gap lets the load balancer's next
// check time out and mark the host DOWN while it already routes requests to
// it. So the agent waits here first, then attaches (AttachWhenReady).
//
// Every probe opens a new connection (keep-alives off): a kept-alive
// connection to an old worker could answer 200 while the listener does not
// yet accept. Proxy settings from the environment are ignored, since the
// point is to reach this host directly. Redirects are not followed; only
// 200 counts.
func WaitReady(ctx context.Context, url string, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	var last string
	for {
		code, err := probe(ctx, client, url)
		switch {
		case err == nil && code == http.StatusOK:
			return nil
		case err != nil && ctx.Err() != nil && last != "":
			// The probe was cut short by ctx itself; the previous
			// result says more about why the host is not ready.
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("HTTP %d", code)
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return fmt.Errorf("lb: %s did not answer 200 (last: %s): %w", url, last, err)
		}
	}
}

func probe(ctx context.Context, client *http.Client, url string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, readyAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		var uerr interface{ Unwrap() error }
		if errors.As(err, &uerr) {
			return 0, uerr.Unwrap() // drop the repeated "Get URL:" prefix
		}
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// AttachWhenReady waits until the host's own healthURL answers 200
// (WaitReady), then attaches it (d.Attach), which returns once the load
// balancer reports it in service. This is the order the dispatcher agent
// uses after reloading Apache. Both steps share ctx.
func AttachWhenReady(ctx context.Context, d Driver, healthURL string, interval time.Duration) error {
	if err := WaitReady(ctx, healthURL, interval); err != nil {
		return fmt.Errorf("lb: not attaching: %w", err)
	}
	return d.Attach(ctx)
}
