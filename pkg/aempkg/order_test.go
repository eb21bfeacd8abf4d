package aempkg

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// pkg builds a Package from "group:name:version" and a dependency list.
func pkg(t *testing.T, id, deps string) *Package {
	t.Helper()
	pid, err := ParseID(id)
	require.NoError(t, err)
	d, err := ParseDependencies(deps)
	require.NoError(t, err)
	return &Package{ID: pid, Properties: map[string]string{}, Dependencies: d}
}

func ids(ps []*Package) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.ID.String())
	}
	return out
}

func TestOrder(t *testing.T) {
	for _, c := range []struct {
		name      string
		pkgs      [][2]string // id, dependencies
		installed []string
		want      []string
	}{
		{
			name: "empty",
			want: []string{},
		},
		{
			name: "independent packages keep input order",
			pkgs: [][2]string{{"g:c:1", ""}, {"g:a:1", ""}, {"g:b:1", ""}},
			want: []string{"g:c:1", "g:a:1", "g:b:1"},
		},
		{
			name: "chain given backwards",
			pkgs: [][2]string{{"g:ui:1", "g:core:[1,2)"}, {"g:core:1.5", "g:base"}, {"g:base:3", ""}},
			want: []string{"g:base:3", "g:core:1.5", "g:ui:1"},
		},
		{
			name: "diamond",
			pkgs: [][2]string{
				{"g:top:1", "g:left:1,g:right:1"},
				{"g:right:1", "g:bottom:1"},
				{"g:left:1", "g:bottom:1"},
				{"g:bottom:1", ""},
			},
			want: []string{"g:bottom:1", "g:right:1", "g:left:1", "g:top:1"},
		},
		{
			// FileVault's DepResolverTest.testLinear graph; ties go by input order.
			name: "filevault linear",
			pkgs: [][2]string{
				{"foo:pack1:1.0", "foo:pack2:1.0,foo:pack3:1.0"},
				{"foo:pack2:1.0", "foo:pack4:1.0"},
				{"foo:pack3:1.0", "foo:pack5:1.0"},
				{"foo:pack4:1.0", "foo:pack5:1.0"},
				{"foo:pack5:1.0", ""},
			},
			want: []string{"foo:pack5:1.0", "foo:pack3:1.0", "foo:pack4:1.0", "foo:pack2:1.0", "foo:pack1:1.0"},
		},
		{
			name:      "dependency satisfied by installed package adds no edge",
			pkgs:      [][2]string{{"g:app:2", "g:lib:[1,2)"}, {"g:other:1", ""}},
			installed: []string{"g:lib:1.4"},
			want:      []string{"g:app:2", "g:other:1"},
		},
		{
			name:      "dependency in the set orders even when also installed",
			pkgs:      [][2]string{{"g:app:2", "g:lib:[1,2)"}, {"g:lib:1.5", ""}},
			installed: []string{"g:lib:1.4"},
			want:      []string{"g:lib:1.5", "g:app:2"},
		},
		{
			name:      "set version out of range, installed one in range",
			pkgs:      [][2]string{{"g:app:2", "g:lib:[1,2)"}, {"g:lib:2.0", ""}},
			installed: []string{"g:lib:1.4"},
			want:      []string{"g:app:2", "g:lib:2.0"},
		},
		{
			name: "two versions of one package: the highest is kept",
			pkgs: [][2]string{{"g:app:1", "g:lib:1.0"}, {"g:lib:1.0", ""}, {"g:lib:1.10", ""}, {"g:lib:1.9-SNAPSHOT", ""}},
			want: []string{"g:lib:1.10", "g:app:1"},
		},
		{
			name: "duplicate dependency declarations",
			pkgs: [][2]string{{"g:a:1", "g:b,g:b:1"}, {"g:b:1", ""}},
			want: []string{"g:b:1", "g:a:1"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ps []*Package
			for _, p := range c.pkgs {
				ps = append(ps, pkg(t, p[0], p[1]))
			}
			var inst []ID
			for _, s := range c.installed {
				id, err := ParseID(s)
				require.NoError(t, err)
				inst = append(inst, id)
			}
			got, err := Order(ps, inst)
			require.NoError(t, err)
			require.Equal(t, c.want, ids(got))
		})
	}
}

func TestOrderUnsatisfied(t *testing.T) {
	ps := []*Package{
		pkg(t, "g:a:1", "g:missing:1.0,g:b:[2,3)"),
		pkg(t, "g:b:1", ""),
		pkg(t, "g:c:1", "other:x"),
	}
	_, err := Order(ps, []ID{{Group: "g", Name: "missing", Version: v("0.9")}})
	var ue *UnsatisfiedError
	require.ErrorAs(t, err, &ue)
	require.Len(t, ue.Missing, 3)
	require.Equal(t, "g:a:1", ue.Missing[0].Package.String())
	require.Equal(t, "g:missing:1.0", ue.Missing[0].Dependency.String())
	require.Equal(t, "g:b:[2,3)", ue.Missing[1].Dependency.String())
	require.Equal(t, "g:c:1", ue.Missing[2].Package.String())
	require.Contains(t, err.Error(), "g:a:1 requires g:missing:1.0")
	require.Contains(t, err.Error(), "g:c:1 requires other:x")
}

func TestOrderSupersededVersionDoesNotSatisfy(t *testing.T) {
	ps := []*Package{pkg(t, "g:app:1", "g:lib:[1,2)"), pkg(t, "g:lib:1.5", ""), pkg(t, "g:lib:2.1", "")}
	_, err := Order(ps, nil)
	var ue *UnsatisfiedError
	require.ErrorAs(t, err, &ue)
	kept, superseded := Dedupe(ps)
	require.Equal(t, []string{"g:app:1", "g:lib:2.1"}, ids(kept))
	require.Equal(t, []string{"g:lib:1.5"}, ids(superseded))
}

func TestOrderCycle(t *testing.T) {
	// FileVault's DepResolverTest.testCircular plus an innocent bystander.
	ps := []*Package{
		pkg(t, "foo:pack0:1.0", ""),
		pkg(t, "foo:pack1:1.0", "foo:pack2:1.0"),
		pkg(t, "foo:pack2:1.0", "foo:pack3:1.0,foo:pack4:1.0"),
		pkg(t, "foo:pack3:1.0", ""),
		pkg(t, "foo:pack4:1.0", "foo:pack1:1.0,foo:pack5:1.0"),
		pkg(t, "foo:pack5:1.0", ""),
	}
	_, err := Order(ps, nil)
	var ce *CycleError
	require.ErrorAs(t, err, &ce)
	var cyc []string
	for _, id := range ce.Cycle {
		cyc = append(cyc, id.String())
	}
	require.Equal(t, []string{"foo:pack1:1.0", "foo:pack2:1.0", "foo:pack4:1.0"}, cyc)
	require.Equal(t, "package dependency cycle: foo:pack1:1.0 -> foo:pack2:1.0 -> foo:pack4:1.0 -> foo:pack1:1.0", err.Error())
}

func TestOrderSelfCycle(t *testing.T) {
	_, err := Order([]*Package{pkg(t, "g:a:1", ""), pkg(t, "g:self:1", "g:self")}, nil)
	var ce *CycleError
	require.ErrorAs(t, err, &ce)
	require.Len(t, ce.Cycle, 1)
	require.Equal(t, "g:self:1", ce.Cycle[0].String())
}

func TestOrderCycleDownstreamOfOtherPackages(t *testing.T) {
	// x depends on the cycle but is not part of it; the cycle is reported
	// without x.
	ps := []*Package{
		pkg(t, "g:x:1", "g:a:1"),
		pkg(t, "g:a:1", "g:b:1"),
		pkg(t, "g:b:1", "g:a:1"),
	}
	_, err := Order(ps, nil)
	var ce *CycleError
	require.ErrorAs(t, err, &ce)
	require.Len(t, ce.Cycle, 2)
	require.Equal(t, "g:a:1", ce.Cycle[0].String())
	require.Equal(t, "g:b:1", ce.Cycle[1].String())
}

func TestOrderNil(t *testing.T) {
	_, err := Order([]*Package{nil}, nil)
	require.Error(t, err)
}
