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
		Output: &Facts{Hostname: "h", OS: "Debian", DataFreeBytes: 42, CollectedAt: now}}
	b, err := MarshalResult(r)
	require.NoError(t, err)
	got, err := UnmarshalResult(b)
	require.NoError(t, err)
	require.Equal(t, r, got)
	require.NoError(t, got.Err())

	failed := &Result{TaskID: "x", Status: StatusFailed, Error: "boom"}
	require.EqualError(t, failed.Err(), "task x failed: boom")
}
