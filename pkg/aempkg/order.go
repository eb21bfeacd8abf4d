package aempkg

import (
	"fmt"
	"slices"
	"strings"
)

// MissingDependency is one dependency of a package that neither the set being
// installed nor the target instance satisfies.
type MissingDependency struct {
	Package    ID
	Dependency Dependency
}

// UnsatisfiedError is returned by Order when dependencies cannot be
// satisfied. Missing lists all of them, by package in input order and then
// in declaration order.
type UnsatisfiedError struct {
	Missing []MissingDependency
}

func (e *UnsatisfiedError) Error() string {
	var b strings.Builder
	b.WriteString("unsatisfied package dependencies (neither in the deployment nor installed on the target): ")
	for i, m := range e.Missing {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s requires %s", m.Package, m.Dependency)
	}
	return b.String()
}

// CycleError is returned by Order when packages depend on each other in a
// circle. Cycle lists the packages in the circle: each one depends on the
// next, and the last on the first. A package that depends on itself forms a
// cycle of one.
type CycleError struct {
	Cycle []ID
}

func (e *CycleError) Error() string {
	parts := make([]string, 0, len(e.Cycle)+1)
	for _, id := range e.Cycle {
		parts = append(parts, id.String())
	}
	if len(e.Cycle) > 0 {
		parts = append(parts, e.Cycle[0].String())
	}
	return "package dependency cycle: " + strings.Join(parts, " -> ")
}

// Dedupe keeps one package per group:name: the one with the highest version
// (Version.Compare), and among versions that compare equal ("1.0" and "1")
// the first in input order. kept preserves the input order; superseded lists
// the dropped packages in input order so callers can report them.
//
// Why the highest: installing an older version after a newer one would
// downgrade the content, and installing both only to end on the newest adds
// nothing but time and risk.
func Dedupe(pkgs []*Package) (kept, superseded []*Package) {
	best := map[string]int{} // group:name -> index in pkgs of the current winner
	for i, p := range pkgs {
		key := p.ID.GroupName()
		j, ok := best[key]
		if !ok || p.ID.Version.Compare(pkgs[j].ID.Version) > 0 {
			best[key] = i
		}
	}
	for i, p := range pkgs {
		if best[p.ID.GroupName()] == i {
			kept = append(kept, p)
		} else {
			superseded = append(superseded, p)
		}
	}
	return kept, superseded
}

// Order returns the packages in an order in which they can be installed one
// after another, each after the packages it depends on.
//
// installed lists what the target already has installed. A dependency
// satisfied by a package of the set orders that package first, even when the
// target also has a matching version installed, so content is installed on
// top of the dependency's new version. A dependency satisfied only by an
// installed package adds no ordering. A dependency satisfied by neither is
// reported in an *UnsatisfiedError listing every such dependency. Packages
// depending on each other in a circle give a *CycleError; unsatisfied
// dependencies are reported first, before cycles are looked for.
//
// When the set holds several versions of one group:name, only the highest is
// kept (see Dedupe); the others are left out of the result, and dependencies
// only they would satisfy count as unsatisfied.
//
// The order is deterministic: of the packages whose dependencies are all
// placed, the one earliest in the input goes next.
func Order(pkgs []*Package, installed []ID) ([]*Package, error) {
	for i, p := range pkgs {
		if p == nil {
			return nil, fmt.Errorf("package %d of %d is nil", i+1, len(pkgs))
		}
	}
	kept, _ := Dedupe(pkgs)
	n := len(kept)
	// providers[i] are the packages i depends on; dependents[j] those depending on j.
	providers := make([][]int, n)
	dependents := make([][]int, n)
	var missing []MissingDependency
	for i, p := range kept {
		for _, d := range p.Dependencies {
			j := slices.IndexFunc(kept, func(q *Package) bool { return d.Matches(q.ID) })
			if j >= 0 {
				if !slices.Contains(providers[i], j) {
					providers[i] = append(providers[i], j)
					dependents[j] = append(dependents[j], i)
				}
				continue
			}
			if slices.ContainsFunc(installed, d.Matches) {
				continue
			}
			missing = append(missing, MissingDependency{Package: p.ID, Dependency: d})
		}
	}
	if len(missing) > 0 {
		return nil, &UnsatisfiedError{Missing: missing}
	}

	pending := make([]int, n) // providers not yet placed
	for i := range kept {
		pending[i] = len(providers[i])
	}
	placed := make([]bool, n)
	out := make([]*Package, 0, n)
	for len(out) < n {
		next := -1
		for i := range kept {
			if !placed[i] && pending[i] == 0 {
				next = i
				break
			}
		}
		if next < 0 {
			return nil, &CycleError{Cycle: findCycle(kept, providers, placed)}
		}
		placed[next] = true
		out = append(out, kept[next])
		for _, d := range dependents[next] {
			pending[d]--
		}
	}
	return out, nil
}

// findCycle walks from the earliest unplaced package along its earliest
// unplaced provider until a package repeats. Every unplaced package has an
// unplaced provider (that is why it could not be placed), so the walk always
// closes a circle.
func findCycle(kept []*Package, providers [][]int, placed []bool) []ID {
	start := slices.Index(placed, false)
	seenAt := map[int]int{}
	var path []int
	for cur := start; ; {
		if at, ok := seenAt[cur]; ok {
			ids := make([]ID, 0, len(path)-at)
			for _, i := range path[at:] {
				ids = append(ids, kept[i].ID)
			}
			return ids
		}
		seenAt[cur] = len(path)
		path = append(path, cur)
		nextProv := -1
		for _, j := range providers[cur] {
			if !placed[j] && (nextProv < 0 || j < nextProv) {
				nextProv = j
			}
		}
		if nextProv < 0 { // unreachable by the argument above; never loop forever
			ids := make([]ID, 0, len(path))
			for _, i := range path {
				ids = append(ids, kept[i].ID)
			}
			return ids
		}
		cur = nextProv
	}
}
