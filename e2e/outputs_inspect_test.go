package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// inspectJSON is the output of inspect --json.
type inspectJSON struct {
	Source string `json:"source"`
	Layers []struct {
		Digest  string `json:"digest"`
		DiffID  string `json:"diff_id"`
		Size    int64  `json:"size"`
		Indexed bool   `json:"indexed"`
		Fetch   bool   `json:"fetch"`
	} `json:"layers"`
	Files []struct {
		File    string   `json:"file"`
		DiffIDs []string `json:"diff_ids"`
		Key     string   `json:"key"`
		KeyedBy string   `json:"keyed_by"`
		Cached  bool     `json:"cached"`
	} `json:"files"`
	FetchBlobs int   `json:"fetch_blobs"`
	FetchBytes int64 `json:"fetch_bytes"`
	Exact      bool  `json:"exact"`
}

// testInspect inspects "demo" before and after converting it, then
// "demo-v2", which differs in its top layer only, and checks that inspect
// never fetches a layer.
func testInspect(t *testing.T, px *countingProxy) {
	demo := standardImage(t, imagegen.Demo)
	v2 := standardImage(t, imagegen.DemoV2)
	demoSrc := pushImage(t, px, "inspect/demo", demo)
	v2Src := pushImage(t, px, "inspect/demo-v2", v2)
	cache := t.TempDir()

	inspect := func(t *testing.T, src string, img v1.Image, args ...string) inspectJSON {
		t.Helper()
		px.Reset()
		argv := append([]string{"inspect", src, "--cache", cache, "--plain-http", "--json",
			"--quiet"}, args...)
		r := runBin(t, binOptions{}, argv...)
		checkExit(t, r, 0, nil)
		if gets := layerGets(t, px, img); len(gets) > 0 {
			t.Errorf("inspect fetched layers: %s", describeGets(t, gets, img))
		}
		var rep inspectJSON
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
			t.Fatalf("parse inspect --json: %v\n%s", err, r.Stdout)
		}
		checkInspectLayers(t, rep, img)
		return rep
	}

	t.Run("cold", func(t *testing.T) {
		rep := inspect(t, demoSrc, demo)
		checkFetch(t, rep, demo, func(int) bool { return true })
		for _, f := range rep.Files {
			if f.Cached {
				t.Errorf("%s: cached in an empty cache", f.File)
			}
		}
		if rep.Exact {
			t.Error("exact is true, but no layer was ever seen")
		}
	})

	t.Run("converted", func(t *testing.T) {
		r := convert(t, demoSrc, cache, "--plain-http")
		rep := inspect(t, demoSrc, demo)
		checkFetch(t, rep, demo, func(int) bool { return false })
		checkCachedFiles(t, rep, readLayout(t, r.Out))
	})

	t.Run("top layer changed", func(t *testing.T) {
		rep := inspect(t, v2Src, v2)
		top := len(rep.Layers) - 1
		checkFetch(t, rep, v2, func(i int) bool { return i == top })
		if rep.Exact {
			t.Error("exact is true, but the top layer was never seen")
		}
		topID := diffIDs(t, v2)[top]
		for _, f := range rep.Files {
			holdsTop := slices.Contains(f.DiffIDs, topID)
			switch {
			case holdsTop && f.Cached:
				t.Errorf("%s: cached, but it holds the new top layer", f.File)
			case !holdsTop && len(f.DiffIDs) > 0 && !f.Cached:
				t.Errorf("%s: not cached, but its layers %q are demo's", f.File, f.DiffIDs)
			}
		}

		r := convert(t, v2Src, cache, "--plain-http")
		rep = inspect(t, v2Src, v2)
		checkFetch(t, rep, v2, func(int) bool { return false })
		checkCachedFiles(t, rep, readLayout(t, r.Out))
	})

	// With the layout options, inspect names the files that conversion
	// made.
	bs, _, s2 := familySpecs()
	base, app2 := buildImage(t, bs), buildImage(t, s2)
	baseSrc := pushImage(t, px, "inspect/base", base)
	app2Src := pushImage(t, px, "inspect/app2", app2)
	many := buildImage(t, manySpec())
	manySrc := pushImage(t, px, "inspect/many", many)
	layouts := []struct {
		name string
		src  string
		img  v1.Image
		args []string
	}{
		{"max-overlays", manySrc, many, []string{"--max-overlays", "4"}},
		{"base", app2Src, app2, []string{"--base", baseSrc}},
	}
	for _, tt := range layouts {
		t.Run(tt.name, func(t *testing.T) {
			r := convert(t, tt.src, cache, append([]string{"--plain-http"}, tt.args...)...)
			rep := inspect(t, tt.src, tt.img, tt.args...)
			checkFetch(t, rep, tt.img, func(int) bool { return false })
			checkCachedFiles(t, rep, readLayout(t, r.Out))
		})
	}
}

// checkInspectLayers checks that the layers inspect lists are img's.
func checkInspectLayers(t *testing.T, rep inspectJSON, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	ids := diffIDs(t, img)
	if len(rep.Layers) != len(m.Layers) {
		t.Fatalf("inspect lists %d layers, the image has %d", len(rep.Layers), len(m.Layers))
	}
	for i, l := range rep.Layers {
		d := m.Layers[i]
		if l.Digest != d.Digest.String() || l.DiffID != ids[i] || l.Size != d.Size {
			t.Errorf("layer %d: %s %s size %d, want %s %s size %d", i+1, l.Digest, l.DiffID,
				l.Size, d.Digest, ids[i], d.Size)
		}
	}
}

// checkFetch checks each layer's fetch and indexed flags against
// fetch(index), and the totals.
func checkFetch(t *testing.T, rep inspectJSON, img v1.Image, fetch func(int) bool) {
	t.Helper()
	blobs, bytes := 0, int64(0)
	for i, l := range rep.Layers {
		if l.Fetch != fetch(i) {
			t.Errorf("layer %d: fetch %v, want %v", i+1, l.Fetch, fetch(i))
		}
		if l.Indexed != !fetch(i) {
			t.Errorf("layer %d: indexed %v, want %v", i+1, l.Indexed, !fetch(i))
		}
		if fetch(i) {
			blobs++
			bytes += l.Size
		}
	}
	if rep.FetchBlobs != blobs || rep.FetchBytes != bytes {
		t.Errorf("fetch_blobs %d, fetch_bytes %d; want %d, %d", rep.FetchBlobs, rep.FetchBytes,
			blobs, bytes)
	}
}

// checkCachedFiles checks inspect's report on an image converted into l:
// exact, every file cached, and the same files, layers and keys as
// image.json.
func checkCachedFiles(t *testing.T, rep inspectJSON, l layoutJSON) {
	t.Helper()
	if !rep.Exact {
		t.Error("exact is false after the conversion")
	}
	// image.json gives keyed_by for the layer overlays only.
	want := []string{fmt.Sprintf("%s %q %s", l.Base.File, l.Base.DiffIDs, l.Base.Key)}
	for _, o := range l.Overlays {
		want = append(want, fmt.Sprintf("%s %q %s %s", o.File, o.DiffIDs, o.Key, o.KeyedBy))
	}
	want = append(want, fmt.Sprintf("%s %q %s", l.ConfigOverlay.File, []string(nil),
		l.ConfigOverlay.Key))
	var got []string
	for i, f := range rep.Files {
		if !f.Cached {
			t.Errorf("%s: not cached after the conversion", f.File)
		}
		g := fmt.Sprintf("%s %q %s", f.File, f.DiffIDs, f.Key)
		if i > 0 && i < len(rep.Files)-1 {
			g += " " + f.KeyedBy
		}
		got = append(got, g)
	}
	if !slices.Equal(got, want) {
		t.Errorf("inspect files (file diff_ids key keyed_by):\n  %q\nimage.json's:\n  %q",
			got, want)
	}
}
