package deckctl

import (
	"fmt"
	"text/tabwriter"
	"time"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/spf13/cobra"
)

func agentsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "agents", Short: "List agents and ask them about their hosts"}
	c.AddCommand(agentsListCmd(g), agentsFactsCmd(g), agentsRevokeCmd(g))
	return c
}

// agentJSON is the -o json shape of one agent: stable field names for
// scripts.
type agentJSON struct {
	Host          string     `json:"host"`
	Environment   string     `json:"environment"`
	EnvType       string     `json:"environment_type"`
	Role          string     `json:"role"`
	Pair          int        `json:"pair,omitempty"`
	State         string     `json:"state"`
	Online        bool       `json:"online"`
	LastHeartbeat *time.Time `json:"last_heartbeat,omitempty"`
	ConnectedAt   *time.Time `json:"connected_at,omitempty"`
	Version       string     `json:"version,omitempty"`
	Address       string     `json:"address,omitempty"`
}

func agentsListCmd(g *globals) *cobra.Command {
	var env string
	c := &cobra.Command{
		Use:   "list",
		Short: "List every declared host and its agent's state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).ListAgents(ctx, &pb.ListAgentsRequest{Environment: env})
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := make([]agentJSON, 0, len(resp.Agents))
				for _, a := range resp.Agents {
					j := agentJSON{Host: a.HostId, Environment: a.Environment, EnvType: a.EnvironmentType, Role: a.Role,
						Pair: int(a.Pair), State: a.State, Online: a.Online, Version: a.Version, Address: a.Address}
					if a.LastHeartbeat != nil {
						t := a.LastHeartbeat.AsTime()
						j.LastHeartbeat = &t
					}
					if a.ConnectedAt != nil {
						t := a.ConnectedAt.AsTime()
						j.ConnectedAt = &t
					}
					out = append(out, j)
				}
				return g.printJSON(out)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tENV\tROLE\tPAIR\tSTATE\tLAST HEARTBEAT\tVERSION")
			for _, a := range resp.Agents {
				pair := "-"
				if a.Pair > 0 {
					pair = fmt.Sprint(a.Pair)
				}
				var hb time.Time
				if a.LastHeartbeat != nil {
					hb = a.LastHeartbeat.AsTime()
				}
				ver := a.Version
				if ver == "" {
					ver = "-"
				}
				fmt.Fprintf(tw, "%s\t%s (%s)\t%s\t%s\t%s\t%s\t%s\n", a.HostId, a.Environment, a.EnvironmentType, a.Role, pair, a.State, ago(hb, now), ver)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&env, "env", "", "only this environment")
	return c
}

func agentsFactsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "facts HOST",
		Short: "Ask a host's agent for its facts (hostname, OS, Apache, free disk; a dispatcher's config backups)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).GetHostFacts(ctx, &pb.GetHostFactsRequest{HostId: args[0]})
			if err != nil {
				return err
			}
			f := resp.Facts
			if g.output == "json" {
				backups := []map[string]any{}
				for _, b := range f.Backups {
					backups = append(backups, map[string]any{
						"id": b.Id, "task_id": b.TaskId, "kind": b.Kind, "created_at": b.CreatedAt.AsTime(),
						"files": b.Files, "bytes": b.Bytes, "outcome": b.Outcome,
						"artifact_sha256": b.ArtifactSha256, "restored_from": b.RestoredFrom,
					})
				}
				out := map[string]any{
					"host": args[0], "task_id": resp.TaskId, "hostname": f.Hostname, "os": f.Os, "kernel": f.Kernel,
					"arch": f.Arch, "apache_version": f.ApacheVersion, "apache_error": f.ApacheError,
					"data_dir_free_bytes": f.DataDirFreeBytes, "data_dir_total_bytes": f.DataDirTotalBytes,
					"agent_version": f.AgentVersion, "collected_at": f.CollectedAt.AsTime(),
					"backups": backups,
				}
				if f.BackupsError != "" {
					out["backups_error"] = f.BackupsError
				}
				return g.printJSON(out)
			}
			apache := f.ApacheVersion
			if apache == "" {
				apache = "not available (" + f.ApacheError + ")"
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "host:\t%s\n", args[0])
			fmt.Fprintf(tw, "hostname:\t%s\n", f.Hostname)
			fmt.Fprintf(tw, "os:\t%s (%s, %s)\n", f.Os, f.Kernel, f.Arch)
			fmt.Fprintf(tw, "apache:\t%s\n", apache)
			fmt.Fprintf(tw, "data dir free:\t%s of %s\n", bytesHuman(f.DataDirFreeBytes), bytesHuman(f.DataDirTotalBytes))
			fmt.Fprintf(tw, "agent version:\t%s\n", f.AgentVersion)
			fmt.Fprintf(tw, "task:\t%s\n", resp.TaskId)
			if f.BackupsError != "" {
				fmt.Fprintf(tw, "backups:\tcannot list: %s\n", f.BackupsError)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(f.Backups) == 0 {
				return nil
			}
			fmt.Fprintf(g.out, "\ndispatcher config backups, newest first (deckctl dispatcher rollback --env ENV --to ID):\n")
			tw = tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCREATED\tTAKEN BEFORE\tOUTCOME\tFILES\tSIZE")
			for _, b := range f.Backups {
				before := b.Kind
				switch {
				case b.ArtifactSha256 != "":
					before = "deploy of " + shortDigest(b.ArtifactSha256)
				case b.RestoredFrom != "":
					before = "restore of " + b.RestoredFrom
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", b.Id, b.CreatedAt.AsTime().Local().Format("2006-01-02 15:04:05"),
					before, b.Outcome, b.Files, bytesHuman(uint64(max(b.Bytes, 0))))
			}
			return tw.Flush()
		},
	}
}

func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
