package deckctl

import (
	"context"
	"fmt"
	"text/tabwriter"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/spf13/cobra"
)

func driftCmd(g *globals) *cobra.Command {
	var env, host string
	var all bool
	c := &cobra.Command{
		Use:   "drift [--env ENV] [--host HOST] [--all]",
		Short: "List changes made to dispatcher config trees outside Deckhand",
		Long: "Lists files of a dispatcher's Apache config tree that were created, edited, removed or renamed by hand.\n" +
			"Changes to immutable files are HIGH severity. The next deployment replaces drifted files; --all also\n" +
			"shows drift that a deployment already replaced.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.ListDrift(ctx, &pb.ListDriftRequest{Environment: env, HostId: host, All: all})
				if err != nil {
					return err
				}
				if g.output == "json" {
					out := make([]map[string]any, 0, len(resp.Records))
					for _, r := range resp.Records {
						out = append(out, map[string]any{"host": r.HostId, "path": r.Path, "kind": r.Kind, "from": r.From, "before_sha256": r.BeforeSha256,
							"after_sha256": r.AfterSha256, "severity": r.Severity, "at": r.At.AsTime(), "resolved_by": r.ResolvedBy})
					}
					return g.printJSON(out)
				}
				if len(resp.Records) == 0 {
					fmt.Fprintln(g.out, "no drift")
					return nil
				}
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tWHEN\tSEVERITY\tCHANGE\tPATH\tREPLACED BY")
				for _, r := range resp.Records {
					path := r.Path
					if r.From != "" {
						path = r.From + " -> " + r.Path
					}
					sev := r.Severity
					if sev == "high" {
						sev = "HIGH"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.HostId, r.At.AsTime().Local().Format("2006-01-02 15:04:05"), sev, r.Kind, path, dash(r.ResolvedBy))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVar(&env, "env", "", "only hosts of this environment")
	c.Flags().StringVar(&host, "host", "", "only this host")
	c.Flags().BoolVar(&all, "all", false, "include drift a deployment already replaced")
	return c
}
