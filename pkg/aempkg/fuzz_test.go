package aempkg

import (
	"strings"
	"testing"
)

// The fuzz targets check that the parsers never panic and that what they
// accept survives a String/parse round trip. Seeds live in testdata/fuzz/.

func FuzzParseProperties(f *testing.F) {
	f.Add(`<?xml version="1.0" encoding="UTF-8" standalone="no"?><!DOCTYPE properties SYSTEM "http://java.sun.com/dtd/properties.dtd"><properties><comment>x</comment><entry key="name">n</entry><entry key="group">g</entry><entry key="version">1.0</entry></properties>`)
	f.Fuzz(func(t *testing.T, doc string) {
		props, err := ParseProperties(strings.NewReader(doc))
		if err != nil {
			return
		}
		p, err := FromProperties(props)
		if err != nil {
			return
		}
		if p.ID.Group == "" || p.ID.Name == "" || p.ID.Version.IsEmpty() {
			t.Fatalf("accepted package with empty id part: %q", p.ID)
		}
		back, err := ParseID(p.ID.String())
		if err != nil || back != p.ID {
			t.Fatalf("id %q does not round-trip: %v", p.ID, err)
		}
	})
}

func FuzzParseRange(f *testing.F) {
	f.Add("[1.0,2.0)")
	f.Add("1.0")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		back, err := ParseRange(r.String())
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, r.String(), err)
		}
		if back != r {
			t.Fatalf("%q -> %q -> %#v, want %#v", s, r.String(), back, r)
		}
		// Bounds are in the range exactly when inclusive.
		if !r.Low.IsEmpty() && r.Contains(r.Low) != r.LowInclusive {
			t.Fatalf("%q: Contains(low) = %v", s, !r.LowInclusive)
		}
		if !r.High.IsEmpty() && r.Contains(r.High) != r.HighInclusive {
			t.Fatalf("%q: Contains(high) = %v", s, !r.HighInclusive)
		}
	})
}

func FuzzParseDependencies(f *testing.F) {
	f.Add("name1,group2:name2,group3:name3:1.0,group4:name4:[1.0,2.0],:name5:[1.0,2.0]")
	f.Fuzz(func(t *testing.T, s string) {
		deps, err := ParseDependencies(s)
		if err != nil {
			return
		}
		parts := make([]string, 0, len(deps))
		for _, d := range deps {
			parts = append(parts, d.String())
		}
		back, err := ParseDependencies(strings.Join(parts, ","))
		if err != nil {
			t.Fatalf("%q -> %q does not parse: %v", s, strings.Join(parts, ","), err)
		}
		if len(back) != len(deps) {
			t.Fatalf("%q: %d dependencies, round trip gives %d", s, len(deps), len(back))
		}
		for i := range deps {
			if back[i] != deps[i] {
				t.Fatalf("%q: dependency %d %#v round-trips to %#v", s, i, deps[i], back[i])
			}
		}
	})
}

// FuzzVersionCompare checks that Compare is reflexive and antisymmetric.
// It is not checked for transitivity: Maven's ComparableVersion, which we
// mirror, is not transitive for odd strings (see
// TestVersionMavenNotTransitive), and being faithful matters more here.
func FuzzVersionCompare(f *testing.F) {
	f.Add("1.0", "1.0-SNAPSHOT", "1-sp")
	f.Add("6.1.0rc3", "6.1.0", "6.1H.5-beta")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		for _, s := range []string{a, b, c} {
			if len(s) > MaxVersionLength {
				return
			}
		}
		va, vb, vc := Version{s: a}, Version{s: b}, Version{s: c}
		for _, p := range [][2]Version{{va, vb}, {vb, vc}, {va, vc}} {
			x, y := p[0].Compare(p[1]), p[1].Compare(p[0])
			if x != -y || x < -1 || x > 1 {
				t.Fatalf("Compare(%q,%q)=%d but Compare(%q,%q)=%d", p[0], p[1], x, p[1], p[0], y)
			}
		}
		// Equal strings compare equal even through the parser.
		if cmp := compareItems(parseComparable(a), parseComparable(a)); cmp != 0 {
			t.Fatalf("%q compares %d to itself", a, cmp)
		}
	})
}
