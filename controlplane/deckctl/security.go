package deckctl

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func tokensCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "tokens", Short: "Join tokens that enroll agents"}
	var host string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --host HOST [--ttl 1h]",
		Short: "Print a one-time join token for HOST and the CA fingerprint to pin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if host == "" {
				return fmt.Errorf("--host is required")
			}
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).CreateJoinToken(ctx, &pb.CreateJoinTokenRequest{HostId: host, Ttl: durationpb.New(ttl)})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printJSON(map[string]any{"host": host, "token": resp.Token, "ca_fingerprint": resp.CaFingerprint,
					"expires_at": resp.ExpiresAt.AsTime(), "server": resp.Server})
			}
			fmt.Fprintf(g.out, "Join token for %s (single use, expires %s):\n\n  %s\n\nCA fingerprint (the agent checks the server by it):\n\n  %s\n\n",
				host, resp.ExpiresAt.AsTime().Local().Format(time.RFC3339), resp.Token, resp.CaFingerprint)
			fmt.Fprintf(g.out, "Put this in the agent's config (e.g. /etc/deckhand/agent.yaml):\n\n  host_id: %s\n  server: %s\n  join_token: %s\n  ca_fingerprint: %s\n",
				host, resp.Server, resp.Token, resp.CaFingerprint)
			return nil
		},
	}
	create.Flags().StringVar(&host, "host", "", "host id (declared in the server config)")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays valid")
	c.AddCommand(create)
	return c
}

func agentsRevokeCmd(g *globals) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "revoke HOST",
		Short: "Close HOST's stream now and refuse its certificates from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).RevokeAgent(ctx, &pb.RevokeAgentRequest{HostId: args[0], Reason: reason})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printJSON(map[string]any{"host": args[0], "revoked": true, "was_connected": resp.WasConnected})
			}
			state := "it was not connected"
			if resp.WasConnected {
				state = "its stream was closed"
			}
			fmt.Fprintf(g.out, "revoked %s: %s; its certificates are refused from now on (enroll it again with a new join token)\n", args[0], state)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why (kept in the audit log)")
	return c
}

// parseSince accepts a duration ("24h": that long ago) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: use a duration like 24h or a time like 2026-11-27T10:00:00Z", s)
}

func auditCmd(g *globals) *cobra.Command {
	var since string
	var limit int
	c := &cobra.Command{
		Use:   "audit [--since 24h|TIME] [--limit N]",
		Short: "Show the audit log: who did what, when, with what result",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			req := &pb.ListAuditRequest{Limit: int32(limit)}
			if !t.IsZero() {
				req.Since = timestamppb.New(t)
			}
			resp, err := pb.NewAdminServiceClient(conn).ListAudit(ctx, req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				out := make([]map[string]any, 0, len(resp.Entries))
				for _, e := range resp.Entries {
					out = append(out, map[string]any{"seq": e.Seq, "at": e.At.AsTime(), "who": e.Who, "action": e.Action, "target": e.Target, "result": e.Result, "detail": e.Detail})
				}
				return g.printJSON(out)
			}
			tw := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tWHO\tACTION\tTARGET\tRESULT")
			for _, e := range resp.Entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.At.AsTime().Local().Format("2006-01-02 15:04:05"), e.Who, e.Action, dash(e.Target), e.Result)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&since, "since", "", "only entries newer than this (duration or RFC 3339 time)")
	c.Flags().IntVar(&limit, "limit", 0, "at most this many (the newest)")
	return c
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func adminsCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "admins", Short: "Operators, their roles and credentials"}
	var roles []string
	var write string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE[,ROLE]",
		Short: "Create an operator (or change their roles) and print a new bearer token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).CreateAdmin(ctx, &pb.CreateAdminRequest{Name: args[0], Roles: roles})
			if err != nil {
				return err
			}
			if write != "" {
				if err := writeCredentialsFor(g, write, args[0], resp.Token); err != nil {
					return err
				}
			}
			if g.output == "json" {
				return g.printJSON(map[string]any{"name": args[0], "roles": roles, "token": resp.Token, "credentials_file": write})
			}
			fmt.Fprintf(g.out, "%s now has roles %s. Bearer token (shown once):\n\n  %s\n", args[0], strings.Join(roles, ", "), resp.Token)
			if write != "" {
				fmt.Fprintf(g.out, "\nwrote %s (mode 0600); use: deckctl --credentials %s ...\n", write, write)
			}
			return nil
		},
	}
	create.Flags().StringSliceVar(&roles, "role", nil, "viewer, deployer, approver, cse or admin (repeat or comma-separate)")
	create.Flags().StringVar(&write, "write", "", "also write a credentials file for them here")

	var out string
	var lifetime time.Duration
	cert := &cobra.Command{
		Use:   "cert NAME --out DIR",
		Short: "Issue an admin client certificate; the key is generated here and never sent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out DIR is required")
			}
			key, err := identity.NewKey()
			if err != nil {
				return err
			}
			csr, err := identity.NewCSR(key, "admin:"+args[0])
			if err != nil {
				return err
			}
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).IssueAdminCert(ctx, &pb.IssueAdminCertRequest{Name: args[0], Csr: csr, Lifetime: durationpb.New(lifetime)})
			if err != nil {
				return err
			}
			keyPEM, err := identity.KeyPEM(key)
			if err != nil {
				return err
			}
			files := map[string][]byte{"key.pem": keyPEM, "cert.pem": pemCert(resp.Certificate), "ca.pem": pemCert(resp.Ca)}
			for name, data := range files {
				if err := identity.WriteFileAtomic(filepath.Join(out, name), data, 0o600); err != nil {
					return err
				}
			}
			if g.output == "json" {
				return g.printJSON(map[string]any{"name": args[0], "dir": out})
			}
			fmt.Fprintf(g.out, "wrote %s/{key,cert,ca}.pem (mode 0600); use: deckctl --ca %s/ca.pem --cert %s/cert.pem --key %s/key.pem ...\n", out, out, out, out)
			return nil
		},
	}
	cert.Flags().StringVar(&out, "out", "", "directory for key.pem, cert.pem and ca.pem")
	cert.Flags().DurationVar(&lifetime, "lifetime", 90*24*time.Hour, "certificate lifetime")
	c.AddCommand(create, cert)
	return c
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// writeCredentialsFor writes a credentials file for a new admin that
// reuses this deckctl's server and CA.
func writeCredentialsFor(g *globals, path, name, token string) error {
	c := &auth.Credentials{Server: g.server, Name: name, Token: token}
	switch {
	case g.caFile != "":
		data, err := os.ReadFile(g.caFile)
		if err != nil {
			return err
		}
		c.CA = string(data)
	case g.credentials != "":
		cur, err := auth.LoadCredentials(g.credentials)
		if err != nil {
			return err
		}
		c.CA, c.CAFingerprint = cur.CA, cur.CAFingerprint
	}
	return auth.WriteCredentials(path, c)
}

func whoamiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the server thinks you are and your roles",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			resp, err := pb.NewAdminServiceClient(conn).WhoAmI(ctx, &pb.WhoAmIRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.printJSON(map[string]any{"name": resp.Principal, "roles": resp.Roles, "via": resp.Method})
			}
			fmt.Fprintf(g.out, "%s (roles: %s; authenticated by %s)\n", resp.Principal, strings.Join(resp.Roles, ", "), resp.Method)
			return nil
		},
	}
}
