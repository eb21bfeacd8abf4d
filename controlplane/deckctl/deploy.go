package deckctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/spf13/cobra"
)

func deployCmd(g *globals) *cobra.Command {
	var env, set string
	var planOnly, detach bool
	c := &cobra.Command{
		Use:   "deploy --env ENV --artifacts SET [--plan]",
		Short: "Roll an artifact set out to an environment (or print the plan)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if env == "" || set == "" {
				return errors.New("--env and --artifacts are required")
			}
			return startDeployment(cmd, g, &pb.DeploymentRequest{Environment: env, ArtifactSet: set, Action: "deploy"}, planOnly, detach)
		},
	}
	c.Flags().StringVar(&env, "env", "", "environment")
	c.Flags().StringVar(&set, "artifacts", "", "artifact set id (deckctl artifact push prints it)")
	c.Flags().BoolVar(&planOnly, "plan", false, "print the exact plan and stop")
	c.Flags().BoolVar(&detach, "detach", false, "start and return without watching")
	return c
}

func dispatcherCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "dispatcher", Short: "Dispatcher operations across an environment"}
	var env, to string
	var previous, planOnly, detach bool
	rb := &cobra.Command{
		Use:   "rollback --env ENV [--to BACKUP | --previous]",
		Short: "Restore each dispatcher's config backup with the same rolling plan as a deploy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if env == "" {
				return errors.New("--env is required")
			}
			if to != "" && previous {
				return errors.New("give --to BACKUP or --previous, not both")
			}
			return startDeployment(cmd, g, &pb.DeploymentRequest{Environment: env, Action: "rollback", BackupId: to}, planOnly, detach)
		},
	}
	rb.Flags().StringVar(&env, "env", "", "environment")
	rb.Flags().StringVar(&to, "to", "", "backup id to restore on every dispatcher")
	rb.Flags().BoolVar(&previous, "previous", false, "restore the backup taken before the last deployment (default)")
	rb.Flags().BoolVar(&planOnly, "plan", false, "print the exact plan and stop")
	rb.Flags().BoolVar(&detach, "detach", false, "start and return without watching")
	c.AddCommand(rb)
	return c
}

func startDeployment(cmd *cobra.Command, g *globals, req *pb.DeploymentRequest, planOnly, detach bool) error {
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewAdminServiceClient(conn)
	ctx, cancel := g.ctx(cmd)
	defer cancel()
	if planOnly {
		p, err := client.PlanDeployment(ctx, req)
		if err != nil {
			return err
		}
		if g.output == "json" {
			return plPrintJSONList(g, p.Steps)
		}
		_, err = io.WriteString(g.out, p.Text)
		return err
	}
	d, err := client.StartDeployment(ctx, req)
	if err != nil {
		return err
	}
	if detach {
		if g.output == "json" {
			return g.printJSON(map[string]any{"id": d.Id, "state": d.State})
		}
		fmt.Fprintf(g.out, "started deployment %s; watch it with: deckctl deployments show %s\n", d.Id, d.Id)
		return nil
	}
	if g.output != "json" {
		fmt.Fprintf(g.out, "deployment %s: %s to %s\n", d.Id, d.Action, d.Environment)
	}
	// Watching is not bounded by --timeout: a rollout takes as long as it
	// takes; Ctrl-C stops watching, not the deployment.
	return watch(cmd.Context(), g, client, d.Id)
}

// watch prints the deployment's events until it ends and returns an error
// when it did not succeed.
func watch(ctx context.Context, g *globals, client pb.AdminServiceClient, id string) error {
	stream, err := client.WatchDeployment(ctx, &pb.WatchDeploymentRequest{Id: id})
	if err != nil {
		return err
	}
	started := map[string]time.Time{}
	var final *pb.DeploymentEvent
	enc := json.NewEncoder(g.out)
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if g.output == "json" {
			enc.Encode(eventJSON(e))
		} else {
			printEvent(g, e, started)
		}
		if e.Kind == "deployment.finished" {
			final = e
		}
	}
	if final == nil {
		return fmt.Errorf("lost the event stream of %s before it ended; see deckctl deployments show %s", id, id)
	}
	if g.output != "json" {
		if d, err := client.GetDeployment(ctx, &pb.GetDeploymentRequest{Id: id}); err == nil && len(d.Hosts) > 0 {
			fmt.Fprintln(g.out, "\nHosts:")
			printHosts(g, d.Hosts)
		}
	}
	if final.State != "SUCCEEDED" {
		return fmt.Errorf("deployment %s %s: %s", id, final.State, firstLine(final.Message))
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func eventJSON(e *pb.DeploymentEvent) map[string]any {
	m := map[string]any{"seq": e.Seq, "at": e.At.AsTime(), "kind": e.Kind}
	for k, v := range map[string]string{"step": e.Step, "task": e.Task, "host": e.Host, "status": e.Status, "message": e.Message, "state": e.State} {
		if v != "" {
			m[k] = v
		}
	}
	if e.Pair > 0 {
		m["pair"] = e.Pair
	}
	if e.Attempts > 0 {
		m["attempts"] = e.Attempts
	}
	return m
}

func printEvent(g *globals, e *pb.DeploymentEvent, started map[string]time.Time) {
	at := e.At.AsTime()
	ts := at.Local().Format("15:04:05")
	switch e.Kind {
	case "step.started":
		started[e.Step] = at
		fmt.Fprintf(g.out, "%s  %-34s %-12s %s\n", ts, e.Step, e.Host, "running")
	case "step.finished":
		el := ""
		if s, ok := started[e.Step]; ok {
			el = at.Sub(s).Round(time.Millisecond).String()
		}
		line := fmt.Sprintf("%s  %-34s %-12s %-9s %s", ts, e.Step, e.Host, e.Status, el)
		if e.Message != "" {
			line += "  " + indentMsg(e.Message)
		}
		fmt.Fprintln(g.out, line)
	case "deployment.finished":
		msg := e.State
		if e.Message != "" {
			msg += ": " + indentMsg(e.Message)
		}
		fmt.Fprintf(g.out, "%s  deployment %s\n", ts, msg)
	default:
		fmt.Fprintf(g.out, "%s  %s\n", ts, indentMsg(e.Message))
	}
}

func indentMsg(s string) string {
	return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n            ")
}

func printHosts(g *globals, hosts map[string]string) {
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
	for _, h := range names {
		fmt.Fprintf(tw, "  %s\t%s\n", h, hosts[h])
	}
	tw.Flush()
}

func deploymentsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "deployments", Short: "List, inspect, follow and cancel deployments"}
	var env string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List deployments, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.ListDeployments(ctx, &pb.ListDeploymentsRequest{Environment: env, Limit: int32(limit)})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSONList(g, resp.Deployments)
				}
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tENV\tACTION\tSET\tSTATE\tBY\tSTARTED\tTOOK")
				for _, d := range resp.Deployments {
					took := "-"
					if d.FinishedAt != nil {
						took = d.FinishedAt.AsTime().Sub(d.CreatedAt.AsTime()).Round(time.Second).String()
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Id, d.Environment, d.Action, dash(d.ArtifactSet), d.State, d.By, d.CreatedAt.AsTime().Local().Format("2006-01-02 15:04:05"), took)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&env, "env", "", "only this environment")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a deployment: every step and every host's state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(ctx context.Context, c pb.AdminServiceClient) error {
				d, err := c.GetDeployment(ctx, &pb.GetDeploymentRequest{Id: args[0]})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSON(g, d)
				}
				fmt.Fprintf(g.out, "deployment %s: %s of %s to %s by %s — %s\n", d.Id, d.Action, dash(d.ArtifactSet), d.Environment, d.By, d.State)
				if d.Error != "" {
					fmt.Fprintf(g.out, "error: %s\n", indentMsg(d.Error))
				}
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "\nGROUP\tSTEP\tHOST\tSTATUS\tTOOK\tDETAIL")
				for _, s := range d.Steps {
					took := "-"
					if s.StartedAt != nil && s.FinishedAt != nil {
						took = s.FinishedAt.AsTime().Sub(s.StartedAt.AsTime()).Round(time.Millisecond).String()
					}
					detail := s.Summary
					if s.Error != "" {
						detail = firstLine(s.Error)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", s.Group, s.Key, s.Host, s.Status, took, detail)
				}
				tw.Flush()
				if len(d.Hosts) > 0 {
					fmt.Fprintln(g.out, "\nHosts:")
					printHosts(g, d.Hosts)
				}
				return nil
			})
		},
	}
	logs := &cobra.Command{
		Use:   "logs ID [--follow]",
		Short: "Print a deployment's event log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			follow, _ := cmd.Flags().GetBool("follow")
			if follow {
				conn, err := g.dial()
				if err != nil {
					return err
				}
				defer conn.Close()
				return watch(cmd.Context(), g, pb.NewAdminServiceClient(conn), args[0])
			}
			return withAdmin(cmd, g, func(ctx context.Context, c pb.AdminServiceClient) error {
				resp, err := c.DeploymentEvents(ctx, &pb.WatchDeploymentRequest{Id: args[0]})
				if err != nil {
					return err
				}
				started := map[string]time.Time{}
				enc := json.NewEncoder(g.out)
				for _, e := range resp.Events {
					if g.output == "json" {
						enc.Encode(eventJSON(e))
					} else {
						printEvent(g, e, started)
					}
				}
				return nil
			})
		},
	}
	logs.Flags().BoolP("follow", "f", false, "keep printing until the deployment ends")
	cancelC := &cobra.Command{
		Use:   "cancel ID",
		Short: "Stop after the running steps and re-attach what the deployment detached",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(ctx context.Context, c pb.AdminServiceClient) error {
				d, err := c.CancelDeployment(ctx, &pb.GetDeploymentRequest{Id: args[0]})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return g.printJSON(map[string]any{"id": d.Id, "state": d.State})
				}
				fmt.Fprintf(g.out, "deployment %s is %s: it stops after its running steps and re-attaches what it detached\n", d.Id, d.State)
				return nil
			})
		},
	}
	c.AddCommand(list, show, logs, cancelC)
	return c
}

// withAdmin dials, bounds the call by --timeout and runs fn.
func withAdmin(cmd *cobra.Command, g *globals, fn func(ctx context.Context, c pb.AdminServiceClient) error) error {
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := g.ctx(cmd)
	defer cancel()
	return fn(ctx, pb.NewAdminServiceClient(conn))
}
