package artifacts_test

import (
	"archive/zip"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deckhand-dev/deckhand/controlplane/artifacts"
	"github.com/deckhand-dev/deckhand/controlplane/server/servertest"
	"github.com/deckhand-dev/deckhand/pkg/aempkg"
	"github.com/deckhand-dev/deckhand/pkg/aempkg/aempkgtest"
	"github.com/deckhand-dev/deckhand/pkg/classify"
	"github.com/deckhand-dev/deckhand/pkg/kv"
	pb "github.com/deckhand-dev/deckhand/proto/deckhand/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pkgZip builds an AEM content package in group com/example.
func pkgZip(name, version, deps string) []byte {
	return aempkgtest.Package(aempkgtest.Spec{Group: "com/example", Name: name, Version: version, Dependencies: deps})
}

// dispatcherZip builds a small AMS-layout dispatcher configuration; tag
// makes the bytes differ between two of them.
func dispatcherZip(tag string) []byte {
	return aempkgtest.Zip(map[string]string{
		"conf/httpd.conf":                  "# " + tag + "\nServerRoot /etc/httpd\n",
		"conf.d/dispatcher_vhost.conf":     "Include conf.d/enabled_vhosts/*.vhost\n",
		"conf.d/enabled_vhosts/":           "",
		"conf.dispatcher.d/dispatcher.any": "/farms { $include \"enabled_farms/*.any\" }\n",
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// push uploads data as name through the real client stream, in chunks.
// It does not fail the test itself, so goroutines may call it.
func push(t *testing.T, c pb.ArtifactServiceClient, name string, data []byte) (*pb.PushArtifactResponse, error) {
	t.Helper()
	st, err := c.PushArtifact(ctxT(t))
	if err != nil {
		return nil, err
	}
	if err := st.Send(&pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Header{Header: &pb.PushArtifactHeader{Name: name, Size: int64(len(data))}}}); err != nil {
		return st.CloseAndRecv()
	}
	for off := 0; off < len(data); off += 1000 {
		end := min(off+1000, len(data))
		if err := st.Send(&pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Chunk{Chunk: data[off:end]}}); err != nil {
			return st.CloseAndRecv()
		}
	}
	return st.CloseAndRecv()
}

func mustPush(t *testing.T, c pb.ArtifactServiceClient, name string, data []byte) *pb.ArtifactInfo {
	t.Helper()
	resp, err := push(t, c, name, data)
	require.NoError(t, err, name)
	return resp.Artifact
}

// blobFiles counts the files in the blob store (blobs and temp files).
func blobFiles(t *testing.T, ctl *servertest.Control) (blobs, temps int) {
	t.Helper()
	root := filepath.Join(ctl.Config.DataDir, "artifacts")
	require.NoError(t, filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(rel, "tmp"+string(filepath.Separator)) {
			temps++
		} else {
			blobs++
		}
		return nil
	}))
	return blobs, temps
}

func start(t *testing.T) (*servertest.Control, pb.ArtifactServiceClient) {
	ctl := servertest.Start(t, servertest.Options{})
	return ctl, pb.NewArtifactServiceClient(ctl.AdminConn())
}

func requireRefused(t *testing.T, err error, code codes.Code, parts ...string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, status.Code(err), "%v", err)
	for _, p := range parts {
		require.Contains(t, status.Convert(err).Message(), p)
	}
}

func TestPushClassifiesAndSetIsInDependencyOrder(t *testing.T) {
	ctl, c := start(t)
	// Pushed in the reverse of the install order: the order comes from the
	// dependencies, not from the command line.
	app := mustPush(t, c, "app-1.0.zip", pkgZip("app", "1.0", "com/example:site:[1.0,2.0),com/example:core:1.0"))
	site := mustPush(t, c, "site-1.0.zip", pkgZip("site", "1.0", "com/example:core:[1.0,2.0)"))
	core := mustPush(t, c, "core-1.0.zip", pkgZip("core", "1.0", ""))
	disp := mustPush(t, c, "dispatcher.zip", dispatcherZip("a"))

	require.Equal(t, pb.ArtifactKind_ARTIFACT_KIND_AEM_PACKAGE, app.Kind)
	require.Equal(t, "com/example:app:1.0", app.PackageId)
	require.Equal(t, []string{"com/example:site:[1.0,2.0)", "com/example:core:1.0"}, app.Dependencies)
	require.Equal(t, pb.ArtifactKind_ARTIFACT_KIND_DISPATCHER_CONFIG, disp.Kind)
	require.Empty(t, disp.PackageId)
	sum := sha256.Sum256(dispatcherZip("a"))
	require.Equal(t, hex.EncodeToString(sum[:]), disp.Sha256)
	require.Equal(t, int64(len(dispatcherZip("a"))), disp.Size)

	resp, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "1.0", Digests: []string{app.Sha256, disp.Sha256, site.Sha256, core.Sha256}})
	require.NoError(t, err)
	require.True(t, resp.Created)
	set := resp.Set
	require.Regexp(t, `^set-[0-9a-f]{12}$`, set.Id)
	require.Equal(t, "1.0", set.Version)
	require.Equal(t, "admin", set.CreatedBy)
	var order []string
	for _, p := range set.Packages {
		order = append(order, p.Name)
		require.Equal(t, pb.ArtifactKind_ARTIFACT_KIND_AEM_PACKAGE, p.Kind)
	}
	require.Equal(t, []string{"core-1.0.zip", "site-1.0.zip", "app-1.0.zip"}, order)
	require.Equal(t, "dispatcher.zip", set.Dispatcher.Name)
	require.Empty(t, set.ExternalDependencies)

	got, err := c.GetSet(ctxT(t), &pb.GetSetRequest{Id: set.Id})
	require.NoError(t, err)
	require.Equal(t, set.Packages[2].Sha256, got.Set.Packages[2].Sha256)
	require.Equal(t, set.Dispatcher.Sha256, got.Set.Dispatcher.Sha256)

	list, err := c.ListSets(ctxT(t), &pb.ListSetsRequest{})
	require.NoError(t, err)
	require.Len(t, list.Sets, 1)
	require.Equal(t, set.Id, list.Sets[0].Id)
	arts, err := c.ListArtifacts(ctxT(t), &pb.ListArtifactsRequest{})
	require.NoError(t, err)
	require.Len(t, arts.Artifacts, 4)
	require.Equal(t, "app-1.0.zip", arts.Artifacts[0].Name) // by name

	// The Go API the rollout code uses sees the same set, in domain types.
	sets := artifacts.NewSets(ctl.Server.Blobs(), ctl.Server.Store().Backend())
	ds, err := sets.Get(set.Id)
	require.NoError(t, err)
	require.Equal(t, "1.0", ds.Version)
	require.Len(t, ds.Packages, 3)
	require.Equal(t, aempkg.ID{Group: "com/example", Name: "core", Version: aempkg.MustParseVersion("1.0")}, ds.Packages[0].PackageID)
	require.Equal(t, classify.AEMPackage, ds.Packages[0].Kind)
	require.Equal(t, classify.DispatcherConfig, ds.Dispatcher.Kind)
	require.Equal(t, disp.Sha256, ds.Dispatcher.Ref().SHA256)
	require.Equal(t, "dispatcher.zip", ds.Dispatcher.Ref().Name)
	require.Len(t, ds.Artifacts(), 4)
	require.True(t, ctl.Server.Blobs().Has(ds.Packages[1].SHA256))
	_, err = sets.Get("set-000000000000")
	require.ErrorIs(t, err, artifacts.ErrSetNotFound)
	nf, err := c.GetSet(ctxT(t), &pb.GetSetRequest{Id: "set-000000000000"})
	require.Nil(t, nf)
	requireRefused(t, err, codes.NotFound, "set-000000000000")

	// Pushes are audited with who did them; CreateSet by the interceptor.
	entries, err := ctl.Server.Store().Audit(time.Time{}, 0)
	require.NoError(t, err)
	var pushes, creates int
	for _, e := range entries {
		switch e.Action {
		case "PushArtifact":
			pushes++
			require.Equal(t, "admin", e.Who)
		case "CreateSet":
			creates++
		}
	}
	require.Equal(t, 4, pushes)
	require.Equal(t, 1, creates)
}

func TestSameBytesStoredOnceAndSetIsIdempotent(t *testing.T) {
	ctl, c := start(t)
	data := pkgZip("core", "1.0", "")
	first, err := push(t, c, "core-1.0.zip", data)
	require.NoError(t, err)
	require.False(t, first.AlreadyStored)
	second, err := push(t, c, "core.zip", data)
	require.NoError(t, err)
	require.True(t, second.AlreadyStored)
	require.Equal(t, first.Artifact.Sha256, second.Artifact.Sha256)
	require.Equal(t, "core.zip", second.Artifact.Name, "the record keeps the latest name")
	blobs, temps := blobFiles(t, ctl)
	require.Equal(t, 1, blobs, "the same bytes are stored once")
	require.Zero(t, temps, "no temp file is left behind")

	d := mustPush(t, c, "dispatcher.zip", dispatcherZip("a"))
	a, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "7", Digests: []string{first.Artifact.Sha256, d.Sha256}})
	require.NoError(t, err)
	require.True(t, a.Created)
	// Same version and digests, another order, a repeat, upper case: the
	// same set, unchanged.
	b, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "7", Digests: []string{strings.ToUpper(d.Sha256), first.Artifact.Sha256, d.Sha256}})
	require.NoError(t, err)
	require.False(t, b.Created)
	require.Equal(t, a.Set.Id, b.Set.Id)
	require.Equal(t, a.Set.CreatedAt.AsTime(), b.Set.CreatedAt.AsTime())
	// Another version is another set.
	other, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "8", Digests: []string{first.Artifact.Sha256, d.Sha256}})
	require.NoError(t, err)
	require.NotEqual(t, a.Set.Id, other.Set.Id)
	require.Equal(t, artifacts.SetID("7", []string{first.Artifact.Sha256, d.Sha256}), a.Set.Id)
}

func TestSetRefusals(t *testing.T) {
	_, c := start(t)
	core1 := mustPush(t, c, "core-1.0.zip", pkgZip("core", "1.0", ""))
	core11 := mustPush(t, c, "core-1.1.zip", pkgZip("core", "1.1", ""))
	d1 := mustPush(t, c, "dispatcher-a.zip", dispatcherZip("a"))
	d2 := mustPush(t, c, "dispatcher-b.zip", dispatcherZip("b"))
	ca := mustPush(t, c, "cyc-a.zip", pkgZip("cyc-a", "1.0", "com/example:cyc-b"))
	cb := mustPush(t, c, "cyc-b.zip", pkgZip("cyc-b", "1.0", "com/example:cyc-a:[1.0,2.0)"))
	needs2 := mustPush(t, c, "site-2.0.zip", pkgZip("site", "2.0", "com/example:core:[2.0,3.0)"))

	create := func(digests ...string) error {
		_, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "1", Digests: digests})
		return err
	}
	requireRefused(t, create(d1.Sha256, core1.Sha256, d2.Sha256), codes.InvalidArgument,
		"a set holds at most one dispatcher configuration, and this one has 2: dispatcher-a.zip (sha256 "+d1.Sha256[:12]+") and dispatcher-b.zip (sha256 "+d2.Sha256[:12]+")")
	requireRefused(t, create(ca.Sha256, cb.Sha256, core1.Sha256), codes.InvalidArgument,
		"package dependency cycle: com/example:cyc-a:1.0 -> com/example:cyc-b:1.0 -> com/example:cyc-a:1.0", "(cyc-a.zip, cyc-b.zip)")
	requireRefused(t, create(core1.Sha256, needs2.Sha256), codes.InvalidArgument,
		"com/example:site:2.0 (site-2.0.zip) requires com/example:core:[2.0,3.0), but the set has com/example:core:1.0 (core-1.0.zip)")
	requireRefused(t, create(core1.Sha256, core11.Sha256), codes.InvalidArgument,
		"a set holds one version of each AEM package; com/example:core is in the set 2 times: core-1.0.zip (1.0, sha256 "+core1.Sha256[:12]+") and core-1.1.zip (1.1, sha256 "+core11.Sha256[:12]+")")

	missing := strings.Repeat("ab", 32)
	requireRefused(t, create(core1.Sha256, missing), codes.NotFound, "artifact "+missing+" is not stored (push it first)")
	requireRefused(t, create("nope"), codes.InvalidArgument, `"nope" is not a sha256 digest`)
	requireRefused(t, create(), codes.InvalidArgument, "a set needs at least one artifact")
	_, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "1 0", Digests: []string{core1.Sha256}})
	requireRefused(t, err, codes.InvalidArgument, `set version "1 0" contains whitespace`)

	// Nothing refused was recorded.
	list, err := c.ListSets(ctxT(t), &pb.ListSetsRequest{})
	require.NoError(t, err)
	require.Empty(t, list.Sets)
}

func TestExternalDependenciesAreRecorded(t *testing.T) {
	_, c := start(t)
	core := mustPush(t, c, "core.zip", pkgZip("core", "1.0", "day/cq60/product:cq-content:[6.5,)"))
	site := mustPush(t, c, "site.zip", pkgZip("site", "1.0", "com/example:core,adobe/consulting:acs-aem-commons-all:6.0"))
	resp, err := c.CreateSet(ctxT(t), &pb.CreateSetRequest{Version: "2", Digests: []string{site.Sha256, core.Sha256}})
	require.NoError(t, err)
	set := resp.Set
	require.Nil(t, set.Dispatcher)
	require.Equal(t, "com/example:core:1.0", set.Packages[0].PackageId)
	var ext []string
	for _, e := range set.ExternalDependencies {
		ext = append(ext, e.PackageId+" requires "+e.Dependency)
	}
	require.Equal(t, []string{
		"com/example:core:1.0 requires day/cq60/product:cq-content:6.5", // [6.5,) and 6.5 are the same range
		"com/example:site:1.0 requires adobe/consulting:acs-aem-commons-all:6.0",
	}, ext)
}

func TestNonArtifactsAreRefusedAndNotKept(t *testing.T) {
	ctl, c := start(t)
	_, err := push(t, c, "readme.zip", aempkgtest.Zip(map[string]string{"README.md": "hello"}))
	requireRefused(t, err, codes.InvalidArgument,
		"artifact readme.zip is neither an AEM content package (no META-INF/vault/properties.xml) nor a dispatcher configuration (no conf/ and conf.d/ directories)")
	_, err = push(t, c, "notes.txt", []byte("just some text, not a zip"))
	requireRefused(t, err, codes.InvalidArgument, "artifact notes.txt is not a zip archive (zip: not a valid zip file)")
	_, err = push(t, c, "broken.zip", aempkgtest.Zip(map[string]string{aempkg.PropertiesPath: aempkgtest.PropertiesXML(map[string]string{"name": "x", "group": "g"})}))
	requireRefused(t, err, codes.InvalidArgument, "artifact broken.zip is an AEM content package with invalid metadata: META-INF/vault/properties.xml is missing required property version")
	_, err = push(t, c, "../etc/x.zip", pkgZip("core", "1.0", ""))
	requireRefused(t, err, codes.InvalidArgument, "must be a file name without directories")
	blobs, temps := blobFiles(t, ctl)
	require.Zero(t, blobs, "refused uploads are not kept")
	require.Zero(t, temps)
	arts, err := c.ListArtifacts(ctxT(t), &pb.ListArtifactsRequest{})
	require.NoError(t, err)
	require.Empty(t, arts.Artifacts)
}

func TestUploadMustMatchItsHeader(t *testing.T) {
	ctl, c := start(t)
	data := pkgZip("core", "1.0", "")
	send := func(msgs ...*pb.PushArtifactRequest) error {
		st, err := c.PushArtifact(ctxT(t))
		require.NoError(t, err)
		for _, m := range msgs {
			if st.Send(m) != nil {
				break
			}
		}
		_, err = st.CloseAndRecv()
		return err
	}
	header := func(n int) *pb.PushArtifactRequest {
		return &pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Header{Header: &pb.PushArtifactHeader{Name: "core.zip", Size: int64(n)}}}
	}
	chunk := func(b []byte) *pb.PushArtifactRequest {
		return &pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Chunk{Chunk: b}}
	}
	requireRefused(t, send(header(len(data)), chunk(data[:100])), codes.InvalidArgument,
		"upload of core.zip ended after 100 of the "+strconv.Itoa(len(data))+" bytes announced; nothing was stored")
	requireRefused(t, send(header(10), chunk(data)), codes.InvalidArgument, "upload of core.zip is longer than the 10 bytes announced")
	requireRefused(t, send(chunk(data)), codes.InvalidArgument, "the first message of an upload must be the header")
	requireRefused(t, send(), codes.InvalidArgument, "empty upload")
	requireRefused(t, send(header(len(data)), header(len(data))), codes.InvalidArgument, "a second header")
	blobs, temps := blobFiles(t, ctl)
	require.Zero(t, blobs)
	require.Zero(t, temps)
}

// writeBigPackage writes a valid content package of about size bytes to
// path without holding it in memory: one stored (uncompressed) entry of
// pseudo-random bytes.
func writeBigPackage(t *testing.T, path string, size int) {
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	bw := bufio.NewWriter(f)
	zw := zip.NewWriter(bw)
	for name, body := range map[string]string{
		aempkg.PropertiesPath: aempkgtest.PropertiesXML(map[string]string{"group": "com/example", "name": "big", "version": "1.0"}),
		aempkg.FilterPath:     aempkgtest.FilterXML("/content/dam/big"),
	} {
		w, err := zw.Create(name)
		require.NoError(t, err)
		_, err = io.WriteString(w, body)
		require.NoError(t, err)
	}
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "jcr_root/content/dam/big/blob.bin", Method: zip.Store})
	require.NoError(t, err)
	buf := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for written := 0; written < size; written += len(buf) {
		for i := 0; i < len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(x >> (8 * j))
			}
		}
		_, err := w.Write(buf)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	require.NoError(t, bw.Flush())
}

// TestLargeUploadStreamsToDisk pushes a 64 MiB package and stops after
// three quarters of it: by then the server must have written what it got
// to its temp file, and the process's live heap must not have grown by
// anything near the amount sent. A server that buffered the upload would
// fail both.
func TestLargeUploadStreamsToDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB upload")
	}
	ctl, c := start(t)
	path := filepath.Join(t.TempDir(), "big-1.0.zip")
	writeBigPackage(t, path, 64<<20)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	size := st.Size()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	stream, err := c.PushArtifact(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, stream.Send(&pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Header{Header: &pb.PushArtifactHeader{Name: "big-1.0.zip", Size: size}}}))
	const chunk = 256 << 10
	sent := int64(0)
	sendUpTo := func(limit int64) {
		for sent < limit {
			buf := make([]byte, min(chunk, limit-sent))
			n, err := io.ReadFull(f, buf)
			require.NoError(t, err)
			require.NoError(t, stream.Send(&pb.PushArtifactRequest{Msg: &pb.PushArtifactRequest_Chunk{Chunk: buf[:n]}}))
			sent += int64(n)
		}
	}
	sendUpTo(size * 3 / 4)

	tmpDir := filepath.Join(ctl.Config.DataDir, "artifacts", "tmp")
	require.Eventually(t, func() bool {
		m, _ := filepath.Glob(filepath.Join(tmpDir, "upload-*"))
		if len(m) != 1 {
			return false
		}
		fi, err := os.Stat(m[0])
		return err == nil && fi.Size() == sent
	}, 20*time.Second, 10*time.Millisecond, "the server writes chunks to disk as they arrive")

	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	grown := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("sent %d MiB; live heap grew by %.1f MiB", sent>>20, float64(grown)/(1<<20))
	require.Less(t, grown, int64(16<<20), "the upload must not be held in memory")

	sendUpTo(size)
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	require.Equal(t, "com/example:big:1.0", resp.Artifact.PackageId)
	require.Equal(t, size, resp.Artifact.Size)

	blob, err := ctl.Server.Blobs().Path(resp.Artifact.Sha256)
	require.NoError(t, err)
	h := sha256.New()
	bf, err := os.Open(blob)
	require.NoError(t, err)
	defer bf.Close()
	n, err := io.Copy(h, bf)
	require.NoError(t, err)
	require.Equal(t, size, n)
	require.Equal(t, resp.Artifact.Sha256, hex.EncodeToString(h.Sum(nil)))
}

func TestRoles(t *testing.T) {
	ctl, _ := start(t)
	admin := pb.NewAdminServiceClient(ctl.AdminConn())
	conn := func(role string) *grpc.ClientConn {
		resp, err := admin.CreateAdmin(ctxT(t), &pb.CreateAdminRequest{Name: "as-" + role, Roles: []string{role}})
		require.NoError(t, err)
		return ctl.ConnWithToken(resp.Token)
	}
	viewer := pb.NewArtifactServiceClient(conn("viewer"))
	deployer := pb.NewArtifactServiceClient(conn("deployer"))

	_, err := push(t, viewer, "core.zip", pkgZip("core", "1.0", ""))
	requireRefused(t, err, codes.PermissionDenied, "PushArtifact needs the deployer role; as-viewer has viewer")
	a, err := push(t, deployer, "core.zip", pkgZip("core", "1.0", ""))
	require.NoError(t, err)
	_, err = viewer.CreateSet(ctxT(t), &pb.CreateSetRequest{Digests: []string{a.Artifact.Sha256}})
	requireRefused(t, err, codes.PermissionDenied, "CreateSet needs the deployer role")
	set, err := deployer.CreateSet(ctxT(t), &pb.CreateSetRequest{Digests: []string{a.Artifact.Sha256}})
	require.NoError(t, err)
	require.Equal(t, "as-deployer", set.Set.CreatedBy)
	require.Empty(t, set.Set.Version)

	list, err := viewer.ListSets(ctxT(t), &pb.ListSetsRequest{})
	require.NoError(t, err)
	require.Len(t, list.Sets, 1)
	_, err = viewer.GetSet(ctxT(t), &pb.GetSetRequest{Id: set.Set.Id})
	require.NoError(t, err)
	arts, err := viewer.ListArtifacts(ctxT(t), &pb.ListArtifactsRequest{})
	require.NoError(t, err)
	require.Len(t, arts.Artifacts, 1)
}

// TestSetsOnMemoryBackend runs the Go API without a server, on the
// in-memory kv backend, as the rollout code's tests may.
func TestSetsOnMemoryBackend(t *testing.T) {
	blobs, err := artifacts.OpenBlobs(t.TempDir())
	require.NoError(t, err)
	sets := artifacts.NewSets(blobs, kv.NewMemory())
	dir := t.TempDir()
	core, err := sets.PutFile(aempkgtest.WriteFile(t, dir, "core.zip", pkgZip("core", "1.0", "")))
	require.NoError(t, err)
	require.False(t, core.AlreadyStored)
	again, err := sets.Push(strings.NewReader(string(pkgZip("core", "1.0", ""))), "core-again.zip")
	require.NoError(t, err)
	require.True(t, again.AlreadyStored)
	site, err := sets.PutFile(aempkgtest.WriteFile(t, dir, "site.zip", pkgZip("site", "1.0", "com/example:core:[1.0]")))
	require.NoError(t, err)
	set, created, err := sets.Create("1", []string{site.Artifact.SHA256, core.Artifact.SHA256}, "builder")
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "core-again.zip", set.Packages[0].Name)
	require.Equal(t, "site.zip", set.Packages[1].Name)
	require.Nil(t, set.Dispatcher)

	got, err := sets.Get(set.ID)
	require.NoError(t, err)
	require.Equal(t, set.Packages[1].Dependencies, got.Packages[1].Dependencies)
	require.Equal(t, set.Packages[1].PackageID, got.Packages[1].PackageID)

	// A later push under another name does not rename the set's snapshot.
	_, err = sets.Push(strings.NewReader(string(pkgZip("core", "1.0", ""))), "renamed.zip")
	require.NoError(t, err)
	got, err = sets.Get(set.ID)
	require.NoError(t, err)
	require.Equal(t, "core-again.zip", got.Packages[0].Name)

	_, err = sets.PutFile(dir)
	require.ErrorIs(t, err, artifacts.ErrRefused)
	_, err = sets.Push(strings.NewReader("x"), "x.zip")
	require.ErrorIs(t, err, artifacts.ErrRefused)
	require.ErrorIs(t, err, classify.ErrNotZip)

	// A blob stored behind the pushers' back (not classified) cannot join
	// a set.
	d, _, err := blobs.Put(strings.NewReader("raw"))
	require.NoError(t, err)
	_, _, err = sets.Create("1", []string{d}, "x")
	require.ErrorIs(t, err, artifacts.ErrRefused)
	require.ErrorContains(t, err, "is stored but was never pushed")
}

// TestConcurrentPushesOfTheSameBytes: several builders pushing the same
// package at once all succeed and leave one blob and one record.
func TestConcurrentPushesOfTheSameBytes(t *testing.T) {
	ctl, c := start(t)
	data := pkgZip("core", "1.0", "")
	errs := make(chan error, 6)
	for i := 0; i < cap(errs); i++ {
		go func() {
			_, err := push(t, c, "core.zip", data)
			errs <- err
		}()
	}
	for i := 0; i < cap(errs); i++ {
		require.NoError(t, <-errs)
	}
	blobs, temps := blobFiles(t, ctl)
	require.Equal(t, 1, blobs)
	require.Zero(t, temps)
	arts, err := c.ListArtifacts(ctxT(t), &pb.ListArtifactsRequest{})
	require.NoError(t, err)
	require.Len(t, arts.Artifacts, 1)
}
