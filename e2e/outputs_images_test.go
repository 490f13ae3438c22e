package e2e

import (
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// familyBase returns the two layers of the base image of a family: a small
// root file system with a merged-/usr symlink, and a library layer.
func familyBase() []imagegen.Layer {
	return []imagegen.Layer{
		{Comment: "family: root", Compression: imagegen.Gzip, Entries: []imagegen.Entry{
			imagegen.Dir("etc"),
			imagegen.Dir("usr"),
			imagegen.Dir("usr/bin"),
			imagegen.Dir("usr/lib"),
			imagegen.Symlink("lib", "usr/lib"),
			imagegen.File("etc/os-release", "ID=family\n"),
			imagegen.File("etc/remove-me", "deleted by an app\n"),
			imagegen.Dir("data"),
			imagegen.File("data/a", "base a\n"),
			imagegen.File("data/b", "base b\n"),
			imagegen.File("usr/bin/sh-tool", "#!/bin/sh\n").WithMode(0o755),
		}},
		{Comment: "family: libs", Compression: imagegen.Zstd, Entries: []imagegen.Entry{
			imagegen.File("usr/lib/libfamily.so.1", "family library\n").WithMode(0o755),
			imagegen.Symlink("usr/lib/libfamily.so", "libfamily.so.1"),
			imagegen.File("etc/os-release", "ID=family\nVERSION_ID=2\n"),
		}},
	}
}

// familySpecs returns the base image of a family and two apps built on it,
// with their own layers and configs.
func familySpecs() (base, app1, app2 imagegen.Spec) {
	base = imagegen.Spec{
		Layers: familyBase(),
		Config: imagegen.Config{Env: []string{"PATH=/usr/bin:/bin"}},
	}
	app1 = imagegen.Spec{
		Layers: append(familyBase(), imagegen.Layer{Comment: "app1", Entries: []imagegen.Entry{
			imagegen.Whiteout("etc/remove-me"),
			imagegen.Dir("app"),
			imagegen.File("app/name", "app1\n"),
			imagegen.File("lib/app1.so", "through the lib symlink\n"),
		}}),
		Config: imagegen.Config{
			Env:        []string{"PATH=/app:/usr/bin:/bin", "APP=one"},
			Entrypoint: []string{"/app/run1"},
			Labels:     map[string]string{"app": "one"},
		},
	}
	app2 = imagegen.Spec{
		Layers: append(familyBase(),
			imagegen.Layer{Comment: "app2: data", Entries: []imagegen.Entry{
				imagegen.Dir("data"),
				imagegen.Opaque("data"),
				imagegen.File("data/c", "app2 c\n"),
			}},
			imagegen.Layer{Comment: "app2: app", Compression: imagegen.Zstd,
				Entries: []imagegen.Entry{
					imagegen.Dir("app"),
					imagegen.File("app/name", "app2\n"),
					imagegen.Hardlink("app/os-release", "etc/os-release"),
				}}),
		Config: imagegen.Config{
			Env:        []string{"PATH=/app:/usr/bin:/bin", "APP=two"},
			Cmd:        []string{"/app/run2", "--two"},
			Labels:     map[string]string{"app": "two"},
			WorkingDir: "/app",
		},
	}
	return base, app1, app2
}

// unrelatedSpec is a one-layer image that shares no layer with the family.
func unrelatedSpec() imagegen.Spec {
	return imagegen.Spec{Layers: []imagegen.Layer{{Comment: "unrelated",
		Entries: []imagegen.Entry{imagegen.File("unrelated", "not the family\n")}}}}
}

// Where the layers of the many-layer image sit; layers are numbered from 1,
// bottom first.
const (
	manyLayers   = 30
	manyBigLayer = 15
	manyBigSize  = 256 << 10
)

// manyEmpty are the layers of the many-layer image whose tar has no entry,
// as some builders write for ENV and LABEL steps.
var manyEmpty = map[int]string{2: "ENV A=1", 9: "ENV B=2", 16: "LABEL x=y", 23: "ENV C=3"}

// manyEntries are the entries of the non-empty layers of the many-layer
// image besides the "l/NN" file each one adds. Layer 15 is far bigger than
// all the small layers together, so that merged groups split around it: a
// file layer 8 makes and layer 20 deletes is deleted across groups, while
// with --max-overlays 4 each of these pairs ends up in one group: deletes
// (3-5, 17-22), opaque directories (19-24), a directory deleted and made
// again (25-27), a directory replaced by a file (3-11) and back (20-28), a
// hard link to a file deleted later (17-21-22) and a path through a symlink
// (17-26).
var manyEntries = map[int][]imagegen.Entry{
	1: {
		imagegen.Dir("etc"),
		imagegen.File("etc/base", "base\n"),
		imagegen.Dir("w"),
		imagegen.File("w/a", "base a\n"),
		imagegen.File("w/b", "base b\n"),
		imagegen.File("w/c", "base c\n"),
		imagegen.File("w/d", "base d\n"),
		imagegen.Dir("opq"),
		imagegen.File("opq/x", "base x\n"),
		imagegen.File("opq/y", "base y\n"),
		imagegen.Dir("opq/sub"),
		imagegen.File("opq/sub/z", "base z\n"),
		imagegen.Dir("gone"),
		imagegen.File("gone/one", "1\n"),
		imagegen.Dir("gone/deep"),
		imagegen.File("gone/deep/two", "2\n"),
		imagegen.Dir("keep"),
		imagegen.File("keep/k", "kept\n"),
	},
	3: {imagegen.Dir("mid"), imagegen.File("mid/created3", "made in 3\n"),
		imagegen.File("mid/kept3", "made in 3, kept\n"),
		imagegen.Dir("d2f"), imagegen.File("d2f/x", "in a directory 11 replaces\n")},
	4: {imagegen.Whiteout("w/a")},
	5: {imagegen.Whiteout("mid/created3")},
	6: {imagegen.File("w/b", "replaced in 6\n"), imagegen.Hardlink("keep/hl6", "keep/k")},
	7: {imagegen.Dir("mid/dir7"), imagegen.File("mid/dir7/f", "in a directory 10 deletes\n"),
		imagegen.File("mid/x7", "xattr\n").WithXattr("user.layer", "7")},
	8: {imagegen.Dir("across"), imagegen.File("across/file", "made in 8\n"),
		imagegen.File("across/keep", "kept\n")},
	10: {imagegen.Whiteout("mid/dir7")},
	11: {imagegen.File("w/c2", "beside c\n"), imagegen.File("d2f", "a file now\n")},
	12: {imagegen.File("opq/mid", "made in 12, hidden by 18\n")},
	13: {imagegen.Whiteout("w/c")},
	14: {imagegen.File("mid/created3", "made again in 14\n")},
	15: {imagegen.Dir("big"), imagegen.RandomFile("big/blob", manyBigSize, 15)},
	17: {imagegen.Dir("late"), imagegen.File("late/a", "made in 17\n"),
		imagegen.Symlink("ln", "late")},
	18: {imagegen.Dir("opq"), imagegen.Opaque("opq"), imagegen.File("opq/new", "made in 18\n")},
	19: {imagegen.Dir("opq2"), imagegen.File("opq2/p", "made in 19\n"), imagegen.Dir("opq2/s"),
		imagegen.File("opq2/s/q", "made in 19\n")},
	20: {imagegen.Whiteout("across/file"), imagegen.File("morph", "a file 28 replaces\n")},
	21: {imagegen.File("late/b", "made in 21\n"), imagegen.Hardlink("keep/hl21", "late/a")},
	22: {imagegen.Whiteout("late/a")},
	24: {imagegen.Dir("opq2"), imagegen.Opaque("opq2"), imagegen.File("opq2/n", "made in 24\n")},
	25: {imagegen.Whiteout("gone")},
	26: {imagegen.File("w/a", "made again in 26\n"), imagegen.File("ln/via", "through ln\n")},
	27: {imagegen.Dir("gone"), imagegen.File("gone/again", "made in 27\n")},
	28: {imagegen.File("late/c", "made in 28\n"), imagegen.Whiteout("late/b"),
		imagegen.Dir("morph"), imagegen.File("morph/inner", "in what was a file\n")},
	29: {imagegen.File("w/d", "replaced in 29\n")},
	30: {imagegen.Dir("app"), imagegen.File("app/top", "the top layer\n")},
}

// manySpec is an image of 30 layers: the many-layer image.
func manySpec() imagegen.Spec {
	var layers []imagegen.Layer
	for i := 1; i <= manyLayers; i++ {
		if c, ok := manyEmpty[i]; ok {
			layers = append(layers, imagegen.Layer{Comment: c})
			continue
		}
		entries := append([]imagegen.Entry{imagegen.Dir("l"),
			imagegen.File(fmt.Sprintf("l/%02d", i), fmt.Sprintf("layer %d\n", i))},
			manyEntries[i]...)
		layers = append(layers, imagegen.Layer{Comment: fmt.Sprintf("many: %d", i),
			Entries: entries})
	}
	return imagegen.Spec{
		Layers: layers,
		Config: imagegen.Config{
			Env:        []string{"PATH=/usr/bin:/bin", "A=1", "B=2", "C=3"},
			Entrypoint: []string{"/app/top"},
			Labels:     map[string]string{"x": "y"},
		},
	}
}

// tinyLayersSpec is an image of n+1 layers: a base and n layers that each
// add one small file.
func tinyLayersSpec(n int) imagegen.Spec {
	layers := []imagegen.Layer{{Comment: "tiny: base", Entries: []imagegen.Entry{
		imagegen.Dir("t"), imagegen.File("t/base", "base\n")}}}
	for i := 1; i <= n; i++ {
		layers = append(layers, imagegen.Layer{Comment: fmt.Sprintf("tiny: %d", i),
			Entries: []imagegen.Entry{imagegen.File(fmt.Sprintf("t/%02d", i),
				fmt.Sprintf("layer %d\n", i))}})
	}
	return imagegen.Spec{Layers: layers,
		Config: imagegen.Config{Entrypoint: []string{"/bin/sh"}}}
}

// emptyDiffID returns the diffID of a layer whose tar has no entries.
func emptyDiffID(t *testing.T) string {
	t.Helper()
	l, err := imagegen.BuildLayer(imagegen.Layer{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// Values of the metadata image's config, chosen to break naive quoting.
var (
	metaEnv = []string{
		"PATH=/usr/bin:/bin",
		"SPACED=a b  c",
		`QUOTES=it's "double" and 'single'`,
		"DOLLAR=$HOME ${HOME} \\$ `echo no` $(echo no)",
		`BACKSLASH=a\b\\c\`,
		"MULTI=line one\nline two",
		"EMPTY=",
		"HOSTWINS=image value",
		"BAD-NAME=left out",
	}
	metaEntrypoint = []string{"/usr/bin/printf", "%s\n"}
	metaCmd        = []string{"arg with space", "$HOME", `"quoted"`, "it's", "`echo no`",
		`a\b`, "100%d", "", "semi;colon && true"}
	metaWorkDir = "/work dir"
	metaUser    = "1000:1000"
	metaLabels  = map[string]string{"quote": `it's "quoted"`, "dollar": "$HOME"}
)

// metaSpec is a one-layer image with the awkward config above.
func metaSpec() imagegen.Spec {
	return imagegen.Spec{
		Layers: []imagegen.Layer{{Comment: "meta", Entries: []imagegen.Entry{
			imagegen.Dir("work dir"),
			imagegen.File("work dir/file", "in the working directory\n"),
		}}},
		Config: imagegen.Config{
			Env:        metaEnv,
			Entrypoint: metaEntrypoint,
			Cmd:        metaCmd,
			Labels:     metaLabels,
			WorkingDir: metaWorkDir,
			User:       metaUser,
		},
	}
}

// diffIDs returns img's diffIDs, bottom first.
func diffIDs(t *testing.T, img v1.Image) []string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range cf.RootFS.DiffIDs {
		ids = append(ids, d.String())
	}
	return ids
}
