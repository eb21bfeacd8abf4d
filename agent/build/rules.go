package build

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
)

// allowedRepository reports whether repo starts with one of the prefixes
// at a path boundary, so "https://git.example.com/site" allows
// ".../site/app.git" but not ".../site-evil.git" or "...site@evil.org/x".
func allowedRepository(repo string, prefixes []string) bool {
	if checkRepositoryText(repo) != nil {
		return false
	}
	for _, p := range prefixes {
		if !strings.HasPrefix(repo, p) {
			continue
		}
		if len(repo) == len(p) || strings.HasSuffix(p, "/") || strings.HasSuffix(p, ":") || repo[len(p)] == '/' {
			return true
		}
	}
	return false
}

// checkBranch applies git's ref-name rules (git check-ref-format) plus
// ours: nothing git could read as an option, no "..", no control
// characters. The branch is passed as a separate argv element after
// --branch anyway; the rule keeps odd names out of logs and messages.
func checkBranch(b string) error {
	switch {
	case b == "":
		return errors.New("branch is empty")
	case len(b) > 255:
		return errors.New("branch name is longer than 255 bytes")
	case strings.HasPrefix(b, "-"):
		return fmt.Errorf("branch %q must not start with '-'", b)
	case strings.Contains(b, ".."):
		return fmt.Errorf("branch %q must not contain '..'", b)
	case strings.Contains(b, "@{") || b == "@":
		return fmt.Errorf("branch %q must not contain '@{' or be '@'", b)
	case strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") || strings.Contains(b, "//"):
		return fmt.Errorf("branch %q has an empty path component", b)
	case strings.HasSuffix(b, ".") || strings.HasSuffix(b, ".lock"):
		return fmt.Errorf("branch %q must not end with '.' or '.lock'", b)
	}
	for _, r := range b {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("branch %q contains a control character or invalid UTF-8", b)
		}
		if strings.ContainsRune(" ~^:?*[\\", r) {
			return fmt.Errorf("branch %q contains %q, which git does not allow in a branch name", b, r)
		}
	}
	for _, c := range strings.Split(b, "/") {
		if strings.HasPrefix(c, ".") {
			return fmt.Errorf("branch %q has a component starting with '.'", b)
		}
	}
	return nil
}

// workspaceName maps a task id (which contains '/') to a directory name:
// readable, and unique through a hash of the whole id. Only names with
// this shape are ever pruned, so a misconfigured workspace_dir never loses
// files that are not workspaces.
func workspaceName(taskID string) string {
	var b strings.Builder
	for _, r := range taskID {
		if b.Len() >= 80 {
			break
		}
		if r < 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_' || r == '-') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	sum := sha256.Sum256([]byte(taskID))
	return workspacePrefix + b.String() + "-" + hex.EncodeToString(sum[:8])
}

const workspacePrefix = "ws-"

// matchGlob matches a slash-separated relative path against a pattern
// whose segments are path.Match patterns or "**" (any number of
// segments, including none).
func matchGlob(pattern, name string) bool {
	return matchSegments(strings.Split(pattern, "/"), strings.Split(name, "/"))
}

func matchSegments(p, s []string) bool {
	for len(p) > 0 {
		if p[0] == "**" {
			for i := 0; i <= len(s); i++ {
				if matchSegments(p[1:], s[i:]) {
					return true
				}
			}
			return false
		}
		if len(s) == 0 {
			return false
		}
		if ok, _ := path.Match(p[0], s[0]); !ok {
			return false
		}
		p, s = p[1:], s[1:]
	}
	return len(s) == 0
}
