// Package aempkgtest builds AEM content package zips for tests: real zips
// with a Java XML properties.xml and a filter.xml, generated in memory so no
// binary fixtures need to be committed.
package aempkgtest

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Zip returns a zip holding files (name -> content). A name ending in "/" is
// a directory entry. Entries are written in sorted order so the bytes are
// deterministic.
func Zip(files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			panic(err)
		}
		if strings.HasSuffix(n, "/") {
			continue // directory entries carry no data; their content is ignored
		}
		if _, err := w.Write([]byte(files[n])); err != nil {
			panic(err)
		}
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// PropertiesXML renders props the way java.util.Properties.storeToXML does,
// keys sorted.
func PropertiesXML(props map[string]string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="no"?>` + "\n")
	b.WriteString(`<!DOCTYPE properties SYSTEM "http://java.sun.com/dtd/properties.dtd">` + "\n")
	b.WriteString("<properties>\n<comment>FileVault Package Properties</comment>\n")
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(`<entry key="`)
		xml.EscapeText(&b, []byte(k))
		b.WriteString(`">`)
		xml.EscapeText(&b, []byte(props[k]))
		b.WriteString("</entry>\n")
	}
	b.WriteString("</properties>\n")
	return b.String()
}

// FilterXML renders a filter.xml with one replace-mode filter per root.
func FilterXML(roots ...string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<workspaceFilter version=\"1.0\">\n")
	for _, r := range roots {
		b.WriteString(`  <filter root="`)
		xml.EscapeText(&b, []byte(r))
		b.WriteString("\"/>\n")
	}
	b.WriteString("</workspaceFilter>\n")
	return b.String()
}

// Spec describes a package to build.
type Spec struct {
	Group, Name, Version string
	// Dependencies is the raw "dependencies" property; empty leaves it out.
	Dependencies string
	// Extra properties; they override the ones above.
	Props map[string]string
	// Files are extra zip entries, e.g. "jcr_root/apps/x/.content.xml".
	Files map[string]string
}

// Package builds a content package zip from s, with a filter on
// /apps/<name> and one content file.
func Package(s Spec) []byte {
	props := map[string]string{}
	if s.Group != "" {
		props["group"] = s.Group
	}
	if s.Name != "" {
		props["name"] = s.Name
	}
	if s.Version != "" {
		props["version"] = s.Version
	}
	if s.Dependencies != "" {
		props["dependencies"] = s.Dependencies
	}
	for k, v := range s.Props {
		props[k] = v
	}
	files := map[string]string{
		"META-INF/vault/properties.xml":             PropertiesXML(props),
		"META-INF/vault/filter.xml":                 FilterXML("/apps/" + s.Name),
		"jcr_root/apps/" + s.Name + "/.content.xml": `<?xml version="1.0" encoding="UTF-8"?><jcr:root xmlns:jcr="http://www.jcp.org/jcr/1.0" jcr:primaryType="nt:folder"/>`,
	}
	for k, v := range s.Files {
		files[k] = v
	}
	return Zip(files)
}

// WriteFile writes data to dir/name and returns the path; it fails the test
// on error.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
