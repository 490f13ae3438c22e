package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const refName = "org.opencontainers.image.ref.name"

func TestSplitTransport(t *testing.T) {
	tests := []struct {
		name      string
		source    string
		transport string
		rest      string
	}{
		{name: "docker", source: "docker://example.com/repo:tag",
			transport: "docker", rest: "example.com/repo:tag"},
		{name: "docker digest", source: "docker://repo@sha256:abc",
			transport: "docker", rest: "repo@sha256:abc"},
		{name: "oci", source: "oci:/some/dir:tag", transport: "oci", rest: "/some/dir:tag"},
		{name: "oci relative", source: "oci:dir", transport: "oci", rest: "dir"},
		{name: "oci-archive", source: "oci-archive:/a/b.tar:v1",
			transport: "oci-archive", rest: "/a/b.tar:v1"},
		{name: "docker-archive", source: "docker-archive:b.tar:repo:tag",
			transport: "docker-archive", rest: "b.tar:repo:tag"},
		{name: "bare repo and tag", source: "alpine:3.20", transport: "docker",
			rest: "alpine:3.20"},
		{name: "bare host with port", source: "localhost:5000/repo:tag",
			transport: "docker", rest: "localhost:5000/repo:tag"},
		{name: "bare repo named like a transport", source: "ocibuilder:latest",
			transport: "docker", rest: "ocibuilder:latest"},
		{name: "other scheme", source: "http://example.com/x", transport: "http",
			rest: "example.com/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			transport, rest := splitTransport(tt.source)
			if got, want := transport, tt.transport; got != want {
				t.Errorf("transport = %q, want %q", got, want)
			}
			if got, want := rest, tt.rest; got != want {
				t.Errorf("rest = %q, want %q", got, want)
			}
		})
	}
}

func TestSplitPathRef(t *testing.T) {
	dir := t.TempDir()
	colonDir := filepath.Join(dir, "a:b")
	if err := os.Mkdir(colonDir, 0o755); err != nil {
		t.Fatal(err)
	}
	colonFile := filepath.Join(dir, "x:y.tar")
	if err := os.WriteFile(colonFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.Mkdir(plain, 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		in   string
		path string
		ref  string
	}{
		{name: "plain path", in: plain, path: plain},
		{name: "plain path and tag", in: plain + ":v1", path: plain, ref: "v1"},
		{name: "colon in dir", in: colonDir, path: colonDir},
		{name: "colon in dir and tag", in: colonDir + ":v1", path: colonDir, ref: "v1"},
		{name: "colon in file and ref with colon", in: colonFile + ":repo:tag",
			path: colonFile, ref: "repo:tag"},
		{name: "missing path", in: filepath.Join(dir, "missing:v1"),
			path: filepath.Join(dir, "missing:v1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, ref := splitPathRef(tt.in)
			if got, want := path, tt.path; got != want {
				t.Errorf("path = %q, want %q", got, want)
			}
			if got, want := ref, tt.ref; got != want {
				t.Errorf("ref = %q, want %q", got, want)
			}
		})
	}
}

// randomImage returns a random image with n layers and its digest.
func randomImage(t *testing.T, n int64) (v1.Image, v1.Hash) {
	t.Helper()
	img, err := random.Image(256, n)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return img, d
}

// writeLayout writes an OCI layout at dir with one entry per image, each
// annotated with its tag unless the tag is empty.
func writeLayout(t *testing.T, dir string, tags []string, imgs []v1.Image) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for i, img := range imgs {
		var opts []layout.Option
		if tags[i] != "" {
			opts = append(opts, layout.WithAnnotations(map[string]string{refName: tags[i]}))
		}
		if err := p.AppendImage(img, opts...); err != nil {
			t.Fatal(err)
		}
	}
}

// checkImage compares what Open returned with the image it was built from.
func checkImage(t *testing.T, got *Image, img v1.Image, digest v1.Hash) {
	t.Helper()
	if got.ManifestDigest != digest {
		t.Errorf("ManifestDigest = %s, want %s", got.ManifestDigest, digest)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfigDigest != cfgName {
		t.Errorf("ConfigDigest = %s, want %s", got.ConfigDigest, cfgName)
	}
	if err := checkBytes(got.RawConfig, got.ConfigDigest, -1); err != nil {
		t.Errorf("RawConfig: %v", err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(got.Layers), len(layers); got != want {
		t.Fatalf("%d layers, want %d", got, want)
	}
	for i, l := range layers {
		d, _ := l.Digest()
		diffID, _ := l.DiffID()
		if got.Layers[i].Digest != d || got.Layers[i].DiffID != diffID {
			t.Errorf("layer %d = %s/%s, want %s/%s", i, got.Layers[i].Digest,
				got.Layers[i].DiffID, d, diffID)
		}
	}
}

func TestOpenLayout(t *testing.T) {
	ctx := context.Background()
	img1, d1 := randomImage(t, 2)
	img2, d2 := randomImage(t, 1)
	img3, d3 := randomImage(t, 3)
	multi := filepath.Join(t.TempDir(), "lay:out")
	writeLayout(t, multi, []string{"v1", "v2", "example.com/repo:v3"},
		[]v1.Image{img1, img2, img3})
	single := t.TempDir()
	writeLayout(t, single, []string{""}, []v1.Image{img2})

	tests := []struct {
		name    string
		source  string
		img     v1.Image
		digest  v1.Hash
		wantErr error
	}{
		{name: "by tag", source: "oci:" + multi + ":v2", img: img2, digest: d2},
		{name: "by tag first", source: "oci:" + multi + ":v1", img: img1, digest: d1},
		{name: "by tag suffix of a full name", source: "oci:" + multi + ":v3", img: img3,
			digest: d3},
		{name: "single manifest without tag", source: "oci:" + single, img: img2, digest: d2},
		{name: "several manifests without tag", source: "oci:" + multi,
			wantErr: ErrBadReference},
		{name: "unknown tag", source: "oci:" + multi + ":nope", wantErr: ErrNotFound},
		{name: "missing dir", source: "oci:" + filepath.Join(t.TempDir(), "gone"),
			wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Open(ctx, tt.source, Options{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open(%q) error = %v, want %v", tt.source, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer got.Close()
			checkImage(t, got, tt.img, tt.digest)
			if got.Source != tt.source {
				t.Errorf("Source = %q, want %q", got.Source, tt.source)
			}
		})
	}
}

// TestOpenLayoutPlatform checks an explicit platform against a layout entry
// that records one.
func TestOpenLayoutPlatform(t *testing.T) {
	img, d := randomImage(t, 1)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	plat := v1.Platform{OS: "linux", Architecture: "arm64"}
	err = p.AppendImage(img, layout.WithPlatform(plat),
		layout.WithAnnotations(map[string]string{refName: "v1"}))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		platform string
		wantErr  error
	}{
		{name: "matching", platform: "linux/arm64/v8"},
		{name: "other", platform: "linux/s390x", wantErr: ErrNoPlatform},
		{name: "malformed", platform: "linux", wantErr: ErrBadReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Open(context.Background(), "oci:"+dir+":v1", Options{Platform: tt.platform})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open error = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				defer got.Close()
				checkImage(t, got, img, d)
			}
		})
	}
}

func TestOpenUnknownTransport(t *testing.T) {
	_, err := Open(context.Background(), "http://example.com/repo", Options{})
	if !errors.Is(err, ErrBadReference) {
		t.Errorf("Open error = %v, want %v", err, ErrBadReference)
	}
}

func TestOpenDockerArchive(t *testing.T) {
	img, _ := randomImage(t, 2)
	file := filepath.Join(t.TempDir(), "saved:1.tar")
	tag, err := name.NewTag("example.com/repo:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		source  string
		wantErr error
	}{
		{name: "only image", source: "docker-archive:" + file},
		{name: "by tag", source: "docker-archive:" + file + ":example.com/repo:v1"},
		{name: "bad tag", source: "docker-archive:" + file + ":Bad Tag", wantErr: ErrBadReference},
		{name: "missing file", source: "docker-archive:" + file + ".gone",
			wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Open(context.Background(), tt.source, Options{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open(%q) error = %v, want %v", tt.source, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer got.Close()
			// The archive holds the same config and layers; the manifest is
			// rebuilt from them, so its digest is whatever the archive gives.
			archived, err := tarball.ImageFromPath(file, nil)
			if err != nil {
				t.Fatal(err)
			}
			d, err := archived.Digest()
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, got, img, d)
		})
	}
}

// tarDir writes the regular files and directories below dir to a tar file.
func tarDir(t *testing.T, dir, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenOCIArchive(t *testing.T) {
	img1, d1 := randomImage(t, 2)
	img2, d2 := randomImage(t, 1)
	lay := t.TempDir()
	writeLayout(t, lay, []string{"v1", "v2"}, []v1.Image{img1, img2})
	file := filepath.Join(t.TempDir(), "image:x.tar")
	tarDir(t, lay, file)

	tests := []struct {
		name    string
		source  string
		img     v1.Image
		digest  v1.Hash
		wantErr error
	}{
		{name: "by tag", source: "oci-archive:" + file + ":v2", img: img2, digest: d2},
		{name: "other tag", source: "oci-archive:" + file + ":v1", img: img1, digest: d1},
		{name: "unknown tag", source: "oci-archive:" + file + ":v9", wantErr: ErrNotFound},
		{name: "missing file", source: "oci-archive:" + file + ".gone", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			got, err := Open(context.Background(), tt.source, Options{TempDir: tmp})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open(%q) error = %v, want %v", tt.source, err, tt.wantErr)
			}
			if err != nil {
				if names := dirNames(t, tmp); len(names) != 0 {
					t.Errorf("a failed Open left %q in the temp dir", names)
				}
				return
			}
			checkImage(t, got, tt.img, tt.digest)
			if len(dirNames(t, tmp)) != 1 {
				t.Errorf("temp dir holds %q, want the unpacked layout", dirNames(t, tmp))
			}
			if err := got.Close(); err != nil {
				t.Fatal(err)
			}
			if names := dirNames(t, tmp); len(names) != 0 {
				t.Errorf("Close left %q in the temp dir", names)
			}
		})
	}
}

// hostileEntry is one member of a hand-made archive.
type hostileEntry struct {
	name     string
	typeflag byte
	linkname string
	body     string
}

func writeTar(t *testing.T, file string, entries []hostileEntry) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typeflag, Linkname: e.linkname,
			Mode: 0o644, Size: int64(len(e.body))}
		if e.typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOpenOCIArchiveHostile feeds archives whose names try to leave the
// extraction directory; each must fail or stay inside, and nothing may
// appear beside the extraction directory.
func TestOpenOCIArchiveHostile(t *testing.T) {
	layoutFile := hostileEntry{name: "oci-layout", typeflag: tar.TypeReg,
		body: `{"imageLayoutVersion":"1.0.0"}`}
	tests := []struct {
		name    string
		entries []hostileEntry
		errText string // what the error must say
	}{
		{name: "parent member", errText: "leaves the archive", entries: []hostileEntry{layoutFile,
			{name: "../evil", typeflag: tar.TypeReg, body: "x"}}},
		{name: "parent after clean", errText: "leaves the archive",
			entries: []hostileEntry{layoutFile,
				{name: "blobs/../../evil", typeflag: tar.TypeReg, body: "x"}}},
		{name: "parent directory", errText: "leaves the archive",
			entries: []hostileEntry{layoutFile, {name: "../evil", typeflag: tar.TypeDir}}},
		// The symlink is skipped, so blobs/evil is written inside; the
		// layout then lacks its index.
		{name: "symlink out then through it", errText: "index.json",
			entries: []hostileEntry{layoutFile,
				{name: "blobs", typeflag: tar.TypeSymlink, linkname: ".."},
				{name: "blobs/evil", typeflag: tar.TypeReg, body: "x"}}},
		{name: "absolute name", errText: "index.json", entries: []hostileEntry{layoutFile,
			{name: "/evil", typeflag: tar.TypeReg, body: "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			file := filepath.Join(top, "hostile.tar")
			writeTar(t, file, tt.entries)
			tmp := filepath.Join(top, "tmp")
			if err := os.Mkdir(tmp, 0o755); err != nil {
				t.Fatal(err)
			}

			got, err := Open(context.Background(), "oci-archive:"+file, Options{TempDir: tmp})
			if err == nil {
				got.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("Open error = %v, want one saying %q", err, tt.errText)
			}
			if names := dirNames(t, top); len(names) != 2 {
				t.Errorf("archive dir holds %q, want only hostile.tar and tmp", names)
			}
			if names := dirNames(t, tmp); len(names) != 0 {
				t.Errorf("temp dir holds %q after Open and Close", names)
			}
			if _, err := os.Lstat("/evil"); err == nil {
				t.Errorf("/evil exists")
			}
		})
	}
}

// TestExtractLayoutConfined checks the extraction itself, where an
// absolute name lands inside the directory and other entry types are
// skipped.
func TestExtractLayoutConfined(t *testing.T) {
	top := t.TempDir()
	file := filepath.Join(top, "a.tar")
	writeTar(t, file, []hostileEntry{
		{name: "/abs", typeflag: tar.TypeReg, body: "a"},
		{name: "./dir/./f", typeflag: tar.TypeReg, body: "f"},
		{name: "link", typeflag: tar.TypeSymlink, linkname: "/etc/passwd"},
		{name: "hard", typeflag: tar.TypeLink, linkname: "abs"},
		{name: "fifo", typeflag: tar.TypeFifo},
	})
	dir := filepath.Join(top, "out")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := extractLayout(context.Background(), f, dir); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(dirNames(t, dir), " "), "abs dir"; got != want {
		t.Errorf("extracted %q, want %q", got, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, "dir", "f"))
	if err != nil || string(b) != "f" {
		t.Errorf("dir/f = %q, %v; want %q", b, err, "f")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if err := extractLayout(ctx, f, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Errorf("extractLayout with a cancelled context = %v, want %v", err, context.Canceled)
	}
}

// TestDescribeDiffIDCount checks that a config listing fewer diffIDs than
// the manifest has layers is refused.
func TestDescribeDiffIDCount(t *testing.T) {
	img, _ := randomImage(t, 2)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = cf.RootFS.DiffIDs[:1]
	bad, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	d, err := bad.Digest()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeLayout(t, dir, []string{"bad"}, []v1.Image{bad})

	_, err = Open(context.Background(), "oci:"+dir+":bad", Options{})
	if err == nil || !strings.Contains(err.Error(), "1 diffIDs for 2 layers") {
		t.Errorf("Open error = %v, want a diffID count mismatch", err)
	}
	opts := Options{MaxDocumentBytes: DefaultMaxDocumentBytes}
	if _, err := describe("x", bad, d, opts); err == nil {
		t.Errorf("describe accepted a config with 1 diffID for 2 layers")
	}
}

// imageWithLayer returns a random one-layer image with a second layer of
// media type mt on top.
func imageWithLayer(t *testing.T, mt types.MediaType) (v1.Image, v1.Hash) {
	t.Helper()
	img, _ := randomImage(t, 1)
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer([]byte("top"), mt),
		MediaType: mt})
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return img, d
}

func TestDescribeLayerMediaTypes(t *testing.T) {
	tests := []struct {
		name         string
		mediaType    types.MediaType
		allowForeign bool
		wantErr      error
	}{
		{name: "docker gzip", mediaType: types.DockerLayer},
		{name: "oci gzip", mediaType: types.OCILayer},
		{name: "oci zstd", mediaType: types.OCILayerZStd},
		{name: "docker plain", mediaType: types.DockerUncompressedLayer},
		{name: "oci plain", mediaType: types.OCIUncompressedLayer},
		{name: "oci restricted", mediaType: types.OCIRestrictedLayer},
		{name: "oci restricted plain", mediaType: types.OCIUncompressedRestrictedLayer},
		{name: "foreign refused", mediaType: types.DockerForeignLayer, wantErr: ErrUnsupported},
		{name: "foreign allowed", mediaType: types.DockerForeignLayer, allowForeign: true},
		{name: "unknown", mediaType: "application/vnd.example.layer.v1+squashfs",
			wantErr: ErrUnsupported},
		{name: "unknown despite foreign allowed", mediaType: "application/octet-stream",
			allowForeign: true, wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, d := imageWithLayer(t, tt.mediaType)
			opts := Options{MaxDocumentBytes: DefaultMaxDocumentBytes,
				AllowForeign: tt.allowForeign}
			got, err := describe("x", img, d, opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("describe error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "layer 2 ") {
					t.Errorf("error %q does not name layer 2", err)
				}
				return
			}
			if got, want := got.Layers[1].MediaType, tt.mediaType; got != want {
				t.Errorf("layer 2 media type = %s, want %s", got, want)
			}
		})
	}
}

// mapStore is a DocumentStore in memory.
type mapStore struct {
	docs map[v1.Hash][]byte
	puts int
	gets int
}

func (s *mapStore) Document(d v1.Hash) ([]byte, bool) {
	s.gets++
	b, ok := s.docs[d]
	return b, ok
}

func (s *mapStore) PutDocument(d v1.Hash, b []byte) {
	s.puts++
	s.docs[d] = bytes.Clone(b)
}

func TestDescribeConfig(t *testing.T) {
	img, d := randomImage(t, 1)
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		store    *mapStore
		max      int64
		wantPuts int
		wantErr  error
	}{
		{name: "no store", max: DefaultMaxDocumentBytes},
		{name: "empty store is filled", store: &mapStore{docs: map[v1.Hash][]byte{}},
			max: DefaultMaxDocumentBytes, wantPuts: 1},
		{name: "store hit", store: &mapStore{docs: map[v1.Hash][]byte{cfgName: raw}},
			max: DefaultMaxDocumentBytes},
		{name: "corrupt store entry is replaced",
			store: &mapStore{docs: map[v1.Hash][]byte{cfgName: []byte("{}")}},
			max:   DefaultMaxDocumentBytes, wantPuts: 1},
		{name: "config over the limit", max: int64(len(raw)) - 1, wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{MaxDocumentBytes: tt.max}
			if tt.store != nil {
				opts.Documents = tt.store
			}
			got, err := describe("x", img, d, opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("describe error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if !bytes.Equal(got.RawConfig, raw) {
				t.Errorf("RawConfig differs from the image's config")
			}
			if tt.store == nil {
				return
			}
			if got, want := tt.store.puts, tt.wantPuts; got != want {
				t.Errorf("%d documents stored, want %d", got, want)
			}
			if !bytes.Equal(tt.store.docs[cfgName], raw) {
				t.Errorf("the store does not hold the verified config")
			}
		})
	}
}
