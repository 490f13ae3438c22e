package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// TestConvertRegistry converts "cases" from the registry, then again with a
// warm cache, then "variant", which differs in its top layer only.
func TestConvertRegistry(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	px := startProxy(t, startRegistry(t))
	cases := standardImage(t, imagegen.Cases)
	variant := standardImage(t, imagegen.Variant)
	casesRef := px.Addr + "/cases:v1"
	variantRef := px.Addr + "/variant:v1"
	for ref, img := range map[string]v1.Image{casesRef: cases, variantRef: variant} {
		if err := imagegen.Push(t.Context(), ref, img); err != nil {
			t.Fatal(err)
		}
	}
	cache := t.TempDir()
	var first result

	t.Run("cold", func(t *testing.T) {
		px.Reset()
		src := "docker://" + casesRef
		first = convert(t, src, cache, "--plain-http")
		checkContract(t, first, contract{Source: src, Image: cases})
		checkReused(t, first, func(int) bool { return false }, false)
		for _, d := range layerDigests(t, cases) {
			if n := px.BlobGets()[d]; n != 1 {
				t.Errorf("layer %s: %d GETs, want 1", d, n)
			}
		}
		checkSIFs(t, first)
		checkTree(t, first, cases)
	})

	t.Run("warm", func(t *testing.T) {
		px.Reset()
		src := "docker://" + casesRef
		r := convert(t, src, cache, "--plain-http")
		checkContract(t, r, contract{Source: src, Image: cases})
		if got := px.BlobGets(); len(got) != 0 {
			t.Errorf("blob GETs with a warm cache: %s", describeGets(t, got, cases))
		}
		checkReused(t, r, func(int) bool { return true }, true)
		if first.Out != "" && !slices.Equal(sifFiles(r.Meta), sifFiles(first.Meta)) {
			t.Errorf("overlay files %q, first conversion had %q",
				sifFiles(r.Meta), sifFiles(first.Meta))
		}
		checkSIFs(t, r)
		checkTree(t, r, cases)
	})

	t.Run("variant", func(t *testing.T) {
		px.Reset()
		src := "docker://" + variantRef
		r := convert(t, src, cache, "--plain-http")
		checkContract(t, r, contract{Source: src, Image: variant})
		layers := layerDigests(t, variant)
		top := layers[len(layers)-1]
		gets := px.BlobGets()
		for _, d := range layers {
			want := 0
			if d == top {
				want = 1
			}
			if gets[d] != want {
				t.Errorf("layer %s: %d GETs, want %d (all GETs: %s)",
					d, gets[d], want, describeGets(t, gets, variant))
			}
		}
		last := len(r.Meta.Overlays) - 1
		checkReused(t, r, func(i int) bool { return i != last }, false)
		checkSIFs(t, r)
		checkTree(t, r, variant)
	})
}

// TestConvertLocalSources converts "cases" from an OCI layout, an OCI
// archive and a docker archive.
func TestConvertLocalSources(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	img := standardImage(t, imagegen.Cases)
	tests := []struct {
		name       string
		source     func(t *testing.T, dir string) string
		noManifest bool
	}{
		{"oci layout", func(t *testing.T, dir string) string {
			tagged := []imagegen.Tagged{{Tag: "cases", Image: img}}
			if err := imagegen.WriteLayout(dir, tagged); err != nil {
				t.Fatal(err)
			}
			return "oci:" + dir + ":cases"
		}, false},
		{"oci archive", func(t *testing.T, dir string) string {
			file := filepath.Join(dir, "cases.tar")
			writeOCIArchive(t, file, "cases", img)
			return "oci-archive:" + file
		}, false},
		{"docker archive", func(t *testing.T, dir string) string {
			file := filepath.Join(dir, "cases.tar")
			if err := imagegen.WriteDockerArchive(file, "example.com/cases:v1", img); err != nil {
				t.Fatal(err)
			}
			return "docker-archive:" + file
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.source(t, t.TempDir())
			r := convert(t, src, t.TempDir())
			checkContract(t, r, contract{Source: src, Image: img, NoManifestDigest: tt.noManifest})
			checkSIFs(t, r)
			checkTree(t, r, img)
		})
	}
}

// TestConvertBaseLayers converts "demo" with each possible --base-layers.
func TestConvertBaseLayers(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	img := standardImage(t, imagegen.Demo)
	dir := t.TempDir()
	if err := imagegen.WriteLayout(dir, []imagegen.Tagged{{Tag: "demo", Image: img}}); err != nil {
		t.Fatal(err)
	}
	src := "oci:" + dir + ":demo"
	cache := t.TempDir()
	for n := 1; n <= len(layerDigests(t, img)); n++ {
		t.Run(fmt.Sprintf("base-layers=%d", n), func(t *testing.T) {
			r := convert(t, src, cache, "--base-layers", strconv.Itoa(n), "--json")
			checkContract(t, r, contract{Source: src, Image: img, BaseLayers: n})
			if !json.Valid([]byte(r.Stdout)) {
				t.Errorf("stdout with --json is not one JSON document:\n%s", r.Stdout)
			}
			checkSIFs(t, r)
			checkTree(t, r, img)
		})
	}
}

// checkReused checks each overlay's "reused" against want(index) and the
// config overlay's against wantConfig.
func checkReused(t *testing.T, r result, want func(int) bool, wantConfig bool) {
	t.Helper()
	for i, o := range r.Meta.Overlays {
		if o.Reused != want(i) {
			t.Errorf("overlay %d (%s): reused %v, want %v", i+1, o.File, o.Reused, want(i))
		}
	}
	if r.Meta.ConfigOverlay.Reused != wantConfig {
		t.Errorf("config overlay: reused %v, want %v", r.Meta.ConfigOverlay.Reused, wantConfig)
	}
}

// describeGets names each fetched blob as a layer number or the config.
func describeGets(t *testing.T, gets map[string]int, img v1.Image) string {
	t.Helper()
	what := map[string]string{configName(t, img): "config"}
	for i, d := range layerDigests(t, img) {
		what[d] = fmt.Sprintf("layer %d", i+1)
	}
	var parts []string
	for _, d := range slices.Sorted(maps.Keys(gets)) {
		w := what[d]
		if w == "" {
			w = "unknown blob"
		}
		parts = append(parts, fmt.Sprintf("%s… (%s) ×%d", d[:19], w, gets[d]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func digest(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func configName(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// layerDigests returns the compressed digests of img's layers, bottom first.
func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var ds []string
	for _, l := range m.Layers {
		ds = append(ds, l.Digest.String())
	}
	return ds
}

// readLayers reads every compressed layer blob of img to the end.
func readLayers(t *testing.T, img v1.Image) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}
