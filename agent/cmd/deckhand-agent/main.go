// Command deckhand-agent runs on every AEM author, publish and dispatcher
// host and does the control plane's tasks there.
//
// Local commands:
//
//	deckhand-agent backups list [--config FILE] [-o table|json]
//	    the dispatcher config backups kept on this host (agent stopped)
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/dispatcher"
	"github.com/deckhand-dev/deckhand/agent/journal"
	"github.com/deckhand-dev/deckhand/pkg/logging"
	"github.com/deckhand-dev/deckhand/pkg/version"
)

func main() {
	os.Exit(run())
}

func run() int {
	if len(os.Args) > 1 && os.Args[1] == "backups" {
		return runBackups(os.Args[2:], os.Stdout, os.Stderr)
	}
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
	return daemon(*cfgPath, *level, cfg, log)
}

// lockWait is how long `backups list` waits for the journal: the running
// agent holds it for as long as it runs, so waiting longer gains nothing.
const lockWait = time.Second

// runBackups is `deckhand-agent backups SUBCOMMAND`.
func runBackups(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "list" {
		fmt.Fprintln(stderr, "usage: deckhand-agent backups list [--config FILE] [-o table|json]")
		return 2
	}
	flags := flag.NewFlagSet("deckhand-agent backups list", flag.ContinueOnError)
	flags.SetOutput(stderr)
	cfgPath := flags.String("config", "/etc/deckhand/agent.yaml", "agent config file")
	format := flags.String("o", "table", "output format: table or json")
	if err := flags.Parse(args[1:]); err != nil {
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "deckhand-agent backups list: unexpected argument %q\n", flags.Arg(0))
		return 2
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "deckhand-agent backups list: -o %q: want table or json\n", *format)
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "deckhand-agent:", err)
		return 1
	}
	if cfg.Dispatcher == nil {
		fmt.Fprintf(stderr, "deckhand-agent: %s has no dispatcher section: this host does not deploy dispatcher configs, so it keeps no backups\n", *cfgPath)
		return 1
	}
	db := filepath.Join(cfg.DataDir, journal.FileName)
	list, err := dispatcher.ListBackupsFromFile(cfg.Dispatcher, db, lockWait)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The agent never ran with this data_dir: nothing backed up yet.
		list, err = nil, nil
	case errors.Is(err, dispatcher.ErrJournalLocked):
		fmt.Fprintf(stderr, "deckhand-agent: the agent is running: it holds its journal %s, which has the backups index; stop the agent to list backups here, or use deckctl: `deckctl agents facts HOST` lists them, `deckctl deployments show ID` names the backup each host took, `deckctl dispatcher rollback --env ENV --previous` restores it\n", db)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "deckhand-agent:", err)
		return 1
	}
	if *format == "json" {
		return printBackupsJSON(stdout, stderr, list)
	}
	if len(list) == 0 {
		fmt.Fprintf(stdout, "no backups in %s\n", cfg.Dispatcher.BackupDir)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tKIND\tOUTCOME\tFILES\tTASK")
	for _, b := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", b.ID, b.CreatedAt.UTC().Format(time.RFC3339), b.Kind, b.Outcome, b.Files, b.TaskID)
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "deckhand-agent:", err)
		return 1
	}
	return 0
}

// backupJSON is one backup in `-o json`: the index record and where its
// files are.
type backupJSON struct {
	dispatcher.Backup
	Path string `json:"path"`
}

func printBackupsJSON(stdout, stderr io.Writer, list []dispatcher.Backup) int {
	out := make([]backupJSON, 0, len(list))
	for _, b := range list {
		out = append(out, backupJSON{Backup: b, Path: b.Path})
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(stderr, "deckhand-agent:", err)
		return 1
	}
	return 0
}
