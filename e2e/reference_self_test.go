package e2e

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

func TestResolve(t *testing.T) {
	b := &refBuilder{tree: tree{
		"lib":       {Type: "symlink", Target: "usr/lib"},
		"usr":       {Type: "dir"},
		"usr/lib":   {Type: "dir"},
		"abs":       {Type: "symlink", Target: "/usr/lib"},
		"up":        {Type: "symlink", Target: "../../../usr"},
		"usr/lib64": {Type: "symlink", Target: "../lib"},
		"loop":      {Type: "symlink", Target: "loop"},
	}}
	tests := []struct{ in, want string }{
		{".", "."},
		{"lib", "usr/lib"},
		{"lib/x", "usr/lib/x"},
		{"abs/x/y", "usr/lib/x/y"},
		{"up/lib", "usr/lib"},
		{"usr/lib64/x", "usr/lib/x"},
		{"usr/../lib", "usr/lib"},
		{"../../etc", "etc"},
		{"loop/x", "loop/x"},
		{"none/lib", "none/lib"},
	}
	for _, tt := range tests {
		if got := b.resolve(tt.in); got != tt.want {
			t.Errorf("resolve(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestReferenceMatchesUmoci checks the reference tree and the tree walker
// against umoci, an independent OCI unpacker, on the "cases" image with
// every layer gzipped (umoci 0.4 reads no zstd).
func TestReferenceMatchesUmoci(t *testing.T) {
	requireRoot(t, "unpacking with umoci to exact owners and device nodes")
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Skip("umoci not found: install umoci")
	}
	spec := imagegen.StandardSpecs()[imagegen.Cases]
	for i := range spec.Layers {
		spec.Layers[i].Compression = imagegen.Gzip
	}
	img, err := imagegen.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	tagged := []imagegen.Tagged{{Tag: "cases", Image: img}}
	if err := imagegen.WriteLayout(layout, tagged); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle")
	out, err := exec.Command(umoci, "unpack", "--image", layout+":cases", bundle).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	compareTrees(t, walkTree(t, filepath.Join(bundle, "rootfs")), referenceTree(t, img))
}
