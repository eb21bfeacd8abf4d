package main

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/agent"
	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/pkg/sysd"
)

// daemon runs the agent under systemd's eye: READY=1 once interrupted
// tasks are repaired, STATUS lines, watchdog pings while the session loop
// is alive, STOPPING=1 on SIGTERM (running tasks are checkpointed in the
// journal and finished or undone at the next start), and SIGHUP reloads the
// config file: the new config is checked first, the agent waits until no
// task runs, then restarts itself in-process with it.
func daemon(cfgPath, levelFlag string, cfg *config.Config, log hclog.Logger) int {
	sig := sysd.Listen("stopping: checkpointing running tasks")
	defer sig.Close()
	ctx, hup, alive, wd := sig.Ctx, sig.HUP, sig.Alive, sig.Watchdog
	if wd.Enabled() {
		log.Info("systemd watchdog on", "interval", wd.Interval())
	}

	for {
		a, err := agent.New(cfg, agent.Options{
			Logger: log,
			OnReady: func() {
				sysd.Ready()
				sysd.Status("journal recovered; connecting to %s", cfg.Server)
				alive.Advance()
			},
			Alive:          alive.Advance,
			OnConnected:    func(server string) { sysd.Status("connected to %s", server) },
			OnDisconnected: func(err error) { sysd.Status("lost the server (%v); reconnecting", err) },
		})
		if err != nil {
			log.Error("cannot start", "error", err)
			return 1
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(runCtx) }()
		next, err := waitRun(ctx, cfgPath, levelFlag, a, done, hup, alive, log)
		cancel()
		if next == nil {
			return exitCode(err, log)
		}
		<-done
		cfg = next
		log.Info("config reloaded; agent restarted with it", "config", cfgPath)
	}
}

// waitRun waits for the agent to end (returns nil config and its error) or
// for a valid SIGHUP reload (returns the new config once no task runs).
func waitRun(ctx context.Context, cfgPath, levelFlag string, a *agent.Agent, done <-chan error, hup <-chan os.Signal, alive *sysd.Progress, log hclog.Logger) (*config.Config, error) {
	for {
		select {
		case err := <-done:
			return nil, err
		case <-hup:
			next, err := config.Load(cfgPath)
			if err != nil {
				log.Error("SIGHUP: the config file is invalid; keeping the running config", "error", err)
				sysd.Status("reload refused: %v", err)
				continue
			}
			sysd.Reloading()
			lvl := next.LogLevel
			if levelFlag != "" {
				lvl = levelFlag
			}
			if l := hclog.LevelFromString(lvl); l != hclog.NoLevel {
				log.SetLevel(l)
			}
			for a.Running() > 0 && ctx.Err() == nil {
				sysd.Status("reload waits for %d running task(s)", a.Running())
				alive.Advance()
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
			if ctx.Err() != nil {
				return nil, <-done
			}
			return next, nil
		}
	}
}

func exitCode(err error, log hclog.Logger) int {
	if err == nil {
		return 0
	}
	var fatal *session.FatalError
	if errors.As(err, &fatal) {
		log.Error("stopping: the server will not accept this agent as configured", "error", err)
		return 3
	}
	log.Error("agent failed", "error", err)
	return 1
}
