// Package dispatcher owns the Apache dispatcher config tree of one host
// and its cache: it runs the DispatcherDeploy, DispatcherRestore and
// CacheFlush tasks, keeps the config backups and their index, and repairs
// an interrupted deploy or restore at agent start-up (worker.Recoverer).
//
// # Deploy (the seed's "dispatcher artifact is deployed" steps)
//
//  1. Validate: the artifact is extracted (pkg/safezip, immutable entries
//     skipped) into a staging tree in the work dir, the host's immutable
//     files are copied in, and the result must hold the required paths and
//     every file named by an Apache Include or a dispatcher $include.
//     Failure names each missing file and the file:line referencing it;
//     the live tree has not been touched.
//  2. Back up the live managed dirs to <backup_dir>/<id>/ with a manifest.
//     The backup's files are hard links to the live ones (a file that
//     cannot be linked — chattr +i, another filesystem — is copied):
//     creating an inode per file is most of what backing up thousands of
//     small files costs, and the swap renames the live tree away and
//     commit deletes it, leaving the backup the only name of its files.
//     When the backed-up tree stays live (rollback, or a task that ended
//     before the swap), commit or abort unshares the backup: every file
//     still linked elsewhere is replaced, by an atomic rename of a synced
//     copy, so an in-place edit of the live config cannot reach a backup.
//     Such an edit during the deployment itself, before the swap, does
//     reach it; restore then refuses the backup as damaged (every restore
//     checks the backup against its manifest).
//  3. Delete all configs but the immutable files, and
//  4. extract the artifact into the httpd dir: both at once, by swapping
//     the staged managed dirs in (below). The artifact's copies of
//     immutable files are never written (output.Ignored).
//  5. Run configtest on the live tree.
//  6. Pass: reload. Fail: put the old dirs back, reload, and return the
//     configtest output verbatim as the error (*ConfigTestError, also in
//     output.ConfigTest, with output.Restored).
//
// # On-disk layout
//
//	<httpd_dir>/                     e.g. /etc/httpd
//	  conf/ conf.d/ conf.dispatcher.d/ conf.modules.d/   managed_dirs: replaced as wholes
//	  logs modules run ...           anything else: never touched
//	<work_dir>/                      default <httpd_dir>/.deckhand (same filesystem)
//	  tx-<hash of task id>/          one task's work dir
//	    .safezip-*/[wrapper/]<dirs>  staged tree of a deploy (extracted artifact + host immutables)
//	    stage/<dirs>                 staged tree of a restore (backup copy + host immutables)
//	    aside/<dirs>                 live dirs moved aside (only without RENAME_EXCHANGE)
//	<backup_dir>/                    default <data_dir>/backups
//	  bk-<hash of task id>/
//	    manifest.json                path, type, mode, size, sha256, symlink target of every entry
//	    tree/<dirs>                  the copy (hard links to the old tree, see Deploy)
//	    .unshare/                    copies being renamed over still-shared files
//	  .tmp-bk-*/                     a backup being written (renamed into place when complete)
//
// Backup and work dir names are derived from the task id, so a re-run of a
// task finds its own backup and work dir, and cleanup (in New at agent
// start-up, and before every deploy, restore and recovery) removes those
// of tasks that are no longer open in the journal.
//
// # Journal bucket
//
// The backups index lives in the agent journal's database, next to the
// journal's own buckets (schema version 1):
//
//	dispatcher_backups/
//	  version        -> "1"
//	  backup/<id>    -> Backup (JSON: id, task_id, kind deploy|restore, created_at,
//	                    files, bytes, dirs, outcome pending|applied|rolled-back|interrupted,
//	                    artifact sha256, restored_from)
//
// The newest backups_keep entries are kept; pruning deletes the record,
// then the directory.
//
// # Swap algorithm
//
// Before the first rename, the task journals a plan (mark "plan") with the
// (device, inode) identity of every managed dir's old (live) and new
// (staged) directory. Then, for each managed dir, it exchanges staged and
// live atomically with renameat2(RENAME_EXCHANGE): the live path never
// disappears and holds either the old or the new directory. Where the
// filesystem cannot exchange, it renames live -> aside/ and staged -> live.
// Every rename is followed by an fsync of both parent directories.
//
// Between the renames of two managed dirs, the tree is a mix of old and
// new; this is unavoidable with several top-level dirs and is why the plan
// is journaled first. Apache only reads its config at configtest and
// reload, which this package runs after the swap, so the mix is never
// loaded. Recovery (or a later run of the same task) looks at which
// identity is at each live path and renames until every dir is on one
// side, using the journal marks to pick the side:
//
//	no "plan"                               live tree untouched: drop the work dir
//	"rollback", or "plan" without           put the old tree back (the new one was never
//	  "configtest-ok"                       verified), reload, report why
//	"configtest-ok" and no "rollback"       keep the new tree, reload unless "reloaded"
//	                                        followed it, commit
//
// Commit sets chattr +i again on the new copies of immutable files that
// had it on the host (the copies in staging cannot carry it; the
// originals, moved aside with the old dirs, have it cleared before their
// removal), removes the work dir, unshares the backup when the old tree
// is live again (rollback), records the outcome and prunes backups.
//
// # Failpoints
//
// Every point where something becomes durable passes a failpoint
// (pkg/failpoint): after extraction, staging and validation, around the
// backup, before and after every journal mark, before and after every
// rename of a swap, rollback or recovery, around configtest and reload,
// and in commit and pruning. FailpointNames lists them for crash tests;
// names hit several times per task are told apart by the hit count.
//
// # Outputs
//
// DispatcherOutput.BackupID is, for a deploy, the backup it took (the
// config before it); for a restore, the backup it restored (the safety
// backup of the tree it replaced is in the index with kind "restore").
// Restored is, for a deploy, "the previous config was put back"; for a
// restore, "the named backup went live". Recovery says what recovery did.
//
// # Cache flush
//
// In http mode each path is a POST to the dispatcher's
// /dispatcher/invalidate.cache with CQ-Action (Activate for invalidation,
// Delete for flush), CQ-Handle, CQ-Path and Host: flush. In docroot mode
// the same effect is applied to the cache directory (see Flush).
package dispatcher
