package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// layoutJSON is what the output tests read of image.json, and of the JSON
// that convert --json and flatten --json print, with the fields the layout
// options add.
type layoutJSON struct {
	Source   string `json:"source"`
	Platform string `json:"platform"`
	Base     struct {
		File    string   `json:"file"`
		Image   string   `json:"image"`
		DiffIDs []string `json:"diff_ids"`
		ChainID string   `json:"chain_id"`
		Key     string   `json:"key"`
		Reused  bool     `json:"reused"`
	} `json:"base"`
	Overlays      []layoutOverlay `json:"overlays"`
	ConfigOverlay struct {
		File   string `json:"file"`
		Key    string `json:"key"`
		Reused bool   `json:"reused"`
	} `json:"config_overlay"`
	WorkingDir string   `json:"working_dir"`
	User       string   `json:"user"`
	Flat       bool     `json:"flat"`
	ExecArgs   []string `json:"exec_args"`
}

type layoutOverlay struct {
	File    string   `json:"file"`
	DiffIDs []string `json:"diff_ids"`
	ChainID string   `json:"chain_id"`
	Key     string   `json:"key"`
	KeyedBy string   `json:"keyed_by"`
	Reused  bool     `json:"reused"`
}

// readLayout reads OUT/image.json.
func readLayout(t *testing.T, out string) layoutJSON {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "image.json"))
	if err != nil {
		t.Fatalf("read image.json: %v", err)
	}
	return parseLayout(t, data)
}

func parseLayout(t *testing.T, data []byte) layoutJSON {
	t.Helper()
	var l layoutJSON
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatalf("parse image.json: %v\n%s", err, data)
	}
	return l
}

// pushImage pushes img to REPO:v1 on the proxy's registry and returns its
// docker:// source name.
func pushImage(t *testing.T, px *countingProxy, repo string, img v1.Image) string {
	t.Helper()
	ref := px.Addr + "/" + repo + ":v1"
	if err := imagegen.Push(t.Context(), ref, img); err != nil {
		t.Fatal(err)
	}
	return "docker://" + ref
}

// layerGets returns the GETs the proxy counted for each of img's layer
// blobs, leaving out the config and manifests.
func layerGets(t *testing.T, px *countingProxy, img v1.Image) map[string]int {
	t.Helper()
	gets := px.BlobGets()
	out := map[string]int{}
	for _, d := range layerDigests(t, img) {
		if gets[d] > 0 {
			out[d] = gets[d]
		}
	}
	return out
}

// sifObject is one data object of a SIF file.
type sifObject struct {
	ID       uint32
	DataType sif.DataType
	Group    uint32
	Name     string
	Offset   int64
	Size     int64
	// Partitions only.
	FS   sif.FSType
	Part sif.PartType
	Arch string
	// Generic JSON objects only.
	Data []byte
}

// sifContents is what the tests read of a SIF file.
type sifContents struct {
	LaunchScript string
	PrimaryArch  string
	Objects      []sifObject // in descriptor order
}

// readSIF returns every data object of a SIF file, in descriptor order.
func readSIF(t *testing.T, file string) sifContents {
	t.Helper()
	f, err := sif.LoadContainerFromPath(file, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		t.Fatalf("load SIF %s: %v", file, err)
	}
	defer f.UnloadContainer()

	c := sifContents{LaunchScript: f.LaunchScript(), PrimaryArch: f.PrimaryArch()}
	ds, err := f.GetDescriptors()
	if err != nil {
		t.Fatalf("list objects of %s: %v", file, err)
	}
	for _, d := range ds {
		o := sifObject{ID: d.ID(), DataType: d.DataType(), Group: d.GroupID(), Name: d.Name(),
			Offset: d.Offset(), Size: d.Size()}
		switch d.DataType() {
		case sif.DataPartition:
			o.FS, o.Part, o.Arch, err = d.PartitionMetadata()
		case sif.DataGenericJSON:
			o.Data, err = d.GetData()
		}
		if err != nil {
			t.Fatalf("read object %d of %s: %v", d.ID(), file, err)
		}
		c.Objects = append(c.Objects, o)
	}
	return c
}

// partitions returns the partitions of c, in descriptor order.
func (c sifContents) partitions() []sifObject {
	var out []sifObject
	for _, o := range c.Objects {
		if o.DataType == sif.DataPartition {
			out = append(out, o)
		}
	}
	return out
}

// jsonObject returns the generic JSON object called name, or nil.
func (c sifContents) jsonObject(name string) []byte {
	for _, o := range c.Objects {
		if o.DataType == sif.DataGenericJSON && o.Name == name {
			return o.Data
		}
	}
	return nil
}

// rangeSHA256 returns the sha256 of size bytes at off in file.
func rangeSHA256(t *testing.T, file string, off, size int64) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, off, size))
	if err != nil || n != size {
		t.Fatalf("read %d bytes at %d of %s: got %d, %v", size, off, file, n, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// stackPart is one squashfs partition of a stack: size bytes at off in
// file.
type stackPart struct {
	File   string
	Offset int64
	Size   int64
}

// outputParts returns the partitions of a conversion's standalone files,
// base first, config overlay last, checking that each file holds one
// squashfs partition of the right type.
func outputParts(t *testing.T, out string, l layoutJSON) []stackPart {
	t.Helper()
	files := []string{l.Base.File}
	for _, o := range l.Overlays {
		files = append(files, o.File)
	}
	files = append(files, l.ConfigOverlay.File)
	var parts []stackPart
	for i, f := range files {
		want := sif.PartOverlay
		if i == 0 {
			want = sif.PartPrimSys
		}
		p := onePartition(t, filepath.Join(out, f), want)
		parts = append(parts, stackPart{File: filepath.Join(out, f), Offset: p.Offset,
			Size: p.Size})
	}
	return parts
}

// checkStackTree, in a subtest called name, loop-mounts parts, bottom
// first, stacks them with overlayfs (a later part higher) in every overlay
// mode and compares the merged tree with img's reference (imageReference);
// it also checks the Apptainer skeleton. It needs root.
func checkStackTree(t *testing.T, name string, parts []stackPart, img v1.Image) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		requireRoot(t, "loop-mounting squashfs and stacking overlayfs")
		var lowers []string
		for i := len(parts) - 1; i >= 0; i-- {
			p := parts[i]
			lowers = append(lowers, mountSquashfs(t, p.File, p.Offset, p.Size))
		}
		want := imageReference(t, img)
		for i, mode := range overlayModes {
			t.Run(mode.name, func(t *testing.T) {
				merged := mountOverlay(t, lowers, mode.opts...)
				got := walkTree(t, merged)
				compareTrees(t, got, want)
				if i == 0 {
					checkSkeleton(t, merged, got, img)
				}
			})
		}
	})
}

// copyPartition copies the partition at off, size bytes long, of file into
// a new .sqfs file and returns its path.
func copyPartition(t *testing.T, file string, off, size int64) string {
	t.Helper()
	in, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), "part.sqfs")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(in, off, size)); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// unsquash extracts a squashfs file, or only the given paths of it, into a
// new directory and returns the directory.
func unsquash(t *testing.T, sqfs string, paths ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "root")
	args := append([]string{"-n", "-d", dir, sqfs}, paths...)
	out, err := exec.Command("unsquashfs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs %s: %v\n%s", sqfs, err, out)
	}
	return dir
}

// zeroDevice matches an "unsquashfs -lln" line of a 0:0 character device.
var zeroDevice = regexp.MustCompile(`^c\S*\s+\S+\s+0,\s*0\s`)

// zeroDevices lists the 0:0 character devices (whiteouts) in a squashfs
// file, from "unsquashfs -lln".
func zeroDevices(t *testing.T, sqfs string) []string {
	t.Helper()
	out, err := exec.Command("unsquashfs", "-lln", sqfs).Output()
	if err != nil {
		t.Fatalf("unsquashfs -lln %s: %v", sqfs, err)
	}
	var devs []string
	for _, l := range strings.Split(string(out), "\n") {
		if zeroDevice.MatchString(l) {
			devs = append(devs, l)
		}
	}
	return devs
}

// checkOCIConfig checks that data, an oci-config.json object, holds img's
// config section.
func checkOCIConfig(t *testing.T, what string, data []byte, img v1.Image) {
	t.Helper()
	if data == nil {
		t.Errorf("%s: no oci-config.json object", what)
		return
	}
	var got v1.Config
	if err := json.Unmarshal(data, &got); err != nil {
		t.Errorf("%s: parse oci-config.json: %v\n%s", what, err, data)
		return
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(cf.Config)
	if string(g) != string(w) {
		t.Errorf("%s: oci-config.json\n  %s\nreads as\n  %s\nwant the image config's\n  %s",
			what, data, g, w)
	}
}

// imageReference returns the reference tree of img: referenceTree's, except
// for the many-layer image, whose hard link keep/hl21 outlives its target.
// mutate.Extract drops late/a, which layer 22 deletes, before it reaches the
// link layer 21 made to it, so referenceTree finds no target; the link keeps
// the content late/a had when it was made, as Docker would unpack it.
func imageReference(t *testing.T, img v1.Image) tree {
	t.Helper()
	many, err := imagegen.Build(manySpec())
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, img) != digest(t, many) {
		return referenceTree(t, img)
	}
	entries, err := readExtract(img)
	if err != nil {
		t.Fatalf("extract reference: %v", err)
	}
	b := &refBuilder{tree: tree{".": {Type: "dir", Mode: 0o755}}, pending: map[string]string{}}
	for i := len(entries) - 1; i >= 0; i-- {
		b.insert(entries[i])
	}
	const content = "made in 17\n"
	outlived := map[string]node{"keep/hl21": {Type: "file", Mode: 0o644,
		Size: int64(len(content)), SHA256: sha256Hex([]byte(content))}}
	for link, target := range b.pending {
		n, ok := b.tree[target]
		if !ok {
			n, ok = outlived[link]
		}
		if !ok {
			t.Fatalf("reference: hard link %s: no target %s", link, target)
		}
		b.tree[link] = n
	}
	return b.tree
}
