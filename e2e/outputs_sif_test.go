package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// launchScript starts every runnable SIF.
const launchScript = "#!/usr/bin/env run-singularity\n"

// ociConfigName is the SIF object that holds the image config's "config"
// section.
const ociConfigName = "oci-config.json"

// testSingleFile converts images with --single-file, checks image.sif
// against the standalone files, rewrites it with pack and mounts its
// partitions.
func testSingleFile(t *testing.T, px *countingProxy) {
	tests := []struct {
		name     string
		img      v1.Image
		args     []string
		overlays int // layer overlays wanted; 0 accepts any number
	}{
		{"cases", standardImage(t, imagegen.Cases), nil, 0},
		{"many layers", buildImage(t, manySpec()), nil, 0},
		// More partitions than a SIF has descriptors by default (48).
		{"60 overlays", buildImage(t, tinyLayersSpec(60)), []string{"--max-overlays", "70"}, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := pushImage(t, px, "single/"+strings.ReplaceAll(tt.name, " ", "-"), tt.img)
			cache := t.TempDir()
			args := append([]string{"--plain-http", "--single-file"}, tt.args...)
			r := convert(t, src, cache, args...)
			checkContract(t, r, contract{Source: src, Image: tt.img})
			l := readLayout(t, r.Out)
			if tt.overlays > 0 && len(l.Overlays) != tt.overlays {
				t.Errorf("%d layer overlays, want %d", len(l.Overlays), tt.overlays)
			}
			parts := outputParts(t, r.Out, l)
			file := filepath.Join(r.Out, "image.sif")
			embedded := checkSingleFile(t, file, parts, tt.img)

			cfg := readSIF(t, parts[len(parts)-1].File).jsonObject(ociConfigName)
			checkOCIConfig(t, "config overlay", cfg, tt.img)
			if got := readSIF(t, file).jsonObject(ociConfigName); !bytes.Equal(got, cfg) {
				t.Errorf("image.sif's oci-config.json differs from the config overlay's:\n"+
					"  %s\n  %s", got, cfg)
			}

			checkPack(t, r.Out)
			checkStackTree(t, "image.sif tree", embedded, tt.img)

			// From a warm cache, the same file again.
			again := convert(t, src, cache, args...)
			got, err := fileSHA256(filepath.Join(again.Out, "image.sif"))
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := fileSHA256(file); got != want {
				t.Errorf("image.sif from a warm cache: sha256 %s, the first is %s", short(got),
					short(want))
			}
		})
	}
}

// checkSingleFile checks image.sif: the launch script, a PartPrimSys then
// PartOverlay squashfs partitions, all in the primary's group 1, each with
// the bytes of the standalone file's partition (parts, base first), then
// oci-config.json. It returns the embedded partitions.
func checkSingleFile(t *testing.T, file string, parts []stackPart, img v1.Image) []stackPart {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := readSIF(t, file)
	if c.LaunchScript != launchScript {
		t.Errorf("image.sif: launch script %q, want %q", c.LaunchScript, launchScript)
	}
	if c.PrimaryArch != cf.Architecture {
		t.Errorf("image.sif: primary architecture %q, want %q", c.PrimaryArch, cf.Architecture)
	}
	ps := c.partitions()
	if len(ps) != len(parts) {
		t.Fatalf("image.sif: %d partitions, want %d (base, overlays and config overlay)",
			len(ps), len(parts))
	}
	if n := len(c.Objects) - len(ps); n != 1 || c.jsonObject(ociConfigName) == nil {
		t.Errorf("image.sif: %d objects besides the partitions, want one %s", n, ociConfigName)
	}
	if ps[0].Group != 1 {
		t.Errorf("image.sif: the primary partition is in group %d, want 1", ps[0].Group)
	}

	var embedded []stackPart
	for i, p := range ps {
		want := sif.PartOverlay
		if i == 0 {
			want = sif.PartPrimSys
		}
		if p.Part != want || p.FS != sif.FsSquash {
			t.Errorf("image.sif partition %d: %s/%s, want %s/%s", i+1, p.Part, p.FS, want,
				sif.FsSquash)
		}
		if p.Group != ps[0].Group {
			t.Errorf("image.sif partition %d: group %d, the primary's is %d: Apptainer "+
				"would ignore it", i+1, p.Group, ps[0].Group)
		}
		if p.Arch != cf.Architecture {
			t.Errorf("image.sif partition %d: architecture %q, want %q", i+1, p.Arch,
				cf.Architecture)
		}
		got := rangeSHA256(t, file, p.Offset, p.Size)
		wantSum := rangeSHA256(t, parts[i].File, parts[i].Offset, parts[i].Size)
		if got != wantSum {
			t.Errorf("image.sif partition %d: sha256 %s, %s's partition is %s", i+1, short(got),
				filepath.Base(parts[i].File), short(wantSum))
		}
		embedded = append(embedded, stackPart{File: file, Offset: p.Offset, Size: p.Size})
	}
	checkOCIConfig(t, "image.sif", c.jsonObject(ociConfigName), img)
	return embedded
}

// checkPack runs "pack OUT" over the image.sif convert --single-file wrote,
// then again after removing it, and checks that both are the same file.
func checkPack(t *testing.T, out string) {
	t.Helper()
	file := filepath.Join(out, "image.sif")
	want, err := fileSHA256(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, step := range []string{"over image.sif", "after removing image.sif"} {
		if i == 1 {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}
		r := runBin(t, binOptions{}, "pack", out)
		checkExit(t, r, 0, nil)
		if !strings.Contains(r.Stdout, "image.sif") {
			t.Errorf("pack %s: stdout %q does not name image.sif", step, r.Stdout)
		}
		got, err := fileSHA256(file)
		if err != nil {
			t.Fatalf("pack %s: %v", step, err)
		}
		if got != want {
			t.Errorf("pack %s: image.sif sha256 %s, convert --single-file wrote %s", step,
				short(got), short(want))
		}
	}
	checkNoTemps(t, out)
}

// configScripts are the files of the config overlay that carry the image
// config.
var configScripts = []string{
	".singularity.d/env/10-docker2singularity.sh",
	".singularity.d/runscript",
	".singularity.d/labels.json",
}

// testFlatten flattens "cases" and the many-layer image.
func testFlatten(t *testing.T, px *countingProxy) {
	t.Run("cases", func(t *testing.T) {
		img := standardImage(t, imagegen.Cases)
		testFlattenImage(t, px, pushImage(t, px, "flat/cases", img), img)
	})
	t.Run("many layers", func(t *testing.T) {
		img := buildImage(t, manySpec())
		testFlattenImage(t, px, pushImage(t, px, "flat/many", img), img)
	})
}

// testFlattenImage flattens img from src, checks the SIF and its tree, and
// flattens it again from the cache.
func testFlattenImage(t *testing.T, px *countingProxy, src string, img v1.Image) {
	cache := t.TempDir()
	ids := diffIDs(t, img)

	// A layered conversion gives the config overlay to compare with.
	r := convert(t, src, cache, "--plain-http")
	cfgPart := onePartition(t, filepath.Join(r.Out, r.Meta.ConfigOverlay.File), sif.PartOverlay)
	cfgDir := unsquash(t, copyPartition(t, filepath.Join(r.Out, r.Meta.ConfigOverlay.File),
		cfgPart.Offset, cfgPart.Size), ".singularity.d")
	// The layered overlays hold whiteouts, which shows that zeroDevices
	// finds them.
	whiteouts := 0
	for _, o := range r.Meta.Overlays {
		f := filepath.Join(r.Out, o.File)
		p := onePartition(t, f, sif.PartOverlay)
		whiteouts += len(zeroDevices(t, copyPartition(t, f, p.Offset, p.Size)))
	}
	if whiteouts == 0 {
		t.Error("unsquashfs -lln shows no whiteout in the layered overlays")
	}

	flat := filepath.Join(t.TempDir(), "flat.sif")
	fr := runBin(t, binOptions{}, "flatten", src, "-o", flat, "--cache", cache, "--plain-http",
		"--json")
	checkExit(t, fr, 0, nil)
	checkFlatJSON(t, fr.Stdout, flat, ids, false)
	first, err := fileSHA256(flat)
	if err != nil {
		t.Fatalf("flatten wrote no file: %v", err)
	}

	p := checkFlatSIF(t, flat, img)
	sqfs := copyPartition(t, flat, p.Offset, p.Size)
	if devs := zeroDevices(t, sqfs); len(devs) > 0 {
		t.Errorf("flat partition holds %d whiteout devices:\n%s", len(devs),
			strings.Join(devs, "\n"))
	}
	flatDir := unsquash(t, sqfs, ".singularity.d")
	for _, f := range configScripts {
		got := readFile(t, filepath.Join(flatDir, f))
		if want := readFile(t, filepath.Join(cfgDir, f)); got != want {
			t.Errorf("flat /%s:\n%s\nthe config overlay's:\n%s", f, got, want)
		}
	}
	t.Run("tree", func(t *testing.T) {
		requireRoot(t, "loop-mounting squashfs")
		root := mountSquashfs(t, flat, p.Offset, p.Size)
		got := walkTree(t, root)
		compareTrees(t, got, imageReference(t, img))
		checkSkeleton(t, root, got, img)
		for path, n := range got {
			if n.Type == "char" && n.Rdev == "0:0" {
				t.Errorf("flat tree: /%s is a whiteout device", path)
			}
		}
	})

	t.Run("again", func(t *testing.T) {
		for i, args := range [][]string{nil, {"--json"}} {
			px.Reset()
			again := filepath.Join(t.TempDir(), "again.sif")
			argv := append([]string{"flatten", src, "-o", again, "--cache", cache,
				"--plain-http"}, args...)
			fr := runBin(t, binOptions{}, argv...)
			checkExit(t, fr, 0, nil)
			if i == 0 && !strings.Contains(fr.Stdout, "(reused)") {
				t.Errorf("flatten again: stdout %q does not say (reused)", fr.Stdout)
			}
			if i == 1 {
				checkFlatJSON(t, fr.Stdout, again, ids, true)
			}
			if gets := layerGets(t, px, img); len(gets) > 0 {
				t.Errorf("flatten again fetched layers: %s", describeGets(t, gets, img))
			}
			if got, err := fileSHA256(again); err != nil || got != first {
				t.Errorf("flatten again: sha256 %s (%v), the first flatten wrote %s",
					short(got), err, short(first))
			}
		}
	})

	// Flattening straight from the registry into an empty cache, without a
	// layered conversion first, gives the same bytes.
	t.Run("new cache", func(t *testing.T) {
		fresh := filepath.Join(t.TempDir(), "fresh.sif")
		fr := runBin(t, binOptions{}, "flatten", src, "-o", fresh, "--cache", t.TempDir(),
			"--plain-http")
		checkExit(t, fr, 0, nil)
		if !strings.Contains(fr.Stdout, "(built)") {
			t.Errorf("flatten into an empty cache: stdout %q does not say (built)", fr.Stdout)
		}
		if got, err := fileSHA256(fresh); err != nil || got != first {
			t.Errorf("flatten into an empty cache: sha256 %s (%v), the first flatten wrote %s",
				short(got), err, short(first))
		}
	})
}

// checkFlatJSON checks the JSON flatten --json prints.
func checkFlatJSON(t *testing.T, stdout, file string, ids []string, reused bool) {
	t.Helper()
	l := parseLayout(t, []byte(stdout))
	if !l.Flat {
		t.Errorf("flatten --json: flat is false:\n%s", stdout)
	}
	if l.Base.File != file {
		t.Errorf("flatten --json: base.file %q, want %q", l.Base.File, file)
	}
	if !slices.Equal(l.Base.DiffIDs, ids) {
		t.Errorf("flatten --json: base.diff_ids %q, want every layer's %q", l.Base.DiffIDs, ids)
	}
	if l.Base.Reused != reused {
		t.Errorf("flatten --json: base.reused %v, want %v", l.Base.Reused, reused)
	}
	if len(l.Overlays) != 0 {
		t.Errorf("flatten --json: %d overlays, want none", len(l.Overlays))
	}
}

// checkFlatSIF checks a flattened SIF: the launch script, one PartPrimSys
// squashfs partition and oci-config.json. It returns the partition.
func checkFlatSIF(t *testing.T, file string, img v1.Image) sifObject {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := readSIF(t, file)
	if c.LaunchScript != launchScript {
		t.Errorf("flat SIF: launch script %q, want %q", c.LaunchScript, launchScript)
	}
	ps := c.partitions()
	if len(ps) != 1 {
		t.Fatalf("flat SIF: %d partitions %+v, want one", len(ps), ps)
	}
	p := ps[0]
	if p.Part != sif.PartPrimSys || p.FS != sif.FsSquash || p.Arch != cf.Architecture {
		t.Errorf("flat SIF: partition %s/%s/%s, want %s/%s/%s", p.Part, p.FS, p.Arch,
			sif.PartPrimSys, sif.FsSquash, cf.Architecture)
	}
	checkSquashMagic(t, file, partition{Offset: p.Offset, Size: p.Size})
	if n := len(c.Objects); n != 2 {
		t.Errorf("flat SIF: %d objects, want the partition and %s", n, ociConfigName)
	}
	checkOCIConfig(t, "flat SIF", c.jsonObject(ociConfigName), img)
	return p
}
