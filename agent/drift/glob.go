package drift

import (
	"fmt"
	"path"
	"strings"
)

// matcher is a compiled list of slash globs.
//
// Syntax: each "/"-separated segment is a path.Match pattern, and a segment
// that is exactly "**" matches zero or more whole segments
// ("conf.d/**/*.vhost" matches "conf.d/a.vhost" and "conf.d/x/y/a.vhost").
// How a pattern is applied depends on the list (see Config).
type matcher struct {
	// anchored patterns are matched against the whole relative path,
	// already split into segments.
	anchored [][]string
	// names are patterns without "/" that ignore lists match against every
	// segment of a path, so "*.swp" hides a swap file at any depth.
	names []string
}

// compile checks and splits patterns. With byName, a pattern without "/"
// goes to names (matched against each segment) and a leading "/" only
// anchors the pattern at Dir; without it, every pattern is anchored.
func compile(field string, patterns []string, byName bool) (matcher, error) {
	var m matcher
	for _, p := range patterns {
		if p == "" {
			return matcher{}, fmt.Errorf("drift: %s: empty pattern", field)
		}
		q := strings.TrimPrefix(p, "/")
		if q == "" {
			return matcher{}, fmt.Errorf("drift: %s: pattern %q matches nothing", field, p)
		}
		segs := strings.Split(q, "/")
		for _, s := range segs {
			// path.Match reports ErrBadPattern only while it scans the
			// pattern, so test it against a name it cannot end early on.
			if _, err := path.Match(s, s); err != nil {
				return matcher{}, fmt.Errorf("drift: %s: pattern %q: %w", field, p, err)
			}
		}
		if byName && !strings.Contains(p, "/") {
			m.names = append(m.names, p)
			continue
		}
		m.anchored = append(m.anchored, segs)
	}
	return m, nil
}

// matchFull reports whether rel (the whole path) matches an anchored
// pattern. Name patterns are not consulted.
func (m *matcher) matchFull(rel string) bool {
	if len(m.anchored) == 0 {
		return false
	}
	segs := strings.Split(rel, "/")
	for _, p := range m.anchored {
		if matchSegs(p, segs) {
			return true
		}
	}
	return false
}

// matchAny reports whether rel or any of its ancestors matches: an ignored
// directory hides everything below it, so a single "/logs" pattern covers
// the whole log tree.
func (m *matcher) matchAny(rel string) bool {
	segs := strings.Split(rel, "/")
	for _, s := range segs {
		for _, n := range m.names {
			if ok, _ := path.Match(n, s); ok {
				return true
			}
		}
	}
	for i := 1; i <= len(segs); i++ {
		for _, p := range m.anchored {
			if matchSegs(p, segs[:i]) {
				return true
			}
		}
	}
	return false
}

// matchSegs matches pattern segments against name segments; "**" consumes
// any number of name segments (backtracking is fine: patterns are short).
func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(name); i++ {
				if matchSegs(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], name[0]); !ok {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
