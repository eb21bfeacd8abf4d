package api

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"strings"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/auth"
	"github.com/deckhand-dev/deckhand/controlplane/store"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func callerName(ctx context.Context) string {
	if c, ok := auth.CallerFrom(ctx); ok {
		return c.Name
	}
	return "unknown"
}

// CreateJoinToken implements AdminService.
func (a *Admin) CreateJoinToken(ctx context.Context, req *pb.CreateJoinTokenRequest) (*pb.CreateJoinTokenResponse, error) {
	if a.PKI == nil {
		return nil, status.Error(codes.FailedPrecondition, "this server runs with --dev-insecure: there is no CA and agents need no token")
	}
	host := req.GetHostId()
	if _, ok := a.Hosts.Lookup(host); !ok {
		return nil, status.Errorf(codes.NotFound, "host %q is not declared in the server config; declare it first", host)
	}
	ttl := req.GetTtl().AsDuration()
	if ttl < 0 || ttl > 30*24*time.Hour {
		return nil, status.Errorf(codes.InvalidArgument, "ttl %s must be between 1s and 720h", ttl)
	}
	tok, exp, err := a.PKI.NewJoinToken(host, callerName(ctx), ttl)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "create token: %v", err)
	}
	return &pb.CreateJoinTokenResponse{Token: tok, ExpiresAt: timestamppb.New(exp), CaFingerprint: a.PKI.Fingerprint(), Server: a.ServerAddress}, nil
}

// RevokeAgent implements AdminService.
func (a *Admin) RevokeAgent(ctx context.Context, req *pb.RevokeAgentRequest) (*pb.RevokeAgentResponse, error) {
	host := req.GetHostId()
	if _, ok := a.Hosts.Lookup(host); !ok {
		return nil, status.Errorf(codes.NotFound, "host %q is not declared", host)
	}
	if a.PKI == nil {
		return nil, status.Error(codes.FailedPrecondition, "this server runs with --dev-insecure: there are no certificates to revoke")
	}
	was, err := a.PKI.Revoke(host, callerName(ctx), req.GetReason())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "revoke: %v", err)
	}
	return &pb.RevokeAgentResponse{WasConnected: was}, nil
}

// ListAudit implements AdminService.
func (a *Admin) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	es, err := a.Store.Audit(since, int(req.GetLimit()))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read audit log: %v", err)
	}
	out := &pb.ListAuditResponse{}
	for _, e := range es {
		out.Entries = append(out.Entries, &pb.AuditEntry{Seq: e.Seq, At: timestamppb.New(e.At), Who: e.Who, Action: e.Action, Target: e.Target, Result: e.Result, Detail: e.Detail})
	}
	return out, nil
}

// NewAdminToken returns a fresh bearer token.
func NewAdminToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "dha_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b)), nil
}

// CreateAdmin implements AdminService.
func (a *Admin) CreateAdmin(ctx context.Context, req *pb.CreateAdminRequest) (*pb.CreateAdminResponse, error) {
	name := req.GetName()
	if !validName(name) {
		return nil, status.Errorf(codes.InvalidArgument, "admin name %q must be 1-63 letters, digits, '.', '_' or '-'", name)
	}
	if len(req.GetRoles()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "give at least one role (viewer, deployer, approver, cse, admin)")
	}
	for _, r := range req.GetRoles() {
		if _, err := auth.ParseRole(r); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	tok, err := NewAdminToken()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	prev, err := a.Store.Admin(name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	created := prev.CreatedAt
	if created.IsZero() {
		created = time.Now().UTC()
	}
	if err := a.Store.PutAdmin(store.Admin{Name: name, Roles: req.GetRoles(), CreatedAt: created, CreatedBy: callerName(ctx)}, tok); err != nil {
		return nil, status.Errorf(codes.Internal, "store admin: %v", err)
	}
	return &pb.CreateAdminResponse{Token: tok}, nil
}

// IssueAdminCert implements AdminService.
func (a *Admin) IssueAdminCert(ctx context.Context, req *pb.IssueAdminCertRequest) (*pb.IssueAdminCertResponse, error) {
	if a.PKI == nil {
		return nil, status.Error(codes.FailedPrecondition, "this server runs with --dev-insecure: there is no CA")
	}
	if _, err := a.Store.Admin(req.GetName()); err != nil {
		return nil, status.Errorf(codes.NotFound, "admin %q does not exist; create it first (deckctl admins create)", req.GetName())
	}
	cert, err := a.PKI.IssueAdmin(req.GetName(), req.GetCsr(), req.GetLifetime().AsDuration())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	return &pb.IssueAdminCertResponse{Certificate: cert.Raw, Ca: a.PKI.CA().Cert.Raw}, nil
}

// WhoAmI implements AdminService.
func (a *Admin) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	c, ok := auth.CallerFrom(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no caller")
	}
	out := &pb.WhoAmIResponse{Principal: c.Name, Method: c.Via}
	for _, r := range c.Roles {
		out.Roles = append(out.Roles, string(r))
	}
	return out, nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '.' || r == '_' || r == '-'))
		if !ok {
			return false
		}
	}
	return true
}
