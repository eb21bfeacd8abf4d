package aempkg

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// MaxVersionLength bounds the length of a version string. Real package
// versions are a few dozen bytes; the bound keeps the comparison (which nests
// one level per '-' and per digit/letter switch) cheap on hostile input.
const MaxVersionLength = 256

// Version is a package version, the counterpart of FileVault's
// org.apache.jackrabbit.vault.packaging.Version.
//
// The zero Version is FileVault's Version.EMPTY: "no version", used as an
// open bound in a VersionRange. Two Versions are == when their strings are
// equal, like FileVault's equals; Compare can still report 0 for different
// strings ("1.0" and "1"), so use Compare for ordering and == for identity.
type Version struct {
	s string
}

// ParseVersion validates s and returns it as a Version.
//
// FileVault accepts any string as a version. We reject the empty string and
// strings containing whitespace, control characters or any of / \ : , [ ] ( )
// because those would make a package id (group:name:version), its storage
// path (/etc/packages/group/name-version.zip) or a dependency range that
// names it ambiguous.
func ParseVersion(s string) (Version, error) {
	if s == "" {
		return Version{}, fmt.Errorf("version is empty")
	}
	if len(s) > MaxVersionLength {
		return Version{}, fmt.Errorf("version %.40q... is longer than %d bytes", s, MaxVersionLength)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
			return Version{}, fmt.Errorf("version %q contains whitespace, a control character or invalid UTF-8", s)
		}
		if strings.ContainsRune(`/\:,[]()`, r) {
			return Version{}, fmt.Errorf("version %q contains %q", s, r)
		}
	}
	return Version{s: s}, nil
}

// MustParseVersion is ParseVersion for constants in tests and tables; it
// panics on an invalid version.
func MustParseVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String returns the version exactly as it was written.
func (v Version) String() string { return v.s }

// IsEmpty reports whether v is the empty version (no bound).
func (v Version) IsEmpty() bool { return v.s == "" }

// IsSnapshot reports whether the version ends in "SNAPSHOT", FileVault's
// (case-sensitive) test for a mutable version.
func (v Version) IsSnapshot() bool { return strings.HasSuffix(v.s, "SNAPSHOT") }

// Compare orders v against o and returns -1, 0 or +1.
//
// This is FileVault's Version.compareTo, which since FileVault 3.7.0
// (JCRVLT-672) delegates to Maven's ComparableVersion from the embedded
// maven-artifact 3.8.4. Before that, FileVault compared segments (split on
// '.' and on the first '-') numerically when both were numbers, else
// lexically, so 1.0-SNAPSHOT ranked above 1.0 and 1.1-SNAPSHOT above
// 1.1-R12345; AEM instances with an older FileVault order such edge cases
// differently (we have not verified which AEM 6.5 service pack switched).
// We chose the current algorithm because it is what AEM as a Cloud Service
// and recent AEM 6.5 service packs run, and because it ranks a SNAPSHOT below
// its release, which is what a deployment expects.
//
// The Maven rules, briefly: the string is lower-cased; '.' separates items,
// '-' and every switch between digits and letters start a nested sub-list;
// numbers compare numerically (any size); the qualifiers alpha (a<digit>),
// beta (b<digit>), milestone (m<digit>), rc (cr), snapshot, "" (ga, final) and
// sp rank in that order and every other qualifier ranks after them,
// lexically; trailing zeros and release qualifiers are dropped
// ("1.0.0" == "1" == "1-ga"). So 1.0-alpha-1 < 1.0-beta < 1.0-rc1 <
// 1.0-SNAPSHOT < 1.0 < 1.0-sp < 1.0-foo < 1.0-1 < 1.0.1.
//
// Choices where maven-artifact releases differ, matching 3.8.x: "release"
// is not an alias of "" (it became one in Maven 3.9, MNG-7559); ".X" is not
// treated as "-X" (Maven 3.9, MNG-7644); a sub-list compares against a
// missing item by all of its items, not just the first (MNG-6964, which we
// believe is in 3.8.x; it only matters for versions such as "1-0.alpha").
// Only ASCII 0-9 count as digits; Java's Character.isDigit also accepts
// other Unicode decimal digits, which no real package version uses.
func (v Version) Compare(o Version) int {
	if v.s == o.s {
		return 0
	}
	return compareItems(parseComparable(v.s), parseComparable(o.s))
}

// itemKind is the kind of one element of a parsed version: ComparableVersion's
// IntItem/LongItem/BigIntegerItem (all one kind here), StringItem, ListItem.
type itemKind uint8

const (
	intItem itemKind = iota
	stringItem
	listItem
)

// item is one element of a parsed version.
type item struct {
	kind itemKind
	// num holds an intItem as decimal digits without leading zeros;
	// "" is zero. Numbers compare by length then lexically, so any size works.
	num string
	// str holds a stringItem after lower-casing and aliasing.
	str  string
	list []*item
}

// qualifiers are Maven's well-known qualifiers in ascending order; "" is a
// release.
var qualifiers = []string{"alpha", "beta", "milestone", "rc", "snapshot", "", "sp"}

// releaseIndex is comparableQualifier("").
const releaseIndex = "5"

// comparableQualifier maps a qualifier to a string whose lexical order is the
// qualifier order: the index of a known qualifier, else "7-" plus the
// qualifier, so unknown qualifiers sort after all known ones.
func comparableQualifier(q string) string {
	for i, k := range qualifiers {
		if q == k {
			return strconv.Itoa(i)
		}
	}
	return strconv.Itoa(len(qualifiers)) + "-" + q
}

func newStringItem(s string, followedByDigit bool) *item {
	if followedByDigit && len(s) == 1 {
		switch s {
		case "a":
			s = "alpha"
		case "b":
			s = "beta"
		case "m":
			s = "milestone"
		}
	}
	switch s {
	case "ga", "final":
		s = ""
	case "cr":
		s = "rc"
	}
	return &item{kind: stringItem, str: s}
}

func newNumberItem(digits string) *item {
	return &item{kind: intItem, num: strings.TrimLeft(digits, "0")}
}

func parseItem(isDigit bool, s string) *item {
	if isDigit {
		return newNumberItem(s)
	}
	return newStringItem(s, false)
}

// parseComparable parses a version into Maven's item tree (ComparableVersion.parseVersion).
func parseComparable(v string) *item {
	v = strings.ToLower(v)
	root := &item{kind: listItem}
	list := root
	stack := []*item{root}
	push := func() {
		sub := &item{kind: listItem}
		list.list = append(list.list, sub)
		list = sub
		stack = append(stack, sub)
	}
	isDigit := false
	start := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '.' || c == '-':
			if i == start {
				list.list = append(list.list, newNumberItem(""))
			} else {
				list.list = append(list.list, parseItem(isDigit, v[start:i]))
			}
			start = i + 1
			if c == '-' {
				push()
			}
		case c >= '0' && c <= '9':
			if !isDigit && i > start {
				list.list = append(list.list, newStringItem(v[start:i], true))
				start = i
				push()
			}
			isDigit = true
		default:
			if isDigit && i > start {
				list.list = append(list.list, parseItem(true, v[start:i]))
				start = i
				push()
			}
			isDigit = false
		}
	}
	if len(v) > start {
		list.list = append(list.list, parseItem(isDigit, v[start:]))
	}
	// Normalise innermost lists first so a list emptied by normalisation is
	// itself removed by its parent.
	for i := len(stack) - 1; i >= 0; i-- {
		normalize(stack[i])
	}
	return root
}

func isNull(it *item) bool {
	switch it.kind {
	case intItem:
		return it.num == ""
	case stringItem:
		return it.str == ""
	default:
		return len(it.list) == 0
	}
}

// normalize removes trailing null items (0, "", empty lists), stepping over
// non-null sub-lists, as ListItem.normalize does.
func normalize(l *item) {
	for i := len(l.list) - 1; i >= 0; i-- {
		it := l.list[i]
		if isNull(it) {
			l.list = append(l.list[:i], l.list[i+1:]...)
		} else if it.kind != listItem {
			break
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// compareToMissing compares it against an absent item (Java's compareTo(null)).
func compareToMissing(it *item) int {
	switch it.kind {
	case intItem:
		if it.num == "" {
			return 0
		}
		return 1
	case stringItem:
		return sign(strings.Compare(comparableQualifier(it.str), releaseIndex))
	default:
		for _, c := range it.list {
			if r := compareToMissing(c); r != 0 {
				return r
			}
		}
		return 0
	}
}

func compareNumbers(a, b string) int {
	if len(a) != len(b) {
		return sign(len(a) - len(b))
	}
	return strings.Compare(a, b)
}

// compareItems is Item.compareTo; b may be nil (absent).
func compareItems(a, b *item) int {
	if b == nil {
		return compareToMissing(a)
	}
	switch a.kind {
	case intItem:
		switch b.kind {
		case intItem:
			return compareNumbers(a.num, b.num)
		default:
			return 1 // 1.1 > 1-sp, 1.1 > 1-1
		}
	case stringItem:
		switch b.kind {
		case stringItem:
			return sign(strings.Compare(comparableQualifier(a.str), comparableQualifier(b.str)))
		default:
			return -1 // 1.any < 1.1, 1.any < 1-1
		}
	default:
		switch b.kind {
		case intItem:
			return -1 // 1-1 < 1.0.x
		case stringItem:
			return 1 // 1-1 > 1-sp
		}
		for i := 0; i < len(a.list) || i < len(b.list); i++ {
			var r int
			switch {
			case i >= len(a.list):
				r = -compareToMissing(b.list[i])
			case i >= len(b.list):
				r = compareToMissing(a.list[i])
			default:
				r = compareItems(a.list[i], b.list[i])
			}
			if r != 0 {
				return r
			}
		}
		return 0
	}
}
