package dispatcher

import "github.com/deckhand-dev/deckhand/pkg/failpoint"

// Failpoint names. They are stable: crash tests kill the real binary at
// them (DECKHAND_FAILPOINTS=name=kill@N) and enumerate them through
// FailpointNames. Names hit more than once per task (one per rename, one
// per backup pruned) are told apart by the hit count N.
const (
	FPAfterFetch    = "dispatcher/after-fetch"    // artifact is local and verified
	FPAfterExtract  = "dispatcher/after-extract"  // artifact extracted into the work dir
	FPAfterStage    = "dispatcher/after-stage"    // staged tree complete (host immutable files added) and synced
	FPAfterValidate = "dispatcher/after-validate" // full file set checked, before the backup
	FPBackupCopied  = "dispatcher/backup/after-copy"
	FPBackupRenamed = "dispatcher/backup/after-rename"
	FPAfterBackup   = "dispatcher/after-backup" // backup indexed, before the journal mark

	FPSwapBeforeRename = "dispatcher/swap/before-rename" // once per rename of the forward swap
	FPSwapAfterRename  = "dispatcher/swap/after-rename"

	FPBeforeConfigTest = "dispatcher/before-configtest"
	FPAfterConfigTest  = "dispatcher/after-configtest" // before its verdict is journaled

	FPRollbackBeforeRename = "dispatcher/rollback/before-rename"
	FPRollbackAfterRename  = "dispatcher/rollback/after-rename"

	FPBeforeReload = "dispatcher/before-reload"
	FPAfterReload  = "dispatcher/after-reload"

	FPCommitAfterAttrs   = "dispatcher/commit/after-immutable-attrs"
	FPCommitAfterCleanup = "dispatcher/commit/after-cleanup"
	FPCommitAfterUnshare = "dispatcher/commit/after-unshare"     // rollbacks: the backup has its own files
	FPPruneAfterIndex    = "dispatcher/prune/after-index-delete" // once per pruned backup

	FPRecoverBeforeRename = "dispatcher/recover/before-rename" // renames done by Recover
	FPRecoverAfterRename  = "dispatcher/recover/after-rename"

	FPRestoreAfterStage = "dispatcher/restore/after-stage" // backup copied into the work dir
)

// Journal marks, in the order a task passes them. Recovery decides from
// them (see the package doc); each has a before- and after- failpoint,
// "dispatcher/before-mark-<name>" and "dispatcher/after-mark-<name>".
const (
	markBackup       = "backup"        // data: backup id
	markPlan         = "plan"          // data: plan JSON; the live tree may change from here on
	markSwapped      = "swapped"       // every managed dir holds the new tree
	markConfigTestOK = "configtest-ok" // data: configtest output; the new tree stays
	markRollback     = "rollback"      // data: rollback JSON; the old tree comes back
	markRolledBack   = "rolled-back"   // every managed dir holds the old tree again
	markReloaded     = "reloaded"      // Apache reloaded after the last swap
	markCommitted    = "committed"     // work dir removed, backup index updated
)

var allMarks = []string{markBackup, markPlan, markSwapped, markConfigTestOK, markRollback, markRolledBack, markReloaded, markCommitted}

// FailpointNames lists every failpoint this package passes, for crash
// tests to enumerate.
var FailpointNames = func() []string {
	names := []string{
		FPAfterFetch, FPAfterExtract, FPAfterStage, FPAfterValidate,
		FPBackupCopied, FPBackupRenamed, FPAfterBackup,
		FPSwapBeforeRename, FPSwapAfterRename,
		FPBeforeConfigTest, FPAfterConfigTest,
		FPRollbackBeforeRename, FPRollbackAfterRename,
		FPBeforeReload, FPAfterReload,
		FPCommitAfterAttrs, FPCommitAfterCleanup, FPCommitAfterUnshare, FPPruneAfterIndex,
		FPRecoverBeforeRename, FPRecoverAfterRename,
		FPRestoreAfterStage,
	}
	for _, m := range allMarks {
		names = append(names, "dispatcher/before-mark-"+m, "dispatcher/after-mark-"+m)
	}
	return names
}()

// hit passes a failpoint: the real one (the process may die here) and the
// test hook (an in-process test may stop the task here as if killed).
func (d *Dispatcher) hit(name string) {
	failpoint.Hit(name)
	if d.hook != nil {
		d.hook(name)
	}
}
