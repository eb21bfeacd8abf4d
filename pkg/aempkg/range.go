package aempkg

import (
	"fmt"
	"strings"
)

// VersionRange is a set of versions, FileVault's VersionRange. An empty Low
// or High is an open bound; the zero VersionRange contains every version
// (FileVault's VersionRange.INFINITE).
type VersionRange struct {
	Low           Version
	LowInclusive  bool
	High          Version
	HighInclusive bool
}

// AnyVersion is the range that contains every version.
var AnyVersion = VersionRange{}

// ExactVersion returns the range that contains only versions comparing equal
// to v ([v,v]).
func ExactVersion(v Version) VersionRange {
	return VersionRange{Low: v, LowInclusive: true, High: v, HighInclusive: true}
}

// ParseRange parses a version range as written in a package's dependencies:
//
//	""            any version
//	"1.0"         1.0 or later (a bare version is a lower bound, not an exact match)
//	"[1.0,2.0)"   1.0 <= v < 2.0; "(" and ")" exclude, "[" and "]" include
//	"(1.0,]"      later than 1.0; an empty bound is open, "(1.0,)" is the same
//	"[,2.0]"      up to and including 2.0
//	"[1.0]"       exactly 1.0 (see below)
//
// Surrounding whitespace and whitespace around the bounds is ignored, as in
// FileVault. FileVault finds the brackets anywhere in the string and ignores
// text after the closing one; we require the range to start with [ or ( and
// end with ] or ), with exactly one comma, and reject anything else rather
// than guess. "[1.0]" is our extension: FileVault has no exact-version
// syntax and would read "[1.0]" as the version string "[1.0]"; reading it as
// Maven's exact range is the only sensible meaning.
//
// Like FileVault, a range whose lower bound is above its upper bound, or
// whose equal bounds are not both inclusive, is an error.
func ParseRange(s string) (VersionRange, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return AnyVersion, nil
	}
	open, close := s[0], s[len(s)-1]
	bracketed := open == '[' || open == '('
	closed := close == ']' || close == ')'
	if !bracketed && !closed {
		v, err := ParseVersion(s)
		if err != nil {
			return VersionRange{}, fmt.Errorf("range %q: %w", s, err)
		}
		return VersionRange{Low: v, LowInclusive: true}, nil
	}
	if !bracketed {
		return VersionRange{}, fmt.Errorf("range %q must start with '[' or '('", s)
	}
	if !closed || len(s) < 2 {
		return VersionRange{}, fmt.Errorf("range %q must end with ']' or ')'", s)
	}
	body := s[1 : len(s)-1]
	parts := strings.Split(body, ",")
	switch len(parts) {
	case 1:
		if open != '[' || close != ']' {
			return VersionRange{}, fmt.Errorf("range %q: a single version must be written [v] (exactly v) or as a bare v (v or later)", s)
		}
		v, err := ParseVersion(strings.TrimSpace(parts[0]))
		if err != nil {
			return VersionRange{}, fmt.Errorf("range %q: %w", s, err)
		}
		return ExactVersion(v), nil
	case 2:
	default:
		return VersionRange{}, fmt.Errorf("range %q has more than one comma", s)
	}
	r := VersionRange{LowInclusive: open == '[', HighInclusive: close == ']'}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		v, err := ParseVersion(p)
		if err != nil {
			return VersionRange{}, fmt.Errorf("range %q: %w", s, err)
		}
		if i == 0 {
			r.Low = v
		} else {
			r.High = v
		}
	}
	// An open bound has no inclusiveness; normalising it keeps == meaningful
	// ("[1.0,]" and "[1.0,)" and "1.0" are the same range).
	if r.Low.IsEmpty() {
		r.LowInclusive = false
	}
	if r.High.IsEmpty() {
		r.HighInclusive = false
	}
	if err := r.validate(); err != nil {
		return VersionRange{}, fmt.Errorf("range %q: %w", s, err)
	}
	return r, nil
}

func (r VersionRange) validate() error {
	if r.Low.IsEmpty() || r.High.IsEmpty() {
		return nil
	}
	switch c := r.Low.Compare(r.High); {
	case c > 0:
		return fmt.Errorf("lower bound %s is above upper bound %s", r.Low, r.High)
	case c == 0 && (!r.LowInclusive || !r.HighInclusive):
		return fmt.Errorf("empty range: equal bounds must both be inclusive")
	}
	return nil
}

// IsAny reports whether r contains every version.
func (r VersionRange) IsAny() bool { return r.Low.IsEmpty() && r.High.IsEmpty() }

// Contains reports whether v is in r (FileVault's isInRange). The empty
// version is below every lower bound, so it is only in ranges without one.
func (r VersionRange) Contains(v Version) bool {
	if !r.Low.IsEmpty() {
		c := v.Compare(r.Low)
		if c < 0 || (c == 0 && !r.LowInclusive) {
			return false
		}
	}
	if !r.High.IsEmpty() {
		c := v.Compare(r.High)
		if c > 0 || (c == 0 && !r.HighInclusive) {
			return false
		}
	}
	return true
}

// String renders r the way FileVault does: "" for any version, "1.0" for an
// inclusive lower bound alone, "(1.0,)" for an exclusive one, "[,2.0)" for an
// upper bound alone and "[1.0,2.0]" otherwise. ParseRange(r.String()) == r.
func (r VersionRange) String() string {
	switch {
	case r.IsAny():
		return ""
	case r.High.IsEmpty():
		if r.LowInclusive {
			return r.Low.String()
		}
		return "(" + r.Low.String() + ",)"
	case r.Low.IsEmpty():
		if r.HighInclusive {
			return "[," + r.High.String() + "]"
		}
		return "[," + r.High.String() + ")"
	}
	b := "("
	if r.LowInclusive {
		b = "["
	}
	b += r.Low.String() + "," + r.High.String()
	if r.HighInclusive {
		return b + "]"
	}
	return b + ")"
}
