package dispatcher

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Files scanned for references, by extension. Apache syntax files are
// read for Include (IncludeOptional may match nothing, so it is not a
// requirement); dispatcher syntax files for $include.
var (
	apacheExts     = map[string]bool{".conf": true, ".vhost": true, ".rules": true, ".vars": true, ".inc": true}
	dispatcherExts = map[string]bool{".any": true, ".farm": true}
)

// Missing is one file the new config needs and would not have.
type Missing struct {
	// Path is relative to the httpd dir (slash-separated); a required
	// directory ends in "/".
	Path string
	// RefFile and RefLine say which file and line reference it; empty for
	// a configured required path.
	RefFile string
	RefLine int
	// Directive is "Include" or "$include", or "required_paths".
	Directive string
	// Reason says what was looked for.
	Reason string
}

func (m Missing) String() string {
	if m.RefFile == "" {
		return fmt.Sprintf("%s: %s", m.Path, m.Reason)
	}
	return fmt.Sprintf("%s: %s (%s at %s:%d)", m.Path, m.Reason, m.Directive, m.RefFile, m.RefLine)
}

// IncompleteError rejects an artifact that does not hold the full file
// set. It is returned before anything on the host changed.
type IncompleteError struct {
	Missing []Missing
}

func (e *IncompleteError) Error() string {
	var b strings.Builder
	b.WriteString("dispatcher artifact does not hold the full file set; nothing on the host was changed. Missing:")
	for _, m := range e.Missing {
		b.WriteString("\n  ")
		b.WriteString(m.String())
	}
	return b.String()
}

// vnode is one object of a tree being validated.
type vnode struct {
	dir    bool
	link   bool
	target string
}

// vtree indexes a tree in memory so include patterns are resolved against
// exactly what would be deployed, never against the live config, and
// without following symlinks on disk.
type vtree struct {
	nodes    map[string]vnode    // slash path relative to the root
	children map[string][]string // dir path ("" is the root) -> names
}

func buildVTree(root string) (*vtree, error) {
	v := &vtree{nodes: map[string]vnode{}, children: map[string][]string{}}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		n := vnode{dir: de.IsDir()}
		if de.Type()&fs.ModeSymlink != 0 {
			n.link = true
			if n.target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		v.nodes[rel] = n
		dir := path.Dir(rel)
		if dir == "." {
			dir = ""
		}
		v.children[dir] = append(v.children[dir], path.Base(rel))
		return nil
	})
	return v, err
}

// resolve follows symlinks inside the tree and returns the real path of p
// and whether it exists. Absolute or escaping links do not resolve: the
// artifact's links are in-tree by construction (safezip), and the host's
// immutable files are never links in practice.
func (v *vtree) resolve(p string) (string, vnode, bool) {
	for hops := 0; hops < 40; hops++ {
		if p == "" {
			return "", vnode{dir: true}, true
		}
		parts := strings.Split(p, "/")
		cur, restart := "", false
		for i, c := range parts {
			next := c
			if cur != "" {
				next = cur + "/" + c
			}
			n, ok := v.nodes[next]
			if !ok {
				return "", vnode{}, false
			}
			if n.link {
				if path.IsAbs(n.target) {
					return "", vnode{}, false
				}
				t := path.Join(path.Dir(next), n.target)
				if t == ".." || strings.HasPrefix(t, "../") {
					return "", vnode{}, false
				}
				if t == "." {
					t = ""
				}
				p = path.Join(append([]string{t}, parts[i+1:]...)...)
				restart = true
				break
			}
			cur = next
		}
		if !restart {
			return cur, v.nodes[cur], true
		}
	}
	return "", vnode{}, false
}

// glob expands a pattern (path.Match syntax per element, wildcards allowed
// in any element, as Apache's Include allows) to the paths, as written
// through any links, that exist.
func (v *vtree) glob(pattern string) []string {
	bases := []string{""}
	for _, part := range strings.Split(pattern, "/") {
		var next []string
		for _, base := range bases {
			if !hasMeta(part) {
				cand := joinRel(base, part)
				if _, _, ok := v.resolve(cand); ok {
					next = append(next, cand)
				}
				continue
			}
			real, n, ok := v.resolve(base)
			if !ok || !n.dir {
				continue
			}
			for _, child := range v.children[real] {
				if ok, _ := path.Match(part, child); ok {
					next = append(next, joinRel(base, child))
				}
			}
		}
		bases = next
	}
	sort.Strings(bases)
	return bases
}

func joinRel(base, name string) string {
	if base == "" {
		return name
	}
	return base + "/" + name
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[`) }

// validator checks a staged tree for the full file set.
type validator struct {
	cfg     *Config
	tree    *vtree
	defines map[string]string
	missing []Missing
	seen    map[string]bool
	skipped []string // references not checkable, for the log
}

// checkIncludes reports every file the staged tree (artifact minus
// immutable entries plus the host's immutable files) references with
// Include or $include and does not hold.
func checkIncludes(cfg *Config, stage string) (missing []Missing, unchecked []string, err error) {
	tree, err := buildVTree(stage)
	if err != nil {
		return nil, nil, err
	}
	v := &validator{cfg: cfg, tree: tree, defines: map[string]string{}, seen: map[string]bool{}}
	var apacheFiles, dispFiles []string
	for p, n := range tree.nodes {
		if n.dir || n.link {
			continue // a linked file is scanned at its real path
		}
		switch ext := strings.ToLower(path.Ext(p)); {
		case apacheExts[ext]:
			apacheFiles = append(apacheFiles, p)
		case dispatcherExts[ext]:
			dispFiles = append(dispFiles, p)
		}
	}
	sort.Strings(apacheFiles)
	sort.Strings(dispFiles)
	parsed := map[string][]directive{}
	for _, p := range apacheFiles {
		data, err := os.ReadFile(filepath.Join(stage, filepath.FromSlash(p)))
		if err != nil {
			return nil, nil, err
		}
		parsed[p] = parseApache(data)
		for _, d := range parsed[p] {
			if strings.EqualFold(d.name, "Define") {
				f := strings.Fields(d.args)
				if len(f) >= 1 {
					val := ""
					if len(f) >= 2 {
						val = unquote(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(d.args), f[0])))
					}
					if _, dup := v.defines[f[0]]; !dup {
						v.defines[f[0]] = val
					}
				}
			}
		}
	}
	for _, p := range apacheFiles {
		for _, d := range parsed[p] {
			if strings.EqualFold(d.name, "Include") {
				v.check(p, d.line, "Include", firstArg(d.args), false)
			}
		}
	}
	for _, p := range dispFiles {
		data, err := os.ReadFile(filepath.Join(stage, filepath.FromSlash(p)))
		if err != nil {
			return nil, nil, err
		}
		for _, inc := range parseDispatcherIncludes(data) {
			v.check(p, inc.line, "$include", inc.arg, true)
		}
	}
	sort.SliceStable(v.missing, func(i, j int) bool {
		a, b := v.missing[i], v.missing[j]
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.RefFile != b.RefFile {
			return a.RefFile < b.RefFile
		}
		return a.RefLine < b.RefLine
	})
	return v.missing, v.skipped, nil
}

var varRef = regexp.MustCompile(`\$\{([^}]*)\}`)

// check resolves one reference and records it when nothing in the tree
// satisfies it.
func (v *validator) check(from string, line int, directive, arg string, dispatcher bool) {
	if arg == "" {
		return
	}
	unresolved := ""
	arg = varRef.ReplaceAllStringFunc(arg, func(m string) string {
		name := m[2 : len(m)-1]
		if val, ok := v.defines[name]; ok {
			return val
		}
		unresolved = name
		return m
	})
	if unresolved != "" {
		// Apache would take it from its environment, which the agent
		// cannot see; configtest judges this one.
		v.skipped = append(v.skipped, fmt.Sprintf("%s:%d: %s %s (${%s} is not Defined in the config)", from, line, directive, arg, unresolved))
		return
	}
	var cands []string
	if dispatcher && !filepath.IsAbs(arg) {
		// The dispatcher resolves a relative $include against the including
		// file's directory; older configs rely on the server root. Either
		// satisfies the reference (unverified which one mod_dispatcher
		// prefers; accepting both never rejects a config that works).
		cands = append(cands, path.Join(path.Dir(from), filepath.ToSlash(arg)))
	}
	abs := arg
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(v.cfg.ServerRoot, arg)
	}
	abs = filepath.Clean(abs)
	if within(abs, v.cfg.HTTPDDir) {
		if rel, err := filepath.Rel(v.cfg.HTTPDDir, abs); err == nil {
			cands = append(cands, filepath.ToSlash(rel))
		}
	}
	var inTree []string
	for _, c := range cands {
		first, _, _ := strings.Cut(c, "/")
		if c != "." && !strings.HasPrefix(c, "../") && c != ".." && v.cfg.isManaged(first) {
			inTree = append(inTree, c)
		}
	}
	if len(inTree) == 0 {
		// Outside the managed dirs: not part of the artifact's file set
		// (a system file); configtest judges it.
		v.skipped = append(v.skipped, fmt.Sprintf("%s:%d: %s %s (outside the managed dirs)", from, line, directive, arg))
		return
	}
	for _, c := range inTree {
		if hasMeta(c) {
			if matches := v.tree.glob(c); len(matches) > 0 {
				// Apache opens every match: an enabled_* link whose target
				// is not in the artifact fails the include.
				for _, m := range matches {
					if _, _, ok := v.tree.resolve(m); !ok {
						v.add(Missing{Path: m, RefFile: from, RefLine: line, Directive: directive, Reason: "dangling symlink matched by the wildcard (its target is not in the artifact)"})
					}
				}
				return
			}
		} else if _, _, ok := v.tree.resolve(c); ok {
			return
		}
	}
	target := inTree[len(inTree)-1]
	reason := "no such file in the artifact"
	if hasMeta(target) {
		reason = "no file in the artifact matches the wildcard"
	}
	if v.cfg.IsImmutable(target) {
		reason = "immutable file missing on the host (the artifact's copy of an immutable file is ignored)"
	}
	v.add(Missing{Path: target, RefFile: from, RefLine: line, Directive: directive, Reason: reason})
}

// add records m once per (path, referencing file, line).
func (v *validator) add(m Missing) {
	key := fmt.Sprintf("%s\x00%s\x00%d", m.Path, m.RefFile, m.RefLine)
	if v.seen[key] {
		return
	}
	v.seen[key] = true
	v.missing = append(v.missing, m)
}

// directive is one Apache config line, continuation lines joined.
type directive struct {
	line int // where it starts, 1-based
	name string
	args string
}

// parseApache splits Apache config text into directives: comments and
// blank lines dropped, backslash-newline continuations joined, as Apache's
// own reader does.
func parseApache(data []byte) []directive {
	var out []directive
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	lineNo, start := 0, 0
	var cur strings.Builder
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" || s[0] == '#' {
			return
		}
		name, args := s, ""
		if i := strings.IndexAny(s, " \t"); i >= 0 {
			name, args = s[:i], s[i+1:]
		}
		out = append(out, directive{line: start, name: name, args: strings.TrimSpace(args)})
	}
	for sc.Scan() {
		lineNo++
		l := strings.TrimRight(sc.Text(), "\r")
		if cur.Len() == 0 {
			start = lineNo
		}
		if strings.HasSuffix(l, "\\") {
			cur.WriteString(strings.TrimSuffix(l, "\\"))
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return out
}

// firstArg returns the first argument of an Apache directive, unquoted.
func firstArg(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if q := s[0]; q == '"' || q == '\'' {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) && (s[i+1] == q || s[i+1] == '\\') {
				b.WriteByte(s[i+1])
				i++
				continue
			}
			if c == q {
				return b.String()
			}
			b.WriteByte(c)
		}
		return b.String() // unterminated: configtest will say so
	}
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

type dispInclude struct {
	line int
	arg  string
}

var dispIncludeRe = regexp.MustCompile(`\$include\s*("([^"]*)"|'([^']*)')`)

// parseDispatcherIncludes finds $include "file" references in dispatcher
// (.any) syntax, ignoring # comments outside quotes.
func parseDispatcherIncludes(data []byte) []dispInclude {
	var out []dispInclude
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	n := 0
	for sc.Scan() {
		n++
		l := stripAnyComment(sc.Text())
		for _, m := range dispIncludeRe.FindAllStringSubmatch(l, -1) {
			arg := m[2]
			if m[3] != "" {
				arg = m[3]
			}
			out = append(out, dispInclude{line: n, arg: arg})
		}
	}
	return out
}

// stripAnyComment cuts a dispatcher config line at a # outside quotes.
func stripAnyComment(l string) string {
	var q byte
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case q != 0:
			if c == '\\' {
				i++
			} else if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		case c == '#':
			return l[:i]
		}
	}
	return l
}

// checkRequired reports required paths the artifact itself lacks. names
// holds every path the artifact has (written or skipped as immutable),
// relative to the httpd dir.
func checkRequired(cfg *Config, names map[string]bool) []Missing {
	var out []Missing
	for _, r := range cfg.RequiredPaths {
		if !names[strings.TrimSuffix(r, "/")] {
			out = append(out, Missing{Path: r, Directive: "required_paths", Reason: "required path is missing from the artifact"})
		}
	}
	return out
}
