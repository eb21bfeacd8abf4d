//go:build !linux

package safezip

// renameNoReplace renames oldpath to newpath and fails if newpath exists. Outside Linux the
// check and the rename are two steps; a directory created at newpath in between may be
// replaced if it is empty.
func renameNoReplace(oldpath, newpath string) error {
	return renameCheckThenReplace(oldpath, newpath)
}
