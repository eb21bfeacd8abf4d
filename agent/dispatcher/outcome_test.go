package dispatcher

import (
	"testing"

	"github.com/deckhand-dev/deckhand/pkg/task"
	"github.com/stretchr/testify/require"
)

// TestInterruptedBeforePlanRecordsOutcome stops a deploy at each point
// between its backup and the plan mark and checks that recovery leaves
// no backup "pending": an indexed backup of the task says "interrupted",
// also when the task died before journaling the backup's id.
func TestInterruptedBeforePlanRecordsOutcome(t *testing.T) {
	for _, fp := range []string{FPBackupCopied, FPBackupRenamed, FPAfterBackup, "dispatcher/before-mark-backup", "dispatcher/after-mark-backup", "dispatcher/before-mark-plan"} {
		t.Run(fp, func(t *testing.T) {
			e := newEnv(t, nil)
			require.NoError(t, e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(withFiles(nil))}, nil).Err())
			before := e.manifest()
			r := e.run(e.dispatcher(), task.DispatcherDeploy{Artifact: e.artifact(withFiles(map[string]string{"conf.d/rewrites/default_rewrite.rules": v2Rules}))}, newCrashHook(fp, 1))
			require.Nil(t, r, "the task was stopped at %s", fp)
			res := e.restart(nil)
			require.Len(t, res, 1)
			require.Error(t, res[0].Err())
			require.Contains(t, dispOut(t, res[0]).Recovery, "nothing to undo")
			require.Empty(t, before.Diff(e.manifest()))
			all, err := listBackups(e.j.Backend())
			require.NoError(t, err)
			for _, b := range all {
				require.NotEqual(t, OutcomePending, b.Outcome, "backup %s of task %s", b.ID, b.TaskID)
			}
			e.requireNoLeftovers()
		})
	}
}
