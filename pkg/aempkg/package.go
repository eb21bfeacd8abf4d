package aempkg

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Paths of the package metadata inside a package zip.
const (
	PropertiesPath = "META-INF/vault/properties.xml"
	FilterPath     = "META-INF/vault/filter.xml"
)

// MaxMetadataSize bounds the uncompressed size of properties.xml and
// filter.xml. Real ones are a few KiB; the bound stops a zip bomb or a
// mislabelled blob from being read into memory.
const MaxMetadataSize = 1 << 20

// Property names with a meaning to Deckhand.
const (
	PropName         = "name"
	PropGroup        = "group"
	PropVersion      = "version"
	PropDependencies = "dependencies"
)

// ErrNoProperties is returned (wrapped) when a zip has no
// META-INF/vault/properties.xml: it is not a content package at all.
var ErrNoProperties = errors.New("no " + PropertiesPath)

// MissingPropertiesError is returned when properties.xml lacks a required
// property (name, group or version) or has it empty. Names lists every
// missing one, in that order.
type MissingPropertiesError struct {
	Names []string
}

func (e *MissingPropertiesError) Error() string {
	word := "property"
	if len(e.Names) > 1 {
		word = "properties"
	}
	return fmt.Sprintf("%s is missing required %s %s", PropertiesPath, word, strings.Join(e.Names, ", "))
}

// Package is the metadata of one content package.
type Package struct {
	ID ID
	// Properties holds every entry of properties.xml, including name, group
	// and version. Never nil.
	Properties map[string]string
	// Dependencies is the parsed "dependencies" property; nil when there are none.
	Dependencies []Dependency
	// Filters is the parsed filter.xml in document order; nil when the
	// package has no filter.xml (AEM then installs nothing but the metadata).
	Filters []FilterSet
}

// ReadFile reads the metadata of the package zip at path.
func ReadFile(path string) (*Package, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	p, err := Read(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Read reads the metadata of a package zip of the given size. Only the two
// metadata entries are read; content is never touched.
func Read(r io.ReaderAt, size int64) (*Package, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("not a readable zip archive: %w", err)
	}
	return FromZip(zr)
}

// FromZip reads the metadata of an already opened package zip. A zip with
// two entries under the same metadata name is rejected, because different
// zip readers would disagree about which one counts.
func FromZip(zr *zip.Reader) (*Package, error) {
	props, err := findEntry(zr, PropertiesPath)
	if err != nil {
		return nil, err
	}
	if props == nil {
		return nil, ErrNoProperties
	}
	data, err := readEntry(props)
	if err != nil {
		return nil, err
	}
	m, err := ParseProperties(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PropertiesPath, err)
	}
	p, err := FromProperties(m)
	if err != nil {
		return nil, err
	}
	filter, err := findEntry(zr, FilterPath)
	if err != nil {
		return nil, err
	}
	if filter != nil {
		data, err := readEntry(filter)
		if err != nil {
			return nil, err
		}
		p.Filters, err = ParseFilter(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", FilterPath, err)
		}
	}
	return p, nil
}

// FromProperties builds a Package (without filters) from parsed properties,
// checking the required ones and parsing the dependencies.
func FromProperties(props map[string]string) (*Package, error) {
	var missing []string
	for _, k := range []string{PropName, PropGroup, PropVersion} {
		if props[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingPropertiesError{Names: missing}
	}
	id, err := NewID(props[PropGroup], props[PropName], props[PropVersion])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PropertiesPath, err)
	}
	deps, err := ParseDependencies(props[PropDependencies])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", PropertiesPath, err)
	}
	if props == nil {
		props = map[string]string{}
	}
	return &Package{ID: id, Properties: props, Dependencies: deps}, nil
}

func findEntry(zr *zip.Reader, name string) (*zip.File, error) {
	var found *zip.File
	for _, f := range zr.File {
		if f.Name != name {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("zip has more than one %s entry", name)
		}
		found = f
	}
	return found, nil
}

// readEntry reads a metadata entry, failing when it is (or claims to be)
// larger than MaxMetadataSize. Reading to EOF makes archive/zip verify the
// entry's CRC.
func readEntry(f *zip.File) ([]byte, error) {
	if f.UncompressedSize64 > MaxMetadataSize {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed", f.Name, f.UncompressedSize64, MaxMetadataSize)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, MaxMetadataSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	if len(data) > MaxMetadataSize {
		return nil, fmt.Errorf("%s is more than the %d bytes allowed", f.Name, MaxMetadataSize)
	}
	return data, nil
}

// SortedPropertyNames returns the property names of p in lexical order, for
// stable output.
func (p *Package) SortedPropertyNames() []string {
	names := make([]string, 0, len(p.Properties))
	for k := range p.Properties {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
