package dispatcher_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	disp "github.com/deckhand-dev/deckhand/agent/dispatcher"
)

// TestBackupsListCLI runs `deckhand-agent backups list` against the data
// dir of a real agent that deployed three configs (one failing
// configtest): the table and the JSON name every backup with its kind,
// outcome, file count and task, newest first; while the agent runs the
// command says so within seconds instead of hanging on the journal's
// lock; an agent config without a dispatcher section is a clear error.
func TestBackupsListCLI(t *testing.T) {
	h := newHost(t, hostOptions{})
	v1, v2, bad := h.upload(artifactV1()), h.upload(artifactV2()), h.upload(artifactBad())

	// Before the agent ever ran: nothing, and no journal created.
	out, err := exec.Command(h.bin, "backups", "list", "--config", h.cfgPath).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "no backups in "+filepath.Join(h.dataDir, "backups"))
	require.NoFileExists(t, filepath.Join(h.dataDir, "deckhand-agent.db"))

	require.NoError(t, h.deploy("bk-1", v1).Err())
	require.NoError(t, h.deploy("bk-2", v2).Err())
	require.Error(t, h.deploy("bk-3", bad).Err())

	recs := h.backupsList()
	require.Len(t, recs, 3)
	js, err := exec.Command(h.bin, "backups", "list", "--config", h.cfgPath, "-o", "json").Output()
	require.NoError(t, err)
	t.Logf("deckhand-agent backups list -o json:\n%s", js)
	wantTasks := []string{"bk-3/deploy/" + hostID, "bk-2/deploy/" + hostID, "bk-1/deploy/" + hostID}
	wantOutcomes := []string{disp.OutcomeRolledBack, disp.OutcomeApplied, disp.OutcomeApplied}
	for i, r := range recs {
		require.Equal(t, wantTasks[i], r.TaskID, "newest first")
		require.Equal(t, disp.BackupID(r.TaskID), r.ID)
		require.Equal(t, disp.BackupKindDeploy, r.Kind)
		require.Equal(t, wantOutcomes[i], r.Outcome)
		require.Positive(t, r.Files)
		require.Equal(t, filepath.Join(h.dataDir, "backups", r.ID), r.Path)
		require.FileExists(t, filepath.Join(r.Path, "manifest.json"))
	}
	require.Equal(t, bad.SHA256, recs[0].Artifact)

	table, err := exec.Command(h.bin, "backups", "list", "--config", h.cfgPath).CombinedOutput()
	require.NoError(t, err, "%s", table)
	t.Logf("deckhand-agent backups list:\n%s", table)
	lines := strings.Split(strings.TrimRight(string(table), "\n"), "\n")
	require.Len(t, lines, 4)
	require.Regexp(t, `^ID\s+CREATED\s+KIND\s+OUTCOME\s+FILES\s+TASK$`, lines[0])
	for i, r := range recs {
		require.Regexp(t, "^"+regexp.QuoteMeta(r.ID)+`\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+deploy\s+`+regexp.QuoteMeta(r.Outcome)+`\s+\d+\s+`+regexp.QuoteMeta(r.TaskID)+"$", lines[i+1])
	}

	// The running agent holds the journal: a prompt, clear refusal.
	p := h.start()
	require.Eventually(t, func() bool { return h.cp.Server.Fleet().Online(hostID) }, 30*time.Second, 10*time.Millisecond)
	start := time.Now()
	out, err = exec.Command(h.bin, "backups", "list", "--config", h.cfgPath).CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 1, err.(*exec.ExitError).ExitCode())
	require.Contains(t, string(out), "the agent is running")
	require.Contains(t, string(out), "stop the agent")
	require.Less(t, time.Since(start), 10*time.Second)
	t.Logf("while the agent runs: %s", out)
	p.stop()

	// No dispatcher section.
	raw, err := os.ReadFile(h.cfgPath)
	require.NoError(t, err)
	plain := filepath.Join(h.dir, "no-dispatcher.yaml")
	require.NoError(t, os.WriteFile(plain, []byte(strings.Split(string(raw), "dispatcher:\n")[0]), 0o600))
	out, err = exec.Command(h.bin, "backups", "list", "--config", plain, "-o", "json").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "has no dispatcher section")
	t.Logf("without a dispatcher section: %s", out)

	out, err = exec.Command(h.bin, "backups", "list", "--config", h.cfgPath, "-o", "yaml").CombinedOutput()
	require.Error(t, err)
	require.Equal(t, 2, err.(*exec.ExitError).ExitCode(), "%s", out)
}
