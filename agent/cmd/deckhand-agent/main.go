// Command deckhand-agent runs on every AEM author, publish and dispatcher
// host and does the control plane's tasks there.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/deckhand-dev/deckhand/agent"
	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/pkg/logging"
	"github.com/deckhand-dev/deckhand/pkg/version"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("deckhand-agent", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/deckhand/agent.yaml", "config file")
	level := fs.String("log-level", "", "trace, debug, info, warn or error (overrides the config)")
	logJSON := fs.Bool("log-json", false, "log JSON lines")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("deckhand-agent", version.Version)
		return 0
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deckhand-agent:", err)
		return 1
	}
	lvl := cfg.LogLevel
	if *level != "" {
		lvl = *level
	}
	if !logging.ValidLevel(lvl) {
		fmt.Fprintf(os.Stderr, "deckhand-agent: unknown log level %q\n", lvl)
		return 2
	}
	log := logging.New(logging.Options{Name: "deckhand-agent", Level: lvl, JSON: *logJSON}).With("host", cfg.HostID)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := agent.New(cfg, agent.Options{Logger: log})
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	if err := a.Run(ctx); err != nil {
		var fatal *session.FatalError
		if errors.As(err, &fatal) {
			log.Error("stopping: the server will not accept this agent as configured", "error", err)
			return 3
		}
		log.Error("agent failed", "error", err)
		return 1
	}
	return 0
}
