package server_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/agent"
	agentconfig "github.com/deckhand-dev/deckhand/agent/config"
	"github.com/deckhand-dev/deckhand/agent/session"
	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/server"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/deckhand-dev/deckhand/pkg/testlog"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
)

// runAgentOnce runs an agent from config text until it returns or the
// timeout passes.
func runAgentOnce(t *testing.T, cfgText string, d time.Duration) error {
	acfg, err := agentconfig.Parse("agent.yaml", []byte(cfgText))
	require.NoError(t, err)
	a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, "agent-"+acfg.HostID)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return a.Run(ctx)
}

func fileMode(t *testing.T, p string) os.FileMode {
	st, err := os.Stat(p)
	require.NoError(t, err)
	return st.Mode().Perm()
}

func TestEnrollmentHappyPathAndFileModes(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	r := c.startAgent("publish1", dir, session.Hooks{})
	c.waitOnline("publish1")
	for _, f := range []string{"agent.key", "agent.crt", "ca.crt"} {
		require.Equal(t, os.FileMode(0o600), fileMode(t, filepath.Join(dir, "tls", f)), f)
	}
	require.Equal(t, os.FileMode(0o600), fileMode(t, filepath.Join(c.Config.DataDir, "ca", "ca.key")))
	require.Equal(t, os.FileMode(0o600), fileMode(t, c.CredentialsPath()))
	leaf := r.a.Identity().Leaf()
	who, err := identity.FromCert(leaf)
	require.NoError(t, err)
	require.Equal(t, identity.Principal{Kind: identity.KindHost, Name: "publish1"}, who)
	require.WithinDuration(t, time.Now().Add(30*24*time.Hour), leaf.NotAfter, time.Hour, "default lifetime is 30 days")

	// The agent restarts from its stored certificate, no token needed.
	require.NoError(t, r.stop())
	c.startAgent("publish1", dir, session.Hooks{})
	c.waitOnline("publish1")

	// Tokens and admin tokens are stored hashed only.
	c.Stop()
	db, err := os.ReadFile(filepath.Join(c.Config.DataDir, store.FileName))
	require.NoError(t, err)
	require.False(t, bytes.Contains(db, []byte(c.Credentials().Token)), "admin token stored in clear")
	require.False(t, bytes.Contains(db, []byte("dhj_")), "a join token is stored in clear")
}

func TestEnrollmentRefusals(t *testing.T) {
	c := newCluster(t)
	fp := c.Server.PKI().Fingerprint()
	base := func(host, dir string) string {
		return "host_id: " + host + "\nserver: " + c.Addr + "\ndata_dir: " + dir + "\nreconnect:\n  base_backoff: 50ms\n  max_backoff: 100ms\n"
	}
	used, _, err := c.Server.PKI().NewJoinToken("author1", "test", time.Hour)
	require.NoError(t, err)
	require.NoError(t, runAgentOnceUntilOnline(t, c, base("author1", t.TempDir())+"join_token: "+used+"\nca_fingerprint: "+fp+"\n", "author1"))

	require.NoError(t, c.Server.Store().PutJoinToken("dhj_expiredtoken", store.JoinToken{Host: "author1", CreatedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}))
	forPublish, _, err := c.Server.PKI().NewJoinToken("publish1", "test", time.Hour)
	require.NoError(t, err)
	fresh, _, err := c.Server.PKI().NewJoinToken("author1", "test", time.Hour)
	require.NoError(t, err)
	otherCA, err := identity.NewCA("impostor", time.Hour)
	require.NoError(t, err)

	cases := []struct{ name, token, fingerprint, want string }{
		{"reused token", used, fp, "join token was already used"},
		{"expired token", "dhj_expiredtoken", fp, "join token has expired"},
		{"token for another host", forPublish, fp, `join token was issued for another host ("publish1", not "author1")`},
		{"unknown token", "dhj_nonsense", fp, "join token is not known to this server"},
		{"wrong CA fingerprint", fresh, identity.Fingerprint(otherCA.Cert), "but this agent was told to trust"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := runAgentOnce(t, base("author1", dir)+"join_token: "+tc.token+"\nca_fingerprint: "+tc.fingerprint+"\n", 20*time.Second)
			var fatal *session.FatalError
			require.ErrorAs(t, err, &fatal)
			require.Contains(t, err.Error(), tc.want)
			require.NoDirExists(t, filepath.Join(dir, "tls"), "nothing may be stored after a refusal")
		})
	}
	// Refusals used nothing up: the right host enrolls with the tokens the
	// wrong host and the wrong fingerprint could not use.
	require.NoError(t, runAgentOnceUntilOnline(t, c, base("publish1", t.TempDir())+"join_token: "+forPublish+"\nca_fingerprint: "+fp+"\n", "publish1"))
	require.NoError(t, runAgentOnceUntilOnline(t, c, base("author1", t.TempDir())+"join_token: "+fresh+"\nca_fingerprint: "+fp+"\n", "author1"))

	entries, err := c.Server.Store().Audit(time.Time{}, 0)
	require.NoError(t, err)
	var enrolls, refused int
	for _, e := range entries {
		if e.Action == "enroll" {
			enrolls++
			if strings.HasPrefix(e.Result, "refused") {
				refused++
			}
		}
	}
	// Every attempt that reached the server is audited; the one with the
	// wrong fingerprint never did: the agent hung up during the handshake.
	require.Equal(t, 7, enrolls, "every enrollment attempt is audited")
	require.Equal(t, 4, refused)
}

// runAgentOnceUntilOnline runs an agent until the server sees it online.
func runAgentOnceUntilOnline(t *testing.T, c *cluster, cfgText, host string) error {
	acfg, err := agentconfig.Parse("agent.yaml", []byte(cfgText))
	require.NoError(t, err)
	a, err := agent.New(acfg, agent.Options{Logger: testlog.New(t, "agent-"+host)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for !c.Server.Fleet().Online(host) {
		select {
		case err := <-done:
			done <- err
			return err
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return context.DeadlineExceeded
		}
	}
	return nil
}

func TestHelloClaimingAnotherHostIsRefused(t *testing.T) {
	c := newCluster(t)
	stream, err := pb.NewAgentServiceClient(c.HostConn("author1")).Connect(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{HostId: "dispatcher1"}}}))
	_, err = stream.Recv()
	require.Equal(t, codes.PermissionDenied, status.Code(err))
	require.Contains(t, err.Error(), `certificate is for host "author1" but its Hello claims "dispatcher1"`)
	require.False(t, c.Server.Fleet().Online("dispatcher1"))
	require.False(t, c.Server.Fleet().Online("author1"))
}

func TestCertificateFromAnotherCAIsRefused(t *testing.T) {
	c := newCluster(t)
	other, err := identity.NewCA("impostor", time.Hour)
	require.NoError(t, err)
	key, err := identity.NewKey()
	require.NoError(t, err)
	leaf, err := other.IssueClient(key.Public(), identity.Principal{Kind: identity.KindHost, Name: "author1"}, time.Hour)
	require.NoError(t, err)
	cert := identity.TLSCert(leaf, key)
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(credentials.NewTLS(c.TLSConfig(&cert))))
	require.NoError(t, err)
	defer conn.Close()
	stream, err := pb.NewAgentServiceClient(conn).Connect(ctxT(t))
	if err == nil {
		require.NoError(t, stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{HostId: "author1"}}}))
		_, err = stream.Recv()
	}
	require.Error(t, err)
	require.False(t, c.Server.Fleet().Online("author1"))
}

func TestNoCertificateCannotConnectAsAgent(t *testing.T) {
	c := newCluster(t)
	stream, err := pb.NewAgentServiceClient(c.ConnWithToken("")).Connect(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{HostId: "author1"}}}))
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Contains(t, err.Error(), "no client certificate")
}

func TestHostCertificateCannotCallAdminAPI(t *testing.T) {
	c := newCluster(t)
	_, err := pb.NewAdminServiceClient(c.HostConn("author1")).ListAgents(ctxT(t), &pb.ListAgentsRequest{})
	require.Equal(t, codes.Unauthenticated, status.Code(err))
	require.Contains(t, err.Error(), "a host certificate cannot call the admin API")
}

func TestRevokedAgentIsDisconnectedAndCannotReconnect(t *testing.T) {
	c := newCluster(t)
	r := c.startAgent("dispatcher1", t.TempDir(), session.Hooks{})
	c.waitOnline("dispatcher1")
	resp, err := pb.NewAdminServiceClient(c.AdminConn()).RevokeAgent(ctxT(t), &pb.RevokeAgentRequest{HostId: "dispatcher1", Reason: "decommissioned"})
	require.NoError(t, err)
	require.True(t, resp.WasConnected)
	require.False(t, c.Server.Fleet().Online("dispatcher1"), "the stream must be closed at once")

	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("a revoked agent kept running instead of stopping on the refusal")
	}
	var fatal *session.FatalError
	require.ErrorAs(t, r.err, &fatal)
	require.Contains(t, r.err.Error(), "revoked")
	require.False(t, c.Server.Fleet().Online("dispatcher1"))

	entries, err := c.Server.Store().Audit(time.Time{}, 0)
	require.NoError(t, err)
	found := false
	for _, e := range entries {
		if e.Action == "RevokeAgent" && e.Target == "dispatcher1" && e.Who == "admin" && e.Result == "ok" {
			found = true
		}
	}
	require.True(t, found, "revocation audited")

	// Re-enrolling with a new token makes a new, accepted certificate.
	c.startAgent("dispatcher1", t.TempDir(), session.Hooks{})
	c.waitOnline("dispatcher1")
}

func TestRenewalKeepsTheStreamThroughTwoRenewals(t *testing.T) {
	t.Parallel()
	c := &cluster{t: t, Control: servertest.Start(t, servertest.Options{HeartbeatInterval: hb, Extra: "tls:\n  host_cert_lifetime: 1m\n"})}
	r := c.startAgent("author1", t.TempDir(), session.Hooks{})
	c.waitOnline("author1")
	first := r.a.Identity().Leaf()
	require.WithinDuration(t, time.Now().Add(time.Minute), first.NotAfter, 5*time.Second)
	require.Eventually(t, func() bool { return r.a.Client().Sessions() == 1 }, 5*time.Second, 5*time.Millisecond)

	serials := map[string]bool{first.SerialNumber.String(): true}
	require.Eventually(t, func() bool {
		serials[r.a.Identity().Leaf().SerialNumber.String()] = true
		return len(serials) >= 3
	}, 2*time.Minute, 200*time.Millisecond, "expected two renewals")
	require.EqualValues(t, 1, r.a.Client().Sessions(), "renewal must not need a new stream")
	require.True(t, c.Server.Fleet().Online("author1"))

	// Once the first certificate has expired, a fresh connection works with
	// the renewed one.
	time.Sleep(time.Until(first.NotAfter.Add(time.Second)))
	require.True(t, c.Server.Fleet().Disconnect("author1", "test"))
	require.Eventually(t, func() bool { return r.a.Client().Sessions() == 2 && c.Server.Fleet().Online("author1") }, 10*time.Second, 20*time.Millisecond)
}

func TestDevInsecureOnlyOnLoopback(t *testing.T) {
	c := newCluster(t)
	c.Stop()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	require.NoError(t, err)
	_, err = server.New(c.Config, server.Options{Listener: ln, DevInsecure: true})
	require.ErrorContains(t, err, "refusing --dev-insecure on ")
	require.ErrorContains(t, err, "allowed only on a loopback address")

	_, err = agentconfig.Parse("a.yaml", []byte("host_id: a\nserver: 10.0.0.1:7443\ndata_dir: /d\ninsecure: true\n"))
	require.ErrorContains(t, err, "insecure: true is only allowed with a loopback server address")

	d := servertest.Start(t, servertest.Options{DevInsecure: true})
	list, err := pb.NewAdminServiceClient(d.AdminConn()).ListAgents(ctxT(t), &pb.ListAgentsRequest{})
	require.NoError(t, err)
	require.Len(t, list.Agents, 3)
}

// TestRoleTable calls every AdminService method as every role and checks
// it is allowed or denied as auth.Methods says, with the missing role named.
func TestRoleTable(t *testing.T) {
	c := newCluster(t)
	admin := pb.NewAdminServiceClient(c.AdminConn())
	tokens := map[auth.Role]string{}
	for _, r := range auth.Roles {
		resp, err := admin.CreateAdmin(ctxT(t), &pb.CreateAdminRequest{Name: "as-" + string(r), Roles: []string{string(r)}})
		require.NoError(t, err)
		tokens[r] = resp.Token
	}
	var all []protoreflect.MethodDescriptor
	var svcs []protoreflect.ServiceDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("deckhand.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			if sd.Name() == "AgentService" || sd.Name() == "EnrollService" {
				continue
			}
			for j := 0; j < sd.Methods().Len(); j++ {
				all = append(all, sd.Methods().Get(j))
				svcs = append(svcs, sd)
			}
		}
		return true
	})
	require.Equal(t, len(all), len(auth.Methods), "auth.Methods must list exactly the operator API methods")
	for i, m := range all {
		svc := svcs[i]
		full := "/" + string(svc.FullName()) + "/" + string(m.Name())
		rule, ok := auth.Methods[full]
		require.True(t, ok, "%s is not in the role table", full)
		call := func(token string) error {
			conn := c.ConnWithToken(token)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// One generic path for unary and streaming methods alike.
			st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, full)
			if err != nil {
				return err
			}
			if err := st.SendMsg(dynamicpb.NewMessage(m.Input())); err != nil && err != io.EOF {
				return err
			}
			if err := st.CloseSend(); err != nil {
				return err
			}
			return st.RecvMsg(dynamicpb.NewMessage(m.Output()))
		}
		err := call("")
		require.Equal(t, codes.Unauthenticated, status.Code(err), "%s without credentials", full)
		for _, r := range auth.Roles {
			err := call(tokens[r])
			allowed := auth.Caller{Roles: []auth.Role{r}}.Has(rule.Role)
			code := status.Code(err)
			if allowed {
				require.NotContains(t, []codes.Code{codes.PermissionDenied, codes.Unauthenticated}, code, "%s as %s: %v", full, r, err)
			} else {
				require.Equal(t, codes.PermissionDenied, code, "%s as %s", full, r)
				require.Contains(t, err.Error(), "needs the "+string(rule.Role)+" role")
			}
		}
	}
	// Denials of actions land in the audit log.
	entries, err := c.Server.Store().Audit(time.Time{}, 0)
	require.NoError(t, err)
	denied := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Result, "denied") {
			denied++
		}
	}
	require.Greater(t, denied, 0)
}

func TestAdminClientCertificate(t *testing.T) {
	c := newCluster(t)
	admin := pb.NewAdminServiceClient(c.AdminConn())
	_, err := admin.CreateAdmin(ctxT(t), &pb.CreateAdminRequest{Name: "carol", Roles: []string{"approver"}})
	require.NoError(t, err)
	key, err := identity.NewKey()
	require.NoError(t, err)
	csr, err := identity.NewCSR(key, "carol")
	require.NoError(t, err)
	resp, err := admin.IssueAdminCert(ctxT(t), &pb.IssueAdminCertRequest{Name: "carol", Csr: csr})
	require.NoError(t, err)
	leaf, err := identity.ParseCertPEM(pemOf(resp.Certificate))
	require.NoError(t, err)
	cert := identity.TLSCert(leaf, key)
	conn, err := grpc.NewClient(c.Addr, grpc.WithTransportCredentials(credentials.NewTLS(c.TLSConfig(&cert))))
	require.NoError(t, err)
	defer conn.Close()
	who, err := pb.NewAdminServiceClient(conn).WhoAmI(ctxT(t), &pb.WhoAmIRequest{})
	require.NoError(t, err)
	require.Equal(t, "carol", who.Principal)
	require.Equal(t, "certificate", who.Method)
	require.Equal(t, []string{"approver"}, who.Roles)
	_, err = pb.NewAdminServiceClient(conn).CreateJoinToken(ctxT(t), &pb.CreateJoinTokenRequest{HostId: "author1"})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	// An admin certificate cannot open an agent stream.
	stream, err := pb.NewAgentServiceClient(conn).Connect(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{HostId: "author1"}}}))
	_, err = stream.Recv()
	require.Equal(t, codes.Unauthenticated, status.Code(err))
}

func pemOf(der []byte) []byte {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return identity.CertPEM(c)
}
