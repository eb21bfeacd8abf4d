// Command aemsim runs a simulated AEM CRX Package Manager for end-to-end
// tests (see package sim for what it simulates):
//
//	go run ./e2e/aemsim --listen 127.0.0.1:4502 --user admin --password admin --data DIR
//
// It stops gracefully on SIGINT or SIGTERM: no new connections, requests in
// progress (including slow installs, which then finish at once) complete,
// then the state is closed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/deckhand-dev/deckhand/e2e/aemsim/sim"
	"github.com/deckhand-dev/deckhand/pkg/logging"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "aemsim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("aemsim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4502", "address to listen on")
	user := fs.String("user", "admin", "Basic auth user")
	password := fs.String("password", "admin", "Basic auth password")
	data := fs.String("data", "", "data directory for state and uploaded packages (required)")
	depHandling := fs.String("dependency-handling", sim.DepRequired, "default dependency handling: ignore, best_effort, required or strict")
	logLevel := fs.String("log-level", "info", "log level: trace, debug, info, warn, error")
	logJSON := fs.Bool("log-json", false, "log in JSON")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "how long to wait for requests in progress on shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *data == "" {
		return errors.New("--data is required")
	}
	if !logging.ValidLevel(*logLevel) {
		return fmt.Errorf("unknown --log-level %q", *logLevel)
	}
	log := logging.New(logging.Options{Name: "aemsim", Level: *logLevel, JSON: *logJSON})

	s, err := sim.New(sim.Config{
		User: *user, Password: *password, DataDir: *data, Logger: log,
		DependencyHandling: *depHandling,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		_ = s.Close()
		return err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	log.Info("listening", "addr", ln.Addr().String())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		_ = s.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	// Close the Sim first so slow installs cut their delay short; it waits
	// for the requests in progress, then Shutdown finds the connections idle.
	closeErr := make(chan error, 1)
	go func() { closeErr <- s.Close() }()
	shutErr := srv.Shutdown(sctx)
	if err := <-closeErr; err != nil {
		return err
	}
	if shutErr != nil {
		return shutErr
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}
