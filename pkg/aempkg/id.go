package aempkg

import (
	"fmt"
	"strings"
	"unicode"
)

// PackagesRoot is where the CRX Package Manager stores packages:
// /etc/packages/<group>/<name>-<version>.zip.
const PackagesRoot = "/etc/packages/"

// ID identifies a package: FileVault's PackageId, written group:name:version.
// IDs are comparable and usable as map keys; two IDs are == only when their
// group, name and version strings are identical.
type ID struct {
	Group   string
	Name    string
	Version Version
}

// NewID validates the parts of a package id. Group, name and version are
// all required (FileVault tolerates an empty group; Deckhand does not deploy
// such packages).
//
// The group may contain '/' (nested groups such as "adobe/consulting") but
// no empty, "." or ".." segment and no leading or trailing '/', because it
// becomes a directory path; name and version may not contain '/'. None may
// contain whitespace, control characters or any of \ : , [ ] ( ), which
// would make the id or a dependency on it ambiguous. FileVault is more
// lenient; we prefer a clear error at the start of a deployment to a package
// AEM stores under a surprising path.
func NewID(group, name, version string) (ID, error) {
	if err := checkGroup(group); err != nil {
		return ID{}, err
	}
	if err := checkName(name); err != nil {
		return ID{}, err
	}
	v, err := ParseVersion(version)
	if err != nil {
		return ID{}, err
	}
	return ID{Group: group, Name: name, Version: v}, nil
}

// ParseID parses "group:name:version".
func ParseID(s string) (ID, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return ID{}, fmt.Errorf("package id %q is not group:name:version", s)
	}
	id, err := NewID(parts[0], parts[1], parts[2])
	if err != nil {
		return ID{}, fmt.Errorf("package id %q: %w", s, err)
	}
	return id, nil
}

// String returns group:name:version, the form AEM uses in its messages.
func (id ID) String() string {
	return id.Group + ":" + id.Name + ":" + id.Version.String()
}

// GroupName returns group:name, which identifies a package across versions.
func (id ID) GroupName() string { return id.Group + ":" + id.Name }

// DownloadName returns <name>-<version>.zip, the file name AEM gives the package.
func (id ID) DownloadName() string {
	return id.Name + "-" + id.Version.String() + ".zip"
}

// Path returns the repository path AEM stores the package at,
// /etc/packages/<group>/<name>-<version>.zip.
func (id ID) Path() string {
	return PackagesRoot + id.Group + "/" + id.DownloadName()
}

// badRune reports a rune that may not appear in a group, name or version.
func badRune(r rune, extra string) bool {
	return unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar ||
		strings.ContainsRune(`\:,[]()`+extra, r)
}

func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("package name is empty")
	}
	if name == "." || name == ".." {
		return fmt.Errorf("package name %q is not allowed", name)
	}
	for _, r := range name {
		if badRune(r, "/") {
			return fmt.Errorf("package name %q contains %q", name, r)
		}
	}
	return nil
}

func checkGroup(group string) error {
	if group == "" {
		return fmt.Errorf("package group is empty")
	}
	for _, r := range group {
		if badRune(r, "") {
			return fmt.Errorf("package group %q contains %q", group, r)
		}
	}
	for _, seg := range strings.Split(group, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("package group %q has an empty, '.' or '..' path segment", group)
		}
	}
	return nil
}
