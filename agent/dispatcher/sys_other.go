//go:build !linux

package dispatcher

import "os"

// exchange is only atomic on Linux; elsewhere the swap uses renames.
func exchange(a, b string) error { return errNoExchange }

// renameNoReplace outside Linux checks, then renames (racy, but only
// deckhand writes in its work dir).
func renameNoReplace(oldpath, newpath string) error {
	return renameCheckThenReplace(oldpath, newpath)
}

// syncFS falls back to syncing the directory itself.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func immutableAttr(string) bool { return false }

func setImmutableAttr(p string, on bool) error { return nil }
