package aempkg

import (
	"errors"
	"fmt"
	"strings"
)

// Dependency is a reference from one package to others, FileVault's
// Dependency: a group, a name and a version range. Group is empty for the
// legacy name-only form; like FileVault, such a dependency only matches
// packages whose group is empty too.
type Dependency struct {
	Group string
	Name  string
	Range VersionRange
}

// ParseDependency parses one dependency in any of the forms FileVault's
// Dependency.fromString accepts:
//
//	group:name:range    the current form; the range may be empty (any version)
//	group:name          any version
//	name                name only, empty group
//	group/sub/name      legacy: the group is everything before the last '/'
//	group/sub/name:range  legacy with a range, when the part after ':' starts
//	                    with a digit, '[' or '('
//
// A group starting with /etc/packages/ has that prefix removed, as in
// FileVault. Surrounding whitespace is ignored. Unlike FileVault, which
// silently ignores a fourth ':'-separated part and accepts any characters,
// a malformed dependency is an error naming the problem. FileVault checks
// for ')' (not '(') when recognising the legacy range form, which looks like
// a slip; we accept both.
func ParseDependency(s string) (Dependency, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Dependency{}, errors.New("empty dependency")
	}
	segs := strings.Split(s, ":")
	var group, name, rng string
	switch len(segs) {
	case 1:
		name = segs[0]
		if i := strings.LastIndexByte(name, '/'); i >= 0 {
			group, name = name[:i], name[i+1:]
		}
	case 2:
		group, name = segs[0], segs[1]
		isVersion := name == "" || (name[0] >= '0' && name[0] <= '9') || name[0] == '[' || name[0] == '('
		if i := strings.LastIndexByte(name, '/'); i >= 0 && group == "" {
			group, name = name[:i], name[i+1:]
		} else if i := strings.LastIndexByte(group, '/'); i >= 0 && isVersion {
			group, name, rng = segs[0][:i], segs[0][i+1:], segs[1]
		}
	case 3:
		group, name, rng = segs[0], segs[1], segs[2]
	default:
		return Dependency{}, fmt.Errorf("dependency %q has more than three ':'-separated parts", s)
	}
	group = strings.TrimPrefix(strings.TrimSpace(group), PackagesRoot)
	name = strings.TrimSpace(name)
	if group != "" {
		if err := checkGroup(group); err != nil {
			return Dependency{}, fmt.Errorf("dependency %q: %w", s, err)
		}
	}
	if err := checkName(name); err != nil {
		return Dependency{}, fmt.Errorf("dependency %q: %w", s, err)
	}
	r, err := ParseRange(rng)
	if err != nil {
		return Dependency{}, fmt.Errorf("dependency %q: %w", s, err)
	}
	return Dependency{Group: group, Name: name, Range: r}, nil
}

// ParseDependencies parses the comma-separated dependency list of a
// package's "dependencies" property. Commas inside a range's brackets do not
// split ("a:b:[1.0,2.0),c:d"). Whitespace around items is ignored and empty
// items (a trailing comma) are skipped. Every malformed item is reported,
// each error naming the item; on error no dependencies are returned.
//
// FileVault only treats '[' or '(' as opening a range right after a ':', and
// turns an empty middle item into a null entry; we treat any bracket as
// opening one (a bracket can appear nowhere else in a valid item) and skip
// empty items.
func ParseDependencies(s string) ([]Dependency, error) {
	var items []string
	inRange := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',':
			if !inRange {
				items = append(items, s[start:i])
				start = i + 1
			}
		case '[', '(':
			inRange = true
		case ']', ')':
			inRange = false
		}
	}
	items = append(items, s[start:])
	var deps []Dependency
	var errs []error
	for _, it := range items {
		if strings.TrimSpace(it) == "" {
			continue
		}
		d, err := ParseDependency(it)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		deps = append(deps, d)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid dependencies: %w", errors.Join(errs...))
	}
	return deps, nil
}

// String renders d as FileVault does: group:name:range, leaving out an
// unbounded range, and leaving out the group too when it is empty and the
// range is unbounded.
//
// One exception keeps ParseDependency(d.String()) == d: FileVault would
// write group "a/b", name "2fa", any version as "a/b:2fa", which its own
// parser (and ours) reads back in the legacy form as group "a", name "b",
// range "2fa". For such a name under a nested group we write the unbounded
// range explicitly, "a/b:2fa:[,]", which FileVault also parses correctly.
func (d Dependency) String() string {
	if d.Range.IsAny() && strings.Contains(d.Group, "/") && d.Name != "" &&
		(d.Name[0] >= '0' && d.Name[0] <= '9' || d.Name[0] == '[' || d.Name[0] == '(') {
		return d.Group + ":" + d.Name + ":[,]"
	}
	var b strings.Builder
	if d.Group != "" || !d.Range.IsAny() {
		b.WriteString(d.Group)
		b.WriteByte(':')
	}
	b.WriteString(d.Name)
	if !d.Range.IsAny() {
		b.WriteByte(':')
		b.WriteString(d.Range.String())
	}
	return b.String()
}

// Matches reports whether the package id satisfies d: same group, same name
// and a version in d's range.
func (d Dependency) Matches(id ID) bool {
	return d.Group == id.Group && d.Name == id.Name && d.Range.Contains(id.Version)
}
