package aempkg

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func v(s string) Version { return MustParseVersion(s) }

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		in   string
		want VersionRange
		str  string
	}{
		{"", AnyVersion, ""},
		{"  ", AnyVersion, ""},
		{"1.0", VersionRange{Low: v("1.0"), LowInclusive: true}, "1.0"},
		{"[1.0,2.0)", VersionRange{Low: v("1.0"), LowInclusive: true, High: v("2.0")}, "[1.0,2.0)"},
		{"(1.0,2.0]", VersionRange{Low: v("1.0"), High: v("2.0"), HighInclusive: true}, "(1.0,2.0]"},
		{"[ 1.0 , 2.0 ]", VersionRange{Low: v("1.0"), LowInclusive: true, High: v("2.0"), HighInclusive: true}, "[1.0,2.0]"},
		{"(1.0,]", VersionRange{Low: v("1.0")}, "(1.0,)"},
		{"(1.0,)", VersionRange{Low: v("1.0")}, "(1.0,)"},
		{"[1.0,]", VersionRange{Low: v("1.0"), LowInclusive: true}, "1.0"},
		{"[,2.0]", VersionRange{High: v("2.0"), HighInclusive: true}, "[,2.0]"},
		{"(,2.0)", VersionRange{High: v("2.0")}, "[,2.0)"},
		{"[,]", AnyVersion, ""},
		{"[1.0]", ExactVersion(v("1.0")), "[1.0,1.0]"},
		{"[1.0,1.0]", ExactVersion(v("1.0")), "[1.0,1.0]"},
		{"[1.0-SNAPSHOT,2.0)", VersionRange{Low: v("1.0-SNAPSHOT"), LowInclusive: true, High: v("2.0")}, "[1.0-SNAPSHOT,2.0)"},
	} {
		got, err := ParseRange(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
		require.Equal(t, c.str, got.String(), c.in)
		back, err := ParseRange(got.String())
		require.NoError(t, err)
		require.Equal(t, got, back, "round trip of %q", c.in)
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, c := range []struct{ in, msg string }{
		{"[1.0,2.0", "must end with"},
		{"1.0,2.0]", "must start with"},
		{"1.0,2.0", "contains ','"},
		{"[1.0,2.0,3.0]", "more than one comma"},
		{"[2.0,1.0]", "above upper bound"},
		{"(1.0,1.0)", "empty range"},
		{"[1.0,1.0)", "empty range"},
		{"[1,1.0)", "empty range"},
		{"(1.0)", "single version"},
		{"[]", "version is empty"},
		{"[1.0,2 .0]", "whitespace"},
		{"[1.0,2.0)x", "must end with"},
	} {
		_, err := ParseRange(c.in)
		require.Error(t, err, c.in)
		require.Contains(t, err.Error(), c.msg, c.in)
		require.Contains(t, err.Error(), c.in, "the error names the range")
	}
}

// FileVault's VersionRangeTest.
func TestRangeContains(t *testing.T) {
	in := func(r string, ver string) bool {
		t.Helper()
		rr, err := ParseRange(r)
		require.NoError(t, err)
		if ver == "" {
			return rr.Contains(Version{})
		}
		return rr.Contains(v(ver))
	}
	require.True(t, in("", "1.0"))
	require.True(t, in("", ""))
	// [1.0,) and (1.0,)
	require.True(t, in("1.0", "1.0"))
	require.True(t, in("1.0", "2.0"))
	require.False(t, in("1.0", "0.9"))
	require.False(t, in("(1.0,]", "1.0"))
	require.True(t, in("(1.0,]", "2.0"))
	require.False(t, in("(1.0,]", "0.9"))
	// upper bounds
	require.True(t, in("[,2.0]", "1.0"))
	require.True(t, in("[,2.0]", "2.0"))
	require.False(t, in("[,2.0]", "2.1"))
	require.True(t, in("[,2.0)", "1.0"))
	require.False(t, in("[,2.0)", "2.0"))
	// both bounds, all four inclusivities
	for _, c := range []struct {
		r                     string
		v09, v1, v11, v2, v21 bool
	}{
		{"[1.0,2.0]", false, true, true, true, false},
		{"(1.0,2.0]", false, false, true, true, false},
		{"[1.0,2.0)", false, true, true, false, false},
		{"(1.0,2.0)", false, false, true, false, false},
	} {
		require.Equal(t, c.v09, in(c.r, "0.9"), c.r)
		require.Equal(t, c.v1, in(c.r, "1.0"), c.r)
		require.Equal(t, c.v11, in(c.r, "1.1"), c.r)
		require.Equal(t, c.v2, in(c.r, "2.0"), c.r)
		require.Equal(t, c.v21, in(c.r, "2.1"), c.r)
	}
	require.False(t, in("[1.0,2.0]", ""), "the empty version is below every lower bound")
	// A snapshot precedes its release, so it is outside [1.0,2.0) but a
	// snapshot bound includes it.
	require.False(t, in("[1.0,2.0)", "1.0-SNAPSHOT"))
	require.True(t, in("[1.0-SNAPSHOT,2.0)", "1.0-SNAPSHOT"))
	require.True(t, in("[1.0,2.0)", "2.0-SNAPSHOT"), "2.0-SNAPSHOT < 2.0")
	// Exact.
	require.True(t, in("[1.0]", "1.0"))
	require.True(t, in("[1.0]", "1"), "1 compares equal to 1.0")
	require.False(t, in("[1.0]", "1.0.1"))
}
