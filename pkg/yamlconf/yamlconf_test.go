package yamlconf

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type host struct {
	Pos  Pos    `yaml:"-"`
	ID   string `yaml:"id"`
	Pair int    `yaml:"pair"`
}

type cfg struct {
	Name     string          `yaml:"name"`
	Interval Duration        `yaml:"interval"`
	Hosts    []host          `yaml:"hosts"`
	ByName   map[string]host `yaml:"by_name"`
	Enabled  bool            `yaml:"enabled"`
}

func TestDecodeGood(t *testing.T) {
	var c cfg
	err := Decode("x.yaml", []byte("name: a\ninterval: 5s\nhosts:\n  - id: h1\n    pair: 2\nby_name:\n  z:\n    id: q\n"), &c)
	require.NoError(t, err)
	require.Equal(t, "a", c.Name)
	require.Equal(t, 5*time.Second, c.Interval.D())
	require.Equal(t, 4, c.Hosts[0].Pos.Line)
	require.Equal(t, 5, c.Hosts[0].Pos.Of("pair"))
	require.True(t, c.Hosts[0].Pos.Has("pair"))
	require.False(t, c.ByName["z"].Pos.Has("pair"))
	require.Equal(t, 8, c.ByName["z"].Pos.Line)
}

func TestDecodeErrorsNameFileAndLine(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"unknown key", "name: a\nhostz: []\n", `x.yaml:2: unknown key "hostz" (did you mean "hosts"?)`},
		{"nested unknown", "hosts:\n  - id: a\n    paer: 1\n", `x.yaml:3: unknown key "paer" (did you mean "pair"?)`},
		{"bad int", "hosts:\n  - id: a\n    pair: one\n", `x.yaml:3: "one" is not valid here: expected a whole number`},
		{"bad duration", "name: a\ninterval: soon\n", `x.yaml:2: "soon" is not a duration`},
		{"bad bool", "enabled: maybe\n", `x.yaml:1: "maybe" is not valid here: expected true or false`},
		{"syntax", "name: a\n  b: [\n", `x.yaml:2:`},
		{"empty", "", `x.yaml: the file is empty`},
		{"not a mapping", "- a\n", `x.yaml:1: the top level must be a mapping`},
		{"two docs", "name: a\n---\nname: b\n", `only one YAML document`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c cfg
			err := Decode("x.yaml", []byte(tc.in), &c)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestErrorf(t *testing.T) {
	require.Equal(t, "f.yaml:3: bad", Errorf("f.yaml", 3, "bad").Error())
	require.Equal(t, "f.yaml: bad", Errorf("f.yaml", 0, "bad").Error())
}

type inner struct {
	Pos Pos    `yaml:"-"`
	A   string `yaml:"a"`
}

type withInline struct {
	inner `yaml:",inline"`
	B     string `yaml:"b"`
}

func TestInlineStructsShareKeys(t *testing.T) {
	var w withInline
	require.NoError(t, Decode("x.yaml", []byte("a: 1\nb: 2\n"), &w))
	require.Equal(t, "1", w.A)
	require.Equal(t, "2", w.B)
	require.Equal(t, 1, w.inner.Pos.Of("a"), "inline structs get the mapping's positions")
	err := Decode("x.yaml", []byte("a: 1\nc: 2\n"), &w)
	require.ErrorContains(t, err, `x.yaml:2: unknown key "c"`)
}
