package classify_test

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/classify"
)

// amsFiles is a small but realistic AMS dispatcher tree.
func amsFiles(prefix string) map[string]string {
	files := map[string]string{}
	for _, f := range []string{
		"conf/httpd.conf",
		"conf.d/dispatcher_vhost.conf",
		"conf.d/available_vhosts/aem_publish.vhost",
		"conf.d/enabled_vhosts/",
		"conf.d/rewrites/base_rewrite.rules",
		"conf.d/variables/ootb.vars",
		"conf.dispatcher.d/dispatcher.any",
		"conf.dispatcher.d/available_farms/002_ams_publish_farm.any",
		"conf.modules.d/02-dispatcher.conf",
	} {
		files[prefix+f] = "# " + f + "\n"
	}
	return files
}

func write(t *testing.T, name string, data []byte) string {
	t.Helper()
	return aempkgtest.WriteFile(t, t.TempDir(), name, data)
}

func TestClassifyPackage(t *testing.T) {
	path := write(t, "site.zip", aempkgtest.Package(aempkgtest.Spec{Group: "com/example", Name: "site", Version: "1.0", Dependencies: "com/example:core:1.0"}))
	r, err := classify.Classify(path)
	require.NoError(t, err)
	require.Equal(t, classify.AEMPackage, r.Kind)
	require.Equal(t, "aem-package", r.Kind.String())
	require.Equal(t, "com/example:site:1.0", r.Package.ID.String())
	require.Len(t, r.Package.Dependencies, 1)
}

func TestClassifyPackageMissingVersion(t *testing.T) {
	path := write(t, "x.zip", aempkgtest.Zip(map[string]string{
		aempkg.PropertiesPath: aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g"}),
		"jcr_root/apps/n/x":   "y",
	}))
	_, err := classify.Classify(path)
	require.EqualError(t, err, "artifact x.zip is an AEM content package with invalid metadata: META-INF/vault/properties.xml is missing required property version")
	var mpe *aempkg.MissingPropertiesError
	require.ErrorAs(t, err, &mpe)
}

func TestClassifyPackageWinsOverConfDirs(t *testing.T) {
	files := amsFiles("")
	files[aempkg.PropertiesPath] = aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g", "version": "1"})
	r, err := classify.Classify(write(t, "both.zip", aempkgtest.Zip(files)))
	require.NoError(t, err)
	require.Equal(t, classify.AEMPackage, r.Kind)
}

func TestClassifyDispatcher(t *testing.T) {
	r, err := classify.Classify(write(t, "dispatcher.zip", aempkgtest.Zip(amsFiles(""))))
	require.NoError(t, err)
	require.Equal(t, classify.DispatcherConfig, r.Kind)
	require.Equal(t, "", r.Root)
	require.Equal(t, []string{"conf", "conf.d", "conf.dispatcher.d", "conf.modules.d"}, r.Dirs)
	require.Nil(t, r.Package)
}

func TestClassifyDispatcherMinimal(t *testing.T) {
	// Only directory entries, no files: still the layout.
	r, err := classify.Classify(write(t, "d.zip", aempkgtest.Zip(map[string]string{"conf/": "", "conf.d/": ""})))
	require.NoError(t, err)
	require.Equal(t, classify.DispatcherConfig, r.Kind)
}

func TestClassifyDispatcherWrapped(t *testing.T) {
	files := amsFiles("dispatcher/")
	files["__MACOSX/dispatcher/._conf"] = "junk"
	files[".DS_Store"] = "junk"
	r, err := classify.Classify(write(t, "wrapped.zip", aempkgtest.Zip(files)))
	require.NoError(t, err)
	require.Equal(t, classify.DispatcherConfig, r.Kind)
	require.Equal(t, "dispatcher/", r.Root)
	require.Equal(t, []string{"conf", "conf.d", "conf.dispatcher.d", "conf.modules.d"}, r.Dirs)
}

func TestClassifyDispatcherWrapperWithSiblingIsRejected(t *testing.T) {
	files := amsFiles("dispatcher/")
	files["README.md"] = "hi"
	_, err := classify.Classify(write(t, "ambiguous.zip", aempkgtest.Zip(files)))
	require.ErrorIs(t, err, classify.ErrUnrecognized)
}

func TestClassifyDispatcherTwoLevelsDeepIsRejected(t *testing.T) {
	_, err := classify.Classify(write(t, "deep.zip", aempkgtest.Zip(amsFiles("a/b/"))))
	require.ErrorIs(t, err, classify.ErrUnrecognized)
}

func TestClassifyNeither(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		msg   string
	}{
		{"x.zip", map[string]string{"readme.txt": "hi"},
			"artifact x.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (no conf/ and conf.d/ directories)"},
		{"half.zip", map[string]string{"conf/httpd.conf": "x"},
			"artifact half.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (has conf/ but no conf.d/ directory)"},
		{"half2.zip", map[string]string{"d/conf.d/x.conf": "x"},
			"artifact half2.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (has conf.d/ but no conf/ directory in d/)"},
		{"jcr.zip", map[string]string{"jcr_root/apps/x/.content.xml": "x", "META-INF/MANIFEST.MF": "x"},
			"artifact jcr.zip is neither an AEM content package (has jcr_root/ but no META-INF/vault/properties.xml) nor a dispatcher configuration (no conf/ and conf.d/ directories)"},
		{"empty.zip", map[string]string{},
			"artifact empty.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (the zip is empty)"},
		{"file.zip", map[string]string{"conf": "a file, not a directory", "conf.d": "also a file"},
			"artifact file.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (no conf/ and conf.d/ directories)"},
	} {
		_, err := classify.Classify(write(t, c.name, aempkgtest.Zip(c.files)))
		require.EqualError(t, err, c.msg)
		require.ErrorIs(t, err, classify.ErrUnrecognized)
		var ue *classify.UnrecognizedError
		require.ErrorAs(t, err, &ue)
	}
}

func TestClassifyNotZip(t *testing.T) {
	path := write(t, "notes.zip", []byte("this is not a zip file at all"))
	_, err := classify.Classify(path)
	require.ErrorIs(t, err, classify.ErrNotZip)
	require.Contains(t, err.Error(), "artifact notes.zip is not a zip archive")

	// A truncated zip: the central directory is gone.
	data := aempkgtest.Zip(amsFiles(""))
	_, err = classify.Classify(write(t, "cut.zip", data[:len(data)/2]))
	require.ErrorIs(t, err, classify.ErrNotZip)
}

func TestClassifyCorruptMetadata(t *testing.T) {
	// Store properties.xml uncompressed, then flip a byte of it so its CRC
	// no longer matches.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: aempkg.PropertiesPath, Method: zip.Store})
	require.NoError(t, err)
	_, err = w.Write([]byte(aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g", "version": "1"})))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	data := buf.Bytes()
	i := bytes.Index(data, []byte(`key="name">n<`))
	require.Greater(t, i, 0)
	data[i+len(`key="name">`)] = 'm'
	_, err = classify.Classify(write(t, "corrupt.zip", data))
	require.ErrorIs(t, err, zip.ErrChecksum)
	require.False(t, errors.Is(err, classify.ErrUnrecognized))
}

func TestClassifyMissingFileAndDirectory(t *testing.T) {
	_, err := classify.Classify(filepath.Join(t.TempDir(), "nope.zip"))
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = classify.Classify(t.TempDir())
	require.ErrorContains(t, err, "not a regular file")
}
