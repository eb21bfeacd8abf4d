package drift

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Event kinds.
const (
	KindCreated  = "created"
	KindModified = "modified"
	KindRemoved  = "removed"
	KindRenamed  = "renamed"
)

// Severities.
const (
	SeverityHigh   = "high"
	SeverityNormal = "normal"
)

// Modes reported by Mode.
const (
	ModeFsnotify = "fsnotify"
	ModeScan     = "scan"
)

// Defaults for the zero Config fields.
const (
	DefaultDebounce     = 500 * time.Millisecond
	DefaultScanInterval = 30 * time.Second
)

// DefaultIgnore is used when Config.Ignore is nil: editor leftovers that
// live as long as an editing session (vim swap files, backup files, emacs
// lock and auto-save files), the agent's own work dir (dispatcher work_dir
// defaults to <httpd_dir>/.deckhand and holds staging trees), and Apache's
// runtime dirs, which are real directories on some installs and would
// otherwise report every log line as drift.
//
// Short-lived temporaries (vim's "4913" probe, sed -i's sedXXXXXX, an
// editor's write-then-rename) need no pattern: they appear and vanish
// within the debounce window and so never differ from the baseline.
var DefaultIgnore = []string{
	".*.sw?", "*.swp", "*~", ".#*", "#*#",
	".deckhand",
	"/logs", "/run",
}

// Event is one change to the watched tree that Deckhand did not make.
type Event struct {
	// Path is slash-separated and relative to Config.Dir.
	Path string
	// Kind is KindCreated, KindModified, KindRemoved or KindRenamed.
	// A modified event with Before == After means only the permission
	// bits changed.
	Kind string
	// From is the old path of a renamed file; empty for other kinds.
	From string
	// Before is the hex sha256 of the content before the change (of From
	// for a rename; of the target string for a symlink); "" when the path
	// did not exist, could not be read, or was changed right after a
	// deployment, before the content the deployment left was hashed.
	Before string
	// After is the hex sha256 now; "" when removed or unreadable.
	After string
	// Severity is SeverityHigh when Path (or From) matches
	// Config.Immutable, else SeverityNormal.
	Severity string
	// At is when the change was last seen (the last filesystem event for
	// the path, or the scan that found it).
	At time.Time
}

// Config says what to watch.
type Config struct {
	// Dir is the httpd dir, watched recursively. If it is a symlink it is
	// resolved once, in New.
	Dir string
	// Immutable are slash globs relative to Dir (path.Match per segment,
	// plus "**" for any number of segments) naming the files whose change
	// is high severity, typically the dispatcher config's immutable list.
	// nil means none.
	Immutable []string
	// Debounce is how long a path must be quiet before its change is
	// reported, so a burst of writes is one event and an edit undone
	// within it is none. Default 500ms. A path written continuously is
	// still reported after 10×Debounce.
	Debounce time.Duration
	// ScanInterval is how often the tree is compared with the baseline in
	// scan mode (when fsnotify cannot be used). Default 30s.
	ScanInterval time.Duration
	// Ignore are globs never reported nor watched. A pattern without "/"
	// is matched against every name in a path ("*.swp" at any depth, a
	// directory name hides its subtree); a pattern with "/" is matched
	// against the path from Dir (a leading "/" anchors a bare name there:
	// "/logs"), and an ignored directory hides its subtree. "**" as
	// for Immutable. nil means DefaultIgnore; an empty non-nil slice means
	// nothing is ignored.
	Ignore []string
}

// Watcher reports drift of one directory tree. Create it with New, run it
// with Run; Suppress and Mode may be called from any goroutine.
type Watcher struct {
	root      string
	debounce  time.Duration
	maxWait   time.Duration
	interval  time.Duration
	immutable matcher
	ignore    matcher
	sink      func([]Event)
	log       hclog.Logger

	started atomic.Bool
	// kick wakes Run to deliver events queued by Suppress/release or to
	// act on a mode switch.
	kick chan struct{}
	// ready is closed once Run has its watches (or its fallback) in place.
	ready chan struct{}

	// hashers counts the goroutine completing a rebuild (Run waits for it).
	hashers sync.WaitGroup

	mu sync.Mutex
	// base is the baseline manifest: what the tree looked like when last
	// reported (or last written by Deckhand). While rebuild is set, its
	// paths are right but the entries in rebuild.todo are placeholders.
	base manifest
	// rebuild, when set, is the baseline Deckhand's last change left,
	// still being hashed; nothing is compared with base meanwhile
	// (flushes wait, scans are deferred to its end: needScan). Set only by
	// the last release, and finished before the next Suppress counts, so
	// suppressed is 0 while it is set.
	rebuild  *rebuild
	needScan bool
	// dirs are the directories we hold an fsnotify watch on, by rel path
	// ("" is Dir), with the identity of the directory watched. Needed to
	// expand the removal or rename of a directory into its files, to drop
	// the watches of a moved subtree, whose paths fsnotify would otherwise
	// keep reporting under the old name, and to recognize a stale event
	// about a directory that was swapped and has been watched afresh.
	dirs map[string]dirID
	// pending are paths with a change not yet reported, waiting for their
	// debounce.
	pending    map[string]*pending
	suppressed int
	mode       string
	fsw        *fsnotify.Watcher
	// closeFSW asks Run to close fsw after a switch to scan mode.
	closeFSW bool
	outbox   []Event
	// warned remembers paths whose read error was logged, so a scan every
	// 30s does not repeat it.
	warned map[string]bool

	// addHook, when set (tests), runs before every fsnotify Add and can
	// fail it, to provoke the watch-limit fallback.
	addHook func(abs string) error
	// hashHook, when set (tests), runs before a rebuild hashes, without
	// mu, so a test can change the tree between snapshot and hashing.
	hashHook func()
	// now is the clock of the rebase snapshot (tests move it to make
	// files racy or not).
	now func() time.Time
}

// dirID identifies a watched directory.
type dirID struct{ dev, ino uint64 }

// rebuild is the rest of a rebase (see rebaseLocked): the regular files
// whose stat the snapshot took and whose content is hashed afterwards,
// off the deployment's path, by Run's hasher or by a Suppress that cannot
// wait. todo is not modified once the rebuild is published.
type rebuild struct {
	todo map[string]fileStat
	// claimed is set (under mu) by whoever hashes todo.
	claimed bool
	// done is closed once base is complete.
	done chan struct{}
}

// pending is a path with unreported filesystem activity.
type pending struct {
	first time.Time // first event since the last report: bounds the wait
	last  time.Time // last event: the debounce runs from here
}

// New checks cfg and builds the baseline manifest from disk, so changes
// made between New and Run are reported once Run starts. sink receives
// batches of events, always from Run's goroutine; it may block (events
// wait meanwhile). log may be nil.
func New(cfg Config, sink func([]Event), log hclog.Logger) (*Watcher, error) {
	if cfg.Dir == "" {
		return nil, errors.New("drift: Dir is required")
	}
	if sink == nil {
		return nil, errors.New("drift: sink is required")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.Debounce < 0 || cfg.ScanInterval < 0 {
		return nil, errors.New("drift: Debounce and ScanInterval must not be negative")
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.ScanInterval == 0 {
		cfg.ScanInterval = DefaultScanInterval
	}
	if cfg.Ignore == nil {
		cfg.Ignore = DefaultIgnore
	}
	root, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("drift: %w", err)
	}
	// Resolve a symlinked Dir once: we never follow links inside the
	// tree, and event paths must be under the path we watch.
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("drift: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("drift: %s is not a directory", root)
	}
	imm, err := compile("Immutable", cfg.Immutable, false)
	if err != nil {
		return nil, err
	}
	ign, err := compile("Ignore", cfg.Ignore, true)
	if err != nil {
		return nil, err
	}
	w := &Watcher{
		root:      root,
		debounce:  cfg.Debounce,
		maxWait:   10 * cfg.Debounce,
		interval:  cfg.ScanInterval,
		immutable: imm,
		ignore:    ign,
		sink:      sink,
		log:       log,
		kick:      make(chan struct{}, 1),
		ready:     make(chan struct{}),
		dirs:      map[string]dirID{},
		pending:   map[string]*pending{},
		mode:      ModeFsnotify,
		warned:    map[string]bool{},
		now:       time.Now,
	}
	w.base, _ = w.scanDiskLocked()
	return w, nil
}

// Mode reports how changes are found: ModeFsnotify, or ModeScan after a
// fallback (watch limit reached, inotify unavailable, Dir itself removed
// or moved). The fallback is one-way for the life of the Watcher.
func (w *Watcher) Mode() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mode
}

// Suppress marks the start of Deckhand's own change to the tree (a
// deployment or a restore). While any suppression is held, changes are
// absorbed without events; when the last one is released the tree as
// Deckhand left it becomes the baseline, so later events are measured
// against what Deckhand wrote. Call it before the first write and release
// after the last.
//
// release itself does not read file contents: it renews the watches and
// takes the stat of every file (the snapshot), and the contents are hashed
// afterwards by Run, accepting only what provably did not change since the
// snapshot (see rebaseLocked). A change made right after release is
// therefore reported, not taken into the baseline, even when it lands
// before the hashing gets to the file.
//
// Changes seen before Suppress whose debounce has not run out yet are
// reported by Suppress itself, with the state the path has then, against
// the old baseline: they are drift even when the task then overwrites
// them, and reporting them before the task starts lets the control plane
// see them before the task's result, which marks them replaced. In scan
// mode Suppress scans once and reports what changed since the last scan.
// If the baseline of the previous release is still being hashed, Suppress
// finishes it first.
//
// The returned release is idempotent. Both may be called before Run.
func (w *Watcher) Suppress() (release func()) {
	w.mu.Lock()
	w.finishRebuildLocked()
	w.suppressed++
	if w.suppressed == 1 {
		if w.mode == ModeScan {
			// The scan reports the pending paths (changes a scan held
			// back) as they are now.
			w.pending = map[string]*pending{}
			w.scanLocked(time.Now(), false)
		} else {
			w.flushLocked(time.Now(), true)
		}
	}
	w.mu.Unlock()
	w.wake()
	var once sync.Once
	return func() { once.Do(w.release) }
}

func (w *Watcher) release() {
	w.mu.Lock()
	w.suppressed--
	if w.suppressed == 0 {
		// Nothing is pending: Suppress reported it, and events during
		// the suppression add none.
		w.rebaseLocked(w.now())
	}
	w.mu.Unlock()
	w.wake()
}

// rebaseLocked makes the tree as Deckhand left it the baseline and
// watches it afresh. It runs at the end of a deployment, before its result
// is journaled, so it reads no file contents unless it must.
//
// Watches: a deployment swaps whole managed directories (rename, or an
// atomic exchange, which inotify reports less helpfully), and a watch
// follows the old inode, not the path, so every watch is dropped and the
// tree watched again. Each directory is watched before it is listed, so a
// change after the snapshot of a file always has an event.
//
// Baseline: the snapshot records every path, a symlink's target and a
// regular file's stat (fileStat). Hashing is left to a rebuild, which
// accepts a file's content only if the open file's stat before and after
// reading it equals the snapshot's: then it is the content Deckhand left.
// A file changed since the snapshot gets an unknown entry, so its change
// is reported, whoever gets to the file first, the hasher or the event.
// Racy files (changed within the timestamp granularity before the
// snapshot: usually none, or the few a deployment touched last) are hashed
// here, since a later change could leave their stat as it is.
func (w *Watcher) rebaseLocked(now time.Time) {
	rb := &rebuild{todo: map[string]fileStat{}, done: make(chan struct{})}
	// Published first: a fallback to scan mode half-way defers its scan
	// to the end of the rebuild instead of comparing the new tree with
	// the old baseline.
	w.rebuild = rb
	w.base = manifest{}
	watching := w.fsw != nil && w.mode == ModeFsnotify
	if watching {
		for d := range w.dirs {
			_ = w.fsw.Remove(w.abs(d))
		}
		w.dirs = map[string]dirID{}
	}
	visit := func(d string) error {
		if !watching {
			return nil
		}
		if err := w.watchDirLocked(d); errors.Is(err, errStopWalk) {
			// Fell back to scan mode: the snapshot goes on.
			watching = false
		}
		// A directory that cannot be watched (warned) may still be
		// listed; one that is gone is skipped by the walk.
		return nil
	}
	onEntry := func(rel, abs string) {
		e, st, later, ok, err := snapshotPath(abs, now)
		if err != nil {
			w.warnPathLocked(rel, "cannot read", err)
		}
		if !ok {
			return
		}
		w.base[rel] = e
		if later {
			rb.todo[rel] = st
		}
	}
	if err := walk(w.root, "", w.ignore.matchAny, visit, onEntry, w.onWalkErrLocked); err != nil {
		w.log.Warn("scanning the tree failed", "dir", w.root, "error", err)
	}
	if len(rb.todo) == 0 {
		rb.claimed = true
		w.installLocked(rb, nil, nil)
	}
}

// hashRebuild hashes a claimed rebuild's files without holding mu and
// installs the result.
func (w *Watcher) hashRebuild(rb *rebuild) {
	if w.hashHook != nil {
		w.hashHook()
	}
	got := make(map[string]entry, len(rb.todo))
	errs := map[string]error{}
	for rel, st := range rb.todo {
		e, err := hashUnchanged(w.abs(rel), st)
		got[rel] = e
		if err != nil {
			errs[rel] = err
		}
	}
	w.mu.Lock()
	w.installLocked(rb, got, errs)
	w.mu.Unlock()
	w.wake()
}

// installLocked completes the baseline with a rebuild's hashes, then
// runs the scan that was deferred meanwhile, if any. Pending paths are
// flushed by Run from now on.
func (w *Watcher) installLocked(rb *rebuild, got map[string]entry, errs map[string]error) {
	for rel, e := range got {
		if _, ok := w.base[rel]; ok {
			w.base[rel] = e
		}
	}
	for rel, err := range errs {
		w.warnPathLocked(rel, "cannot read", err)
	}
	w.rebuild = nil
	close(rb.done)
	if w.needScan {
		w.needScan = false
		// The scan reports what the pending paths would.
		w.pending = map[string]*pending{}
		w.scanLocked(time.Now(), true)
	}
}

// finishRebuildLocked returns once no rebuild is outstanding: it hashes
// an unclaimed one itself (Run is not running, or has not got to it) and
// waits for a claimed one, releasing mu meanwhile.
func (w *Watcher) finishRebuildLocked() {
	for w.rebuild != nil {
		rb := w.rebuild
		if !rb.claimed {
			rb.claimed = true
			w.mu.Unlock()
			w.hashRebuild(rb)
			w.mu.Lock()
			continue
		}
		w.mu.Unlock()
		<-rb.done
		w.mu.Lock()
	}
}

func (w *Watcher) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run watches until ctx ends, then returns nil. It returns an error only
// when called twice. Failing to use fsnotify is not an error: Run falls
// back to scan mode and says so in the log.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("drift: Run called twice")
	}

	var events <-chan fsnotify.Event
	errs := newErrDrain()
	var drainers sync.WaitGroup
	defer drainers.Wait()
	fsw, err := fsnotify.NewWatcher()
	w.mu.Lock()
	if err != nil {
		// EMFILE here means max_user_instances; anything else (no
		// inotify in this kernel or sandbox) is no better served by
		// failing the agent.
		w.fallbackLocked("cannot create an inotify instance", err)
	} else {
		w.fsw = fsw
		events = fsw.Events
		drainers.Add(1)
		go func() {
			defer drainers.Done()
			errs.run(fsw.Errors)
		}()
		w.addTreeLocked("", false, time.Now())
		if w.mode == ModeFsnotify && w.suppressed == 0 {
			// Catch what changed between New and the watches being in
			// place; later changes arrive as events.
			w.scanLocked(time.Now(), true)
		}
	}
	w.mu.Unlock()
	close(w.ready)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var ticker *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	defer func() {
		// A rebuild being hashed completes (it is bounded by the tree);
		// an unclaimed one waits for the next Suppress or Run.
		w.hashers.Wait()
		w.mu.Lock()
		f := w.fsw
		w.fsw = nil
		w.mu.Unlock()
		if f != nil {
			_ = f.Close()
		}
		// Hand over what was already decided; changes still in their
		// debounce are lost with the process anyway.
		w.deliver()
	}()

	for {
		w.mu.Lock()
		var toClose *fsnotify.Watcher
		if w.closeFSW {
			toClose, w.fsw, w.closeFSW = w.fsw, nil, false
			events = nil
		}
		if w.mode == ModeScan && ticker == nil {
			ticker = time.NewTicker(w.interval)
			tick = ticker.C
		}
		if rb := w.rebuild; rb != nil && !rb.claimed {
			rb.claimed = true
			w.hashers.Add(1)
			go func() {
				defer w.hashers.Done()
				w.hashRebuild(rb)
			}()
		}
		next, ok := w.nextDueLocked()
		w.mu.Unlock()
		if toClose != nil {
			_ = toClose.Close()
		}
		if ok {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		w.deliver()

		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.mu.Lock()
			w.handleLocked(ev, time.Now())
			w.mu.Unlock()
		case <-errs.ready:
			for _, err := range errs.take() {
				w.mu.Lock()
				w.fsnotifyErrorLocked(err)
				w.mu.Unlock()
			}
		case <-timer.C:
			w.mu.Lock()
			w.flushLocked(time.Now(), false)
			w.mu.Unlock()
		case <-tick:
			w.mu.Lock()
			if w.suppressed == 0 {
				w.scanLocked(time.Now(), true)
			}
			w.mu.Unlock()
		case <-w.kick:
		}
	}
}

// errDrain takes fsnotify's errors off its hands at once. fsnotify's
// reader sends some errors while it holds its own lock (one removing the
// watch of a directory that moved away, which fails if the kernel already
// dropped it), and Add and Remove wait for that lock; Run calls them while
// it is the one that would receive the error, and release calls them
// while holding mu, which Run needs. So errors are received by a goroutine
// that waits for nothing else, and Run reads them from here.
type errDrain struct {
	mu       sync.Mutex
	errs     []error
	overflow bool
	ready    chan struct{}
}

func newErrDrain() *errDrain { return &errDrain{ready: make(chan struct{}, 1)} }

// run receives until ch is closed (when the fsnotify watcher is). It keeps
// one overflow (a rescan is a rescan) and up to 64 other errors between
// two takes: they are only logged.
func (d *errDrain) run(ch <-chan error) {
	for err := range ch {
		d.mu.Lock()
		switch {
		case errors.Is(err, fsnotify.ErrEventOverflow):
			if !d.overflow {
				d.overflow = true
				d.errs = append(d.errs, err)
			}
		case len(d.errs) < 64:
			d.errs = append(d.errs, err)
		}
		d.mu.Unlock()
		select {
		case d.ready <- struct{}{}:
		default:
		}
	}
}

func (d *errDrain) take() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.errs
	d.errs, d.overflow = nil, false
	return out
}

// deliver hands queued events to the sink, outside the lock so a slow
// sink never blocks Suppress.
func (w *Watcher) deliver() {
	w.mu.Lock()
	out := w.outbox
	w.outbox = nil
	w.mu.Unlock()
	if len(out) > 0 {
		w.sink(out)
	}
}

// handleLocked turns one fsnotify event into pending paths and watch
// bookkeeping.
func (w *Watcher) handleLocked(ev fsnotify.Event, now time.Time) {
	rel, ok := w.relOf(ev.Name)
	if !ok {
		return
	}
	if rel == "" {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			// Nothing watches Dir's parent, so a re-created Dir would go
			// unnoticed: the scan handles Dir coming and going.
			w.fallbackLocked("the watched directory was removed or moved", nil)
		}
		return
	}
	if w.ignore.matchAny(rel) {
		return
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if _, ok := w.dirs[rel]; ok {
			w.forgetDirLocked(rel, ev.Has(fsnotify.Rename), now)
		}
		w.touchLocked(rel, now)
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			w.addTreeLocked(rel, true, now)
		}
		w.touchLocked(rel, now)
	}
	if ev.Has(fsnotify.Write) || ev.Has(fsnotify.Chmod) {
		w.touchLocked(rel, now)
	}
}

// relOf maps an fsnotify path to our slash form; false if outside root.
func (w *Watcher) relOf(name string) (string, bool) {
	if name == w.root {
		return "", true
	}
	if !strings.HasPrefix(name, w.root+string(filepath.Separator)) {
		return "", false
	}
	return filepath.ToSlash(name[len(w.root)+1:]), true
}

func (w *Watcher) abs(rel string) string {
	if rel == "" {
		return w.root
	}
	return filepath.Join(w.root, filepath.FromSlash(rel))
}

// touchLocked records activity on rel. During a suppression the activity
// is Deckhand's and is not recorded (what was pending when it began was
// reported then).
func (w *Watcher) touchLocked(rel string, now time.Time) {
	if w.suppressed > 0 {
		return
	}
	p := w.pending[rel]
	if p == nil {
		p = &pending{first: now}
		w.pending[rel] = p
	}
	p.last = now
}

// forgetDirLocked handles a watched directory that was removed or moved
// away: its files are gone from this path (moves out of the tree produce
// no per-file events, so mark them here), and on a move the watches of
// its subdirectories must be dropped, or fsnotify would keep reporting
// their events under the old names (and re-adding them under the new
// name would return the stale watch).
//
// The directory we watch can also be at rel (again) when the event is
// handled: the event is stale, about a directory Deckhand swapped away
// whose successor release already watched (fsnotify hands events over one
// at a time, so one can arrive late), or the directory was moved away and
// back. Then its watches stay, the one fsnotify itself drops when a
// watched directory moves is renewed, and its files are looked at again.
func (w *Watcher) forgetDirLocked(rel string, moved bool, now time.Time) {
	prefix := rel + "/"
	if id := w.dirs[rel]; id != (dirID{}) {
		if cur, ok := dirIDOf(w.abs(rel)); ok && cur == id {
			if w.fsw != nil {
				_ = w.fsw.Add(w.abs(rel))
			}
			for p := range w.base {
				if strings.HasPrefix(p, prefix) {
					w.touchLocked(p, now)
				}
			}
			return
		}
	}
	for d := range w.dirs {
		if d == rel || strings.HasPrefix(d, prefix) {
			delete(w.dirs, d)
			if moved && w.fsw != nil {
				_ = w.fsw.Remove(w.abs(d))
			}
		}
	}
	for p := range w.base {
		if strings.HasPrefix(p, prefix) {
			w.touchLocked(p, now)
		}
	}
}

// addTreeLocked watches rel and every directory below it. With
// touchFiles (a directory that appeared after start), its files are
// marked pending: they were created before the watch could see them.
func (w *Watcher) addTreeLocked(rel string, touchFiles bool, now time.Time) {
	onEntry := func(r, _ string) {
		if touchFiles {
			w.touchLocked(r, now)
		}
	}
	if err := walk(w.root, rel, w.ignore.matchAny, w.watchDirLocked, onEntry, w.onWalkErrLocked); err != nil {
		w.log.Warn("walking the tree failed", "dir", w.abs(rel), "error", err)
	}
}

// watchDirLocked adds a watch on directory d unless it has one. It
// returns filepath.SkipDir when d cannot be watched (gone, or a warned
// error such as EACCES) and errStopWalk when watching is over (scan mode).
func (w *Watcher) watchDirLocked(d string) error {
	if w.fsw == nil || w.mode != ModeFsnotify {
		return errStopWalk
	}
	if _, ok := w.dirs[d]; ok {
		return nil
	}
	abs := w.abs(d)
	err := error(nil)
	if w.addHook != nil {
		err = w.addHook(abs)
	}
	if err == nil {
		err = w.fsw.Add(abs)
	}
	switch {
	case err == nil:
		// A zero identity (stat failed) only disables the stale-event
		// check for d.
		id, _ := dirIDOf(abs)
		w.dirs[d] = id
		return nil
	case limitErr(err):
		w.fallbackLocked("the inotify watch limit was reached (raise fs.inotify.max_user_watches)", err)
		return errStopWalk
	case gone(err):
		return filepath.SkipDir
	default:
		// EACCES and the like: this subtree is not watched; the
		// files we can see are still in the manifest.
		w.warnPathLocked(d, "cannot watch directory", err)
		return filepath.SkipDir
	}
}

// limitErr reports the errors meaning "no more watches for you".
func limitErr(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "no space left on device") || strings.Contains(s, "too many open files")
}

// fallbackLocked switches to scan mode, once. Changes the fsnotify path
// may have missed are found by comparing the disk with the baseline right
// away (unless Deckhand is writing: release rebuilds the baseline).
func (w *Watcher) fallbackLocked(why string, err error) {
	if w.mode == ModeScan {
		return
	}
	w.mode = ModeScan
	args := []any{"dir", w.root, "scan_interval", w.interval.String()}
	if err != nil {
		args = append(args, "error", err)
	}
	w.log.Warn(why+"; falling back to a periodic scan of the tree (renames are reported as removed+created)", args...)
	if w.fsw != nil {
		w.closeFSW = true
	}
	w.dirs = map[string]dirID{}
	if w.suppressed == 0 {
		// The scan reports every pending change too.
		w.pending = map[string]*pending{}
		w.scanLocked(time.Now(), true)
	}
	w.wake()
}

func (w *Watcher) fsnotifyErrorLocked(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		// The kernel queue overflowed and events were lost: compare the
		// whole tree once instead of trusting the events.
		w.log.Warn("inotify queue overflowed; rescanning the tree", "dir", w.root)
		if w.suppressed == 0 {
			w.pending = map[string]*pending{}
			w.scanLocked(time.Now(), true)
		}
		return
	}
	w.log.Warn("watch error", "dir", w.root, "error", err)
}

func (w *Watcher) onWalkErrLocked(rel string, err error) {
	w.warnPathLocked(rel, "cannot read", err)
}

// warnPathLocked logs a per-path problem once; repeats go to debug.
func (w *Watcher) warnPathLocked(rel, what string, err error) {
	if w.warned[rel] {
		w.log.Debug(what, "path", rel, "error", err)
		return
	}
	w.warned[rel] = true
	w.log.Warn(what, "path", rel, "error", err)
}

// stat describes rel now (call with mu held).
func (w *Watcher) stat(rel string) (entry, bool) {
	e, ok, err := statPath(w.abs(rel))
	if err != nil {
		w.warnPathLocked(rel, "cannot read", err)
	}
	return e, ok
}

// scanDiskLocked builds a manifest of the tree as it is now, and the
// modification times of its entries.
func (w *Watcher) scanDiskLocked() (manifest, map[string]time.Time) {
	m := manifest{}
	mods := map[string]time.Time{}
	err := walk(w.root, "", w.ignore.matchAny, nil, func(rel, abs string) {
		e, mod, ok, err := statPathModTime(abs)
		if err != nil {
			w.warnPathLocked(rel, "cannot read", err)
		}
		if ok {
			m[rel] = e
			mods[rel] = mod
		}
	}, w.onWalkErrLocked)
	if err != nil {
		w.log.Warn("scanning the tree failed", "dir", w.root, "error", err)
	}
	return m, mods
}

// scanLocked compares the disk with the baseline, reports the difference
// and makes the disk the baseline. Without events there is no telling a
// rename from a removal plus a creation, so none are paired.
//
// With settle, a created or modified path whose modification time is
// within the debounce of now is not reported yet: it may be caught in the
// middle of a write (an editor or a copy that truncates, then writes). It
// keeps its old baseline and becomes pending like a path with events, so
// it is reported once it has been quiet for the debounce, the same as in
// fsnotify mode. Suppress scans without settle: what is on disk when a
// Deckhand task starts is reported as it is, because the task may
// overwrite it.
//
// During a rebuild there is no complete baseline to compare with: the
// scan runs when the rebuild is installed.
func (w *Watcher) scanLocked(now time.Time, settle bool) {
	if w.rebuild != nil {
		w.needScan = true
		return
	}
	cur, mods := w.scanDiskLocked()
	settle = settle && w.suppressed == 0
	fresh := func(rel string) bool {
		if !settle {
			return false
		}
		m := mods[rel]
		return !m.After(now) && now.Sub(m) < w.debounce
	}
	var out []Event
	held := map[string]bool{}
	for rel, b := range w.base {
		c, ok := cur[rel]
		switch {
		case !ok:
			out = append(out, w.event(rel, "", KindRemoved, b.hash, "", now))
		case !b.same(c) && fresh(rel):
			held[rel] = true
		case !b.same(c):
			out = append(out, w.event(rel, "", KindModified, b.hash, c.hash, now))
		}
	}
	for rel, c := range cur {
		if _, ok := w.base[rel]; !ok {
			if fresh(rel) {
				held[rel] = true
				continue
			}
			out = append(out, w.event(rel, "", KindCreated, "", c.hash, now))
		}
	}
	for rel := range held {
		if b, ok := w.base[rel]; ok {
			cur[rel] = b
		} else {
			delete(cur, rel)
		}
		w.touchLocked(rel, now)
	}
	w.base = cur
	w.emitLocked(out)
}

func (w *Watcher) event(rel, from, kind, before, after string, at time.Time) Event {
	sev := SeverityNormal
	if w.immutable.matchFull(rel) || (from != "" && w.immutable.matchFull(from)) {
		sev = SeverityHigh
	}
	return Event{Path: rel, Kind: kind, From: from, Before: before, After: after, Severity: sev, At: at}
}

func (w *Watcher) emitLocked(out []Event) {
	if len(out) == 0 {
		return
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	w.outbox = append(w.outbox, out...)
}

// nextDueLocked is when the earliest pending path is due.
// Nothing is due during a rebuild: its install wakes Run.
func (w *Watcher) nextDueLocked() (time.Time, bool) {
	if w.rebuild != nil {
		return time.Time{}, false
	}
	var next time.Time
	for _, p := range w.pending {
		d := w.dueAt(p)
		if next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next, !next.IsZero()
}

func (w *Watcher) dueAt(p *pending) time.Time {
	d := p.last.Add(w.debounce)
	if cap := p.first.Add(w.maxWait); cap.Before(d) {
		d = cap
	}
	return d
}

// change is a pending path resolved against the baseline.
type change struct {
	rel      string
	at       time.Time
	had, has bool
	was, is  entry
}

// resolveLocked compares a pending path's state with the baseline.
func (w *Watcher) resolveLocked(rel string, p *pending) change {
	c := change{rel: rel, at: p.last}
	c.was, c.had = w.base[rel]
	c.is, c.has = w.stat(rel)
	return c
}

func (c change) unchanged() bool {
	return c.had == c.has && (!c.had || c.was.same(c.is))
}

// flushLocked reports the pending paths that are due (all with force),
// pairing a disappeared file with an appeared one of the same content
// into one rename. fsnotify delivers a rename as Rename(old) and
// Create(new) back to back, so the partner is normally due in the same
// flush; if it is not due yet (its last event came a moment later), it is
// looked at early, which is harmless: whatever happens to it afterwards
// is measured against the baseline updated here.
//
// During a rebuild nothing is flushed: pending paths wait for the
// baseline they are compared with.
func (w *Watcher) flushLocked(now time.Time, force bool) {
	if w.rebuild != nil {
		return
	}
	var gone, appeared, other []change
	for rel, p := range w.pending {
		if !force && w.dueAt(p).After(now) {
			continue
		}
		c := w.resolveLocked(rel, p)
		delete(w.pending, rel)
		switch {
		case c.unchanged():
		case c.had && !c.has:
			gone = append(gone, c)
		case !c.had && c.has:
			appeared = append(appeared, c)
		default:
			other = append(other, c)
		}
	}
	if len(gone)+len(appeared)+len(other) == 0 {
		return
	}

	// Partners among the paths not yet due.
	if len(gone) > 0 || len(appeared) > 0 {
		for rel, p := range w.pending {
			c := w.resolveLocked(rel, p)
			switch {
			case c.had && !c.has && len(appeared) > 0:
				if i := pickPartner(c.rel, c.was, appeared, func(x change) entry { return x.is }); i >= 0 {
					gone = append(gone, c)
					delete(w.pending, rel)
				}
			case !c.had && c.has && len(gone) > 0:
				if i := pickPartner(c.rel, c.is, gone, func(x change) entry { return x.was }); i >= 0 {
					appeared = append(appeared, c)
					delete(w.pending, rel)
				}
			}
		}
	}

	var out []Event
	used := make([]bool, len(appeared))
	for _, g := range gone {
		cands := make([]change, 0, len(appeared))
		idx := make([]int, 0, len(appeared))
		for i, a := range appeared {
			if !used[i] {
				cands = append(cands, a)
				idx = append(idx, i)
			}
		}
		if i := pickPartner(g.rel, g.was, cands, func(x change) entry { return x.is }); i >= 0 {
			a := appeared[idx[i]]
			used[idx[i]] = true
			delete(w.base, g.rel)
			w.base[a.rel] = a.is
			out = append(out, w.event(a.rel, g.rel, KindRenamed, g.was.hash, a.is.hash, latest(g.at, a.at)))
			continue
		}
		delete(w.base, g.rel)
		out = append(out, w.event(g.rel, "", KindRemoved, g.was.hash, "", g.at))
	}
	for i, a := range appeared {
		if used[i] {
			continue
		}
		w.base[a.rel] = a.is
		out = append(out, w.event(a.rel, "", KindCreated, "", a.is.hash, a.at))
	}
	for _, c := range other {
		w.base[c.rel] = c.is
		out = append(out, w.event(c.rel, "", KindModified, c.was.hash, c.is.hash, c.at))
	}
	w.emitLocked(out)
}

// pickPartner finds, among cands, the one whose entry (via get) holds the
// same content as e: same type and hash (unreadable files have no hash
// and never pair). A candidate with the same base name wins (a directory
// moved: a/x.conf -> b/x.conf even when b/y.conf has the same bytes),
// then the smallest path, so the choice is deterministic. -1 if none.
func pickPartner(rel string, e entry, cands []change, get func(change) entry) int {
	if e.unreadable || e.unknown {
		return -1
	}
	best := -1
	for i, c := range cands {
		x := get(c)
		if x.unreadable || x.unknown || x.typ != e.typ || x.hash != e.hash {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		bSame := path.Base(cands[best].rel) == path.Base(rel)
		cSame := path.Base(c.rel) == path.Base(rel)
		if (cSame && !bSame) || (cSame == bSame && c.rel < cands[best].rel) {
			best = i
		}
	}
	return best
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
