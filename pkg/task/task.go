// Package task holds the domain types of the work the control plane hands
// to agents — what a task asks for, what it answered — and their conversion
// to and from the wire messages in proto/deckhand/v1. Both sides use it, so
// the generated types stay at the stream edge.
package task

import (
	"errors"
	"fmt"
	"strings"
	"time"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ID derives a task id from the execution, the step inside it and the host.
// The same triple always yields the same id, which is what makes a re-sent
// or re-planned task recognisable on both sides.
func ID(execution, step, host string) (string, error) {
	for _, p := range []struct{ what, v string }{{"execution", execution}, {"step", step}, {"host", host}} {
		if p.v == "" {
			return "", fmt.Errorf("task id: %s is empty", p.what)
		}
		if strings.ContainsAny(p.v, "/\x00\n") {
			return "", fmt.Errorf("task id: %s %q contains '/', NUL or a newline", p.what, p.v)
		}
	}
	return execution + "/" + step + "/" + host, nil
}

// Kind is the typed payload of a task. Implementations are the structs
// below; there is no kind that carries a command line.
type Kind interface {
	// Name is the kind's stable name used in logs, metrics and the store.
	Name() string
}

// HostFacts asks an agent to describe its host.
type HostFacts struct{}

// Name implements Kind.
func (HostFacts) Name() string { return "host_facts" }

// Spec is one task as the control plane plans it.
type Spec struct {
	ID          string
	ExecutionID string
	Step        string
	HostID      string
	CreatedAt   time.Time
	Timeout     time.Duration // zero: the agent's default for the kind
	Kind        Kind
}

// Status is how a task ended.
type Status int

const (
	StatusUnknown Status = iota
	StatusSucceeded
	StatusFailed
	StatusCancelled
	StatusRefused
)

func (s Status) String() string {
	switch s {
	case StatusSucceeded:
		return "succeeded"
	case StatusFailed:
		return "failed"
	case StatusCancelled:
		return "cancelled"
	case StatusRefused:
		return "refused"
	}
	return "unknown"
}

// Facts is the output of a HostFacts task.
type Facts struct {
	Hostname      string    `json:"hostname"`
	OS            string    `json:"os"`
	Kernel        string    `json:"kernel"`
	Arch          string    `json:"arch"`
	ApacheVersion string    `json:"apache_version,omitempty"`
	ApacheError   string    `json:"apache_error,omitempty"`
	DataFreeBytes uint64    `json:"data_dir_free_bytes"`
	DataTotal     uint64    `json:"data_dir_total_bytes"`
	AgentVersion  string    `json:"agent_version"`
	CollectedAt   time.Time `json:"collected_at"`
	// Backups are a dispatcher agent's config backups, newest first;
	// BackupsError says why they could not be listed.
	Backups      []Backup `json:"backups,omitempty"`
	BackupsError string   `json:"backups_error,omitempty"`
}

// Backup is one dispatcher config backup a host keeps: what
// `deckctl dispatcher rollback --to` restores.
type Backup struct {
	ID        string    `json:"id"`
	TaskID    string    `json:"task_id"`
	Kind      string    `json:"kind"` // deploy or restore
	CreatedAt time.Time `json:"created_at"`
	Files     int       `json:"files"`
	Bytes     int64     `json:"bytes"`
	// Outcome: pending, applied, rolled-back or interrupted.
	Outcome      string `json:"outcome"`
	Artifact     string `json:"artifact,omitempty"`
	RestoredFrom string `json:"restored_from,omitempty"`
}

// Result is how a task ended on the agent.
type Result struct {
	TaskID     string
	Status     Status
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
	Attempts   int
	// Output is the kind-specific answer (*Facts, *DispatcherOutput,
	// *CacheFlushOutput, *PackageInstallOutput, *LBOutput); it may be set
	// on a failed task too (what was done before the failure), and is nil
	// when there is nothing to say.
	Output any
}

// Err returns nil for a succeeded task and an error carrying the agent's
// message otherwise.
func (r *Result) Err() error {
	if r.Status == StatusSucceeded {
		return nil
	}
	msg := r.Error
	if msg == "" {
		msg = "no message"
	}
	return fmt.Errorf("task %s %s: %s", r.TaskID, r.Status, msg)
}

// SpecToProto converts a Spec to its wire form.
func SpecToProto(s Spec) (*pb.Task, error) {
	t := &pb.Task{
		Id:          s.ID,
		ExecutionId: s.ExecutionID,
		Step:        s.Step,
		HostId:      s.HostID,
	}
	if !s.CreatedAt.IsZero() {
		t.CreatedAt = timestamppb.New(s.CreatedAt)
	}
	if s.Timeout > 0 {
		t.Timeout = durationpb.New(s.Timeout)
	}
	if err := kindToProto(s.Kind, t); err != nil {
		return nil, err
	}
	return t, nil
}

// SpecFromProto converts a wire task into a Spec. An unknown or missing
// kind is an error: the agent refuses what it does not understand.
func SpecFromProto(t *pb.Task) (Spec, error) {
	if t == nil {
		return Spec{}, errors.New("empty task")
	}
	s := Spec{
		ID:          t.GetId(),
		ExecutionID: t.GetExecutionId(),
		Step:        t.GetStep(),
		HostID:      t.GetHostId(),
	}
	if t.CreatedAt != nil {
		s.CreatedAt = t.CreatedAt.AsTime()
	}
	if t.Timeout != nil {
		s.Timeout = t.Timeout.AsDuration()
	}
	if s.ID == "" {
		return s, errors.New("task has no id")
	}
	k, err := kindFromProto(t)
	if err != nil {
		return s, err
	}
	s.Kind = k
	return s, nil
}

// MarshalSpec encodes a Spec in its wire form for storage: the task exactly
// as it is sent, so a re-send after a restart is byte-identical.
func MarshalSpec(s Spec) ([]byte, error) {
	t, err := SpecToProto(s)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(t)
}

// UnmarshalSpec decodes what MarshalSpec wrote.
func UnmarshalSpec(b []byte) (Spec, error) {
	var t pb.Task
	if err := proto.Unmarshal(b, &t); err != nil {
		return Spec{}, fmt.Errorf("decode task: %w", err)
	}
	return SpecFromProto(&t)
}

var statusToProto = map[Status]pb.TaskStatus{
	StatusUnknown:   pb.TaskStatus_TASK_STATUS_UNSPECIFIED,
	StatusSucceeded: pb.TaskStatus_TASK_STATUS_SUCCEEDED,
	StatusFailed:    pb.TaskStatus_TASK_STATUS_FAILED,
	StatusCancelled: pb.TaskStatus_TASK_STATUS_CANCELLED,
	StatusRefused:   pb.TaskStatus_TASK_STATUS_REFUSED,
}

// ResultToProto converts a Result to its wire form.
func ResultToProto(r *Result) (*pb.TaskResult, error) {
	out := &pb.TaskResult{
		TaskId:   r.TaskID,
		Status:   statusToProto[r.Status],
		Error:    r.Error,
		Attempts: uint32(r.Attempts),
	}
	if !r.StartedAt.IsZero() {
		out.StartedAt = timestamppb.New(r.StartedAt)
	}
	if !r.FinishedAt.IsZero() {
		out.FinishedAt = timestamppb.New(r.FinishedAt)
	}
	if err := outputToProto(r.Output, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ResultFromProto converts a wire result.
func ResultFromProto(p *pb.TaskResult) (*Result, error) {
	if p == nil || p.TaskId == "" {
		return nil, errors.New("task result without a task id")
	}
	r := &Result{TaskID: p.TaskId, Error: p.Error, Attempts: int(p.Attempts)}
	for s, ps := range statusToProto {
		if ps == p.Status {
			r.Status = s
		}
	}
	if p.StartedAt != nil {
		r.StartedAt = p.StartedAt.AsTime()
	}
	if p.FinishedAt != nil {
		r.FinishedAt = p.FinishedAt.AsTime()
	}
	out, err := outputFromProto(p)
	if err != nil {
		return nil, err
	}
	r.Output = out
	return r, nil
}

// MarshalResult encodes a Result in its wire form for storage.
func MarshalResult(r *Result) ([]byte, error) {
	p, err := ResultToProto(r)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(p)
}

// UnmarshalResult decodes what MarshalResult wrote.
func UnmarshalResult(b []byte) (*Result, error) {
	var p pb.TaskResult
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode task result: %w", err)
	}
	return ResultFromProto(&p)
}

func factsToProto(f *Facts) *pb.HostFacts {
	p := &pb.HostFacts{
		Hostname:          f.Hostname,
		Os:                f.OS,
		Kernel:            f.Kernel,
		Arch:              f.Arch,
		ApacheVersion:     f.ApacheVersion,
		ApacheError:       f.ApacheError,
		DataDirFreeBytes:  f.DataFreeBytes,
		DataDirTotalBytes: f.DataTotal,
		AgentVersion:      f.AgentVersion,
	}
	if !f.CollectedAt.IsZero() {
		p.CollectedAt = timestamppb.New(f.CollectedAt)
	}
	p.BackupsError = f.BackupsError
	for _, b := range f.Backups {
		bp := &pb.DispatcherBackup{Id: b.ID, TaskId: b.TaskID, Kind: b.Kind, Files: int64(b.Files), Bytes: b.Bytes,
			Outcome: b.Outcome, ArtifactSha256: b.Artifact, RestoredFrom: b.RestoredFrom}
		if !b.CreatedAt.IsZero() {
			bp.CreatedAt = timestamppb.New(b.CreatedAt)
		}
		p.Backups = append(p.Backups, bp)
	}
	return p
}

func factsFromProto(p *pb.HostFacts) *Facts {
	if p == nil {
		return nil
	}
	f := &Facts{
		Hostname:      p.Hostname,
		OS:            p.Os,
		Kernel:        p.Kernel,
		Arch:          p.Arch,
		ApacheVersion: p.ApacheVersion,
		ApacheError:   p.ApacheError,
		DataFreeBytes: p.DataDirFreeBytes,
		DataTotal:     p.DataDirTotalBytes,
		AgentVersion:  p.AgentVersion,
	}
	if p.CollectedAt != nil {
		f.CollectedAt = p.CollectedAt.AsTime()
	}
	f.BackupsError = p.BackupsError
	for _, b := range p.Backups {
		fb := Backup{ID: b.Id, TaskID: b.TaskId, Kind: b.Kind, Files: int(b.Files), Bytes: b.Bytes,
			Outcome: b.Outcome, Artifact: b.ArtifactSha256, RestoredFrom: b.RestoredFrom}
		if b.CreatedAt != nil {
			fb.CreatedAt = b.CreatedAt.AsTime()
		}
		f.Backups = append(f.Backups, fb)
	}
	return f
}

// FactsToProto is exported for the admin API edge.
func FactsToProto(f *Facts) *pb.HostFacts { return factsToProto(f) }

// FactsFromProto is exported for the admin API edge.
func FactsFromProto(p *pb.HostFacts) *Facts { return factsFromProto(p) }
