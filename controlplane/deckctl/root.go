// Package deckctl is the admin CLI's command tree (cobra). cmd/deckctl
// only calls Execute; tests drive the same commands in-process.
package deckctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/netaddr"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/deckhand-dev/deckhand/pkg/version"
)

// globals are the flags every command shares.
type globals struct {
	server      string
	output      string
	timeout     time.Duration
	credentials string
	token       string
	caFile      string
	certFile    string
	keyFile     string
	insecure    bool
	out         io.Writer
	dialOpt     []grpc.DialOption
	serverSet   bool
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
			g.serverSet = cmd.Flags().Changed("server") || os.Getenv("DECKHAND_SERVER") != ""
			return nil
		},
	}
	defServer := os.Getenv("DECKHAND_SERVER")
	if defServer == "" {
		defServer = "127.0.0.1:7443"
	}
	root.PersistentFlags().StringVar(&g.server, "server", defServer, "control plane address (env DECKHAND_SERVER; default: the credentials file's server)")
	root.PersistentFlags().StringVar(&g.credentials, "credentials", os.Getenv("DECKHAND_CREDENTIALS"), "credentials file with server, CA and token (env DECKHAND_CREDENTIALS; default ~/.config/deckhand/credentials.yaml if it exists)")
	root.PersistentFlags().StringVar(&g.token, "token", os.Getenv("DECKHAND_TOKEN"), "bearer token (env DECKHAND_TOKEN)")
	root.PersistentFlags().StringVar(&g.caFile, "ca", "", "CA certificate (PEM) to verify the server")
	root.PersistentFlags().StringVar(&g.certFile, "cert", "", "admin client certificate (PEM)")
	root.PersistentFlags().StringVar(&g.keyFile, "key", "", "admin client key (PEM)")
	root.PersistentFlags().BoolVar(&g.insecure, "insecure", false, "plain connection to a --dev-insecure server (loopback only)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 60*time.Second, "give up after this long")
	root.SetOut(out)
	root.AddCommand(agentsCmd(g), tokensCmd(g), auditCmd(g), adminsCmd(g), whoamiCmd(g), deployCmd(g), deploymentsCmd(g), dispatcherCmd(g), artifactCmd(g), driftCmd(g), pipelineCmd(g), executionCmd(g), programCmd(g))
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
		o, err := g.transport()
		if err != nil {
			return nil, err
		}
		opts = o
	}
	conn, err := grpc.NewClient(g.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", g.server, err)
	}
	return conn, nil
}

// transport builds the connection's credentials from flags and the
// credentials file: TLS verified against the control plane CA, plus a
// bearer token or an admin client certificate.
func (g *globals) transport() ([]grpc.DialOption, error) {
	if g.insecure {
		if !netaddr.IsLoopback(g.server) {
			return nil, fmt.Errorf("--insecure is only for a --dev-insecure server on a loopback address, not %s", g.server)
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	credPath := g.credentials
	if credPath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			p := filepath.Join(home, ".config", "deckhand", "credentials.yaml")
			if _, err := os.Stat(p); err == nil {
				credPath = p
			}
		}
	}
	var creds *auth.Credentials
	if credPath != "" {
		c, err := auth.LoadCredentials(credPath)
		if err != nil {
			return nil, err
		}
		creds = c
		if !g.serverSet && c.Server != "" {
			g.server = c.Server
		}
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if h, _, err := net.SplitHostPort(g.server); err == nil {
		tlsCfg.ServerName = h
	}
	pool := x509.NewCertPool()
	switch {
	case g.caFile != "":
		ca, err := identity.LoadCertFile(g.caFile)
		if err != nil {
			return nil, err
		}
		pool.AddCert(ca)
	case creds != nil && creds.CA != "":
		ca, err := identity.ParseCertPEM([]byte(creds.CA))
		if err != nil {
			return nil, err
		}
		pool.AddCert(ca)
	default:
		return nil, errors.New("no CA to verify the server: use --credentials FILE (written by deckhand-server on its first start) or --ca FILE; --insecure only for a --dev-insecure server")
	}
	tlsCfg.RootCAs = pool
	certFile, keyFile := g.certFile, g.keyFile
	if certFile == "" && creds != nil {
		certFile, keyFile = creds.Cert, creds.Key
	}
	if certFile != "" {
		cert, err := identity.LoadCertFile(certFile)
		if err != nil {
			return nil, err
		}
		key, err := identity.LoadKeyFile(keyFile)
		if err != nil {
			return nil, err
		}
		tlsCfg.Certificates = []tls.Certificate{identity.TLSCert(cert, key)}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg))}
	tok := g.token
	if tok == "" && creds != nil {
		tok = creds.Token
	}
	if tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(tok)))
	}
	return opts, nil
}

// bearer sends the token on every call, and only over TLS.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

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
