package agent

import (
	"context"

	"github.com/deckhand-dev/deckhand/agent/aem"
	"github.com/deckhand-dev/deckhand/agent/artifacts"
	"github.com/deckhand-dev/deckhand/agent/build"
	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/agent/hostfacts"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/agent/lbtask"
	"github.com/deckhand-dev/deckhand/agent/worker"
	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/deckhand-dev/deckhand/pkg/version"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
)

// deps is what task handlers may use.
type deps struct {
	cfg     *config.Config
	log     hclog.Logger
	journal *journal.Journal
	fetcher artifacts.Fetcher
	// conn returns the current connection to the server (uploads).
	conn func(ctx context.Context) (*grpc.ClientConn, error)
}

// buildHandlers registers one handler per task kind this agent runs. Kinds
// whose config section is absent are not registered: the worker refuses
// such tasks with a clear message instead of guessing local commands.
func buildHandlers(d deps) (map[string]worker.Handler, error) {
	facts := &hostfacts.Handler{DataDir: d.cfg.DataDir, ApacheCtl: d.cfg.ApacheCtl, AgentVersion: version.Version}
	h := map[string]worker.Handler{task.HostFacts{}.Name(): facts}
	if d.cfg.AEM != nil {
		ah, err := aem.NewHandler(d.cfg.AEM, d.fetcher, d.log.Named("aem"))
		if err != nil {
			return nil, err
		}
		h[task.PackageInstall{}.Name()] = ah
	}
	if d.cfg.LB != nil {
		detach, attach, err := lbtask.New(d.cfg.LB, d.log.Named("lb"))
		if err != nil {
			return nil, err
		}
		h[task.LBDetach{}.Name()], h[task.LBAttach{}.Name()] = detach, attach
	}
	if d.cfg.Builder != nil {
		b, err := build.New(d.cfg.Builder, d.conn, d.cfg.HostID, d.log.Named("build"))
		if err != nil {
			return nil, err
		}
		h[task.Build{}.Name()], h[task.CodeScan{}.Name()] = b.BuildHandler(), b.ScanHandler()
	}
	if d.cfg.Dispatcher != nil {
		disp, err := dispatcher.New(d.cfg.Dispatcher, d.journal, d.fetcher, d.log.Named("dispatcher"))
		if err != nil {
			return nil, err
		}
		for k, dh := range disp.Handlers() {
			h[k] = dh
		}
		facts.Backups = func() ([]task.Backup, error) { return dispatcher.TaskBackups(d.cfg.Dispatcher, d.journal) }
	}
	return h, nil
}
