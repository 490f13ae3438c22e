package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/oci2layers/oci2layers/internal/imagegen"
	"github.com/oci2layers/oci2layers/internal/remotecache"
)

// remoteConvert runs a conversion with extra flags and returns its result
// and stderr; it fails t when the conversion fails.
func remoteConvert(t *testing.T, source, cache string, args ...string) (result, string,
	time.Duration) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	argv := append([]string{"convert", source, "-o", out, "--cache", cache, "--plain-http"},
		args...)
	run := runBin(t, binOptions{Timeout: convertTimeout}, argv...)
	if run.Code != 0 {
		t.Fatalf("oci2layers %s: exit %d\n%s", strings.Join(argv, " "), run.Code, run.Stderr)
	}
	data, err := os.ReadFile(filepath.Join(out, "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := result{Out: out, Stdout: run.Stdout}
	if err := json.Unmarshal(data, &r.Meta); err != nil {
		t.Fatalf("parse image.json: %v", err)
	}
	return r, run.Stderr, run.Elapsed
}

// froms returns the "from" of every file image.json at out names, base first.
func froms(t *testing.T, out string) []string {
	t.Helper()
	var m struct {
		Base struct {
			From string `json:"from"`
		} `json:"base"`
		Overlays []struct {
			From string `json:"from"`
		} `json:"overlays"`
		ConfigOverlay struct {
			From string `json:"from"`
		} `json:"config_overlay"`
	}
	data, err := os.ReadFile(filepath.Join(out, "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	out2 := []string{m.Base.From}
	for _, o := range m.Overlays {
		out2 = append(out2, o.From)
	}
	return append(out2, m.ConfigOverlay.From)
}

// checkSameFiles checks that two outputs hold byte-identical SIFs.
func checkSameFiles(t *testing.T, got, want result) {
	t.Helper()
	files := append([]string{"base.sif"}, sifFiles(want.Meta)...)
	if g, w := sifFiles(got.Meta), sifFiles(want.Meta); strings.Join(g, " ") != strings.Join(w, " ") {
		t.Fatalf("files %q, want %q", g, w)
	}
	for _, f := range files {
		a, err := os.ReadFile(filepath.Join(got.Out, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(want.Out, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from the reference conversion's", f)
		}
	}
}

// layerGetsIn counts GETs of img's layer blobs in repo.
func layerGetsIn(t *testing.T, px *countingProxy, repo string, img v1.Image) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, d := range layerDigests(t, img) {
		out[d] = px.Count("GET", "/v2/"+repo+"/blobs/"+d)
	}
	return out
}

// TestRemoteCache converts "cases" on machine A with --cache-to, then on
// machine B (an empty cache) "cases" and "variant" with --cache-from, then
// with a corrupted remote entry.
func TestRemoteCache(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	px := startProxy(t, startRegistry(t))
	cases := standardImage(t, imagegen.Cases)
	variant := standardImage(t, imagegen.Variant)
	casesSrc := "docker://" + px.Addr + "/cases:v1"
	variantSrc := "docker://" + px.Addr + "/variant:v1"
	for ref, img := range map[string]v1.Image{px.Addr + "/cases:v1": cases,
		px.Addr + "/variant:v1": variant} {
		if err := imagegen.Push(t.Context(), ref, img); err != nil {
			t.Fatal(err)
		}
	}
	repo := px.Addr + "/cache"

	a, errA, _ := remoteConvert(t, casesSrc, t.TempDir(), "--cache-to", repo)
	if !strings.Contains(errA, "pushed to the remote cache") {
		t.Errorf("machine A logged no push:\n%s", errA)
	}
	_, _, scratch := remoteConvert(t, casesSrc, t.TempDir())

	t.Run("cases", func(t *testing.T) {
		px.Reset()
		b, _, elapsed := remoteConvert(t, casesSrc, t.TempDir(), "--cache-from", repo)
		t.Logf("cases: %s from the remote cache, %s from scratch", elapsed.Round(time.Millisecond),
			scratch.Round(time.Millisecond))
		for d, n := range layerGetsIn(t, px, "cases", cases) {
			if n != 0 {
				t.Errorf("layer %s: %d GETs from the image repository, want 0", d, n)
			}
		}
		for i, f := range froms(t, b.Out) {
			if f != "remote" {
				t.Errorf("file %d: from %q, want remote", i, f)
			}
		}
		checkSameFiles(t, b, a)
		checkTree(t, b, cases)
	})

	t.Run("variant", func(t *testing.T) {
		px.Reset()
		b, _, _ := remoteConvert(t, variantSrc, t.TempDir(), "--cache-from", repo)
		layers := layerDigests(t, variant)
		top := layers[len(layers)-1]
		for d, n := range layerGetsIn(t, px, "variant", variant) {
			if want := map[bool]int{true: 1, false: 0}[d == top]; n != want {
				t.Errorf("layer %s: %d GETs from the image repository, want %d", d, n, want)
			}
		}
		checkTree(t, b, variant)
	})

	t.Run("corrupted", func(t *testing.T) {
		key := a.Meta.Overlays[0].Key
		h, err := v1.NewHash(key)
		if err != nil {
			t.Fatal(err)
		}
		corrupt(t, repo, remotecache.Tag("layers", h))
		px.Reset()
		b, stderr, _ := remoteConvert(t, casesSrc, t.TempDir(), "--cache-from", repo)
		if !strings.Contains(stderr, "ignoring remote cache entry") {
			t.Errorf("no warning about the corrupted entry:\n%s", stderr)
		}
		if f := froms(t, b.Out)[1]; f != "" {
			t.Errorf("corrupted overlay: from %q, want it built locally", f)
		}
		checkSameFiles(t, b, a)
		checkTree(t, b, cases)
	})
}

// corrupt replaces the artifact at repo:tag with one whose SIF has a byte
// flipped, while its annotations still claim the original sha256.
func corrupt(t *testing.T, repo, tag string) {
	t.Helper()
	ref, err := name.NewTag(repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatalf("get %s: %v", ref, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	l, err := remote.Layer(ref.Context().Digest(m.Layers[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	blob := buf.Bytes()
	blob[len(blob)/2] ^= 0xff
	bad := static.NewLayer(blob, remotecache.SIFMediaType)
	if err := remote.WriteLayer(ref.Context(), bad); err != nil {
		t.Fatal(err)
	}
	if m.Layers[0].Digest, err = bad.Digest(); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(ref, rawDoc{raw}); err != nil {
		t.Fatal(err)
	}
}

// rawDoc is an OCI manifest to PUT as is.
type rawDoc struct{ raw []byte }

func (d rawDoc) RawManifest() ([]byte, error) { return d.raw, nil }

func (d rawDoc) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
