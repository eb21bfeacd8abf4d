package deckctl

// Pipeline verbs, after the reference CLI (aio cloudmanager:...):
//
//	deckctl pipeline list
//	deckctl pipeline create-execution PROGRAM/PIPELINE [--emergency] [--artifacts SET] [--watch]
//	deckctl execution get [EXEC] --pipeline PROGRAM/PIPELINE
//	deckctl execution list | watch [EXEC] | step-log STEP | gate-results ACTION | cancel [EXEC]
//	deckctl execution advance approve | reject | schedule (--at TIME [--tz ZONE] | --now) | override --kpi KPI... | cse-start
//	deckctl program set-emergency PROGRAM on|off
//
// A pipeline is always named PROGRAM/PIPELINE, as one word: positional
// for create-execution, --pipeline (or DECKHAND_PIPELINE) for the
// execution verbs, so a script can set it once.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	// Embedded zone data: `schedule --tz` must work on hosts without a
	// zoneinfo database (minimal containers, Windows).
	_ "time/tzdata"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/deckhand-dev/deckhand/controlplane/gates"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
)

// plRef is a PROGRAM/PIPELINE argument.
type plRef struct{ program, pipeline string }

func (r plRef) String() string { return r.program + "/" + r.pipeline }

func parsePlRef(s string) (plRef, error) {
	prog, pl, ok := strings.Cut(s, "/")
	if !ok || prog == "" || pl == "" || strings.Contains(pl, "/") {
		if s == "" {
			return plRef{}, errors.New("name the pipeline: --pipeline PROGRAM/PIPELINE (or DECKHAND_PIPELINE), e.g. --pipeline wknd/main")
		}
		return plRef{}, fmt.Errorf("pipeline %q: want PROGRAM/PIPELINE, e.g. wknd/main", s)
	}
	return plRef{prog, pl}, nil
}

// withPipelines dials, bounds the call by --timeout and runs fn.
func withPipelines(cmd *cobra.Command, g *globals, fn func(ctx context.Context, c pb.PipelineServiceClient) error) error {
	conn, err := g.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := g.ctx(cmd)
	defer cancel()
	return fn(ctx, pb.NewPipelineServiceClient(conn))
}

// plJSON renders a message with the proto field names (snake_case, like
// the rest of deckctl's JSON), RFC 3339 times and every field present, so
// scripts can rely on the keys.
func plJSON(m proto.Message) (json.RawMessage, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}

// plPrintJSON prints one message.
func plPrintJSON(g *globals, m proto.Message) error {
	r, err := plJSON(m)
	if err != nil {
		return err
	}
	return g.printJSON(r)
}

// plPrintJSONList prints messages as an array (empty: []), whatever their
// number, so a script can always iterate.
func plPrintJSONList[M proto.Message](g *globals, ms []M) error {
	raws := []json.RawMessage{}
	for _, m := range ms {
		r, err := plJSON(m)
		if err != nil {
			return err
		}
		raws = append(raws, r)
	}
	return g.printJSON(raws)
}

// plPrintJSONLine prints a message as one line (a watch stream).
func plPrintJSONLine(g *globals, m proto.Message) error {
	r, err := plJSON(m)
	if err != nil {
		return err
	}
	return json.NewEncoder(g.out).Encode(r)
}

func pipelineCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "pipeline", Short: "Production pipelines: list them, start executions"}
	var program string
	list := &cobra.Command{
		Use:   "list [--program P]",
		Short: "List pipelines with their waiting steps, the program's emergency switch and the running execution",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				resp, err := c.ListPipelines(ctx, &pb.ListPipelinesRequest{Program: program})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSONList(g, resp.Pipelines)
				}
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PIPELINE\tREPOSITORY\tSTAGE → PROD\tWAITING STEPS\tEMERGENCY\tRUNNING")
				for _, p := range resp.Pipelines {
					repo := "-"
					if p.Repository != "" {
						repo = p.Repository + "@" + p.Branch
					}
					var waits []string
					for _, w := range []struct {
						on   bool
						name string
					}{{p.Approval, "approval"}, {p.Schedule, "schedule"}, {p.CseSupport, "cse"}} {
						if w.on {
							waits = append(waits, w.name)
						}
					}
					em := "disabled"
					if p.EmergencyEnabled {
						em = "enabled"
					}
					run := "-"
					if p.CurrentExecution != "" {
						run = "Execution " + p.CurrentExecution
					}
					fmt.Fprintf(tw, "%s/%s\t%s\t%s → %s\t%s\t%s\t%s\n", p.Program, p.Pipeline, repo, p.StageEnvironment, p.ProductionEnvironment, dash(strings.Join(waits, ",")), em, run)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().StringVar(&program, "program", "", "only this program")

	var emergency, watchIt bool
	var set string
	create := &cobra.Command{
		Use:   "create-execution PROGRAM/PIPELINE [--emergency] [--artifacts SET] [--watch]",
		Short: "Start an execution (normal, or emergency mode where the program allows it)",
		Long: `Start an execution of PROGRAM/PIPELINE.

--emergency skips Security and Performance Testing; the program must have
emergency mode enabled (deckctl program set-emergency PROGRAM on, role cse).
--artifacts deploys a pushed artifact set and skips the build. --watch
follows the execution like 'deckctl execution watch' until it ends; with
-o json it prints the execution and then one event per line.`,
		Example: "  deckctl pipeline create-execution wknd/main\n  deckctl pipeline create-execution wknd/main --emergency --watch",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parsePlRef(args[0])
			if err != nil {
				return err
			}
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := pb.NewPipelineServiceClient(conn)
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			e, err := client.CreateExecution(ctx, &pb.CreateExecutionRequest{Program: ref.program, Pipeline: ref.pipeline, Emergency: emergency, ArtifactSet: set})
			if err != nil {
				return err
			}
			switch {
			case g.output == "json" && watchIt:
				if err := plPrintJSONLine(g, e); err != nil {
					return err
				}
			case g.output == "json":
				return plPrintJSON(g, e)
			default:
				fmt.Fprintln(g.out, plBreadcrumb(e))
				fmt.Fprintf(g.out, "started by %s", e.User)
				if e.ArtifactSet != "" {
					fmt.Fprintf(g.out, " with artifact set %s (build skipped)", e.ArtifactSet)
				}
				fmt.Fprintln(g.out)
				if !watchIt {
					fmt.Fprintf(g.out, "follow it with: deckctl execution watch %s --pipeline %s\n", e.Id, ref)
					return nil
				}
			}
			return plWatch(cmd.Context(), g, client, ref, e.Id, false, true)
		},
	}
	create.Flags().BoolVar(&emergency, "emergency", false, "emergency mode: skip Security and Performance Testing")
	create.Flags().StringVar(&set, "artifacts", "", "deploy this pushed artifact set and skip the build")
	create.Flags().BoolVar(&watchIt, "watch", false, "follow the execution until it ends")
	c.AddCommand(list, create)
	return c
}

func programCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "program", Short: "Program settings"}
	set := &cobra.Command{
		Use:     "set-emergency PROGRAM on|off",
		Short:   "Allow or forbid emergency-mode executions of a program (role cse)",
		Example: "  deckctl program set-emergency wknd on",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var on bool
			switch strings.ToLower(args[1]) {
			case "on", "true", "enable", "enabled":
				on = true
			case "off", "false", "disable", "disabled":
			default:
				return fmt.Errorf("%q: say on or off", args[1])
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				resp, err := c.SetEmergency(ctx, &pb.SetEmergencyRequest{Program: args[0], Enabled: on})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSON(g, resp)
				}
				state := "off: executions run every step"
				if resp.Enabled {
					state = "on: executions may skip Security and Performance Testing (create-execution --emergency)"
				}
				fmt.Fprintf(g.out, "emergency mode of program %s is %s\n", resp.Program, state)
				return nil
			})
		},
	}
	c.AddCommand(set)
	return c
}

// execOpts are the flags every execution verb shares.
type execOpts struct {
	pipeline string
	exec     string
	step     string
}

func (o *execOpts) ref() (plRef, error) { return parsePlRef(o.pipeline) }

// plResolve finds the execution a read verb is about: the one named, else
// the running one, else the latest, so `step-log build` still works after
// the execution ended.
func plResolve(ctx context.Context, c pb.PipelineServiceClient, ref plRef, id string) (*pb.PipelineExecution, error) {
	if id != "" {
		return c.GetExecution(ctx, &pb.GetExecutionRequest{Program: ref.program, Pipeline: ref.pipeline, Execution: id})
	}
	e, err := c.GetCurrentExecution(ctx, &pb.GetCurrentExecutionRequest{Program: ref.program, Pipeline: ref.pipeline})
	if status.Code(err) != codes.NotFound {
		return e, err
	}
	// Nothing runs (or the pipeline is unknown, which ListExecutions
	// reports the same way).
	l, err := c.ListExecutions(ctx, &pb.ListExecutionsRequest{Program: ref.program, Pipeline: ref.pipeline, Limit: 1})
	if err != nil {
		return nil, err
	}
	if len(l.Executions) == 0 {
		return nil, fmt.Errorf("%s has no executions yet (deckctl pipeline create-execution %s)", ref, ref)
	}
	return l.Executions[0], nil
}

func executionCmd(g *globals) *cobra.Command {
	o := &execOpts{}
	c := &cobra.Command{
		Use:   "execution",
		Short: "Pipeline executions: show, follow, answer waiting steps, cancel",
		Long: `Pipeline executions. Every verb needs the pipeline as --pipeline PROGRAM/PIPELINE
(or DECKHAND_PIPELINE). Without an execution id, get, watch, step-log and
gate-results use the running execution, or else the latest; advance and
cancel only the running one.

Steps are named by id or action: validate, build, codeQuality, deploy,
securityTest, loadTest, approval, schedule, managed. The two deploy steps
are deploy:stage and deploy:prod (an environment name or type); plain
"deploy" is the latest that started.`,
	}
	c.PersistentFlags().StringVarP(&o.pipeline, "pipeline", "p", envOr("DECKHAND_PIPELINE", ""), "PROGRAM/PIPELINE (env DECKHAND_PIPELINE)")
	c.AddCommand(execGetCmd(g, o), execListCmd(g, o), execWatchCmd(g, o), execStepLogCmd(g, o), execGateCmd(g, o), execAdvanceCmd(g, o), execCancelCmd(g, o))
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func execGetCmd(g *globals, o *execOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "get [EXEC] --pipeline PROGRAM/PIPELINE",
		Short:   "Show an execution: its mode, the three phases and every step's status, times and details",
		Example: "  deckctl execution get --pipeline wknd/main\n  deckctl execution get 12 --pipeline wknd/main -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				e, err := plResolve(ctx, c, ref, id)
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSON(g, e)
				}
				plRender(g.out, e)
				return nil
			})
		},
	}
}

func execListCmd(g *globals, o *execOpts) *cobra.Command {
	var start, limit int
	c := &cobra.Command{
		Use:   "list --pipeline PROGRAM/PIPELINE [--limit N] [--start N]",
		Short: "List a pipeline's executions, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				resp, err := c.ListExecutions(ctx, &pb.ListExecutionsRequest{Program: ref.program, Pipeline: ref.pipeline, Start: int32(start), Limit: int32(limit)})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSONList(g, resp.Executions)
				}
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "EXECUTION\tMODE\tSTATUS\tUSER\tSTARTED\tTOOK\tNOW / REASON")
				for _, e := range resp.Executions {
					took := "-"
					if e.FinishedAt != nil {
						took = plDur(e.FinishedAt.AsTime().Sub(e.CreatedAt.AsTime()))
					}
					note := e.Reason
					if note == "" && !plDone(e.Status) {
						if s := plCurrentStep(e); s != nil {
							note = fmt.Sprintf("%s %s", plStepName(s), s.Status)
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Id, e.Mode, e.Status, e.User, plTime(e.CreatedAt.AsTime()), took, dash(firstLine(note)))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if int(resp.Total) > start+len(resp.Executions) {
					fmt.Fprintf(g.out, "(%d of %d; more with --start %d)\n", len(resp.Executions), resp.Total, start+len(resp.Executions))
				}
				return nil
			})
		},
	}
	c.Flags().IntVar(&start, "start", 0, "skip this many of the newest")
	c.Flags().IntVar(&limit, "limit", 20, "at most this many (0: all)")
	return c
}

func execWatchCmd(g *globals, o *execOpts) *cobra.Command {
	var untilWaiting bool
	c := &cobra.Command{
		Use:   "watch [EXEC] --pipeline PROGRAM/PIPELINE [--until-waiting]",
		Short: "Follow an execution live until it ends (or until a step waits for a person)",
		Long: `Follow an execution. On a terminal the three phases and their steps are
redrawn on every event, like the pipeline execution screen; otherwise (a
pipe, a file, CI) each event is one line; with -o json one JSON event per
line, each carrying the execution as it is after the event.

The command fails unless the execution FINISHED. --until-waiting returns
as soon as a step waits for a person, naming the command that answers it.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			client := pb.NewPipelineServiceClient(conn)
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			ctx, cancel := g.ctx(cmd)
			e, err := plResolve(ctx, client, ref, id)
			cancel()
			if err != nil {
				return err
			}
			return plWatch(cmd.Context(), g, client, ref, e.Id, untilWaiting, false)
		},
	}
	c.Flags().BoolVar(&untilWaiting, "until-waiting", false, "return once a step waits for a person")
	return c
}

func plDone(st string) bool {
	switch st {
	case "FINISHED", "CANCELLED", "FAILED", "ERROR":
		return true
	}
	return false
}

func plWaiting(e *pb.PipelineExecution) *pb.ExecutionStep {
	for _, s := range e.Steps {
		if s.Status == "WAITING" {
			return s
		}
	}
	return nil
}

// plWatch follows execution id until it ends (or waits, with
// untilWaiting). Watching is not bounded by --timeout: an execution takes
// as long as it takes, days when it waits for an approval; Ctrl-C stops
// watching, not the execution. headerShown: the caller already printed the
// breadcrumb.
func plWatch(ctx context.Context, g *globals, client pb.PipelineServiceClient, ref plRef, id string, untilWaiting, headerShown bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.WatchExecutions(ctx, &pb.WatchExecutionsRequest{Program: ref.program, Pipeline: ref.pipeline, Execution: id, WithExecution: true})
	if err != nil {
		return err
	}
	live := g.output == "table" && isTerminal(g.out)
	var last *pb.PipelineExecution
	// Plain output drops an event line identical to the previous one (a
	// step saving details announces the same status again) and names
	// the answering command once per waiting step, for CI logs.
	prevLine := ""
	hinted := map[string]bool{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) || (err != nil && status.Code(err) == codes.Canceled) {
			return fmt.Errorf("lost the event stream of execution %s before it ended; see deckctl execution get %s --pipeline %s", id, id, ref)
		}
		if err != nil {
			return err
		}
		e := ev.Execution
		if e == nil {
			continue
		}
		switch {
		case g.output == "json":
			if err := plPrintJSONLine(g, ev); err != nil {
				return err
			}
		case live:
			// Redraw from the top: the screen is the execution's state.
			fmt.Fprint(g.out, "\x1b[H\x1b[2J")
			plRender(g.out, e)
			fmt.Fprintf(g.out, "\n%s  %s\n", plClock(ev.At.AsTime()), plEventText(ev))
		default:
			if last == nil && !headerShown {
				fmt.Fprintln(g.out, plBreadcrumb(e))
			}
			if text := plEventText(ev); text != prevLine {
				fmt.Fprintf(g.out, "%s  %s\n", plClock(ev.At.AsTime()), text)
				prevLine = text
			}
			if w := plWaiting(e); w != nil && !hinted[w.Id] && !untilWaiting && !plDone(e.Status) {
				hinted[w.Id] = true
				fmt.Fprintf(g.out, "          step %s (%s) is waiting for %s: %s\n", w.Id, plStepName(w), strings.Join(w.RequiredRoles, " or "), plHint(w, ref, e.Id))
			}
		}
		last = e
		if plDone(e.Status) {
			if g.output != "json" && !live {
				plRenderSummary(g.out, e)
			}
			if e.Status != "FINISHED" {
				return fmt.Errorf("execution %s %s: %s", e.Id, e.Status, firstLine(dash(e.Reason)))
			}
			return nil
		}
		if w := plWaiting(e); w != nil && untilWaiting {
			if g.output != "json" {
				fmt.Fprintf(g.out, "step %s (%s) is waiting for %s: %s\n", w.Id, plStepName(w), strings.Join(w.RequiredRoles, " or "), plHint(w, ref, e.Id))
			}
			return nil
		}
	}
}

// plEventText is one event as a line for people.
func plEventText(ev *pb.ExecutionEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Execution %s", ev.ExecutionId)
	if ev.Snapshot {
		// The state when the watch began, not something that happened.
		fmt.Fprintf(&b, " %s (watching)", ev.Status)
	}
	if ev.StepId != "" {
		name, st := ev.Action, ev.Status
		if ev.Execution != nil {
			for _, s := range ev.Execution.Steps {
				if s.Id == ev.StepId {
					name = plStepName(s)
					if ev.Snapshot {
						st = s.Status
					}
				}
			}
		}
		fmt.Fprintf(&b, "  step %s %s  %s", ev.StepId, name, st)
	} else if !ev.Snapshot {
		fmt.Fprintf(&b, "  %s", ev.Status)
	}
	if m := firstLine(ev.Message); m != "" && !ev.Snapshot && !strings.EqualFold(m, ev.Status) {
		fmt.Fprintf(&b, "  %s", m)
	}
	return b.String()
}

// plBreadcrumb is the header of every execution view: the seed's
// breadcrumbs, where emergency mode shows.
func plBreadcrumb(e *pb.PipelineExecution) string {
	return fmt.Sprintf("%s › %s › Execution %s (%s)", e.Program, e.Pipeline, e.Id, e.Mode)
}

var plPhases = []struct{ id, name string }{
	{"STAGE_DEPLOYMENT", "Stage Deployment"},
	{"STAGE_TESTING", "Stage Testing"},
	{"PRODUCTION_DEPLOYMENT", "Production Deployment"},
}

// plStepName is a step's name on the execution screen.
func plStepName(s *pb.ExecutionStep) string {
	switch s.Action {
	case "validate":
		return "Validation"
	case "build":
		return "Build & Unit Testing"
	case "codeQuality":
		return "Code Scanning"
	case "deploy":
		if s.EnvironmentType == "prod" || s.Phase == "PRODUCTION_DEPLOYMENT" {
			return "Deploy to Production"
		}
		return "Deploy to Stage"
	case "securityTest":
		return "Security Testing"
	case "loadTest":
		return "Performance Testing"
	case "approval":
		return "Application for Approval"
	case "schedule":
		return "Schedule Production Deployment"
	case "managed":
		return "CSE Support"
	}
	return s.Action
}

// plDur is a duration as a person reads it on the execution screen:
// 45s, 3m05s, 2h10m, 3d4h.
func plDur(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func plTime(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 MST") }

func plClock(t time.Time) string { return t.Local().Format("15:04:05") }

func plCurrentStep(e *pb.PipelineExecution) *pb.ExecutionStep {
	for _, s := range e.Steps {
		if s.Status != "FINISHED" {
			return s
		}
	}
	return nil
}

// plRender prints the execution screen: breadcrumb, summary, then the
// three phases with their steps.
func plRender(w io.Writer, e *pb.PipelineExecution) {
	fmt.Fprintln(w, plBreadcrumb(e))
	line := fmt.Sprintf("%s · started by %s %s", e.Status, e.User, plTime(e.CreatedAt.AsTime()))
	if e.FinishedAt != nil {
		line += " · took " + plDur(e.FinishedAt.AsTime().Sub(e.CreatedAt.AsTime()))
	}
	switch {
	case e.ArtifactSet != "" && e.ManualArtifacts:
		line += " · artifacts " + e.ArtifactSet + " (pushed by hand)"
	case e.ArtifactSet != "":
		line += " · artifacts " + e.ArtifactSet
		if e.ArtifactsVersion != "" {
			line += " (" + e.ArtifactsVersion + ")"
		}
	}
	fmt.Fprintln(w, line)
	if e.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", indentMsg(e.Reason))
	}
	ref := plRef{e.Program, e.Pipeline}
	for _, ph := range plPhases {
		fmt.Fprintf(w, "\n%s\n", ph.name)
		n := 0
		for _, s := range e.Steps {
			if s.Phase != ph.id {
				continue
			}
			n++
			when := ""
			if s.StartedAt != nil {
				when = plClock(s.StartedAt.AsTime())
				if s.FinishedAt != nil {
					when += " +" + plDur(s.FinishedAt.AsTime().Sub(s.StartedAt.AsTime()))
				}
			}
			line := fmt.Sprintf("  %-3s %-31s %-11s %-16s %s", s.Id, plStepName(s), s.Status, when, plStepDetail(s))
			fmt.Fprintln(w, strings.TrimRight(line, " "))
			if s.Status == "WAITING" && !plDone(e.Status) {
				fmt.Fprintf(w, "      waiting for %s; answer: %s\n", strings.Join(s.RequiredRoles, " or "), plHint(s, ref, e.Id))
			}
		}
		if n == 0 {
			if ph.id == "STAGE_TESTING" && e.Mode == "EMERGENCY" {
				fmt.Fprintln(w, "  skipped: emergency mode")
			} else {
				fmt.Fprintln(w, "  (no steps)")
			}
		}
	}
}

// plRenderSummary ends a plain watch: the final state of every step.
func plRenderSummary(w io.Writer, e *pb.PipelineExecution) {
	fmt.Fprintln(w)
	plRender(w, e)
}

// plStepDetail is what a step's line says beyond its status.
func plStepDetail(s *pb.ExecutionStep) string {
	var parts []string
	if s.Status == "WAITING" && s.TimeoutAt != nil {
		parts = append(parts, "times out "+plTime(s.TimeoutAt.AsTime()))
	}
	if s.ScheduledAt != nil {
		at := s.ScheduledAt.AsTime()
		parts = append(parts, fmt.Sprintf("scheduled for %s (%s)", at.UTC().Format(time.RFC3339), plTime(at)))
	}
	if len(s.Metrics) > 0 {
		parts = append(parts, plMetricSummary(s.Metrics))
	}
	// Known details first, in the order a person reads them; the rest
	// sorted; the reason last, it is the one that matters when present.
	known := []struct{ key, label string }{
		{"skipped", "skipped:"}, {"builder", "builder"}, {"commit", "commit"}, {"artifactSet", "set"}, {"deploymentId", "deployment"},
		{"approvedBy", "approved by"}, {"scheduledBy", "scheduled by"}, {"overriddenBy", "overridden by"}, {"startedBy", "started by"},
	}
	seen := map[string]bool{"reason": true, "taskId": true, "schedule": s.ScheduledAt != nil}
	for _, k := range known {
		if v := s.Details[k.key]; v != "" {
			if k.key == "commit" && len(v) > 12 {
				v = v[:12]
			}
			parts = append(parts, k.label+" "+v)
		}
		seen[k.key] = true
	}
	var rest []string
	for k := range s.Details {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		parts = append(parts, k+" "+s.Details[k])
	}
	if r := s.Details["reason"]; r != "" {
		parts = append(parts, "reason: "+firstLine(r))
	}
	return strings.Join(parts, ", ")
}

func plMetricSummary(ms []*pb.GateMetric) string {
	var failing, skipped []string
	for _, m := range ms {
		if m.Passed {
			continue
		}
		if strings.HasPrefix(m.ActualValue, gates.SkippedPrefix) {
			skipped = append(skipped, m.Kpi)
			continue
		}
		f := fmt.Sprintf("%s %s", m.Severity, m.Kpi)
		if m.Override {
			f += " (overridden)"
		}
		failing = append(failing, f)
	}
	var sum string
	switch ran := len(ms) - len(skipped); {
	case len(failing) > 0:
		sum = fmt.Sprintf("%d of %d metrics failing: %s", len(failing), ran, strings.Join(failing, ", "))
	case ran == 1:
		sum = "1 metric passed"
	case len(skipped) > 0:
		sum = fmt.Sprintf("%d metrics passed", ran)
	default:
		sum = fmt.Sprintf("all %d metrics passed", ran)
	}
	if len(skipped) > 0 {
		sum += fmt.Sprintf(", %d skipped: %s", len(skipped), strings.Join(skipped, ", "))
	}
	return sum
}

// plFailingImportant lists the KPIs an override must name.
func plFailingImportant(ms []*pb.GateMetric) []string {
	var out []string
	for _, m := range ms {
		if !m.Passed && !m.Override && m.Severity == "important" {
			out = append(out, m.Kpi)
		}
	}
	sort.Strings(out)
	return out
}

// plHint is the command that answers a waiting step.
func plHint(s *pb.ExecutionStep, ref plRef, id string) string {
	suffix := fmt.Sprintf(" -p %s", ref)
	switch s.Action {
	case "approval":
		return "deckctl execution advance approve|reject" + suffix
	case "schedule":
		return `deckctl execution advance schedule --at "YYYY-MM-DD HH:MM" --tz ZONE | --now` + suffix
	case "managed":
		return "deckctl execution advance cse-start|reject" + suffix
	case "codeQuality", "securityTest", "loadTest":
		var kpis []string
		for _, k := range plFailingImportant(s.Metrics) {
			kpis = append(kpis, "--kpi "+k)
		}
		return fmt.Sprintf("deckctl execution advance override %s%s (or reject)", strings.Join(kpis, " "), suffix)
	}
	return "deckctl execution cancel " + id + suffix
}

func execStepLogCmd(g *globals, o *execOpts) *cobra.Command {
	c := &cobra.Command{
		Use:     "step-log STEP --pipeline PROGRAM/PIPELINE [--execution EXEC]",
		Short:   "Print a step's log (STEP: an action such as build or deploy:prod, or a step id)",
		Example: "  deckctl execution step-log build -p wknd/main\n  deckctl execution step-log deploy:prod -p wknd/main -e 12",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				e, err := plResolve(ctx, c, ref, o.exec)
				if err != nil {
					return err
				}
				resp, err := c.GetStepLog(ctx, &pb.GetStepRequest{Program: ref.program, Pipeline: ref.pipeline, Execution: e.Id, Step: args[0]})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSON(g, resp)
				}
				fmt.Fprintf(g.out, "%s › step %s %s (%s)\n", plBreadcrumb(e), resp.Step.Id, plStepName(resp.Step), resp.Step.Status)
				for _, l := range resp.Lines {
					fmt.Fprintln(g.out, l)
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&o.exec, "execution", "e", "", "execution id (default: the running one, else the latest)")
	return c
}

func execGateCmd(g *globals, o *execOpts) *cobra.Command {
	c := &cobra.Command{
		Use:     "gate-results ACTION --pipeline PROGRAM/PIPELINE [--execution EXEC]",
		Short:   "Show a gate's metrics (ACTION: codeQuality, securityTest or loadTest)",
		Example: "  deckctl execution gate-results codeQuality -p wknd/main",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				e, err := plResolve(ctx, c, ref, o.exec)
				if err != nil {
					return err
				}
				resp, err := c.GetQualityGateResults(ctx, &pb.GetQualityGateResultsRequest{Program: ref.program, Pipeline: ref.pipeline, Execution: e.Id, Action: args[0]})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSON(g, resp)
				}
				s := resp.Step
				fmt.Fprintf(g.out, "%s › step %s %s (%s)\n", plBreadcrumb(e), s.Id, plStepName(s), s.Status)
				if len(resp.Metrics) == 0 {
					msg := "no metrics yet"
					if sk := s.Details["skipped"]; sk != "" {
						msg = "no metrics: skipped (" + sk + ")"
					}
					fmt.Fprintln(g.out, msg)
					return nil
				}
				tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KPI\tSEVERITY\tACTUAL\tEXPECTED\tRESULT")
				for _, m := range resp.Metrics {
					res := "passed"
					if !m.Passed {
						res = "FAILED"
						if m.Override {
							res = "failed, overridden"
						}
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\n", m.Kpi, m.Severity, m.ActualValue, plComparator(m.Comparator), m.ExpectedValue, res)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				if s.Status == "WAITING" && !plDone(e.Status) {
					fmt.Fprintf(g.out, "waiting for %s; answer: %s\n", strings.Join(s.RequiredRoles, " or "), plHint(s, ref, e.Id))
				}
				return nil
			})
		},
	}
	c.Flags().StringVarP(&o.exec, "execution", "e", "", "execution id (default: the running one, else the latest)")
	return c
}

func plComparator(c string) string {
	switch c {
	case "GT":
		return ">"
	case "GTE":
		return "≥"
	case "LT":
		return "<"
	case "LTE":
		return "≤"
	case "EQ":
		return "="
	case "NEQ":
		return "≠"
	}
	return c
}

func execAdvanceCmd(g *globals, o *execOpts) *cobra.Command {
	c := &cobra.Command{
		Use:   "advance approve|reject|schedule|override|cse-start --pipeline PROGRAM/PIPELINE",
		Short: "Answer the running execution's waiting step",
		Long: `Answer the first WAITING step of the running execution (or --step).

  approve                       an approval (role approver)
  reject                        any waiting step: the execution ends CANCELLED
  schedule --at TIME [--tz Z]   the production deployment at TIME in zone Z
                                (default: this machine's zone; role approver)
  schedule --now                the production deployment now
  override --kpi KPI...         a gate's failing important metrics, every one
                                of them (role approver or deployer)
  cse-start                     CSE support (role cse)

Without a verb it shows the waiting step and how to answer it.`,
		Example: `  deckctl execution advance approve -p wknd/main
  deckctl execution advance schedule --at "2026-12-01 22:00" --tz Europe/Berlin -p wknd/main
  deckctl execution advance override --kpi coverage --kpi reliability_rating -p wknd/main`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				e, err := c.GetCurrentExecution(ctx, &pb.GetCurrentExecutionRequest{Program: ref.program, Pipeline: ref.pipeline})
				if err != nil {
					return err
				}
				w := plWaiting(e)
				if w == nil {
					return fmt.Errorf("%s: no step is waiting (current: %s)", plBreadcrumb(e), plStepLine(plCurrentStep(e)))
				}
				return fmt.Errorf("%s: step %s (%s) is waiting for %s; answer with %s", plBreadcrumb(e), w.Id, plStepName(w), strings.Join(w.RequiredRoles, " or "), plHint(w, ref, e.Id))
			})
		},
	}
	c.PersistentFlags().StringVarP(&o.exec, "execution", "e", "", "execution id (default: the running one)")
	c.PersistentFlags().StringVar(&o.step, "step", "", "step id or action (default: the first WAITING step)")

	answer := func(use, short string, build func() (*pb.AdvanceRequest, string, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ref, err := o.ref()
				if err != nil {
					return err
				}
				req, said, err := build()
				if err != nil {
					return err
				}
				req.Program, req.Pipeline, req.Execution, req.Step = ref.program, ref.pipeline, o.exec, o.step
				return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
					resp, err := c.Advance(ctx, req)
					if err != nil {
						return err
					}
					if g.output == "json" {
						return plPrintJSON(g, resp)
					}
					e, s := resp.Execution, resp.Step
					fmt.Fprintln(g.out, plBreadcrumb(e))
					fmt.Fprintf(g.out, "step %s %s: %s; it is %s, the execution %s\n", s.Id, plStepName(s), said, s.Status, e.Status)
					return nil
				})
			},
		}
	}
	approve := answer("approve", "Approve the waiting approval step", func() (*pb.AdvanceRequest, string, error) {
		return &pb.AdvanceRequest{Answer: &pb.AdvanceRequest_Approved{Approved: true}}, "approved", nil
	})
	reject := answer("reject", "Reject the waiting step; the execution ends CANCELLED", func() (*pb.AdvanceRequest, string, error) {
		return &pb.AdvanceRequest{Answer: &pb.AdvanceRequest_Reject{Reject: true}}, "rejected", nil
	})
	cseStart := answer("cse-start", "Give CSE support and let the production deployment go on", func() (*pb.AdvanceRequest, string, error) {
		return &pb.AdvanceRequest{Answer: &pb.AdvanceRequest_Start{Start: true}}, "CSE support started", nil
	})
	var kpis []string
	override := answer("override --kpi KPI...", "Override a gate's failing important metrics (list every one)", func() (*pb.AdvanceRequest, string, error) {
		if len(kpis) == 0 {
			return nil, "", errors.New("name every failing important metric with --kpi (deckctl execution gate-results ACTION lists them)")
		}
		return &pb.AdvanceRequest{Answer: &pb.AdvanceRequest_Override{Override: &pb.KpiOverrides{Kpis: kpis}}}, "overrode " + strings.Join(kpis, ", "), nil
	})
	override.Flags().StringSliceVar(&kpis, "kpi", nil, "KPI of a failing important metric (repeat or comma-separate)")

	var at, tz string
	var now bool
	schedule := answer(`schedule (--at "YYYY-MM-DD HH:MM" [--tz ZONE] | --now)`, "Schedule the production deployment, or start it now", func() (*pb.AdvanceRequest, string, error) {
		switch {
		case now && at != "":
			return nil, "", errors.New("give --at or --now, not both")
		case now:
			return &pb.AdvanceRequest{Answer: &pb.AdvanceRequest_Immediate{Immediate: true}}, "production deployment starts now", nil
		case at == "":
			return nil, "", errors.New(`give --at "YYYY-MM-DD HH:MM" (with --tz ZONE) or --now`)
		}
		t, loc, err := plParseAt(at, tz)
		if err != nil {
			return nil, "", err
		}
		said := fmt.Sprintf("scheduled the production deployment for %s (%s) = %s", t.In(loc).Format("2006-01-02 15:04 MST"), loc, t.UTC().Format(time.RFC3339))
		return &pb.AdvanceRequest{Answer: &pb.AdvanceRequest_ScheduleAt{ScheduleAt: t.UTC().Format(time.RFC3339)}}, said, nil
	})
	schedule.Flags().StringVar(&at, "at", "", `when: "YYYY-MM-DD HH:MM[:SS]" in --tz, or RFC 3339 with an offset`)
	schedule.Flags().StringVar(&tz, "tz", "", "IANA time zone of --at, e.g. Europe/Berlin (default: this machine's)")
	schedule.Flags().BoolVar(&now, "now", false, "start the production deployment now")
	c.AddCommand(approve, reject, schedule, override, cseStart)
	return c
}

func plStepLine(s *pb.ExecutionStep) string {
	if s == nil {
		return "none"
	}
	return fmt.Sprintf("step %s %s %s", s.Id, plStepName(s), s.Status)
}

// plParseAt reads a schedule time as a person writes it, in zone tz (the
// seed: "specified in terms of the user's timezone"). A wall-clock time
// the zone skips or repeats at a DST change is refused rather than
// guessed: a production deployment an hour off is worse than a question.
func plParseAt(at, tz string) (time.Time, *time.Location, error) {
	loc := time.Local
	if tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("--tz %q: not a known time zone (e.g. Europe/Berlin, UTC)", tz)
		}
		loc = l
	}
	if t, err := time.Parse(time.RFC3339, at); err == nil {
		return t, loc, nil
	}
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		t, err := time.ParseInLocation(layout, at, loc)
		if err != nil {
			continue
		}
		if t.Format(layout) != at {
			return time.Time{}, nil, fmt.Errorf("--at %q does not exist in %s (the clocks skip it); pick another time", at, loc)
		}
		for _, d := range []time.Duration{-time.Hour, time.Hour, -30 * time.Minute, 30 * time.Minute} {
			if t.Add(d).In(loc).Format(layout) == at {
				return time.Time{}, nil, fmt.Errorf("--at %q happens twice in %s (the clocks go back); give it with an offset, e.g. %s", at, loc, t.Format(time.RFC3339))
			}
		}
		return t, loc, nil
	}
	return time.Time{}, nil, fmt.Errorf(`--at %q: want "YYYY-MM-DD HH:MM" (in --tz) or RFC 3339 such as 2026-12-01T21:00:00Z`, at)
}

func execCancelCmd(g *globals, o *execOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel [EXEC] --pipeline PROGRAM/PIPELINE",
		Short: "Cancel the running execution: a waiting step is rejected, a running one stopped (role deployer)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := o.ref()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return withPipelines(cmd, g, func(ctx context.Context, c pb.PipelineServiceClient) error {
				e, err := c.Cancel(ctx, &pb.CancelExecutionRequest{Program: ref.program, Pipeline: ref.pipeline, Execution: id})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return plPrintJSON(g, e)
				}
				fmt.Fprintln(g.out, plBreadcrumb(e))
				if e.Status == "CANCELLING" {
					fmt.Fprintf(g.out, "CANCELLING: the running step stops and no further step starts (deckctl execution watch %s -p %s)\n", e.Id, ref)
					return nil
				}
				fmt.Fprintf(g.out, "%s: %s\n", e.Status, dash(e.Reason))
				return nil
			})
		},
	}
}
