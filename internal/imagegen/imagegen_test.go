package imagegen

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tarEntry is what a test checks of one tar header and its content.
type tarEntry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Link     string
	Major    int64
	Minor    int64
	Size     int64
	Content  string
	Xattrs   map[string]string
}

func readTar(t *testing.T, r io.Reader) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		e := tarEntry{
			Name: hdr.Name, Type: hdr.Typeflag, Mode: hdr.Mode, UID: hdr.Uid, GID: hdr.Gid,
			Link: hdr.Linkname, Major: hdr.Devmajor, Minor: hdr.Devminor, Size: hdr.Size,
		}
		if len(body) <= 64 {
			e.Content = string(body)
		} else {
			e.Content = fmt.Sprintf("sha256:%x", sha256.Sum256(body))
		}
		for k, v := range hdr.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[x] = v
			}
		}
		if !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", hdr.Name, hdr.ModTime, epoch)
		}
		out = append(out, e)
	}
}

func TestLayerTar(t *testing.T) {
	big := make([]byte, 1000)
	if _, err := io.ReadFull(randomReader(7), big); err != nil {
		t.Fatal(err)
	}
	bigSum := fmt.Sprintf("sha256:%x", sha256.Sum256(big))

	tests := []struct {
		name     string
		entry    Entry
		dotSlash bool
		want     tarEntry
	}{
		{"dir", Dir("a/b").WithMode(0o1777),
			false, tarEntry{Name: "a/b/", Type: tar.TypeDir, Mode: 0o1777}},
		{"file", File("a/f", "hi\n").WithOwner(1000, 100).WithMode(0o4750),
			false, tarEntry{Name: "a/f", Type: tar.TypeReg, Mode: 0o4750, UID: 1000, GID: 100,
				Size: 3, Content: "hi\n"}},
		{"empty file", File("e", ""),
			false, tarEntry{Name: "e", Type: tar.TypeReg, Mode: 0o644}},
		{"random file", RandomFile("r", 1000, 7),
			false, tarEntry{Name: "r", Type: tar.TypeReg, Mode: 0o644, Size: 1000,
				Content: bigSum}},
		{"symlink", Symlink("l", "../x/y"),
			false, tarEntry{Name: "l", Type: tar.TypeSymlink, Mode: 0o777, Link: "../x/y"}},
		{"hardlink", Hardlink("h", "./a/f"),
			false, tarEntry{Name: "h", Type: tar.TypeLink, Mode: 0o644, Link: "a/f"}},
		{"whiteout", Whiteout("a/gone"),
			false, tarEntry{Name: "a/.wh.gone", Type: tar.TypeReg}},
		{"whiteout at root", Whiteout("gone"),
			false, tarEntry{Name: ".wh.gone", Type: tar.TypeReg}},
		{"opaque", Opaque("a/o"),
			false, tarEntry{Name: "a/o/.wh..wh..opq", Type: tar.TypeReg}},
		{"char device", CharDev("dev/null", 1, 3),
			false, tarEntry{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3}},
		{"fifo", FIFO("p").WithMode(0o600),
			false, tarEntry{Name: "p", Type: tar.TypeFifo, Mode: 0o600}},
		{"xattrs", File("x", "").WithXattr("user.a", "1").WithXattr("user.b", "2"),
			false, tarEntry{Name: "x", Type: tar.TypeReg, Mode: 0o644,
				Xattrs: map[string]string{"user.a": "1", "user.b": "2"}}},
		{"dot slash", Dir("d"),
			true, tarEntry{Name: "./d/", Type: tar.TypeDir, Mode: 0o755}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := LayerTar(Layer{Entries: []Entry{tt.entry}, DotSlash: tt.dotSlash})
			if err != nil {
				t.Fatalf("LayerTar: %v", err)
			}
			got := readTar(t, bytes.NewReader(raw))
			if len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("got %+v, want [%+v]", got, tt.want)
			}
		})
	}
}

func TestLayerTarRejectsBadPaths(t *testing.T) {
	tests := []struct {
		name  string
		entry Entry
	}{
		{"parent", File("../x", "")},
		{"climbing", File("a/../../x", "")},
		{"absolute", File("/etc/x", "")},
		{"empty", File("", "")},
		{"root", Dir(".")},
		{"hardlink out", Hardlink("h", "../../etc/passwd")},
		{"unknown kind", Entry{Kind: 99, Path: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := LayerTar(Layer{Entries: []Entry{tt.entry}}); err == nil {
				t.Errorf("LayerTar(%+v) succeeded, want an error", tt.entry)
			}
		})
	}
}

func TestBuildMediaTypesAndDiffIDs(t *testing.T) {
	layers := []Layer{
		{Compression: "", Entries: []Entry{File("g", "gzip by default\n")}},
		{Compression: Zstd, Entries: []Entry{File("z", "zstd\n")}},
		{Compression: Uncompressed, Entries: []Entry{File("n", "plain\n")}},
		{Compression: Gzip, Entries: []Entry{File("g2", "gzip\n")}},
	}
	wantTypes := []types.MediaType{
		types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, types.OCILayer,
	}
	img, err := Build(Spec{Layers: layers, Config: Config{Cmd: []string{"x"}}})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}

	mt, err := img.MediaType()
	if err != nil || mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %q (%v), want %q", mt, err, types.OCIManifestSchema1)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %q, want %q", m.Config.MediaType, types.OCIConfigJSON)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != len(layers) || len(cf.RootFS.DiffIDs) != len(layers) {
		t.Fatalf("%d manifest layers, %d diffIDs, want %d",
			len(m.Layers), len(cf.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		if m.Layers[i].MediaType != wantTypes[i] {
			t.Errorf("layer %d: media type %q, want %q", i, m.Layers[i].MediaType, wantTypes[i])
		}
		raw, err := LayerTar(l)
		if err != nil {
			t.Fatal(err)
		}
		want := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(raw))}
		if cf.RootFS.DiffIDs[i] != want {
			t.Errorf("layer %d: diffID %s, want %s", i, cf.RootFS.DiffIDs[i], want)
		}
		checkBlob(t, img, m.Layers[i], raw)
	}
}

// checkBlob checks that the compressed blob desc names matches its digest
// and size and decompresses to raw.
func checkBlob(t *testing.T, img v1.Image, desc v1.Descriptor, raw []byte) {
	t.Helper()
	l, err := img.LayerByDigest(desc.Digest)
	if err != nil {
		t.Fatalf("layer %s: %v", desc.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	blob, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(blob)); got != desc.Digest.Hex ||
		int64(len(blob)) != desc.Size {
		t.Errorf("blob %s: digest %s size %d, want size %d", desc.Digest, got, len(blob), desc.Size)
	}
	urc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer urc.Close()
	got, err := io.ReadAll(urc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) {
		t.Errorf("blob %s: does not decompress to the layer tar", desc.Digest)
	}
}

func TestBuildConfig(t *testing.T) {
	c := Config{
		Env:        []string{"A=1", "PATH=/bin"},
		Entrypoint: []string{"/e"},
		Cmd:        []string{"c", "d"},
		Labels:     map[string]string{"k": "v"},
		WorkingDir: "/w",
		User:       "1000:1000",
	}
	img, err := Build(Spec{Config: c, OS: "linux", Architecture: "arm64",
		Layers: []Layer{{Entries: []Entry{Dir("x")}}}})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	got := Config{
		Env: cf.Config.Env, Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd,
		Labels: cf.Config.Labels, WorkingDir: cf.Config.WorkingDir, User: cf.Config.User,
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("config %+v, want %+v", got, c)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want linux/arm64", cf.OS, cf.Architecture)
	}
	if len(cf.History) != 1 || !cf.Created.Equal(epoch) {
		t.Errorf("history %+v created %v, want one entry and %v", cf.History, cf.Created, epoch)
	}
}

// imageDigests returns the manifest digest and the layer digests of img.
func imageDigests(t *testing.T, img v1.Image) (v1.Hash, []v1.Hash) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var ls []v1.Hash
	for _, l := range m.Layers {
		ls = append(ls, l.Digest)
	}
	return d, ls
}

func TestStandardImagesDeterministic(t *testing.T) {
	first, err := StandardImages()
	if err != nil {
		t.Fatalf("StandardImages: %v", err)
	}
	second, err := StandardImages()
	if err != nil {
		t.Fatalf("StandardImages: %v", err)
	}
	if len(first) != 4 {
		t.Errorf("%d standard images, want 4", len(first))
	}
	for name, img := range first {
		d1, _ := imageDigests(t, img)
		d2, _ := imageDigests(t, second[name])
		if d1 != d2 {
			t.Errorf("%s: digest %s then %s", name, d1, d2)
		}
	}
}

func TestStandardPairsDifferOnlyOnTop(t *testing.T) {
	imgs, err := StandardImages(Cases, Variant, Demo, DemoV2)
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{Cases, Variant}, {Demo, DemoV2}} {
		_, a := imageDigests(t, imgs[pair[0]])
		_, b := imageDigests(t, imgs[pair[1]])
		if len(a) != 4 || len(b) != 4 {
			t.Fatalf("%s, %s: %d and %d layers, want 4", pair[0], pair[1], len(a), len(b))
		}
		for i := range 3 {
			if a[i] != b[i] {
				t.Errorf("%s, %s: layer %d differs", pair[0], pair[1], i+1)
			}
		}
		if a[3] == b[3] {
			t.Errorf("%s, %s: top layers are the same", pair[0], pair[1])
		}
	}
}

func TestStandardImagesUnknown(t *testing.T) {
	if _, err := StandardImages("nope"); err == nil {
		t.Error("StandardImages(nope) succeeded, want an error")
	}
}

func TestCasesBigFile(t *testing.T) {
	spec := StandardSpecs()[Cases]
	raw, err := LayerTar(spec.Layers[2])
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, bigFileSize)
	if _, err := io.ReadFull(randomReader(42), want); err != nil {
		t.Fatal(err)
	}
	for _, e := range readTar(t, bytes.NewReader(raw)) {
		if e.Name == "./opt/big.bin" {
			if e.Size != bigFileSize || e.Content != fmt.Sprintf("sha256:%x", sha256.Sum256(want)) {
				t.Errorf("big file: size %d content %s", e.Size, e.Content)
			}
			return
		}
	}
	t.Error("no ./opt/big.bin in the third layer of cases")
}

func TestWriteLayout(t *testing.T) {
	imgs, err := StandardImages(Demo, DemoV2)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "layout")
	tagged := []Tagged{{"demo", imgs[Demo]}, {"demo-v2", imgs[DemoV2]}}
	// Writing twice must leave one entry per tag.
	for range 2 {
		if err := WriteLayout(dir, tagged); err != nil {
			t.Fatalf("WriteLayout: %v", err)
		}
	}

	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(tagged) {
		t.Fatalf("%d index entries, want %d", len(im.Manifests), len(tagged))
	}
	for i, desc := range im.Manifests {
		want, _ := imageDigests(t, tagged[i].Image)
		if tag := desc.Annotations[RefNameAnnotation]; tag != tagged[i].Tag || desc.Digest != want {
			t.Errorf("entry %d: tag %q digest %s, want %q %s",
				i, tag, desc.Digest, tagged[i].Tag, want)
		}
		if _, err := p.Image(desc.Digest); err != nil {
			t.Errorf("entry %d: %v", i, err)
		}
	}
}

func TestWriteDockerArchive(t *testing.T) {
	imgs, err := StandardImages(Demo)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "demo.tar")
	if err := WriteDockerArchive(file, "demo:latest", imgs[Demo]); err != nil {
		t.Fatalf("WriteDockerArchive: %v", err)
	}
	got, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	gotCfg, err := got.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	wantCfg, err := imgs[Demo].ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if gotCfg != wantCfg {
		t.Errorf("config %s, want %s", gotCfg, wantCfg)
	}
	ls, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 4 {
		t.Errorf("%d layers, want 4", len(ls))
	}
}
