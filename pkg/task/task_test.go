package task

import (
	"testing"
	"time"

	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
)

func TestID(t *testing.T) {
	id, err := ID("exec-1", "facts", "pub-1")
	require.NoError(t, err)
	require.Equal(t, "exec-1/facts/pub-1", id)
	_, err = ID("", "s", "h")
	require.ErrorContains(t, err, "execution is empty")
	_, err = ID("e/1", "s", "h")
	require.ErrorContains(t, err, "contains '/'")
}

func TestSpecRoundTrip(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	s := Spec{ID: "e/s/h", ExecutionID: "e", Step: "s", HostID: "h", CreatedAt: now, Timeout: time.Minute, Kind: HostFacts{}}
	b, err := MarshalSpec(s)
	require.NoError(t, err)
	got, err := UnmarshalSpec(b)
	require.NoError(t, err)
	require.Equal(t, s, got)
}

func TestSpecWithoutKindRefused(t *testing.T) {
	_, err := SpecFromProto(&pb.Task{Id: "x"})
	require.ErrorContains(t, err, "has no kind")
	_, err = SpecToProto(Spec{ID: "x"})
	require.ErrorContains(t, err, "no kind")
	_, err = UnmarshalSpec([]byte{0xff, 0xff})
	require.Error(t, err)
}

func TestResultRoundTrip(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	r := &Result{TaskID: "e/s/h", Status: StatusSucceeded, StartedAt: now, FinishedAt: now.Add(time.Second), Attempts: 1,
		Output: &Facts{Hostname: "h", OS: "Debian", DataFreeBytes: 42, CollectedAt: now, BackupsError: "index busy",
			Backups: []Backup{
				{ID: "bk-2", TaskID: "e/rollback/h", Kind: "restore", CreatedAt: now, Files: 3, Bytes: 300, Outcome: "applied", RestoredFrom: "bk-1"},
				{ID: "bk-1", TaskID: "e/deploy/h", Kind: "deploy", CreatedAt: now.Add(-time.Hour), Files: 2000, Bytes: 1 << 20, Outcome: "rolled-back", Artifact: "abc"},
			}}}
	b, err := MarshalResult(r)
	require.NoError(t, err)
	got, err := UnmarshalResult(b)
	require.NoError(t, err)
	require.Equal(t, r, got)
	require.NoError(t, got.Err())

	failed := &Result{TaskID: "x", Status: StatusFailed, Error: "boom"}
	require.EqualError(t, failed.Err(), "task x failed: boom")
}

func TestEveryKindRoundTrips(t *testing.T) {
	kinds := []Kind{
		HostFacts{},
		DispatcherDeploy{Artifact: Artifact{SHA256: "ab", Size: 3, Name: "d.zip"}},
		DispatcherPrepare{Artifact: Artifact{SHA256: "cd", Size: 4, Name: "e.zip"}},
		DispatcherRestore{BackupID: "b1"},
		CacheFlush{InvalidatePaths: []string{"/content/a"}, FlushPaths: []string{"/content/b"}},
		PackageInstall{Packages: []Artifact{{SHA256: "1"}, {SHA256: "2", Name: "p.zip"}}},
		LBDetach{},
		LBAttach{},
		Build{Repository: "https://git.example.com/site.git", Branch: "main", Profile: "maven"},
		CodeScan{BuildTaskID: "e/build/b1", Profile: "sonar"},
	}
	for _, k := range kinds {
		b, err := MarshalSpec(Spec{ID: "x", Kind: k})
		require.NoError(t, err, k.Name())
		got, err := UnmarshalSpec(b)
		require.NoError(t, err, k.Name())
		require.Equal(t, k, got.Kind)
	}
	_, err := SpecFromProto(&pb.Task{Id: "x", Kind: &pb.Task_DispatcherDeploy{DispatcherDeploy: &pb.DispatcherDeployTask{}}})
	require.ErrorContains(t, err, "without an artifact digest")
	_, err = SpecFromProto(&pb.Task{Id: "x", Kind: &pb.Task_DispatcherPrepare{DispatcherPrepare: &pb.DispatcherPrepareTask{}}})
	require.ErrorContains(t, err, "without an artifact digest")
}

func TestEveryOutputRoundTrips(t *testing.T) {
	outs := []any{
		&DispatcherOutput{BackupID: "b", Ignored: []string{"conf/httpd.conf"}, Files: 3, ConfigTest: "Syntax OK", Restored: true, Recovery: "r"},
		&CacheFlushOutput{Paths: []FlushedPath{{Path: "/content", Action: "flush", Removed: 2}}},
		&PackageInstallOutput{Packages: []PackageOutcome{{ID: "g:n:1", Status: "installed", Took: time.Second, SHA256: "x"}}},
		&LBOutput{State: "detached", Waited: time.Millisecond, Drained: true},
		&BuildOutput{Commit: "abc", Artifacts: []Artifact{{SHA256: "x", Name: "a.zip", Size: 1}}, LogTail: "BUILD SUCCESS", ExitCode: 0},
		&CodeScanOutput{Metrics: []byte(`{"coverage":60}`), ExitCode: 0},
	}
	for _, o := range outs {
		b, err := MarshalResult(&Result{TaskID: "x", Status: StatusFailed, Error: "e", Output: o})
		require.NoError(t, err)
		got, err := UnmarshalResult(b)
		require.NoError(t, err)
		require.Equal(t, o, got.Output)
	}
}

func TestTypedNilOutputIsNoOutput(t *testing.T) {
	var out *DispatcherOutput
	b, err := MarshalResult(&Result{TaskID: "x", Status: StatusFailed, Error: "boom", Output: out})
	require.NoError(t, err)
	r, err := UnmarshalResult(b)
	require.NoError(t, err)
	require.Nil(t, r.Output)
	require.Equal(t, "boom", r.Error)
}
