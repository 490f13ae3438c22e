package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// TestOutputs covers the layout options and the other commands, each in a
// subtest against one registry: convert --base, --max-overlays and
// --single-file, pack, flatten, inspect, and the image config as the config
// overlay's scripts and the run wrapper carry it.
func TestOutputs(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	px := startProxy(t, startRegistry(t))

	t.Run("base", func(t *testing.T) { testBaseImage(t, px) })
	t.Run("max-overlays", func(t *testing.T) { testMaxOverlays(t, px) })
	t.Run("single-file", func(t *testing.T) { testSingleFile(t, px) })
	t.Run("flatten", func(t *testing.T) { testFlatten(t, px) })
	t.Run("inspect", func(t *testing.T) { testInspect(t, px) })
	t.Run("metadata", func(t *testing.T) { testMetadata(t, px) })
}

// testBaseImage converts two apps of one family with --base, then refuses
// bases the image is not built on.
func testBaseImage(t *testing.T, px *countingProxy) {
	bs, s1, s2 := familySpecs()
	base, app1, app2 := buildImage(t, bs), buildImage(t, s1), buildImage(t, s2)
	baseSrc := pushImage(t, px, "family/base", base)
	src1 := pushImage(t, px, "family/app1", app1)
	src2 := pushImage(t, px, "family/app2", app2)
	unrelatedSrc := pushImage(t, px, "unrelated", buildImage(t, unrelatedSpec()))
	for _, app := range []v1.Image{app1, app2} {
		if !slices.Equal(layerDigests(t, app)[:2], layerDigests(t, base)) {
			t.Fatal("test images: the apps' bottom layers are not the base's layers")
		}
	}
	cache := t.TempDir()
	var firstBase string // sha256 of app1's base.sif

	t.Run("app1", func(t *testing.T) {
		px.Reset()
		r := convert(t, src1, cache, "--plain-http", "--base", baseSrc)
		checkContract(t, r, contract{Source: src1, Image: app1, BaseLayers: 2})
		checkBaseImage(t, readLayout(t, r.Out), baseSrc, base, false)
		for _, d := range layerDigests(t, app1) {
			if n := px.BlobGets()[d]; n != 1 {
				t.Errorf("layer %s: %d GETs, want 1", d, n)
			}
		}
		sum, err := fileSHA256(filepath.Join(r.Out, "base.sif"))
		if err != nil {
			t.Fatal(err)
		}
		firstBase = sum
		checkSIFs(t, r)
		checkTree(t, r, app1)
	})

	t.Run("app2", func(t *testing.T) {
		if firstBase == "" {
			t.Skip("app1 was not converted")
		}
		px.Reset()
		r := convert(t, src2, cache, "--plain-http", "--base", baseSrc)
		checkContract(t, r, contract{Source: src2, Image: app2, BaseLayers: 2})
		checkBaseImage(t, readLayout(t, r.Out), baseSrc, base, true)
		want := map[string]int{}
		for _, d := range layerDigests(t, app2)[2:] {
			want[d] = 1
		}
		if got := layerGets(t, px, app2); !maps.Equal(got, want) {
			t.Errorf("layer GETs: %s; want each of app2's own layers once",
				describeGets(t, got, app2))
		}
		sum, err := fileSHA256(filepath.Join(r.Out, "base.sif"))
		if err != nil {
			t.Fatal(err)
		}
		if sum != firstBase {
			t.Errorf("base.sif: sha256 %s, app1's is %s; want the same file", short(sum),
				short(firstBase))
		}
		checkSIFs(t, r)
		checkTree(t, r, app2)
	})

	// Built again in another cache, the base is the same file: the
	// bytes depend on the base's layers only.
	t.Run("app2 in a new cache", func(t *testing.T) {
		if firstBase == "" {
			t.Skip("app1 was not converted")
		}
		r := convert(t, src2, t.TempDir(), "--plain-http", "--base", baseSrc, "--single-file")
		checkBaseImage(t, readLayout(t, r.Out), baseSrc, base, false)
		sum, err := fileSHA256(filepath.Join(r.Out, "base.sif"))
		if err != nil {
			t.Fatal(err)
		}
		if sum != firstBase {
			t.Errorf("base.sif: sha256 %s, app1's is %s; want the same file", short(sum),
				short(firstBase))
		}
		parts := outputParts(t, r.Out, readLayout(t, r.Out))
		embedded := checkSingleFile(t, filepath.Join(r.Out, "image.sif"), parts, app2)
		checkStackTree(t, "image.sif tree", embedded, app2)
	})

	notBuiltOn := regexp.MustCompile(`not built on`)
	tests := []struct {
		name, src, base string
		want            *regexp.Regexp
	}{
		{"unrelated base", src1, unrelatedSrc, notBuiltOn},
		{"sibling as base", src2, src1, notBuiltOn},
		{"longer base", src1, src2, regexp.MustCompile(`not built on|does not match`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			r := runBin(t, binOptions{}, convertArgs(tt.src, out, cache, "--base", tt.base)...)
			checkExit(t, r, 7, tt.want)
			checkNoOutput(t, out)
		})
	}
}

// checkBaseImage checks what image.json says of a base made with --base
// from the image base.
func checkBaseImage(t *testing.T, l layoutJSON, src string, base v1.Image, reused bool) {
	t.Helper()
	if l.Base.Image != src {
		t.Errorf("base.image %q, want %q", l.Base.Image, src)
	}
	if want := diffIDs(t, base); !slices.Equal(l.Base.DiffIDs, want) {
		t.Errorf("base.diff_ids %q, want the base image's %q", l.Base.DiffIDs, want)
	}
	if l.Base.Reused != reused {
		t.Errorf("base.reused %v, want %v", l.Base.Reused, reused)
	}
}

// testMaxOverlays converts the 30-layer image with several --max-overlays.
func testMaxOverlays(t *testing.T, px *countingProxy) {
	img := buildImage(t, manySpec())
	src := pushImage(t, px, "many", img)
	ids := diffIDs(t, img)
	if len(ids) != manyLayers {
		t.Fatalf("test image: %d layers, want %d", len(ids), manyLayers)
	}
	nonEmpty := manyLayers - 1 - len(manyEmpty) // above the base
	cache := t.TempDir()

	tests := []struct {
		name string
		args []string
		want int // layer overlays
	}{
		{"default", nil, 23},
		{"room for all", []string{"--max-overlays", "30"}, nonEmpty},
		{"max-overlays=4", []string{"--max-overlays", "4"}, 3},
		{"max-overlays=2", []string{"--max-overlays", "2"}, 1},
	}
	// keys maps every overlay key the runs share a cache under to what the
	// entry holds, so that two different overlays never share a key.
	keys := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := convert(t, src, cache, append([]string{"--plain-http"}, tt.args...)...)
			checkContract(t, r, contract{Source: src, Image: img})
			l := readLayout(t, r.Out)
			for _, o := range l.Overlays {
				holds := "diff_ids " + strings.Join(o.DiffIDs, ",")
				if o.KeyedBy == "chain_id" {
					holds += " on " + o.ChainID
				}
				if k, ok := keys[o.Key]; ok && k != holds {
					t.Errorf("key %s names %s, and another run's overlay of %s",
						o.Key, holds, k)
				}
				keys[o.Key] = holds
			}
			t.Logf("groups (layer numbers): %s", describeGroups(l))
			if len(l.Overlays) != tt.want {
				t.Errorf("%d layer overlays, want %d (%d non-empty layers above the base)",
					len(l.Overlays), tt.want, nonEmpty)
			}
			checkGroups(t, l, ids, emptyDiffID(t), tt.want > 1)
			checkStackTree(t, "tree", outputParts(t, r.Out, l), img)
		})
	}

	t.Run("empty layers on top", func(t *testing.T) { testEmptyTop(t, px) })

	t.Run("max-overlays=1", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		r := runBin(t, binOptions{}, convertArgs(src, out, cache, "--max-overlays", "1")...)
		checkExit(t, r, 2, regexp.MustCompile(`max-overlays`))
		checkNoOutput(t, out)
	})
}

// testEmptyTop converts images whose top layers are empty, as ENV and
// LABEL steps leave them: the empty layers join the group below, and when
// no layer above the base has content, no overlay is left but the config
// overlay.
func testEmptyTop(t *testing.T, px *countingProxy) {
	file := func(p string) imagegen.Layer {
		return imagegen.Layer{Comment: "file " + p, Entries: []imagegen.Entry{
			imagegen.File(p, p+"\n")}}
	}
	env := imagegen.Layer{Comment: "ENV X=1"}
	tests := []struct {
		name   string
		layers []imagegen.Layer
		want   int // layer overlays
	}{
		{"two empty on top", []imagegen.Layer{file("a"), file("b"), file("c"), env, env}, 2},
		{"only empty above the base", []imagegen.Layer{file("a"), env, env}, 0},
	}
	empty := emptyDiffID(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := buildImage(t, imagegen.Spec{Layers: tt.layers,
				Config: imagegen.Config{Env: []string{"X=1"}}})
			src := pushImage(t, px, "empty-top/"+strings.ReplaceAll(tt.name, " ", "-"), img)
			r := convert(t, src, t.TempDir(), "--plain-http", "--single-file")
			checkContract(t, r, contract{Source: src, Image: img})
			l := readLayout(t, r.Out)
			t.Logf("groups (layer numbers): %s", describeGroups(l))
			if len(l.Overlays) != tt.want {
				t.Errorf("%d layer overlays, want %d", len(l.Overlays), tt.want)
			}
			for i, o := range l.Overlays {
				if !slices.ContainsFunc(o.DiffIDs, func(d string) bool { return d != empty }) {
					t.Errorf("overlay %d (%s) holds only empty layers", i+1, o.File)
				}
			}
			parts := outputParts(t, r.Out, l)
			embedded := checkSingleFile(t, filepath.Join(r.Out, "image.sif"), parts, img)
			checkStackTree(t, "tree", parts, img)
			checkStackTree(t, "image.sif tree", embedded, img)
		})
	}
}

// checkGroups checks the overlays of the many-layer image: none holds only
// empty layers, the top layer is alone when topAlone, an overlay with an
// opaque directory is keyed by its chainID, and every key matches its
// keyed_by.
func checkGroups(t *testing.T, l layoutJSON, ids []string, empty string, topAlone bool) {
	t.Helper()
	opaque := map[string]bool{}
	for i, es := range manyEntries {
		for _, e := range es {
			if e.Kind == imagegen.KindOpaque {
				opaque[ids[i-1]] = true
			}
		}
	}
	below := slices.Clone(l.Base.DiffIDs)
	for i, o := range l.Overlays {
		what := fmt.Sprintf("overlay %d (%s)", i+1, o.File)
		if !slices.ContainsFunc(o.DiffIDs, func(d string) bool { return d != empty }) {
			t.Errorf("%s holds only empty layers", what)
		}
		below = append(below, o.DiffIDs...)
		if o.ChainID != chainID(below) {
			t.Errorf("%s: chain_id %s, want %s", what, o.ChainID, chainID(below))
		}
		switch {
		case slices.ContainsFunc(o.DiffIDs, func(d string) bool { return opaque[d] }) &&
			o.KeyedBy != "chain_id":
			t.Errorf("%s has an opaque directory but is keyed by %q", what, o.KeyedBy)
		case o.KeyedBy != "diff_id" && o.KeyedBy != "chain_id":
			t.Errorf("%s: keyed_by %q, want diff_id or chain_id", what, o.KeyedBy)
		case len(o.DiffIDs) == 1 && o.KeyedBy == "chain_id" && o.Key != o.ChainID:
			t.Errorf("%s: keyed by its chain_id, key %s, chain_id %s", what, o.Key, o.ChainID)
		case len(o.DiffIDs) == 1 && o.KeyedBy == "diff_id" && o.Key != o.DiffIDs[0]:
			t.Errorf("%s: keyed by its diff_id, key %s, diff_id %s", what, o.Key, o.DiffIDs[0])
		case len(o.DiffIDs) > 1 && (o.Key == o.ChainID || slices.Contains(o.DiffIDs, o.Key)):
			// A merged overlay under the key of one of its layers would
			// collide with that layer's own overlay in the cache.
			t.Errorf("%s: merges %d layers under the key %s of one of them (keyed by %s)",
				what, len(o.DiffIDs), o.Key, o.KeyedBy)
		}
	}
	if n := len(l.Overlays); topAlone && n > 0 {
		if top := l.Overlays[n-1].DiffIDs; !slices.Equal(top, ids[len(ids)-1:]) {
			t.Errorf("top overlay holds %d layers, want the top layer alone", len(top))
		}
	}
}

// describeGroups renders the grouping of image.json as layer numbers, such
// as "base[1] 2-3 4 5-9".
func describeGroups(l layoutJSON) string {
	next := 0
	span := func(ds []string) string {
		first := next + 1
		next += len(ds)
		if len(ds) == 1 {
			return fmt.Sprint(first)
		}
		return fmt.Sprintf("%d-%d", first, next)
	}
	parts := []string{"base[" + span(l.Base.DiffIDs) + "]"}
	for _, o := range l.Overlays {
		parts = append(parts, span(o.DiffIDs))
	}
	return strings.Join(parts, " ")
}

// readFile returns the content of file, failing t when it cannot.
func readFile(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
