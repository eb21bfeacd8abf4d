package sim

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
)

// Layout of the data directory:
//
//	DIR/
//	  state.json                      {"version":1,"packages":[PackageState...]}
//	  packages/<group>/<name>-<version>.zip   uploaded packages, as uploaded
//	  tmp/                            uploads in progress; emptied on start
//
// state.json is the source of truth: a zip without an entry (a crash between
// storing the zip and writing the state) is ignored, an entry whose zip is
// missing or unreadable is dropped with a warning. Every write goes to a
// temporary file that is fsynced and renamed over the target, and the
// directory is fsynced after the rename, so a crash leaves either the old or
// the new version. All access goes through an os.Root so no name can escape
// DIR.
const (
	stateFileName = "state.json"
	packagesDir   = "packages"
	tmpDir        = "tmp"
	stateVersion  = 1
)

// PackageState is what the simulator knows about one uploaded package; it is
// persisted in state.json and served by GET /_sim/packages.
type PackageState struct {
	// ID is group:name:version.
	ID      string `json:"id"`
	Group   string `json:"group"`
	Name    string `json:"name"`
	Version string `json:"version"`
	// Path is /etc/packages/<group>/<name>-<version>.zip.
	Path         string    `json:"path"`
	Size         int64     `json:"size"`
	Dependencies string    `json:"dependencies,omitempty"`
	Uploaded     time.Time `json:"uploaded"`
	UploadedBy   string    `json:"uploadedBy"`
	// Created and CreatedBy come from properties.xml (created, createdBy)
	// when present, else from the upload, as AEM shows the package's own values.
	Created        time.Time  `json:"created"`
	CreatedBy      string     `json:"createdBy"`
	LastModified   *time.Time `json:"lastModified,omitempty"`
	LastModifiedBy string     `json:"lastModifiedBy,omitempty"`
	// LastUnpacked and LastUnpackedBy are set by an install and cleared by an
	// uninstall or a forced re-upload; nil means not installed.
	LastUnpacked   *time.Time `json:"lastUnpacked,omitempty"`
	LastUnpackedBy string     `json:"lastUnpackedBy,omitempty"`
	// InstallCount counts completed installs of this upload, including
	// installs pulled in as a dependency of another package.
	InstallCount int `json:"installCount"`
}

// Installed reports whether the package is installed.
func (p PackageState) Installed() bool { return p.LastUnpacked != nil }

type stateFile struct {
	Version  int            `json:"version"`
	Packages []PackageState `json:"packages"`
}

// entry is one uploaded package in memory.
type entry struct {
	id    aempkg.ID
	pkg   *aempkg.Package
	state PackageState
	items int // zip entries, reported by installstatus.jsp while installing
}

// store is the on-disk state. entries is guarded by Sim.mu; the file
// operations themselves need no lock beyond that.
type store struct {
	root    *os.Root
	log     hclog.Logger
	entries map[aempkg.ID]*entry
	seq     atomic.Int64 // names temporary files
}

func openStore(dir string, log hclog.Logger) (*store, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	st := &store{root: root, log: log, entries: map[aempkg.ID]*entry{}}
	if err := root.RemoveAll(tmpDir); err != nil {
		root.Close()
		return nil, err
	}
	for _, d := range []string{tmpDir, packagesDir} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			root.Close()
			return nil, err
		}
	}
	if err := st.load(); err != nil {
		root.Close()
		return nil, err
	}
	return st, nil
}

func (st *store) close() error { return st.root.Close() }

func (st *store) load() error {
	data, err := st.root.ReadFile(stateFileName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return fmt.Errorf("%s: %w", stateFileName, err)
	}
	if sf.Version != stateVersion {
		return fmt.Errorf("%s: unsupported version %d (want %d)", stateFileName, sf.Version, stateVersion)
	}
	for _, ps := range sf.Packages {
		id, err := aempkg.NewID(ps.Group, ps.Name, ps.Version)
		if err != nil {
			st.log.Warn("dropping invalid package from state", "id", ps.ID, "error", err)
			continue
		}
		pkg, items, size, err := st.readZip(zipRel(id))
		if err != nil {
			st.log.Warn("dropping package whose zip is unreadable", "id", id, "error", err)
			continue
		}
		if pkg.ID != id {
			st.log.Warn("dropping package whose zip names another package", "id", id, "zip", pkg.ID)
			continue
		}
		ps.Size = size
		st.entries[id] = &entry{id: id, pkg: pkg, state: ps, items: items}
	}
	return nil
}

// readZip reads package metadata from a zip under the root.
func (st *store) readZip(rel string) (*aempkg.Package, int, int64, error) {
	f, err := st.root.Open(rel)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, 0, err
	}
	zr, err := zip.NewReader(f, fi.Size())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("not a readable zip archive: %w", err)
	}
	pkg, err := aempkg.FromZip(zr)
	if err != nil {
		return nil, 0, 0, err
	}
	return pkg, len(zr.File), fi.Size(), nil
}

// saveLocked writes state.json atomically. Sim.mu must be held.
func (st *store) saveLocked() error {
	sf := stateFile{Version: stateVersion, Packages: []PackageState{}}
	for _, e := range st.entries {
		sf.Packages = append(sf.Packages, e.state)
	}
	slices.SortFunc(sf.Packages, func(a, b PackageState) int { return strings.Compare(a.ID, b.ID) })
	data, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	return st.writeAtomic(stateFileName, append(data, '\n'))
}

// writeAtomic replaces name with data: temp file, fsync, rename, fsync dir.
func (st *store) writeAtomic(name string, data []byte) error {
	tmp := fmt.Sprintf("%s.tmp-%d-%d", name, os.Getpid(), st.seq.Add(1))
	f, err := st.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = st.root.Rename(tmp, name)
	}
	if err != nil {
		_ = st.root.Remove(tmp)
		return err
	}
	return st.syncDir(path.Dir(name))
}

func (st *store) syncDir(dir string) error {
	d, err := st.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// createUpload creates an empty temporary file for an incoming upload and
// returns it with its name relative to the root.
func (st *store) createUpload() (*os.File, string, error) {
	name := path.Join(tmpDir, fmt.Sprintf("upload-%d.zip", st.seq.Add(1)))
	f, err := st.root.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	return f, name, err
}

// commitUpload moves a fully written and fsynced upload to the package's
// place, replacing an older upload of the same id.
func (st *store) commitUpload(tmp string, id aempkg.ID) error {
	rel := zipRel(id)
	if err := st.root.MkdirAll(path.Dir(rel), 0o755); err != nil {
		return err
	}
	if err := st.root.Rename(tmp, rel); err != nil {
		return err
	}
	return st.syncDir(path.Dir(rel))
}

func (st *store) removeZip(id aempkg.ID) error {
	rel := zipRel(id)
	if err := st.root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return st.syncDir(path.Dir(rel))
}

// zipRel is where a package's zip lives under the root. aempkg.NewID has
// already ruled out empty, "." and ".." segments.
func zipRel(id aempkg.ID) string {
	return path.Join(packagesDir, id.Group, id.DownloadName())
}
