// Package auth decides who an operator is (bearer token or admin client
// certificate), what their roles allow (a table of every AdminService
// method and the role it needs), and writes the audit log of what they
// did. Agents are not operators: host certificates cannot call the admin
// API, and admin credentials cannot open an agent stream.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/pki"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	"github.com/deckhand-dev/deckhand/pkg/identity"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Role is a set of permissions an operator holds.
type Role string

const (
	// Viewer reads everything.
	Viewer Role = "viewer"
	// Deployer starts and cancels executions and pushes artifacts.
	Deployer Role = "deployer"
	// Approver approves or rejects, and schedules production deployments.
	Approver Role = "approver"
	// CSE runs the CSE support step and switches emergency mode.
	CSE Role = "cse"
	// Admin does everything, including tokens, hosts and operators.
	Admin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{Viewer, Deployer, Approver, CSE, Admin}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (one of viewer, deployer, approver, cse, admin)", s)
}

// Caller is an authenticated operator.
type Caller struct {
	Name  string
	Roles []Role
	// Via says how they proved it: token, certificate or dev-insecure.
	Via string
}

// Has reports whether the caller may act with role r. Admin may do
// everything; every role may read.
func (c Caller) Has(r Role) bool {
	if slices.Contains(c.Roles, Admin) || slices.Contains(c.Roles, r) {
		return true
	}
	return r == Viewer && len(c.Roles) > 0
}

func (c Caller) String() string { return c.Name }

// Rule is what a method needs.
type Rule struct {
	Role Role
	// Audit records every call (actions, not reads).
	Audit bool
}

// Methods is the role table of every operator API method. A method missing here is
// refused: adding an RPC without deciding who may call it fails closed,
// and a test checks the table covers the service.
var Methods = map[string]Rule{
	"/deckhand.v1.AdminService/ListAgents":      {Role: Viewer},
	"/deckhand.v1.AdminService/GetHostFacts":    {Role: Viewer},
	"/deckhand.v1.AdminService/WhoAmI":          {Role: Viewer},
	"/deckhand.v1.AdminService/ListAudit":       {Role: Admin},
	"/deckhand.v1.AdminService/CreateJoinToken": {Role: Admin, Audit: true},
	"/deckhand.v1.AdminService/RevokeAgent":     {Role: Admin, Audit: true},
	"/deckhand.v1.AdminService/CreateAdmin":     {Role: Admin, Audit: true},
	"/deckhand.v1.AdminService/IssueAdminCert":  {Role: Admin, Audit: true},

	"/deckhand.v1.AdminService/PlanDeployment":   {Role: Viewer},
	"/deckhand.v1.AdminService/StartDeployment":  {Role: Deployer, Audit: true},
	"/deckhand.v1.AdminService/ListDeployments":  {Role: Viewer},
	"/deckhand.v1.AdminService/GetDeployment":    {Role: Viewer},
	"/deckhand.v1.AdminService/CancelDeployment": {Role: Deployer, Audit: true},
	"/deckhand.v1.AdminService/WatchDeployment":  {Role: Viewer},
	"/deckhand.v1.AdminService/DeploymentEvents": {Role: Viewer},
	"/deckhand.v1.AdminService/ListDrift":        {Role: Viewer},
	// PushArtifact is a stream: its handler writes the audit entry.
	"/deckhand.v1.ArtifactService/PushArtifact":  {Role: Deployer},
	"/deckhand.v1.ArtifactService/CreateSet":     {Role: Deployer, Audit: true},
	"/deckhand.v1.ArtifactService/ListSets":      {Role: Viewer},
	"/deckhand.v1.ArtifactService/GetSet":        {Role: Viewer},
	"/deckhand.v1.ArtifactService/ListArtifacts": {Role: Viewer},

	"/deckhand.v1.PipelineService/ListPipelines":         {Role: Viewer},
	"/deckhand.v1.PipelineService/CreateExecution":       {Role: Deployer, Audit: true},
	"/deckhand.v1.PipelineService/GetCurrentExecution":   {Role: Viewer},
	"/deckhand.v1.PipelineService/GetExecution":          {Role: Viewer},
	"/deckhand.v1.PipelineService/ListExecutions":        {Role: Viewer},
	"/deckhand.v1.PipelineService/GetStep":               {Role: Viewer},
	"/deckhand.v1.PipelineService/GetStepLog":            {Role: Viewer},
	"/deckhand.v1.PipelineService/GetQualityGateResults": {Role: Viewer},
	// Advance: the role depends on the waiting step's action (approver,
	// cse, approver or deployer); api.Pipelines checks it per step.
	"/deckhand.v1.PipelineService/Advance":         {Role: Viewer, Audit: true},
	"/deckhand.v1.PipelineService/Cancel":          {Role: Deployer, Audit: true},
	"/deckhand.v1.PipelineService/WatchExecutions": {Role: Viewer},
	"/deckhand.v1.PipelineService/SetEmergency":    {Role: CSE, Audit: true},
}

// agentServices are authenticated by host certificates in their own
// handlers (or, for enrollment, by a join token); every other service is an
// operator API guarded here.
var agentServices = []string{"/deckhand.v1.AgentService/", "/deckhand.v1.EnrollService/", "/grpc.health.v1.Health/"}

// operatorMethod reports whether the interceptors must check a method.
func operatorMethod(full string) bool {
	for _, p := range agentServices {
		if strings.HasPrefix(full, p) {
			return false
		}
	}
	return true
}

// Authorizer resolves and checks callers of the admin API.
type Authorizer struct {
	Store *store.Store
	// PKI verifies admin client certificates; nil in --dev-insecure mode.
	PKI *pki.PKI
	// Insecure treats every caller as an admin (--dev-insecure, loopback
	// only).
	Insecure bool
	Logger   hclog.Logger
	Now      func() time.Time
}

type callerKey struct{}

// CallerFrom returns the caller the interceptor put in ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// WithCaller returns ctx carrying c (tests and internal calls).
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// ErrUnauthenticated means no usable credential came with the call.
var ErrUnauthenticated = errors.New("not authenticated")

// Resolve finds out who is calling: a bearer token in the authorization
// metadata, or an admin client certificate.
func (a *Authorizer) Resolve(ctx context.Context) (Caller, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, v := range md.Get("authorization") {
			tok, ok := strings.CutPrefix(v, "Bearer ")
			if !ok {
				return Caller{}, fmt.Errorf("%w: authorization must be \"Bearer <token>\"", ErrUnauthenticated)
			}
			return a.ResolveToken(strings.TrimSpace(tok))
		}
	}
	if a.PKI != nil {
		who, _, err := a.PKI.Peer(ctx)
		if err == nil {
			if who.Kind != identity.KindAdmin {
				return Caller{}, fmt.Errorf("%w: a %s certificate cannot call the admin API", ErrUnauthenticated, who.Kind)
			}
			adm, err := a.Store.Admin(who.Name)
			if err != nil {
				return Caller{}, fmt.Errorf("%w: admin %q from the certificate is not known", ErrUnauthenticated, who.Name)
			}
			return Caller{Name: adm.Name, Roles: toRoles(adm.Roles), Via: "certificate"}, nil
		}
		if errors.Is(err, pki.ErrRevoked) {
			return Caller{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
		}
	}
	if a.Insecure {
		return Caller{Name: "dev-insecure", Roles: []Role{Admin}, Via: "dev-insecure"}, nil
	}
	return Caller{}, fmt.Errorf("%w: give a bearer token (deckctl --credentials) or an admin client certificate", ErrUnauthenticated)
}

// ResolveToken looks a bearer token up.
func (a *Authorizer) ResolveToken(tok string) (Caller, error) {
	adm, err := a.Store.AdminByToken(tok)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: the bearer token is not valid", ErrUnauthenticated)
	}
	return Caller{Name: adm.Name, Roles: toRoles(adm.Roles), Via: "token"}, nil
}

func toRoles(in []string) []Role {
	out := make([]Role, 0, len(in))
	for _, r := range in {
		out = append(out, Role(r))
	}
	return out
}

// Check resolves the caller of method and checks its role.
func (a *Authorizer) Check(ctx context.Context, method string) (Caller, Rule, error) {
	rule, ok := Methods[method]
	if !ok {
		return Caller{}, rule, status.Errorf(codes.PermissionDenied, "%s is not in the role table; refusing", method)
	}
	c, err := a.Resolve(ctx)
	if err != nil {
		return Caller{}, rule, status.Error(codes.Unauthenticated, err.Error())
	}
	if !c.Has(rule.Role) {
		return c, rule, status.Errorf(codes.PermissionDenied, "%s needs the %s role; %s has %s", shortName(method), rule.Role, c.Name, rolesString(c.Roles))
	}
	return c, rule, nil
}

func rolesString(r []Role) string {
	if len(r) == 0 {
		return "no roles"
	}
	s := make([]string, len(r))
	for i, x := range r {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

func shortName(method string) string {
	return method[strings.LastIndexByte(method, '/')+1:]
}

// target names what a request is about, for the audit log.
func target(req any) string {
	switch r := req.(type) {
	case interface{ GetHostId() string }:
		return r.GetHostId()
	case interface{ GetName() string }:
		return r.GetName()
	case interface{ GetEnvironment() string }:
		return r.GetEnvironment()
	case interface {
		GetProgram() string
		GetPipeline() string
	}:
		if r.GetPipeline() != "" {
			return r.GetProgram() + "/" + r.GetPipeline()
		}
		return r.GetProgram()
	case interface{ GetProgram() string }:
		return r.GetProgram()
	case interface{ GetId() string }:
		return r.GetId()
	}
	return ""
}

// Record appends an audit entry; failures to write it are logged loudly
// (the action already happened).
func (a *Authorizer) Record(who, action, tgt, result, detail string) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	if _, err := a.Store.AppendAudit(store.AuditEntry{At: now().UTC(), Who: who, Action: action, Target: tgt, Result: result, Detail: detail}); err != nil && a.Logger != nil {
		a.Logger.Error("cannot write the audit log", "who", who, "action", action, "error", err)
	}
}

// Unary guards operator unary methods; agent services pass through.
func (a *Authorizer) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !operatorMethod(info.FullMethod) {
			return handler(ctx, req)
		}
		c, rule, err := a.Check(ctx, info.FullMethod)
		if err != nil {
			if rule.Audit || status.Code(err) == codes.PermissionDenied {
				who := c.Name
				if who == "" {
					who = "unauthenticated"
				}
				a.Record(who, shortName(info.FullMethod), target(req), "denied: "+status.Convert(err).Message(), "")
			}
			return nil, err
		}
		resp, herr := handler(WithCaller(ctx, c), req)
		if rule.Audit {
			result := "ok"
			if herr != nil {
				result = "error: " + status.Convert(herr).Message()
			}
			a.Record(c.Name, shortName(info.FullMethod), target(req), result, "")
		}
		return resp, herr
	}
}

// Stream guards operator streaming methods.
func (a *Authorizer) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !operatorMethod(info.FullMethod) {
			return handler(srv, ss)
		}
		c, _, err := a.Check(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &wrapped{ServerStream: ss, ctx: WithCaller(ss.Context(), c)})
	}
}

type wrapped struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrapped) Context() context.Context { return w.ctx }
