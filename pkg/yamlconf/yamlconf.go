// Package yamlconf decodes Deckhand's YAML config files strictly: unknown
// keys, wrong types and invalid values are errors that name the file and the
// line, so an operator can fix the right spot the first time.
package yamlconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem at one place in one file. Line is 0 when the problem
// belongs to the whole file.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errorf builds an *Error.
func Errorf(file string, line int, format string, args ...any) error {
	return &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Pos records where a YAML mapping was found. Embed a field of type Pos
// (tag `yaml:"-"`) in a config struct and Decode fills it, so validation
// after decoding can point at the exact line of a bad value.
type Pos struct {
	Line int
	keys map[string]int
}

// Of returns the line of key inside the mapping, or the mapping's own line
// when the key was not written.
func (p Pos) Of(key string) int {
	if l, ok := p.keys[key]; ok {
		return l
	}
	return p.Line
}

// Has reports whether key was written in the file, telling "absent" apart
// from "set to the zero value".
func (p Pos) Has(key string) bool {
	_, ok := p.keys[key]
	return ok
}

// Duration is a time.Duration written as "10s", "1h30m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &lineError{n.Line, "expected a duration such as \"10s\""}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &lineError{n.Line, fmt.Sprintf("%q is not a duration (use e.g. \"500ms\", \"10s\", \"1h\")", n.Value)}
	}
	if v < 0 {
		return &lineError{n.Line, fmt.Sprintf("duration %q must not be negative", n.Value)}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in Go syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// lineError carries a line out of a custom unmarshaler; yaml.v3 returns
// such errors unchanged from Decode.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

// LineError lets custom UnmarshalYAML methods in other packages report a
// value error at the node's line.
func LineError(n *yaml.Node, format string, args ...any) error {
	return &lineError{n.Line, fmt.Sprintf(format, args...)}
}

// DecodeFile reads and decodes path into v.
func DecodeFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return Decode(path, data, v)
}

var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// Decode parses data strictly into v (a pointer to a struct). file names
// the source in errors. Every error returned is an *Error or a join of them.
func Decode(file string, data []byte, v any) error {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Errorf(file, 0, "the file is empty")
		}
		return syntaxError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return Errorf(file, extra.Line, "only one YAML document is allowed")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.MappingNode {
		return Errorf(file, root.Line, "the top level must be a mapping of keys to values")
	}
	if err := root.Decode(v); err != nil {
		return convertDecodeError(file, err)
	}
	var errs []error
	walk(file, root, reflect.ValueOf(v), &errs)
	return errors.Join(errs...)
}

func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := typeErrLine.FindStringSubmatch(msg); m != nil {
		l, _ := strconv.Atoi(m[1])
		return Errorf(file, l, "%s", m[2])
	}
	return Errorf(file, 0, "%s", msg)
}

func convertDecodeError(file string, err error) error {
	var le *lineError
	if errors.As(err, &le) {
		return Errorf(file, le.line, "%s", le.msg)
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var errs []error
		for _, s := range te.Errors {
			if m := typeErrLine.FindStringSubmatch(s); m != nil {
				l, _ := strconv.Atoi(m[1])
				errs = append(errs, Errorf(file, l, "%s", friendlyType(m[2])))
			} else {
				errs = append(errs, Errorf(file, 0, "%s", s))
			}
		}
		return errors.Join(errs...)
	}
	return syntaxError(file, err)
}

var unmarshalMsg = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.*)$")

// friendlyType rewrites yaml.v3's Go-centric type errors into words an
// operator understands.
func friendlyType(s string) string {
	m := unmarshalMsg.FindStringSubmatch(s)
	if m == nil {
		return s
	}
	want := m[3]
	switch {
	case strings.HasPrefix(want, "int"), strings.HasPrefix(want, "uint"):
		want = "a whole number"
	case want == "bool":
		want = "true or false"
	case want == "string":
		want = "a string"
	case strings.HasPrefix(want, "[]"):
		want = "a list"
	case strings.HasPrefix(want, "map["), strings.Contains(want, "."):
		want = "a mapping"
	}
	return fmt.Sprintf("%q is not valid here: expected %s", m[2], want)
}

var (
	posType         = reflect.TypeFor[Pos]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// walk visits the decoded value alongside its node: it reports keys the
// struct does not have and fills Pos fields.
func walk(file string, n *yaml.Node, v reflect.Value, errs *[]error) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		return // custom types validate themselves
	}
	switch v.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return
		}
		fields := map[string][]int{}
		var posFields [][]int // the struct's own Pos and those of inline structs
		t := v.Type()
		var collect func(t reflect.Type, index []int)
		collect = func(t reflect.Type, index []int) {
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				idx := append(append([]int{}, index...), i)
				if f.Type == posType {
					posFields = append(posFields, idx)
					continue
				}
				name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				// ",inline" structs share the enclosing mapping's keys.
				if opts == "inline" && f.Type.Kind() == reflect.Struct {
					collect(f.Type, idx)
					continue
				}
				if !f.IsExported() || name == "-" {
					continue
				}
				if name == "" {
					name = strings.ToLower(f.Name)
				}
				fields[name] = idx
			}
		}
		collect(t, nil)
		pos := Pos{Line: n.Line, keys: map[string]int{}}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			pos.keys[k.Value] = k.Line
			idx, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, Errorf(file, k.Line, "unknown key %q%s", k.Value, suggest(k.Value, fields)))
				continue
			}
			walk(file, val, v.FieldByIndex(idx), errs)
		}
		for _, idx := range posFields {
			if f := v.FieldByIndex(idx); f.CanSet() {
				f.Set(reflect.ValueOf(pos))
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i := 0; i < len(n.Content) && i < v.Len(); i++ {
			walk(file, n.Content[i], v.Index(i), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			mv := v.MapIndex(reflect.ValueOf(n.Content[i].Value))
			if !mv.IsValid() {
				continue
			}
			// Map values are not addressable: walk a copy and store it back
			// so Pos fields inside map values are filled too.
			cp := reflect.New(mv.Type()).Elem()
			cp.Set(mv)
			walk(file, n.Content[i+1], cp, errs)
			v.SetMapIndex(reflect.ValueOf(n.Content[i].Value), cp)
		}
	}
}

// suggest names the closest known key when the unknown one looks like a typo.
func suggest(key string, fields map[string][]int) string {
	best, bestD := "", 3
	for f := range fields {
		if d := distance(key, f); d < bestD {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
