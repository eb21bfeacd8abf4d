// Command deckhand-server is the Deckhand control plane.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/pkg/logging"
	"github.com/deckhand-dev/deckhand/pkg/version"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("deckhand-server", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/deckhand/server.yaml", "config file")
	level := fs.String("log-level", "", "trace, debug, info, warn or error (overrides the config)")
	logJSON := fs.Bool("log-json", false, "log JSON lines")
	showVersion := fs.Bool("version", false, "print the version and exit")
	devInsecure := fs.Bool("dev-insecure", false, "no TLS, no authentication: for local demos only; refused unless listening on loopback")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Println("deckhand-server", version.Version)
		return 0
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deckhand-server:", err)
		return 1
	}
	lvl := cfg.LogLevel
	if *level != "" {
		lvl = *level
	}
	if !logging.ValidLevel(lvl) {
		fmt.Fprintf(os.Stderr, "deckhand-server: unknown log level %q\n", lvl)
		return 2
	}
	log := logging.New(logging.Options{Name: "deckhand-server", Level: lvl, JSON: *logJSON})
	return daemon(*cfgPath, *level, *devInsecure, cfg, log)
}
