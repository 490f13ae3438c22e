package e2e

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// TestMountHelpers checks the SIF reader and the mount helpers on two SIF
// files built here: a base with a file the overlay replaces, a directory it
// adds to and a file it deletes with a 0:0 whiteout.
func TestMountHelpers(t *testing.T) {
	requireRoot(t, "loop-mounting squashfs and stacking overlayfs")
	requireMksquashfs(t)
	dir := t.TempDir()

	lower := filepath.Join(dir, "lower")
	writeFiles(t, lower, map[string]string{"a": "lower\n", "d/x": "x\n", "w": "deleted\n"})
	upper := filepath.Join(dir, "upper")
	writeFiles(t, upper, map[string]string{"a": "upper\n", "d/y": "y\n"})
	if err := unix.Mknod(filepath.Join(upper, "w"), unix.S_IFCHR, 0); err != nil {
		t.Fatalf("mknod whiteout: %v", err)
	}

	base := filepath.Join(dir, "base.sif")
	overlay := filepath.Join(dir, "overlay.sif")
	writeSquashSIF(t, lower, base, sif.PartPrimSys)
	writeSquashSIF(t, upper, overlay, sif.PartOverlay)

	bp := onePartition(t, base, sif.PartPrimSys)
	op := onePartition(t, overlay, sif.PartOverlay)
	merged := mountOverlay(t, []string{
		mountSquashfs(t, overlay, op.Offset, op.Size),
		mountSquashfs(t, base, bp.Offset, bp.Size),
	})

	got := walkTree(t, merged)
	want := map[string]string{".": "dir", "a": "file", "d": "dir", "d/x": "file", "d/y": "file"}
	if len(got) != len(want) {
		t.Errorf("merged tree %v, want paths %v", got, want)
	}
	for p, typ := range want {
		if got[p].Type != typ {
			t.Errorf("%s: type %q, want %q", p, got[p].Type, typ)
		}
	}
	data, err := os.ReadFile(filepath.Join(merged, "a"))
	if err != nil || string(data) != "upper\n" {
		t.Errorf("a reads %q (%v), want the overlay's", data, err)
	}
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeSquashSIF packs dir into a squashfs and wraps it in a SIF file as one
// partition of type pt.
func writeSquashSIF(t *testing.T, dir, file string, pt sif.PartType) {
	t.Helper()
	sqfs := file + ".sqfs"
	out, err := exec.Command("mksquashfs", dir, sqfs, "-noappend", "-quiet", "-no-progress").
		CombinedOutput()
	if err != nil {
		t.Fatalf("mksquashfs %s: %v\n%s", dir, err, out)
	}
	f, err := os.Open(sqfs)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	di, err := sif.NewDescriptorInput(sif.DataPartition, f,
		sif.OptPartitionMetadata(sif.FsSquash, pt, "amd64"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := sif.CreateContainerAtPath(file, sif.OptCreateDeterministic(),
		sif.OptCreateWithDescriptors(di))
	if err != nil {
		t.Fatalf("create SIF %s: %v", file, err)
	}
	if err := img.UnloadContainer(); err != nil {
		t.Fatal(err)
	}
}

// TestRegistryProxy checks the test harness itself: an image pushed through
// the proxy to the registry reads back, and the proxy counts each blob GET.
func TestRegistryProxy(t *testing.T) {
	px := startProxy(t, startRegistry(t))
	img := standardImage(t, imagegen.Demo)
	ref := px.Addr + "/demo:v1"
	if err := imagegen.Push(t.Context(), ref, img); err != nil {
		t.Fatal(err)
	}
	if px.Count("GET", "/v2/") == 0 {
		t.Error("push did not go through the proxy")
	}

	px.Reset()
	if got := px.BlobGets(); len(got) != 0 {
		t.Fatalf("blob GETs after Reset: %v", got)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if want, got := digest(t, img), digest(t, pulled); got != want {
		t.Errorf("pulled manifest %s, want %s", got, want)
	}
	if _, err := pulled.ConfigFile(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{configName(t, img): 1}
	for _, d := range layerDigests(t, img) {
		want[d] = 1
	}
	readLayers(t, pulled)
	if got := px.BlobGets(); !maps.Equal(got, want) {
		t.Errorf("blob GETs %v, want %v", got, want)
	}
}
