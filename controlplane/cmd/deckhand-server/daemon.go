package main

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/controlplane/config"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/pkg/sysd"
)

// daemon runs the server under systemd's eye: READY=1 once state is open
// and the listener bound (deployments and executions resume then), STATUS
// lines with the fleet's state, watchdog pings from the fleet's supervision
// loop, STOPPING=1 on SIGTERM (runners stop without touching their
// persisted state and resume at the next start), and SIGHUP reloads the
// config file: a valid new config restarts the server in-process (agents
// reconnect, rollouts and executions resume); an invalid one is refused
// and the running config kept.
func daemon(cfgPath, levelFlag string, devInsecure bool, cfg *config.Config, log hclog.Logger) int {
	sig := sysd.Listen("stopping")
	defer sig.Close()
	ctx, hup, alive := sig.Ctx, sig.HUP, sig.Alive

	for {
		srv, err := server.New(cfg, server.Options{Logger: log, DevInsecure: devInsecure, Alive: alive.Advance})
		if err != nil {
			log.Error("cannot start", "error", err)
			return 1
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(runCtx) }()
		sysd.Ready()
		alive.Advance()
		statusCtx, stopStatus := context.WithCancel(runCtx)
		go status(statusCtx, srv)

		var next *config.Config
	wait:
		for {
			select {
			case err := <-done:
				stopStatus()
				cancel()
				if err != nil {
					log.Error("server failed", "error", err)
					return 1
				}
				return 0
			case <-hup:
				c, err := config.Load(cfgPath)
				if err != nil {
					log.Error("SIGHUP: the config file is invalid; keeping the running config", "error", err)
					sysd.Status("reload refused: %v", err)
					continue
				}
				next = c
				break wait
			}
		}
		sysd.Reloading()
		stopStatus()
		cancel()
		<-done
		lvl := next.LogLevel
		if levelFlag != "" {
			lvl = levelFlag
		}
		if l := hclog.LevelFromString(lvl); l != hclog.NoLevel {
			log.SetLevel(l)
		}
		cfg = next
		log.Info("config reloaded; server restarted with it", "config", cfgPath)
	}
}

// status publishes a STATUS line with the fleet's state every 15 s.
func status(ctx context.Context, srv *server.Server) {
	for {
		online, total := 0, 0
		if all, err := srv.Fleet().Agents(); err == nil {
			for _, a := range all {
				total++
				if a.Online {
					online++
				}
			}
		}
		sysd.Status("serving on %s: %d of %d agents online", srv.Addr(), online, total)
		select {
		case <-ctx.Done():
			return
		case <-time.After(15 * time.Second):
		}
	}
}
