package aempkg_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
)

func TestReadFile(t *testing.T) {
	data := aempkgtest.Zip(map[string]string{
		aempkg.PropertiesPath: aempkgtest.PropertiesXML(map[string]string{
			"name": "site.ui.apps", "group": "com/example", "version": "1.2.3-SNAPSHOT",
			"dependencies": "com/example:site.core:[1.0,2.0),adobe/consulting:acs-aem-commons-ui.apps:6.0.0",
			"description":  "a <description> & more", "requiresRestart": "false",
		}),
		aempkg.FilterPath: `<?xml version="1.0" encoding="UTF-8"?>
<workspaceFilter version="1.0">
    <filter root="/apps/site" mode="merge">
        <include pattern="/apps/site/components(/.*)?"/>
        <exclude pattern="/apps/site/config\..*" matchProperties="true"/>
    </filter>
    <filter root="/conf/site" mode="UPDATE_PROPERTIES"/>
    <filter root="/var/old" type="cleanup"/>
</workspaceFilter>`,
		"jcr_root/apps/site/.content.xml": "<jcr:root/>",
	})
	path := aempkgtest.WriteFile(t, t.TempDir(), "site.zip", data)
	p, err := aempkg.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "com/example:site.ui.apps:1.2.3-SNAPSHOT", p.ID.String())
	require.Equal(t, "a <description> & more", p.Properties["description"])
	require.Equal(t, "false", p.Properties["requiresRestart"])
	require.Len(t, p.Dependencies, 2)
	require.Equal(t, "com/example:site.core:[1.0,2.0)", p.Dependencies[0].String())
	require.Equal(t, []aempkg.FilterSet{
		{Root: "/apps/site", Mode: aempkg.ModeMerge, Rules: []aempkg.FilterRule{
			{Include: true, Pattern: "/apps/site/components(/.*)?"},
			{Include: false, Pattern: `/apps/site/config\..*`, MatchProperties: true},
		}},
		{Root: "/conf/site", Mode: aempkg.ModeUpdateProperties},
		{Root: "/var/old", Mode: aempkg.ModeReplace, Type: "cleanup"},
	}, p.Filters)
	require.Equal(t, []string{"dependencies", "description", "group", "name", "requiresRestart", "version"}, p.SortedPropertyNames())
}

func TestReadMissingRequired(t *testing.T) {
	for _, c := range []struct {
		props   map[string]string
		missing []string
	}{
		{map[string]string{"name": "a", "group": "g"}, []string{"version"}},
		{map[string]string{"name": "a", "group": "g", "version": ""}, []string{"version"}},
		{map[string]string{"version": "1"}, []string{"name", "group"}},
		{map[string]string{}, []string{"name", "group", "version"}},
	} {
		data := aempkgtest.Zip(map[string]string{aempkg.PropertiesPath: aempkgtest.PropertiesXML(c.props)})
		_, err := aempkg.Read(bytes.NewReader(data), int64(len(data)))
		var mpe *aempkg.MissingPropertiesError
		require.ErrorAs(t, err, &mpe)
		require.Equal(t, c.missing, mpe.Names)
		require.Contains(t, err.Error(), strings.Join(c.missing, ", "))
	}
}

func TestReadErrors(t *testing.T) {
	read := func(files map[string]string) error {
		data := aempkgtest.Zip(files)
		_, err := aempkg.Read(bytes.NewReader(data), int64(len(data)))
		return err
	}
	good := aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g", "version": "1"})

	err := read(map[string]string{"jcr_root/x": "y"})
	require.ErrorIs(t, err, aempkg.ErrNoProperties)

	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: "<properties><entry>x</entry></properties>"}), "without a key")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: "<props/>"}), "want <properties>")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: "<properties><entry key='a'>x"}), "unexpected EOF")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: "<properties><entry key='a'><b/></entry></properties>"}), "inside <entry>")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: "<properties/><properties/>"}), "after </properties>")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: `<?xml version="1.0" encoding="EBCDIC"?><properties/>`}), "unsupported XML encoding")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g", "version": "1", "dependencies": "a:b:[1,"})}), `"a:b:[1,"`)
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: aempkgtest.PropertiesXML(map[string]string{"name": "n x", "group": "g", "version": "1"})}), "package name")

	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: good, aempkg.FilterPath: `<workspaceFilter><filter root="/a" mode="bogus"/></workspaceFilter>`}), "unknown filter mode")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: good, aempkg.FilterPath: `<workspaceFilter><filter/></workspaceFilter>`}), "absolute")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: good, aempkg.FilterPath: `<workspaceFilter><filter root="/a"><include/></filter></workspaceFilter>`}), "without a pattern")
	require.ErrorContains(t, read(map[string]string{aempkg.PropertiesPath: good, aempkg.FilterPath: `<workspaceFilter><filter root="/a"><other/></filter></workspaceFilter>`}), "unexpected element <other>")

	_, err = aempkg.Read(bytes.NewReader([]byte("not a zip")), 9)
	require.ErrorContains(t, err, "not a readable zip")
}

func TestReadLatin1AndEmptyFilter(t *testing.T) {
	props := "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><properties><entry key=\"name\">n</entry><entry key=\"group\">g</entry><entry key=\"version\">1</entry><entry key=\"description\">caf\xe9</entry></properties>"
	data := aempkgtest.Zip(map[string]string{aempkg.PropertiesPath: props, aempkg.FilterPath: `<workspaceFilter version="1.0"/>`})
	p, err := aempkg.Read(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	require.Equal(t, "café", p.Properties["description"])
	require.Nil(t, p.Filters)
}

func TestReadDuplicateKeyLastWins(t *testing.T) {
	m, err := aempkg.ParseProperties(strings.NewReader(`<properties><entry key="a">1</entry><entry key="a">2</entry><entry key="e"/></properties>`))
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a": "2", "e": ""}, m)
}

func TestReadSizeLimit(t *testing.T) {
	big := aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g", "version": "1", "description": strings.Repeat("x", aempkg.MaxMetadataSize)})
	data := aempkgtest.Zip(map[string]string{aempkg.PropertiesPath: big})
	_, err := aempkg.Read(bytes.NewReader(data), int64(len(data)))
	require.ErrorContains(t, err, "allowed")
}

// A zip whose header lies about the uncompressed size is still cut off at
// the limit while reading.
func TestReadSizeLimitLyingHeader(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: aempkg.PropertiesPath, Method: zip.Store, UncompressedSize64: 10, CompressedSize64: aempkg.MaxMetadataSize + 10})
	require.NoError(t, err)
	_, err = w.Write(bytes.Repeat([]byte(" "), aempkg.MaxMetadataSize+10))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	_, err = aempkg.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.Error(t, err)
}

func TestReadDuplicateEntries(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, v := range []string{"1", "2"} {
		w, err := zw.Create(aempkg.PropertiesPath)
		require.NoError(t, err)
		_, err = w.Write([]byte(aempkgtest.PropertiesXML(map[string]string{"name": "n", "group": "g", "version": v})))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	_, err := aempkg.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	require.ErrorContains(t, err, "more than one")
}

func TestReadFileMissing(t *testing.T) {
	_, err := aempkg.ReadFile(t.TempDir() + "/nope.zip")
	require.Error(t, err)
	require.False(t, errors.Is(err, aempkg.ErrNoProperties))
}

func TestPackageJSONRoundTrip(t *testing.T) {
	data := aempkgtest.Package(aempkgtest.Spec{Group: "my/g", Name: "n", Version: "1.0-SNAPSHOT", Dependencies: "my/g:core:[1.0,2.0),other"})
	p, err := aempkg.Read(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	b, err := json.Marshal(p)
	require.NoError(t, err)
	require.Contains(t, string(b), `"ID":"my/g:n:1.0-SNAPSHOT"`)
	require.Contains(t, string(b), `"Dependencies":["my/g:core:[1.0,2.0)","other"]`)
	var back aempkg.Package
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, *p, back)

	// IDs work as map keys; invalid text is rejected on decode.
	m := map[aempkg.ID]int{p.ID: 1}
	b, err = json.Marshal(m)
	require.NoError(t, err)
	require.JSONEq(t, `{"my/g:n:1.0-SNAPSHOT":1}`, string(b))
	var id aempkg.ID
	require.Error(t, json.Unmarshal([]byte(`"not an id"`), &id))
	var r aempkg.VersionRange
	require.Error(t, json.Unmarshal([]byte(`"[2,1]"`), &r))
}
