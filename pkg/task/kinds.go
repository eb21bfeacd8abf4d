package task

import (
	"fmt"
	"reflect"
	"time"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Artifact names a blob in the control plane's content-addressed store.
type Artifact struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Name   string `json:"name,omitempty"`
}

// DispatcherDeploy replaces the dispatcher's config tree with an artifact.
type DispatcherDeploy struct{ Artifact Artifact }

// DispatcherPrepare fetches, extracts and validates a dispatcher config
// artifact into the agent's staging area, leaving the live tree alone, so
// a DispatcherDeploy of the same artifact finds it ready.
type DispatcherPrepare struct{ Artifact Artifact }

// DispatcherRestore puts a config backup back; empty BackupID means the
// backup taken before the most recent deployment.
type DispatcherRestore struct{ BackupID string }

// CacheFlush invalidates or flushes dispatcher cache paths.
type CacheFlush struct {
	InvalidatePaths []string
	FlushPaths      []string
}

// PackageInstall installs AEM packages in the given order.
type PackageInstall struct{ Packages []Artifact }

// LBDetach takes the host out of its load balancer.
type LBDetach struct{}

// LBAttach puts the host back and waits until it is in service.
type LBAttach struct{}

// Build clones Repository at Branch on a builder and runs the builder's
// build profile Profile, then uploads target/*.zip.
type Build struct {
	Repository string
	Branch     string
	Profile    string
}

// CodeScan runs the builder's scan profile in the workspace of BuildTaskID.
type CodeScan struct {
	BuildTaskID string
	Profile     string
}

// BuildOutput answers Build.
type BuildOutput struct {
	Commit    string     `json:"commit"`
	Artifacts []Artifact `json:"artifacts"`
	LogTail   string     `json:"log_tail,omitempty"`
	ExitCode  int        `json:"exit_code"`
}

// CodeScanOutput answers CodeScan.
type CodeScanOutput struct {
	Metrics  []byte `json:"metrics"`
	LogTail  string `json:"log_tail,omitempty"`
	ExitCode int    `json:"exit_code"`
}

// Name implements Kind.
func (Build) Name() string    { return "build" }
func (CodeScan) Name() string { return "code_scan" }

// Name implements Kind.
func (DispatcherDeploy) Name() string  { return "dispatcher_deploy" }
func (DispatcherPrepare) Name() string { return "dispatcher_prepare" }
func (DispatcherRestore) Name() string { return "dispatcher_restore" }
func (CacheFlush) Name() string        { return "cache_flush" }
func (PackageInstall) Name() string    { return "package_install" }
func (LBDetach) Name() string          { return "lb_detach" }
func (LBAttach) Name() string          { return "lb_attach" }

// DispatcherOutput answers DispatcherDeploy, DispatcherRestore and
// DispatcherPrepare (which sets only Files and Ignored).
type DispatcherOutput struct {
	BackupID   string   `json:"backup_id,omitempty"`
	Ignored    []string `json:"ignored,omitempty"`
	Files      int      `json:"files,omitempty"`
	ConfigTest string   `json:"configtest,omitempty"`
	Restored   bool     `json:"restored,omitempty"`
	Recovery   string   `json:"recovery,omitempty"`
}

// FlushedPath is one cache path a CacheFlush handled.
type FlushedPath struct {
	Path    string `json:"path"`
	Action  string `json:"action"` // invalidate | flush
	Removed int    `json:"removed"`
	Detail  string `json:"detail,omitempty"`
}

// CacheFlushOutput answers CacheFlush.
type CacheFlushOutput struct {
	Paths []FlushedPath `json:"paths"`
}

// PackageOutcome is what happened to one package.
type PackageOutcome struct {
	ID      string        `json:"id"`
	Status  string        `json:"status"` // installed | skipped | failed
	Message string        `json:"message,omitempty"`
	Took    time.Duration `json:"took"`
	SHA256  string        `json:"sha256,omitempty"`
}

// PackageInstallOutput answers PackageInstall.
type PackageInstallOutput struct {
	Packages []PackageOutcome `json:"packages"`
}

// LBOutput answers LBDetach and LBAttach.
type LBOutput struct {
	State             string        `json:"state"`
	Detail            string        `json:"detail,omitempty"`
	Waited            time.Duration `json:"waited"`
	Drained           bool          `json:"drained"`
	RemainingSessions int           `json:"remaining_sessions,omitempty"`
}

func artifactToProto(a Artifact) *pb.ArtifactRef {
	return &pb.ArtifactRef{Sha256: a.SHA256, Size: a.Size, Name: a.Name}
}

func artifactFromProto(a *pb.ArtifactRef) Artifact {
	return Artifact{SHA256: a.GetSha256(), Size: a.GetSize(), Name: a.GetName()}
}

// kindToProto sets t.Kind from k.
func kindToProto(k Kind, t *pb.Task) error {
	switch k := k.(type) {
	case HostFacts, *HostFacts:
		t.Kind = &pb.Task_HostFacts{HostFacts: &pb.HostFactsTask{}}
	case DispatcherDeploy:
		t.Kind = &pb.Task_DispatcherDeploy{DispatcherDeploy: &pb.DispatcherDeployTask{Artifact: artifactToProto(k.Artifact)}}
	case DispatcherPrepare:
		t.Kind = &pb.Task_DispatcherPrepare{DispatcherPrepare: &pb.DispatcherPrepareTask{Artifact: artifactToProto(k.Artifact)}}
	case DispatcherRestore:
		t.Kind = &pb.Task_DispatcherRestore{DispatcherRestore: &pb.DispatcherRestoreTask{BackupId: k.BackupID}}
	case CacheFlush:
		t.Kind = &pb.Task_CacheFlush{CacheFlush: &pb.CacheFlushTask{InvalidatePaths: k.InvalidatePaths, FlushPaths: k.FlushPaths}}
	case PackageInstall:
		p := &pb.PackageInstallTask{}
		for _, a := range k.Packages {
			p.Packages = append(p.Packages, artifactToProto(a))
		}
		t.Kind = &pb.Task_PackageInstall{PackageInstall: p}
	case LBDetach:
		t.Kind = &pb.Task_LbDetach{LbDetach: &pb.LoadBalancerDetachTask{}}
	case LBAttach:
		t.Kind = &pb.Task_LbAttach{LbAttach: &pb.LoadBalancerAttachTask{}}
	case Build:
		t.Kind = &pb.Task_Build{Build: &pb.BuildTask{Repository: k.Repository, Branch: k.Branch, Profile: k.Profile}}
	case CodeScan:
		t.Kind = &pb.Task_CodeScan{CodeScan: &pb.CodeScanTask{BuildTaskId: k.BuildTaskID, Profile: k.Profile}}
	case nil:
		return fmt.Errorf("task has no kind")
	default:
		return fmt.Errorf("task kind %T has no wire form", k)
	}
	return nil
}

// kindFromProto reads t.Kind; nil and unknown kinds are errors.
func kindFromProto(t *pb.Task) (Kind, error) {
	switch k := t.Kind.(type) {
	case *pb.Task_HostFacts:
		return HostFacts{}, nil
	case *pb.Task_DispatcherDeploy:
		if k.DispatcherDeploy.GetArtifact().GetSha256() == "" {
			return nil, fmt.Errorf("task %s: dispatcher deploy without an artifact digest", t.Id)
		}
		return DispatcherDeploy{Artifact: artifactFromProto(k.DispatcherDeploy.Artifact)}, nil
	case *pb.Task_DispatcherPrepare:
		if k.DispatcherPrepare.GetArtifact().GetSha256() == "" {
			return nil, fmt.Errorf("task %s: dispatcher prepare without an artifact digest", t.Id)
		}
		return DispatcherPrepare{Artifact: artifactFromProto(k.DispatcherPrepare.Artifact)}, nil
	case *pb.Task_DispatcherRestore:
		return DispatcherRestore{BackupID: k.DispatcherRestore.GetBackupId()}, nil
	case *pb.Task_CacheFlush:
		return CacheFlush{InvalidatePaths: k.CacheFlush.GetInvalidatePaths(), FlushPaths: k.CacheFlush.GetFlushPaths()}, nil
	case *pb.Task_PackageInstall:
		var p PackageInstall
		for _, a := range k.PackageInstall.GetPackages() {
			if a.GetSha256() == "" {
				return nil, fmt.Errorf("task %s: package without an artifact digest", t.Id)
			}
			p.Packages = append(p.Packages, artifactFromProto(a))
		}
		return p, nil
	case *pb.Task_LbDetach:
		return LBDetach{}, nil
	case *pb.Task_LbAttach:
		return LBAttach{}, nil
	case *pb.Task_Build:
		b := k.Build
		if b.GetRepository() == "" || b.GetBranch() == "" || b.GetProfile() == "" {
			return nil, fmt.Errorf("task %s: build needs a repository, a branch and a profile", t.Id)
		}
		return Build{Repository: b.GetRepository(), Branch: b.GetBranch(), Profile: b.GetProfile()}, nil
	case *pb.Task_CodeScan:
		return CodeScan{BuildTaskID: k.CodeScan.GetBuildTaskId(), Profile: k.CodeScan.GetProfile()}, nil
	case nil:
		return nil, fmt.Errorf("task %s has no kind (sent by a newer server?)", t.Id)
	default:
		return nil, fmt.Errorf("task %s has unsupported kind %T", t.Id, t.Kind)
	}
}

func outputToProto(o any, r *pb.TaskResult) error {
	if v := reflect.ValueOf(o); o != nil && v.Kind() == reflect.Pointer && v.IsNil() {
		return nil // a handler's typed nil: no output
	}
	switch o := o.(type) {
	case nil:
	case *Facts:
		r.Output = &pb.TaskResult_HostFacts{HostFacts: factsToProto(o)}
	case *DispatcherOutput:
		r.Output = &pb.TaskResult_Dispatcher{Dispatcher: &pb.DispatcherOutput{
			BackupId: o.BackupID, Ignored: o.Ignored, Files: int32(o.Files), Configtest: o.ConfigTest, Restored: o.Restored, Recovery: o.Recovery}}
	case *CacheFlushOutput:
		p := &pb.CacheFlushOutput{}
		for _, f := range o.Paths {
			p.Paths = append(p.Paths, &pb.FlushedPath{Path: f.Path, Action: f.Action, Removed: int32(f.Removed), Detail: f.Detail})
		}
		r.Output = &pb.TaskResult_CacheFlush{CacheFlush: p}
	case *PackageInstallOutput:
		p := &pb.PackageInstallOutput{}
		for _, x := range o.Packages {
			p.Packages = append(p.Packages, &pb.PackageOutcome{Id: x.ID, Status: x.Status, Message: x.Message, Took: durationpb.New(x.Took), Sha256: x.SHA256})
		}
		r.Output = &pb.TaskResult_PackageInstall{PackageInstall: p}
	case *BuildOutput:
		p := &pb.BuildOutput{Commit: o.Commit, LogTail: o.LogTail, ExitCode: int32(o.ExitCode)}
		for _, a := range o.Artifacts {
			p.Artifacts = append(p.Artifacts, artifactToProto(a))
		}
		r.Output = &pb.TaskResult_Build{Build: p}
	case *CodeScanOutput:
		r.Output = &pb.TaskResult_CodeScan{CodeScan: &pb.CodeScanOutput{Metrics: o.Metrics, LogTail: o.LogTail, ExitCode: int32(o.ExitCode)}}
	case *LBOutput:
		r.Output = &pb.TaskResult_Lb{Lb: &pb.LoadBalancerOutput{State: o.State, Detail: o.Detail, Waited: durationpb.New(o.Waited), Drained: o.Drained, RemainingSessions: int32(o.RemainingSessions)}}
	default:
		return fmt.Errorf("task result output %T has no wire form", o)
	}
	return nil
}

func outputFromProto(p *pb.TaskResult) (any, error) {
	switch o := p.Output.(type) {
	case nil:
		return nil, nil
	case *pb.TaskResult_HostFacts:
		return factsFromProto(o.HostFacts), nil
	case *pb.TaskResult_Dispatcher:
		d := o.Dispatcher
		return &DispatcherOutput{BackupID: d.BackupId, Ignored: d.Ignored, Files: int(d.Files), ConfigTest: d.Configtest, Restored: d.Restored, Recovery: d.Recovery}, nil
	case *pb.TaskResult_CacheFlush:
		out := &CacheFlushOutput{}
		for _, f := range o.CacheFlush.Paths {
			out.Paths = append(out.Paths, FlushedPath{Path: f.Path, Action: f.Action, Removed: int(f.Removed), Detail: f.Detail})
		}
		return out, nil
	case *pb.TaskResult_PackageInstall:
		out := &PackageInstallOutput{}
		for _, x := range o.PackageInstall.Packages {
			out.Packages = append(out.Packages, PackageOutcome{ID: x.Id, Status: x.Status, Message: x.Message, Took: x.Took.AsDuration(), SHA256: x.Sha256})
		}
		return out, nil
	case *pb.TaskResult_Build:
		b := o.Build
		out := &BuildOutput{Commit: b.Commit, LogTail: b.LogTail, ExitCode: int(b.ExitCode)}
		for _, a := range b.Artifacts {
			out.Artifacts = append(out.Artifacts, artifactFromProto(a))
		}
		return out, nil
	case *pb.TaskResult_CodeScan:
		c := o.CodeScan
		return &CodeScanOutput{Metrics: c.Metrics, LogTail: c.LogTail, ExitCode: int(c.ExitCode)}, nil
	case *pb.TaskResult_Lb:
		l := o.Lb
		return &LBOutput{State: l.State, Detail: l.Detail, Waited: l.Waited.AsDuration(), Drained: l.Drained, RemainingSessions: int(l.RemainingSessions)}, nil
	default:
		return nil, fmt.Errorf("task result %s has unsupported output %T", p.TaskId, p.Output)
	}
}

// Artifacts lists the artifacts a task kind uses (for download
// authorisation and pre-fetching).
func Artifacts(k Kind) []Artifact {
	switch k := k.(type) {
	case DispatcherDeploy:
		return []Artifact{k.Artifact}
	case DispatcherPrepare:
		return []Artifact{k.Artifact}
	case PackageInstall:
		return k.Packages
	}
	return nil
}
