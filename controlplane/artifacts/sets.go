package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/classify"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	"github.com/deckhand-dev/deckhand/pkg/task"
)

const (
	bucketArtifacts = "artifacts"
	bucketSets      = "artifact_sets"
)

// ErrRefused matches (errors.Is) every error that refuses its input: a zip
// classification rejects, a set that breaks a rule. The message says why;
// sending the same input again fails the same way.
var ErrRefused = errors.New("refused")

// ErrSetNotFound is returned (wrapped) for a set id that does not exist.
var ErrSetNotFound = errors.New("artifact set not found")

// refusal marks err as ErrRefused without changing its message, so the
// classifier's wording reaches the operator unchanged.
type refusal struct{ err error }

func (r refusal) Error() string        { return r.err.Error() }
func (r refusal) Unwrap() error        { return r.err }
func (r refusal) Is(target error) bool { return target == ErrRefused }

func refuse(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }

// Artifact is one stored, classified artifact.
type Artifact struct {
	SHA256 string
	Size   int64
	// Name is the file name it was pushed as: the latest push for an
	// artifact on its own, the latest before the set was created for an
	// artifact of a set.
	Name string
	Kind classify.Kind
	// PackageID is the AEM package's id; zero for a dispatcher config.
	PackageID aempkg.ID
	// Dependencies are the package's declared dependencies; nil for a
	// dispatcher configuration and for a package without any.
	Dependencies []aempkg.Dependency
	// PushedAt is when it was last pushed.
	PushedAt time.Time
}

// Ref is the artifact as a task names it.
func (a Artifact) Ref() task.Artifact {
	return task.Artifact{SHA256: a.SHA256, Size: a.Size, Name: a.Name}
}

// ExternalDependency is a dependency of a package of a set that no package
// of the set satisfies. It must already be installed on every target; the
// agent checks it against AEM before installing anything.
type ExternalDependency struct {
	Package    aempkg.ID
	Dependency aempkg.Dependency
}

func (e ExternalDependency) String() string {
	return e.Package.String() + " requires " + e.Dependency.String()
}

// Set is a checked group of artifacts deployed together.
type Set struct {
	ID        string
	Version   string
	CreatedAt time.Time
	CreatedBy string
	// Packages are the AEM packages in install order: each after the
	// packages of the set it depends on.
	Packages []Artifact
	// Dispatcher is the dispatcher configuration; nil when the set has none.
	Dispatcher *Artifact
	// External are the dependencies the set itself does not satisfy, by
	// package in install order.
	External []ExternalDependency
}

// Artifacts returns the packages in install order, then the dispatcher
// configuration.
func (s Set) Artifacts() []Artifact {
	out := slices.Clone(s.Packages)
	if s.Dispatcher != nil {
		out = append(out, *s.Dispatcher)
	}
	return out
}

// PushResult is what a push stored.
type PushResult struct {
	Artifact Artifact
	// AlreadyStored is true when the bytes were in the store before.
	AlreadyStored bool
}

// Sets records classified artifacts and artifact sets on a kv.Backend (the
// control-plane store's) next to a blob store. It keeps no state of its
// own, so any number of Sets on the same backend and blobs agree; the
// rollout code may build its own with NewSets. Safe for concurrent use.
type Sets struct {
	blobs *Blobs
	kv    kv.Backend
	// Now is the clock for timestamps; tests may replace it.
	Now func() time.Time
}

// NewSets returns Sets over blobs and the backend b (store.Store.Backend()).
func NewSets(blobs *Blobs, b kv.Backend) *Sets {
	return &Sets{blobs: blobs, kv: b, Now: time.Now}
}

// Blobs returns the blob store the artifacts are in.
func (s *Sets) Blobs() *Blobs { return s.blobs }

// PutFile pushes the file at path under its base name.
func (s *Sets) PutFile(path string) (PushResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return PushResult{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return PushResult{}, err
	}
	if !st.Mode().IsRegular() {
		return PushResult{}, refuse("artifact %s is not a regular file", path)
	}
	return s.Push(f, filepath.Base(path))
}

// Push streams r into the blob store, classifies what was stored and
// records it under name (a file name without directories). A zip that is
// neither kind is refused with the classifier's message (ErrRefused), and
// its blob is removed unless it was stored before this push. An error from
// r stores nothing and is returned as is.
func (s *Sets) Push(r io.Reader, name string) (PushResult, error) {
	if err := checkName(name); err != nil {
		return PushResult{}, err
	}
	digest, size, existed, err := s.blobs.PutReport(r)
	if err != nil {
		return PushResult{}, err
	}
	res, cerr := s.classify(digest, size, name)
	if cerr != nil {
		if !existed {
			// Nothing refers to a blob that has just been written and
			// failed classification; keeping it would only fill the disk
			// with zips no set can use.
			_ = s.blobs.Remove(digest)
		}
		return PushResult{}, cerr
	}
	a := Artifact{SHA256: digest, Size: size, Name: name, Kind: res.Kind, PushedAt: s.Now().UTC()}
	if res.Package != nil {
		a.PackageID, a.Dependencies = res.Package.ID, res.Package.Dependencies
	}
	rec := toRecord(a)
	err = s.kv.Update(func(tx kv.Tx) error {
		if raw := tx.Get(bucketArtifacts, digest); raw != nil {
			var old artifactRecord
			if err := json.Unmarshal(raw, &old); err != nil {
				return fmt.Errorf("artifact %s: decode record: %w", digest, err)
			}
			rec.FirstPushedAt = old.FirstPushedAt
		}
		raw, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return tx.Put(bucketArtifacts, digest, raw)
	})
	if err != nil {
		return PushResult{}, fmt.Errorf("record artifact %s: %w", name, err)
	}
	return PushResult{Artifact: a, AlreadyStored: existed}, nil
}

func (s *Sets) classify(digest string, size int64, name string) (classify.Result, error) {
	f, _, err := s.blobs.Open(digest)
	if err != nil {
		return classify.Result{}, err
	}
	defer f.Close()
	res, err := classify.ClassifyReader(f, size, name)
	if err != nil {
		return res, refusal{err}
	}
	return res, nil
}

// checkName accepts a plain file name: what the operator will recognise in
// listings, and nothing that could be taken for a path.
func checkName(name string) error {
	switch {
	case name == "":
		return refuse("artifact name is empty")
	case len(name) > 255:
		return refuse("artifact name %.40q... is longer than 255 bytes", name)
	case name == "." || name == ".." || strings.ContainsAny(name, `/\`):
		return refuse("artifact name %q must be a file name without directories", name)
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return refuse("artifact name %q contains a control character or invalid UTF-8", name)
		}
	}
	return nil
}

// Artifact returns the record of one pushed artifact, or ErrNotFound.
func (s *Sets) Artifact(digest string) (Artifact, error) {
	var a Artifact
	err := s.kv.View(func(tx kv.Tx) error {
		var err error
		a, err = readArtifact(tx, digest)
		return err
	})
	return a, err
}

// Artifacts returns every pushed artifact, by name and then digest.
func (s *Sets) Artifacts() ([]Artifact, error) {
	var out []Artifact
	err := s.kv.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketArtifacts, "", func(k string, v []byte) error {
			a, err := decodeArtifact(k, v)
			if err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Artifact) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out, err
}

// MaxVersionLength bounds a set's version label.
const MaxVersionLength = 128

func checkVersion(v string) error {
	if len(v) > MaxVersionLength {
		return refuse("set version %.40q... is longer than %d bytes", v, MaxVersionLength)
	}
	for _, r := range v {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return refuse("set version %q contains whitespace, a control character or invalid UTF-8", v)
		}
	}
	return nil
}

// SetID is the id of the set of version and digests: "set-" and 12 hex
// digits of a sha256 over the version and the digests, lower-cased, sorted
// and de-duplicated, so neither order nor repeats change it. Twelve digits
// keep it short enough to type; a collision is detected by Create, never
// silently merged.
func SetID(version string, digests []string) string {
	ds := make([]string, len(digests))
	for i, d := range digests {
		ds[i] = strings.ToLower(strings.TrimSpace(d))
	}
	slices.Sort(ds)
	h := sha256.New()
	io.WriteString(h, "deckhand artifact set v1\x00"+version)
	for _, d := range slices.Compact(ds) {
		io.WriteString(h, "\x00"+d)
	}
	return "set-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// normalizeDigests lower-cases, checks, sorts and de-duplicates digests.
func normalizeDigests(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, d := range in {
		d = strings.ToLower(strings.TrimSpace(d))
		if !ValidDigest(d) {
			return nil, refuse("%q is not a sha256 digest (64 hex digits)", d)
		}
		out = append(out, d)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Create makes the set of version and the artifacts with digests, after
// checking the rules a deployment relies on (see plan). Digest order and
// repeats do not matter. created is false when the same version and digests
// already form a set: that set is returned unchanged (including its
// creator and snapshot of names). by names who creates it.
//
// Errors: a digest never pushed wraps ErrNotFound; a broken rule or a bad
// input wraps ErrRefused.
func (s *Sets) Create(version string, digests []string, by string) (set Set, created bool, err error) {
	if err := checkVersion(version); err != nil {
		return Set{}, false, err
	}
	ds, err := normalizeDigests(digests)
	if err != nil {
		return Set{}, false, err
	}
	if len(ds) == 0 {
		return Set{}, false, refuse("a set needs at least one artifact")
	}
	id := SetID(version, ds)
	err = s.kv.Update(func(tx kv.Tx) error {
		if raw := tx.Get(bucketSets, id); raw != nil {
			rec, err := decodeSet(id, raw)
			if err != nil {
				return err
			}
			if rec.Version != version || !slices.Equal(rec.Digests, ds) {
				return fmt.Errorf("set id %s already names a different set (a 48-bit id collision); change the version label", id)
			}
			set, err = rec.toSet()
			return err
		}
		arts := make([]Artifact, 0, len(ds))
		for _, d := range ds {
			a, err := readArtifact(tx, d)
			if errors.Is(err, ErrNotFound) {
				if s.blobs.Has(d) {
					return refuse("artifact %s is stored but was never pushed, so it is not classified; push the file with deckctl artifact push", d)
				}
				return fmt.Errorf("artifact %s is not stored (push it first): %w", d, ErrNotFound)
			}
			if err != nil {
				return err
			}
			if !s.blobs.Has(d) {
				return fmt.Errorf("artifact %s (%s) is recorded but its blob is missing from %s; push it again", d, a.Name, s.blobs.dir)
			}
			arts = append(arts, a)
		}
		pkgs, disp, ext, err := plan(arts)
		if err != nil {
			return err
		}
		set = Set{ID: id, Version: version, CreatedAt: s.Now().UTC(), CreatedBy: by, Packages: pkgs, Dispatcher: disp, External: ext}
		raw, err := json.Marshal(toSetRecord(set, ds))
		if err != nil {
			return err
		}
		created = true
		return tx.Put(bucketSets, id, raw)
	})
	if err != nil {
		return Set{}, false, err
	}
	return set, created, nil
}

// Get returns one set, or an error wrapping ErrSetNotFound.
func (s *Sets) Get(id string) (Set, error) {
	var set Set
	err := s.kv.View(func(tx kv.Tx) error {
		raw := tx.Get(bucketSets, id)
		if raw == nil {
			return fmt.Errorf("%w: %q", ErrSetNotFound, id)
		}
		rec, err := decodeSet(id, raw)
		if err != nil {
			return err
		}
		set, err = rec.toSet()
		return err
	})
	return set, err
}

// List returns every set, newest first.
func (s *Sets) List() ([]Set, error) {
	var out []Set
	err := s.kv.View(func(tx kv.Tx) error {
		return tx.ForEach(bucketSets, "", func(k string, v []byte) error {
			rec, err := decodeSet(k, v)
			if err != nil {
				return err
			}
			set, err := rec.toSet()
			if err != nil {
				return err
			}
			out = append(out, set)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Set) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, err
}

// plan checks a set's artifacts against the rules and orders them:
//
//   - at most one dispatcher configuration: a dispatcher gets one config
//     tree, and choosing between two would be guessing;
//   - one version of each AEM package (group:name): a build whose target/
//     holds two versions of a package is usually a stale file, and
//     installing the older after the newer would downgrade content, so the
//     set is refused naming both files instead of quietly keeping one;
//   - a dependency on a package of the set must accept the version in the
//     set: the set would install a version its dependent says it cannot
//     use;
//   - no dependency cycle among the packages of the set: there is no order
//     to install them in.
//
// A dependency on a group:name not in the set is recorded as external. The
// packages come back in install order (aempkg.Order over the in-set
// dependencies), starting from packages sorted by id, so the order depends
// only on the set's content.
func plan(arts []Artifact) (pkgs []Artifact, disp *Artifact, ext []ExternalDependency, err error) {
	var dispatchers []Artifact
	for _, a := range arts {
		switch a.Kind {
		case classify.DispatcherConfig:
			dispatchers = append(dispatchers, a)
		case classify.AEMPackage:
			pkgs = append(pkgs, a)
		default:
			return nil, nil, nil, refuse("artifact %s (%s) is not classified", a.Name, short(a.SHA256))
		}
	}
	if len(dispatchers) > 1 {
		slices.SortFunc(dispatchers, byName)
		names := make([]string, len(dispatchers))
		for i, d := range dispatchers {
			names[i] = fmt.Sprintf("%s (sha256 %s)", d.Name, short(d.SHA256))
		}
		return nil, nil, nil, refuse("a set holds at most one dispatcher configuration, and this one has %d: %s", len(dispatchers), andList(names))
	}
	if len(dispatchers) == 1 {
		disp = &dispatchers[0]
	}

	slices.SortFunc(pkgs, func(a, b Artifact) int {
		if c := strings.Compare(a.PackageID.String(), b.PackageID.String()); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	byGroupName := map[string][]Artifact{}
	for _, p := range pkgs {
		byGroupName[p.PackageID.GroupName()] = append(byGroupName[p.PackageID.GroupName()], p)
	}
	var problems []string
	for _, p := range pkgs {
		same := byGroupName[p.PackageID.GroupName()]
		if len(same) < 2 || same[0].SHA256 != p.SHA256 {
			continue // reported once, at the first of them
		}
		names := make([]string, len(same))
		for i, q := range same {
			names[i] = fmt.Sprintf("%s (%s, sha256 %s)", q.Name, q.PackageID.Version, short(q.SHA256))
		}
		problems = append(problems, fmt.Sprintf("%s is in the set %d times: %s", p.PackageID.GroupName(), len(same), andList(names)))
	}
	if len(problems) > 0 {
		return nil, nil, nil, refuse("a set holds one version of each AEM package; %s; push only the one to deploy", strings.Join(problems, "; "))
	}

	metas := make([]*aempkg.Package, len(pkgs))
	for i, p := range pkgs {
		meta := &aempkg.Package{ID: p.PackageID}
		for _, d := range p.Dependencies {
			in, ok := byGroupName[d.Group+":"+d.Name]
			switch {
			case !ok:
				ext = append(ext, ExternalDependency{Package: p.PackageID, Dependency: d})
			case !d.Range.Contains(in[0].PackageID.Version):
				problems = append(problems, fmt.Sprintf("%s (%s) requires %s, but the set has %s (%s)",
					p.PackageID, p.Name, d, in[0].PackageID, in[0].Name))
			default:
				meta.Dependencies = append(meta.Dependencies, d)
			}
		}
		metas[i] = meta
	}
	if len(problems) > 0 {
		return nil, nil, nil, refuse("%s; a package of the set must be at a version its dependents accept", strings.Join(problems, "; "))
	}
	ordered, err := aempkg.Order(metas, nil)
	if err != nil {
		var cyc *aempkg.CycleError
		if errors.As(err, &cyc) {
			files := make([]string, len(cyc.Cycle))
			for i, id := range cyc.Cycle {
				files[i] = byGroupName[id.GroupName()][0].Name
			}
			return nil, nil, nil, refuse("the set's packages depend on each other in a circle, so there is no order to install them in: %v (%s)", err, strings.Join(files, ", "))
		}
		// Every dependency passed to Order is satisfied by the set, so
		// this is a bug, not an input problem.
		return nil, nil, nil, fmt.Errorf("order the set's packages: %w", err)
	}
	out := make([]Artifact, len(ordered))
	for i, m := range ordered {
		out[i] = byGroupName[m.ID.GroupName()][0]
	}
	// External dependencies follow the install order, for reading.
	pos := map[aempkg.ID]int{}
	for i, p := range out {
		pos[p.PackageID] = i
	}
	slices.SortStableFunc(ext, func(a, b ExternalDependency) int { return pos[a.Package] - pos[b.Package] })
	return out, disp, ext, nil
}

func byName(a, b Artifact) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.SHA256, b.SHA256)
}

// short is the first 12 hex digits of a digest, enough to tell artifacts
// apart in a message.
func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// andList joins "a", "a and b", "a, b and c".
func andList(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// artifactRecord is an artifact as stored (version 1).
type artifactRecord struct {
	V             int       `json:"v"`
	SHA256        string    `json:"sha256"`
	Size          int64     `json:"size"`
	Name          string    `json:"name"`
	Kind          string    `json:"kind"`
	PackageID     string    `json:"package_id,omitempty"`
	Dependencies  []string  `json:"dependencies,omitempty"`
	FirstPushedAt time.Time `json:"first_pushed_at"`
	PushedAt      time.Time `json:"pushed_at"`
}

type externalRecord struct {
	Package    string `json:"package"`
	Dependency string `json:"dependency"`
}

// setRecord is a set as stored (version 1). The artifacts are a snapshot:
// a later push of the same bytes under another name does not rename them
// inside the set.
type setRecord struct {
	V          int              `json:"v"`
	ID         string           `json:"id"`
	Version    string           `json:"version"`
	Digests    []string         `json:"digests"`
	CreatedAt  time.Time        `json:"created_at"`
	CreatedBy  string           `json:"created_by,omitempty"`
	Packages   []artifactRecord `json:"packages,omitempty"`
	Dispatcher *artifactRecord  `json:"dispatcher,omitempty"`
	External   []externalRecord `json:"external,omitempty"`
}

func toRecord(a Artifact) artifactRecord {
	r := artifactRecord{V: 1, SHA256: a.SHA256, Size: a.Size, Name: a.Name, Kind: a.Kind.String(), FirstPushedAt: a.PushedAt, PushedAt: a.PushedAt}
	if a.Kind == classify.AEMPackage {
		r.PackageID = a.PackageID.String()
		for _, d := range a.Dependencies {
			r.Dependencies = append(r.Dependencies, d.String())
		}
	}
	return r
}

func (r artifactRecord) toArtifact() (Artifact, error) {
	a := Artifact{SHA256: r.SHA256, Size: r.Size, Name: r.Name, PushedAt: r.PushedAt}
	switch r.Kind {
	case classify.AEMPackage.String():
		a.Kind = classify.AEMPackage
		id, err := aempkg.ParseID(r.PackageID)
		if err != nil {
			return Artifact{}, fmt.Errorf("artifact %s: %w", r.SHA256, err)
		}
		a.PackageID = id
		for _, s := range r.Dependencies {
			d, err := aempkg.ParseDependency(s)
			if err != nil {
				return Artifact{}, fmt.Errorf("artifact %s: %w", r.SHA256, err)
			}
			a.Dependencies = append(a.Dependencies, d)
		}
	case classify.DispatcherConfig.String():
		a.Kind = classify.DispatcherConfig
	default:
		return Artifact{}, fmt.Errorf("artifact %s: unknown kind %q in the store", r.SHA256, r.Kind)
	}
	return a, nil
}

func decodeArtifact(digest string, raw []byte) (Artifact, error) {
	var r artifactRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return Artifact{}, fmt.Errorf("artifact %s: decode record: %w", digest, err)
	}
	if r.V != 1 {
		return Artifact{}, fmt.Errorf("artifact %s: record version %d is not known to this binary", digest, r.V)
	}
	return r.toArtifact()
}

func readArtifact(tx kv.Tx, digest string) (Artifact, error) {
	raw := tx.Get(bucketArtifacts, digest)
	if raw == nil {
		return Artifact{}, fmt.Errorf("%s: %w", digest, ErrNotFound)
	}
	return decodeArtifact(digest, raw)
}

func toSetRecord(s Set, digests []string) setRecord {
	r := setRecord{V: 1, ID: s.ID, Version: s.Version, Digests: digests, CreatedAt: s.CreatedAt, CreatedBy: s.CreatedBy}
	for _, p := range s.Packages {
		r.Packages = append(r.Packages, toRecord(p))
	}
	if s.Dispatcher != nil {
		d := toRecord(*s.Dispatcher)
		r.Dispatcher = &d
	}
	for _, e := range s.External {
		r.External = append(r.External, externalRecord{Package: e.Package.String(), Dependency: e.Dependency.String()})
	}
	return r
}

func decodeSet(id string, raw []byte) (setRecord, error) {
	var r setRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("set %s: decode record: %w", id, err)
	}
	if r.V != 1 {
		return r, fmt.Errorf("set %s: record version %d is not known to this binary", id, r.V)
	}
	return r, nil
}

func (r setRecord) toSet() (Set, error) {
	s := Set{ID: r.ID, Version: r.Version, CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy}
	for _, p := range r.Packages {
		a, err := p.toArtifact()
		if err != nil {
			return Set{}, fmt.Errorf("set %s: %w", r.ID, err)
		}
		s.Packages = append(s.Packages, a)
	}
	if r.Dispatcher != nil {
		a, err := r.Dispatcher.toArtifact()
		if err != nil {
			return Set{}, fmt.Errorf("set %s: %w", r.ID, err)
		}
		s.Dispatcher = &a
	}
	for _, e := range r.External {
		id, err := aempkg.ParseID(e.Package)
		if err != nil {
			return Set{}, fmt.Errorf("set %s: %w", r.ID, err)
		}
		d, err := aempkg.ParseDependency(e.Dependency)
		if err != nil {
			return Set{}, fmt.Errorf("set %s: %w", r.ID, err)
		}
		s.External = append(s.External, ExternalDependency{Package: id, Dependency: d})
	}
	return s, nil
}
