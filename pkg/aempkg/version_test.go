package aempkg

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// cmpVersions compares raw strings without validation, so Maven's own test
// vectors (some of which our ParseVersion would accept anyway) can be used.
func cmpVersions(a, b string) int { return Version{s: a}.Compare(Version{s: b}) }

func requireAscending(t *testing.T, versions []string) {
	t.Helper()
	for i := range versions {
		for j := i + 1; j < len(versions); j++ {
			require.Equal(t, -1, cmpVersions(versions[i], versions[j]), "expected %s < %s", versions[i], versions[j])
			require.Equal(t, 1, cmpVersions(versions[j], versions[i]), "expected %s > %s", versions[j], versions[i])
		}
	}
}

func requireEqualVersions(t *testing.T, a, b string) {
	t.Helper()
	require.Equal(t, 0, cmpVersions(a, b), "expected %s == %s", a, b)
	require.Equal(t, 0, cmpVersions(b, a), "expected %s == %s", b, a)
}

// The two ordered lists of Maven's ComparableVersionTest, unchanged between
// maven-artifact 3.8 and 3.9.
func TestVersionMavenQualifierOrder(t *testing.T) {
	requireAscending(t, []string{"1-alpha2snapshot", "1-alpha2", "1-alpha-123", "1-beta-2", "1-beta123", "1-m2", "1-m11", "1-rc", "1-cr2",
		"1-rc123", "1-SNAPSHOT", "1", "1-sp", "1-sp2", "1-sp123", "1-abc", "1-def", "1-pom-1", "1-1-snapshot",
		"1-1", "1-2", "1-123"})
}

func TestVersionMavenNumberOrder(t *testing.T) {
	requireAscending(t, []string{"2.0", "2-1", "2.0.a", "2.0.0.a", "2.0.2", "2.0.123", "2.1.0", "2.1-a", "2.1b", "2.1-c", "2.1-1", "2.1.0.1",
		"2.2", "2.123", "11.a2", "11.a11", "11.b2", "11.b11", "11.m2", "11.m11", "11", "11.a", "11b", "11c", "11m"})
}

func TestVersionMavenEqual(t *testing.T) {
	for _, p := range [][2]string{
		{"1", "1"}, {"1", "1.0"}, {"1", "1.0.0"}, {"1.0", "1.0.0"}, {"1", "1-0"}, {"1", "1.0-0"}, {"1.0", "1.0-0"},
		{"1a", "1-a"}, {"1a", "1.0-a"}, {"1a", "1.0.0-a"}, {"1.0a", "1-a"}, {"1.0.0a", "1-a"},
		{"1x", "1-x"}, {"1x", "1.0-x"}, {"1x", "1.0.0-x"}, {"1.0x", "1-x"}, {"1.0.0x", "1-x"},
		{"1ga", "1"}, {"1final", "1"}, {"1cr", "1rc"},
		{"1a1", "1-alpha-1"}, {"1b2", "1-beta-2"}, {"1m3", "1-milestone-3"},
		{"1X", "1x"}, {"1A", "1a"}, {"1GA", "1"}, {"1FinaL", "1"}, {"1cR", "1rC"}, {"1m3", "1MILESTONE3"},
		{"1-abcdefghijklmnopqrstuvwxyz", "1-ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
	} {
		requireEqualVersions(t, p[0], p[1])
	}
}

func TestVersionMavenComparing(t *testing.T) {
	for _, p := range [][2]string{
		{"1", "2"}, {"1.5", "2"}, {"1", "2.5"}, {"1.0", "1.1"}, {"1.1", "1.2"}, {"1.0.0", "1.1"}, {"1.0.1", "1.1"}, {"1.1", "1.2.0"},
		{"1.0-alpha-1", "1.0"}, {"1.0-alpha-1", "1.0-alpha-2"}, {"1.0-alpha-1", "1.0-beta-1"},
		{"1.0-beta-1", "1.0-SNAPSHOT"}, {"1.0-SNAPSHOT", "1.0"}, {"1.0-alpha-1-SNAPSHOT", "1.0-alpha-1"},
		{"1.0", "1.0-1"}, {"1.0-1", "1.0-2"}, {"1.0.0", "1.0-1"},
		{"2.0-1", "2.0.1"}, {"2.0.1-klm", "2.0.1-lmn"}, {"2.0.1", "2.0.1-xyz"},
		{"2.0.1", "2.0.1-123"}, {"2.0.1-xyz", "2.0.1-123"},
		// MNG-5568: transitivity.
		{"6.1.0rc3", "6.1.0"}, {"6.1.0rc3", "6.1H.5-beta"}, {"6.1.0", "6.1H.5-beta"},
		// MNG-6572: numbers of any size.
		{"20190126.230843", "1234567890.12345"}, {"1234567890.12345", "123456789012345.1H.5-beta"},
		{"123456789012345.1H.5-beta", "12345678901234567890.1H.5-beta"},
		// MNG-6964: a sub-list is compared by all its items.
		{"1-0.alpha", "1"}, {"1-0.beta", "1"}, {"1-0.alpha", "1-0.beta"},
		// The examples in FileVault's Version.compareTo javadoc.
		{"1.0", "2"}, {"2.0.1", "2.1"}, {"2.1", "2.1.1"}, {"2.9", "2.11"}, {"2.1-SNAPSHOT", "2.1"},
		{"2.1-RC1", "2.1"}, {"2.1-RC1", "2.1-SNAPSHOT"},
	} {
		require.Equal(t, -1, cmpVersions(p[0], p[1]), "expected %s < %s", p[0], p[1])
		require.Equal(t, 1, cmpVersions(p[1], p[0]), "expected %s > %s", p[1], p[0])
	}
}

func TestVersionLeadingZeroes(t *testing.T) {
	for n := 1; n < 20; n++ {
		requireEqualVersions(t, strings.Repeat("0", n)+"1", "1")
		requireEqualVersions(t, strings.Repeat("0", n), "0")
	}
}

// Where the maven-artifact releases differ, we follow 3.8.x (see Compare).
func TestVersionMaven38Choices(t *testing.T) {
	// "release" is not an alias of "" before Maven 3.9: it is an unknown
	// qualifier, ranked after a release.
	require.Equal(t, 1, cmpVersions("1-release", "1"))
	// ".X" is not "-X" before Maven 3.9 (MNG-7644): 1.0.0.RC1 > 1.0.0-RC2.
	require.Equal(t, 1, cmpVersions("1.0.0.RC1", "1.0.0-RC2"))
}

// Maven's order is not transitive for odd strings; we reproduce that rather
// than invent a different order. Found by FuzzVersionCompare.
func TestVersionMavenNotTransitive(t *testing.T) {
	require.Equal(t, -1, cmpVersions("1..A0000", "1"))
	require.Equal(t, -1, cmpVersions("1", "1A"))
	require.Equal(t, 1, cmpVersions("1..A0000", "1A"))
}

// FileVault's VersionTest under the current (Maven) comparison. Where the
// legacy segment comparison disagreed, the comment says so.
func TestVersionFileVaultCases(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.0.0", "1.0.0", 0},
		{"1.0.1", "1.0.0", 1},
		{"1.1", "1.0.0", 1},
		{"1.11", "1.9", 1},
		{"1.1-SNAPSHOT", "1.0.0", 1},
		{"2.0", "2.0-beta-8", 1},
		{"2.0", "2.0-SNAPSHOT", 1}, // legacy: -1
		{"1.11", "1.9-SNAPSHOT", 1},
		{"1.11-SNAPSHOT", "1.9-SNAPSHOT", 1},
		{"1.11-SNAPSHOT", "1.9", 1},
		{"1.1", "1.1-SNAPSHOT", 1},         // legacy: -1
		{"1.1-SNAPSHOT", "1.1-R12345", -1}, // legacy: 1; "r" is an unknown qualifier
		{"2.1.492-NPR-12954-R012", "2.1.476", 1},
		{"6.1.58", "6.1.58-FP3", -1}, // legacy: 1
		{"6.1.58-FP3", "6.1.58-FP2", 1},
		{"6.1.58.FP3", "6.1.58.FP4", -1},
		{"1.0", "1", 0},
	} {
		require.Equal(t, c.want, cmpVersions(c.a, c.b), "%s vs %s", c.a, c.b)
		require.Equal(t, -c.want, cmpVersions(c.b, c.a), "%s vs %s", c.b, c.a)
	}
}

func TestParseVersion(t *testing.T) {
	for _, ok := range []string{"1.0", "1.0.0-SNAPSHOT", "2023.10.1-rc1", "6.5.17.0", "1_0", "v1"} {
		v, err := ParseVersion(ok)
		require.NoError(t, err, ok)
		require.Equal(t, ok, v.String())
	}
	for _, bad := range []string{"", " 1.0", "1.0 ", "1 0", "1:0", "1,0", "[1.0", "1.0)", "1/0", `1\0`, "1\x00", strings.Repeat("1", MaxVersionLength+1), "1\xff"} {
		_, err := ParseVersion(bad)
		require.Error(t, err, "%q", bad)
	}
	require.True(t, MustParseVersion("1.0-SNAPSHOT").IsSnapshot())
	require.False(t, MustParseVersion("1.0-snapshot").IsSnapshot(), "FileVault's test is case-sensitive")
	require.True(t, Version{}.IsEmpty())
}
