package aempkg

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ParseProperties parses a Java XML properties document (the format of
// java.util.Properties.storeToXML, which FileVault uses for properties.xml):
//
//	<!DOCTYPE properties SYSTEM "http://java.sun.com/dtd/properties.dtd">
//	<properties>
//	  <comment>optional</comment>
//	  <entry key="name">value</entry>
//	</properties>
//
// Values are kept verbatim (Java does not trim them). A repeated key keeps
// the last value, as Properties.loadFromXML does. An entry without a key,
// markup inside an entry, or an element other than comment and entry is an
// error, as it would be for Java's validating loader. Only UTF-8, US-ASCII
// and ISO-8859-1 documents are accepted; FileVault writes UTF-8. r is read
// to its end: callers bound its size (FromZip reads at most MaxMetadataSize).
func ParseProperties(r io.Reader) (map[string]string, error) {
	dec := newDecoder(r)
	props := map[string]string{}
	seenRoot := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if seenRoot {
				return nil, fmt.Errorf("unexpected element <%s> after </properties>", t.Name.Local)
			}
			if t.Name.Local != "properties" {
				return nil, fmt.Errorf("root element is <%s>, want <properties>", t.Name.Local)
			}
			seenRoot = true
			if err := parsePropertiesBody(dec, props); err != nil {
				return nil, err
			}
		case xml.CharData:
			if !isXMLSpace(t) {
				return nil, errors.New("text outside the <properties> element")
			}
		}
	}
	if !seenRoot {
		return nil, errors.New("no <properties> element")
	}
	return props, nil
}

// parsePropertiesBody reads the children of <properties> up to its end tag.
func parsePropertiesBody(dec *xml.Decoder, props map[string]string) error {
	for {
		tok, err := dec.Token()
		if err != nil {
			return unexpectedEOF(err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.CharData:
			if !isXMLSpace(t) {
				return errors.New("text directly inside <properties>")
			}
		case xml.StartElement:
			switch t.Name.Local {
			case "comment":
				if _, err := textContent(dec, "comment"); err != nil {
					return err
				}
			case "entry":
				key, ok := attr(t, "key")
				if !ok {
					return errors.New("<entry> without a key attribute")
				}
				v, err := textContent(dec, "entry")
				if err != nil {
					return fmt.Errorf("entry %q: %w", key, err)
				}
				props[key] = v
			default:
				return fmt.Errorf("unexpected element <%s> in <properties>", t.Name.Local)
			}
		}
	}
}

// textContent reads character data up to the end tag of the element just
// opened; any nested element is an error.
func textContent(dec *xml.Decoder, elem string) (string, error) {
	var b strings.Builder
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", unexpectedEOF(err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			b.Write(t)
		case xml.EndElement:
			return b.String(), nil
		case xml.StartElement:
			return "", fmt.Errorf("unexpected element <%s> inside <%s>", t.Name.Local, elem)
		}
	}
}

// ImportMode is how AEM imports a filter root (FileVault's ImportMode).
type ImportMode string

// The import modes FileVault knows. Replace is the default.
const (
	ModeReplace          ImportMode = "replace"
	ModeMerge            ImportMode = "merge"
	ModeMergeProperties  ImportMode = "merge_properties"
	ModeUpdate           ImportMode = "update"
	ModeUpdateProperties ImportMode = "update_properties"
)

// ParseImportMode parses a filter mode attribute case-insensitively, as
// FileVault does (ImportMode.valueOf(mode.toUpperCase())). Empty means replace.
func ParseImportMode(s string) (ImportMode, error) {
	if s == "" {
		return ModeReplace, nil
	}
	m := ImportMode(strings.ToLower(s))
	switch m {
	case ModeReplace, ModeMerge, ModeMergeProperties, ModeUpdate, ModeUpdateProperties:
		return m, nil
	}
	return "", fmt.Errorf("unknown filter mode %q (want replace, merge, merge_properties, update or update_properties)", s)
}

// FilterRule is one include or exclude pattern of a filter root, in document
// order (the order decides which rule wins in FileVault).
type FilterRule struct {
	Include bool
	// Pattern is a regular expression over repository paths, kept verbatim.
	Pattern string
	// MatchProperties is set when the rule applies to property paths.
	MatchProperties bool
}

// FilterSet is one <filter> of filter.xml.
type FilterSet struct {
	Root string
	Mode ImportMode
	// Type is the optional type attribute ("cleanup"), empty otherwise.
	Type  string
	Rules []FilterRule
}

// ParseFilter parses a FileVault workspace filter (filter.xml):
//
//	<workspaceFilter version="1.0">
//	  <filter root="/apps/x" mode="merge">
//	    <include pattern="/apps/x/a(/.*)?"/>
//	    <exclude pattern="/apps/x/b"/>
//	  </filter>
//	</workspaceFilter>
//
// Every filter needs an absolute root; include and exclude need a pattern;
// unknown elements are errors. An empty workspaceFilter is valid (nil).
func ParseFilter(r io.Reader) ([]FilterSet, error) {
	dec := newDecoder(r)
	var sets []FilterSet
	seenRoot := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if seenRoot {
				return nil, fmt.Errorf("unexpected element <%s> after </workspaceFilter>", t.Name.Local)
			}
			if t.Name.Local != "workspaceFilter" {
				return nil, fmt.Errorf("root element is <%s>, want <workspaceFilter>", t.Name.Local)
			}
			seenRoot = true
			sets, err = parseFilterBody(dec)
			if err != nil {
				return nil, err
			}
		case xml.CharData:
			if !isXMLSpace(t) {
				return nil, errors.New("text outside the <workspaceFilter> element")
			}
		}
	}
	if !seenRoot {
		return nil, errors.New("no <workspaceFilter> element")
	}
	return sets, nil
}

func parseFilterBody(dec *xml.Decoder) ([]FilterSet, error) {
	var sets []FilterSet
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return sets, nil
		case xml.CharData:
			if !isXMLSpace(t) {
				return nil, errors.New("text directly inside <workspaceFilter>")
			}
		case xml.StartElement:
			if t.Name.Local != "filter" {
				return nil, fmt.Errorf("unexpected element <%s> in <workspaceFilter>", t.Name.Local)
			}
			set, err := parseFilterSet(dec, t)
			if err != nil {
				return nil, err
			}
			sets = append(sets, set)
		}
	}
}

func parseFilterSet(dec *xml.Decoder, start xml.StartElement) (FilterSet, error) {
	root, _ := attr(start, "root")
	if !strings.HasPrefix(root, "/") {
		return FilterSet{}, fmt.Errorf("<filter> root %q is not an absolute repository path", root)
	}
	modeAttr, _ := attr(start, "mode")
	mode, err := ParseImportMode(modeAttr)
	if err != nil {
		return FilterSet{}, fmt.Errorf("filter %s: %w", root, err)
	}
	typ, _ := attr(start, "type")
	set := FilterSet{Root: root, Mode: mode, Type: typ}
	for {
		tok, err := dec.Token()
		if err != nil {
			return FilterSet{}, unexpectedEOF(err)
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return set, nil
		case xml.CharData:
			if !isXMLSpace(t) {
				return FilterSet{}, fmt.Errorf("filter %s: unexpected text", root)
			}
		case xml.StartElement:
			var include bool
			switch t.Name.Local {
			case "include":
				include = true
			case "exclude":
			default:
				return FilterSet{}, fmt.Errorf("filter %s: unexpected element <%s>", root, t.Name.Local)
			}
			pattern, _ := attr(t, "pattern")
			if pattern == "" {
				return FilterSet{}, fmt.Errorf("filter %s: <%s> without a pattern", root, t.Name.Local)
			}
			mp, _ := attr(t, "matchProperties")
			if _, err := textContent(dec, t.Name.Local); err != nil {
				return FilterSet{}, fmt.Errorf("filter %s: %w", root, err)
			}
			set.Rules = append(set.Rules, FilterRule{
				Include:         include,
				Pattern:         pattern,
				MatchProperties: strings.EqualFold(mp, "true"),
			})
		}
	}
}

func newDecoder(r io.Reader) *xml.Decoder {
	dec := xml.NewDecoder(r)
	dec.Strict = true
	dec.CharsetReader = charsetReader
	return dec
}

// charsetReader accepts the encodings a properties or filter file might
// declare besides UTF-8 (which encoding/xml handles itself).
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "us-ascii", "ascii":
		return in, nil
	case "iso-8859-1", "iso8859-1", "latin1", "latin-1":
		return &latin1Reader{r: bufio.NewReader(in)}, nil
	}
	return nil, fmt.Errorf("unsupported XML encoding %q (want UTF-8)", label)
}

// latin1Reader converts ISO-8859-1 bytes to UTF-8.
type latin1Reader struct {
	r   *bufio.Reader
	buf []byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	for len(l.buf) < len(p) {
		c, err := l.r.ReadByte()
		if err != nil {
			if len(l.buf) > 0 {
				break
			}
			return 0, err
		}
		l.buf = utf8.AppendRune(l.buf, rune(c))
	}
	n := copy(p, l.buf)
	l.buf = l.buf[n:]
	return n, nil
}

func attr(e xml.StartElement, name string) (string, bool) {
	for _, a := range e.Attr {
		if a.Name.Local == name && a.Name.Space == "" {
			return a.Value, true
		}
	}
	return "", false
}

func isXMLSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
