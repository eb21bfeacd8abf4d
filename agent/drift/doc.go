// Package drift watches the dispatcher's httpd config tree and reports
// drift: any change to it that a running Deckhand task did not make
// (issue 8). The agent turns the events into DriftReport messages.
//
// # How changes are found
//
// New builds a baseline manifest of the tree: for every regular file and
// symlink, its sha256 (of the content, streamed; of the target string for
// a symlink, which is never followed), its permission bits and its type.
// Directories are not entries; the files below them are.
//
// Run watches every directory with fsnotify (inotify on Linux), adding
// watches for directories created later and reporting the files they
// already hold. Each event only marks a path pending; once the path has
// been quiet for Config.Debounce (or after 10×Debounce of continuous
// writes) it is compared with the baseline, and only a difference is
// reported: a burst of writes is one event, an edit undone within the
// window is none, and an editor's write-to-temp-then-rename shows as one
// "modified" of the real file. A file that disappears and one that
// appears with the same content in the same window (fsnotify's Rename on
// the old name and Create on the new) are one "renamed" event; moving a
// directory renames each file in it. Reported changes become the
// baseline, so Before/After chain from event to event.
//
// A rename over an existing file is reported as "removed" (old name) and
// "modified" (new name): the replaced content is what the baseline knew
// of the new name, and Event has one Before.
//
// # Scan mode
//
// When inotify cannot be used — the watch limit is reached (ENOSPC from
// Add: fs.inotify.max_user_watches), no more inotify instances or file
// descriptors (EMFILE/ENFILE), no inotify at all, or Dir itself was
// removed or moved — the watcher logs one warning and falls back, for the
// rest of its life, to comparing the tree with the baseline every
// Config.ScanInterval. Mode reports which is in use. Scans produce the
// same Event shapes, but cannot tell a rename from a removal plus a
// creation, so renames are reported as "removed" + "created". A file a
// scan finds changed within Debounce of its modification time may be
// caught in the middle of a write: it is held back and reported once it
// has been quiet for Debounce, as in fsnotify mode (the scan at Suppress
// reports everything as it is). Lost inotify events (queue overflow)
// trigger one such scan too.
//
// # Deckhand's own writes
//
// The agent calls Suppress before a deployment or restore touches the
// tree and releases it afterwards. While suppressed, events only keep the
// watches up to date. Changes still pending (in their debounce) when
// Suppress is called are reported by Suppress, with the state they have
// then, also when the deployment then overwrites the path: the hand edit
// was live until then. Reported before the deployment starts, they reach
// the control plane ahead of its result, which marks them replaced. Late
// events of such an edit arriving during the suppression are ignored like
// the deployment's own. A manual change made during a
// deployment, up to its release, cannot be told apart from the
// deployment's and is absorbed.
//
// The last release makes the tree as the deployment left it the new
// baseline. It runs before the task's result is journaled (inside the
// host's load-balancer detach window), so it reads no contents: it drops
// and renews every watch (a swapped directory is a new inode) and takes a
// snapshot, the lstat of every file (device, inode, mode, size, mtime,
// ctime). The contents are hashed afterwards, by a goroutine of Run, and a
// file's hash is taken into the baseline only if the open file's stat,
// before and after reading it, equals the snapshot's: the kernel sets a
// file's ctime on every change and nothing can set it back, so that
// content is the one the deployment left. A file changed in between gets
// an "unknown" baseline entry, and its change is reported (Before is
// empty) by its fsnotify event or the next scan: a change made right after
// a deployment is never taken into the baseline unseen. Files the
// deployment changed within the timestamp granularity before the snapshot
// (racy: a change right after could keep the same ctime) are hashed by the
// snapshot itself. Until the hashes are in, nothing is compared with the
// baseline: pending paths wait and scans are deferred. The next Suppress
// finishes an outstanding rebuild first.
//
// # Patterns
//
// Immutable and Ignore are slash globs relative to Dir: path.Match per
// segment, and "**" matching any number of segments. Immutable patterns
// match the whole path and make an event high severity. Ignore patterns
// without "/" match any name in a path, others the path from Dir (a
// leading "/" anchors a bare name); an ignored directory is neither
// watched nor scanned. See DefaultIgnore.
//
// # Errors
//
// Nothing in the tree stops the watcher: unreadable directories are
// skipped (warned once), unreadable files are tracked by size and mtime
// with an empty hash, and paths that vanish between an event and the
// hash are simply gone.
package drift
