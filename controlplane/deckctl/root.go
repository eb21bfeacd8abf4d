// Package deckctl is the admin CLI's command tree (cobra). cmd/deckctl
// only calls Execute; tests drive the same commands in-process.
package deckctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/pkg/version"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// globals are the flags every command shares.
type globals struct {
	server  string
	output  string
	timeout time.Duration
	out     io.Writer
	dialOpt []grpc.DialOption
}

// Options let tests inject transport credentials.
type Options struct {
	DialOptions []grpc.DialOption
}

// NewRoot builds the deckctl command tree writing to out.
func NewRoot(out io.Writer, opts Options) *cobra.Command {
	g := &globals{out: out, dialOpt: opts.DialOptions}
	root := &cobra.Command{
		Use:           "deckctl",
		Short:         "Operate Deckhand: agents, deployments, pipelines",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("-o %q: use table or json", g.output)
			}
			return nil
		},
	}
	defServer := os.Getenv("DECKHAND_SERVER")
	if defServer == "" {
		defServer = "127.0.0.1:7443"
	}
	root.PersistentFlags().StringVar(&g.server, "server", defServer, "control plane address (env DECKHAND_SERVER)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 60*time.Second, "give up after this long")
	root.SetOut(out)
	root.AddCommand(agentsCmd(g))
	return root
}

// Execute runs deckctl with args and returns the process exit code,
// printing any error as one line on errOut.
func Execute(args []string, out, errOut io.Writer) int {
	root := NewRoot(out, Options{})
	root.SetArgs(args)
	root.SetErr(errOut)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(errOut, "deckctl: "+oneLine(err))
		return 1
	}
	return 0
}

// oneLine turns gRPC and dial errors into one readable line.
func oneLine(err error) string {
	if st, ok := status.FromError(err); ok {
		msg := st.Message()
		switch st.Code() {
		case codes.Unavailable:
			return "cannot reach the server: " + msg
		case codes.DeadlineExceeded:
			if msg == "" || strings.Contains(msg, "context deadline exceeded") {
				return "timed out waiting for the server"
			}
		}
		return strings.ReplaceAll(msg, "\n", "; ")
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func (g *globals) dial() (*grpc.ClientConn, error) {
	opts := g.dialOpt
	if opts == nil {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(g.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", g.server, err)
	}
	return conn, nil
}

func (g *globals) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), g.timeout)
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ago renders a past time for tables.
func ago(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format("2006-01-02 15:04")
}
