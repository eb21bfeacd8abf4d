// Package classify owns the decision of what a deployment artifact is: an
// AEM content package (deployed through the CRX Package Manager) or a
// dispatcher configuration in the AMS layout (extracted into the httpd
// directory), the two kinds of zip Cloud Manager deploys. It only looks at
// the zip's directory and the package metadata; it neither extracts nor
// validates the dispatcher files themselves.
package classify

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
)

// Kind is what an artifact is.
type Kind int

const (
	// Unknown is never returned with a nil error.
	Unknown Kind = iota
	// AEMPackage is a content package: it has META-INF/vault/properties.xml.
	AEMPackage
	// DispatcherConfig is a dispatcher configuration: conf/ and conf.d/.
	DispatcherConfig
)

func (k Kind) String() string {
	switch k {
	case AEMPackage:
		return "aem-package"
	case DispatcherConfig:
		return "dispatcher-config"
	}
	return "unknown"
}

// Result describes a classified artifact.
type Result struct {
	Kind Kind
	// Package is the parsed package metadata when Kind is AEMPackage.
	Package *aempkg.Package
	// Root is, for a DispatcherConfig, the directory inside the zip that
	// holds conf/ and conf.d/: "" for the zip root, or "name/" for a single
	// wrapper directory.
	Root string
	// Dirs are, for a DispatcherConfig, the directories directly under Root,
	// sorted (e.g. conf, conf.d, conf.dispatcher.d, conf.modules.d).
	Dirs []string
}

// ErrNotZip is wrapped by errors for artifacts that are not readable zips.
var ErrNotZip = errors.New("not a zip archive")

// ErrUnrecognized matches (errors.Is) an *UnrecognizedError.
var ErrUnrecognized = errors.New("unrecognized artifact")

// UnrecognizedError is returned for a zip that is neither kind. The reasons
// say what each kind would have needed.
type UnrecognizedError struct {
	Artifact         string
	PackageReason    string
	DispatcherReason string
}

func (e *UnrecognizedError) Error() string {
	return fmt.Sprintf("artifact %s is neither an AEM content package (%s) nor a dispatcher configuration (%s)",
		e.Artifact, e.PackageReason, e.DispatcherReason)
}

// Is makes errors.Is(err, ErrUnrecognized) true.
func (e *UnrecognizedError) Is(target error) bool { return target == ErrUnrecognized }

// Classify opens the zip at path and says what it is.
//
// A zip with META-INF/vault/properties.xml is a content package; if that
// file is invalid or lacks name, group or version, the error says so rather
// than falling through to the dispatcher check, because the author clearly
// meant a package. Otherwise a zip with top-level conf/ and conf.d/
// directories is a dispatcher configuration. We also accept those
// directories inside exactly one wrapper directory when nothing else is at
// the top level (macOS's __MACOSX/ and .DS_Store aside), because that is what
// zipping the directory itself ("zip -r dispatcher.zip dispatcher/") gives;
// a deeper or ambiguous layout is rejected rather than searched. Anything
// else is an error saying why it is neither.
func Classify(path string) (Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("artifact %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Result{}, fmt.Errorf("artifact %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return Result{}, fmt.Errorf("artifact %s is not a regular file", path)
	}
	return ClassifyReader(f, st.Size(), filepath.Base(path))
}

// ClassifyReader is Classify for an artifact already open; name is used in
// error messages only.
func ClassifyReader(r io.ReaderAt, size int64, name string) (Result, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return Result{}, fmt.Errorf("artifact %s is %w (%v)", name, ErrNotZip, err)
	}
	pkg, err := aempkg.FromZip(zr)
	switch {
	case err == nil:
		return Result{Kind: AEMPackage, Package: pkg}, nil
	case !errors.Is(err, aempkg.ErrNoProperties):
		return Result{}, fmt.Errorf("artifact %s is an AEM content package with invalid metadata: %w", name, err)
	}

	top := topLevel(zr.File, "")
	if top.dirs["conf"] && top.dirs["conf.d"] {
		return dispatcherResult("", top), nil
	}
	look, where := top, ""
	if len(top.all) == 1 && !top.dirs["conf"] && !top.dirs["conf.d"] {
		for wrapper := range top.all {
			if !top.dirs[wrapper] {
				break
			}
			inner := topLevel(zr.File, wrapper+"/")
			if inner.dirs["conf"] && inner.dirs["conf.d"] {
				return dispatcherResult(wrapper+"/", inner), nil
			}
			look, where = inner, " in "+wrapper+"/"
		}
	}

	var why string
	switch {
	case len(zr.File) == 0:
		why = "the zip is empty"
	case look.dirs["conf"]:
		why = "has conf/ but no conf.d/ directory" + where
	case look.dirs["conf.d"]:
		why = "has conf.d/ but no conf/ directory" + where
	default:
		why = "no conf/ and conf.d/ directories"
	}
	pkgWhy := "no " + aempkg.PropertiesPath
	if top.dirs["jcr_root"] {
		pkgWhy = "has jcr_root/ but no " + aempkg.PropertiesPath
	}
	return Result{}, &UnrecognizedError{Artifact: name, PackageReason: pkgWhy, DispatcherReason: why}
}

// names lists the entries directly under a prefix of a zip.
type names struct {
	dirs map[string]bool // names with something below them
	all  map[string]bool // files and directories, minus macOS metadata
}

// topLevel collects the first path element below prefix of every entry.
func topLevel(files []*zip.File, prefix string) names {
	n := names{dirs: map[string]bool{}, all: map[string]bool{}}
	for _, f := range files {
		rest, ok := strings.CutPrefix(f.Name, prefix)
		if !ok || rest == "" {
			continue
		}
		first, _, isDir := strings.Cut(rest, "/")
		if first == "" {
			continue // an absolute name or "//"; not ours to judge here
		}
		if prefix == "" && (first == "__MACOSX" || first == ".DS_Store") {
			continue
		}
		n.all[first] = true
		if isDir {
			n.dirs[first] = true
		}
	}
	return n
}

func dispatcherResult(root string, n names) Result {
	dirs := make([]string, 0, len(n.dirs))
	for d := range n.dirs {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	return Result{Kind: DispatcherConfig, Root: root, Dirs: dirs}
}
