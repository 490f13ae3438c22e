package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apptainer/sif/v2/pkg/sif"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// imageJSON is OUTDIR/image.json.
type imageJSON struct {
	Source         string `json:"source"`
	ManifestDigest string `json:"manifest_digest"`
	ConfigDigest   string `json:"config_digest"`
	Platform       string `json:"platform"`
	Base           struct {
		File    string   `json:"file"`
		DiffIDs []string `json:"diff_ids"`
		ChainID string   `json:"chain_id"`
	} `json:"base"`
	Overlays      []overlayJSON `json:"overlays"`
	ConfigOverlay struct {
		File   string `json:"file"`
		Key    string `json:"key"`
		Reused bool   `json:"reused"`
	} `json:"config_overlay"`
	ExecArgs []string `json:"exec_args"`
}

type overlayJSON struct {
	File    string   `json:"file"`
	DiffIDs []string `json:"diff_ids"`
	Key     string   `json:"key"`
	Reused  bool     `json:"reused"`
}

// result is one finished conversion.
type result struct {
	Out    string // OUTDIR
	Meta   imageJSON
	Stdout string
}

// convertTimeout bounds one conversion.
const convertTimeout = 10 * time.Minute

// convert runs "oci2layers convert SOURCE -o OUT --cache CACHE ARGS..." into a
// new output directory and returns its image.json. It fails t, showing the
// output, when the command fails.
func convert(t *testing.T, source, cache string, args ...string) result {
	t.Helper()
	bin := requireBinary(t)
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithTimeout(t.Context(), convertTimeout)
	defer cancel()

	argv := append([]string{"convert", source, "-o", out, "--cache", cache}, args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("oci2layers %s: %v\nstdout:\n%s\nstderr:\n%s",
			strings.Join(argv, " "), err, stdout.String(), stderr.String())
	}
	t.Logf("oci2layers %s: %s", strings.Join(argv, " "), time.Since(start).Round(time.Millisecond))

	data, err := os.ReadFile(filepath.Join(out, "image.json"))
	if err != nil {
		t.Fatalf("read image.json: %v", err)
	}
	r := result{Out: out, Stdout: stdout.String()}
	if err := json.Unmarshal(data, &r.Meta); err != nil {
		t.Fatalf("parse image.json: %v\n%s", err, data)
	}
	return r
}

var (
	digestRE        = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	overlayFileRE   = regexp.MustCompile(`^overlays/([0-9]{2})-[0-9a-f]{12}\.sif$`)
	configOverlayRE = regexp.MustCompile(`^overlays/config-[0-9a-f]{12}\.sif$`)
)

// contract says what checkContract expects beyond the fixed shape.
type contract struct {
	Source string
	Image  v1.Image
	// BaseLayers is the wanted number of base diffIDs; 0 accepts any.
	BaseLayers int
	// NoManifestDigest skips comparing manifest_digest, for sources such as
	// docker-archive that hold no manifest.
	NoManifestDigest bool
}

// checkContract checks image.json and the files it names against the
// output contract.
func checkContract(t *testing.T, r result, c contract) {
	t.Helper()
	m := r.Meta
	cf, err := c.Image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := c.Image.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != c.Source {
		t.Errorf("source %q, want %q", m.Source, c.Source)
	}
	if !c.NoManifestDigest {
		d, err := c.Image.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if m.ManifestDigest != d.String() {
			t.Errorf("manifest_digest %q, want %s", m.ManifestDigest, d)
		}
	} else if !digestRE.MatchString(m.ManifestDigest) {
		t.Errorf("manifest_digest %q is not a sha256 digest", m.ManifestDigest)
	}
	if m.ConfigDigest != cfgName.String() {
		t.Errorf("config_digest %q, want %s", m.ConfigDigest, cfgName)
	}
	if want := cf.OS + "/" + cf.Architecture; m.Platform != want {
		t.Errorf("platform %q, want %q", m.Platform, want)
	}

	checkBase(t, m, c.BaseLayers)
	checkOverlays(t, m)
	checkDiffIDs(t, m, cf.RootFS.DiffIDs)
	checkExecArgs(t, m)
	checkFiles(t, r)
}

func checkBase(t *testing.T, m imageJSON, want int) {
	t.Helper()
	if m.Base.File != "base.sif" {
		t.Errorf("base.file %q, want base.sif", m.Base.File)
	}
	if len(m.Base.DiffIDs) == 0 || (want > 0 && len(m.Base.DiffIDs) != want) {
		t.Errorf("base has %d diff_ids, want %d (0: at least one)", len(m.Base.DiffIDs), want)
	}
	if got := chainID(m.Base.DiffIDs); m.Base.ChainID != got {
		t.Errorf("base.chain_id %q, want %s", m.Base.ChainID, got)
	}
}

func checkOverlays(t *testing.T, m imageJSON) {
	t.Helper()
	for i, o := range m.Overlays {
		sub := overlayFileRE.FindStringSubmatch(o.File)
		if sub == nil {
			t.Errorf("overlay %d: file %q does not match %s", i, o.File, overlayFileRE)
		} else if n, _ := strconv.Atoi(sub[1]); n != i+1 {
			t.Errorf("overlay %d: file %q is numbered %d, want %02d", i, o.File, n, i+1)
		}
		if len(o.DiffIDs) == 0 {
			t.Errorf("overlay %d (%s): no diff_ids", i, o.File)
		}
		if !digestRE.MatchString(o.Key) {
			t.Errorf("overlay %d (%s): key %q is not a sha256 digest", i, o.File, o.Key)
		}
	}
	if !configOverlayRE.MatchString(m.ConfigOverlay.File) {
		t.Errorf("config_overlay.file %q does not match %s", m.ConfigOverlay.File, configOverlayRE)
	}
	if !digestRE.MatchString(m.ConfigOverlay.Key) {
		t.Errorf("config_overlay.key %q is not a sha256 digest", m.ConfigOverlay.Key)
	}
}

// checkDiffIDs checks that the base's diffIDs followed by each overlay's are
// the image's diffIDs in order.
func checkDiffIDs(t *testing.T, m imageJSON, want []v1.Hash) {
	t.Helper()
	got := slices.Clone(m.Base.DiffIDs)
	for _, o := range m.Overlays {
		got = append(got, o.DiffIDs...)
	}
	w := make([]string, len(want))
	for i, h := range want {
		w[i] = h.String()
	}
	if !slices.Equal(got, w) {
		t.Errorf("base and overlay diff_ids:\n  %s\nwant the image's:\n  %s",
			strings.Join(got, "\n  "), strings.Join(w, "\n  "))
	}
}

func checkExecArgs(t *testing.T, m imageJSON) {
	t.Helper()
	var want []string
	for _, o := range m.Overlays {
		want = append(want, "--overlay", o.File+":ro")
	}
	want = append(want, "--overlay", m.ConfigOverlay.File+":ro")
	if !slices.Equal(m.ExecArgs, want) {
		t.Errorf("exec_args %q, want %q", m.ExecArgs, want)
	}
}

// checkFiles checks that the output holds exactly the files image.json
// names, plus image.json and an executable run wrapper.
func checkFiles(t *testing.T, r result) {
	t.Helper()
	m := r.Meta
	for _, f := range append([]string{"image.json", m.Base.File}, sifFiles(m)...) {
		if fi, err := os.Stat(filepath.Join(r.Out, f)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("output file %s: %v", f, err)
		}
	}
	fi, err := os.Stat(filepath.Join(r.Out, "run"))
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("run wrapper: not an executable file (%v)", err)
	}

	entries, err := os.ReadDir(filepath.Join(r.Out, "overlays"))
	if err != nil {
		t.Fatalf("list overlays: %v", err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, "overlays/"+e.Name())
	}
	want := sifFiles(m)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("overlays/ holds %q, want %q", got, want)
	}
}

// sifFiles returns the overlay files of m, bottom to top, config last.
func sifFiles(m imageJSON) []string {
	var fs []string
	for _, o := range m.Overlays {
		fs = append(fs, o.File)
	}
	return append(fs, m.ConfigOverlay.File)
}

// chainID returns the OCI chain ID of diffIDs.
func chainID(diffIDs []string) string {
	if len(diffIDs) == 0 {
		return ""
	}
	id := diffIDs[0]
	for _, d := range diffIDs[1:] {
		id = fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(id+" "+d)))
	}
	return id
}

// checkSIFs checks the partitions of every SIF the output holds and returns
// the base's primary partition and each overlay's partition, bottom to top,
// config overlay last.
func checkSIFs(t *testing.T, r result) (partition, []partition) {
	t.Helper()
	base := onePartition(t, filepath.Join(r.Out, r.Meta.Base.File), sif.PartPrimSys)
	var overlays []partition
	for _, f := range sifFiles(r.Meta) {
		overlays = append(overlays, onePartition(t, filepath.Join(r.Out, f), sif.PartOverlay))
	}
	return base, overlays
}

// overlayModes are the ways the tests stack the layers. Kernel overlayfs as
// real root honours trusted.overlay.opaque; with userxattr it ignores
// trusted.* as Apptainer's user-namespace mode does, so only explicit 0:0
// whiteouts hide lower content. (userxattr honours user.overlay.opaque,
// which Apptainer's user-namespace mode ignores too.)
var overlayModes = []struct {
	name string
	opts []string
}{
	{"kernel-trusted", nil},
	{"userxattr", []string{"userxattr"}},
}

// mountLayers loop-mounts every partition of the output and returns the
// mount points in overlayfs lowerdir order: config overlay first, base last.
// It needs root.
func mountLayers(t *testing.T, r result) []string {
	t.Helper()
	requireRoot(t, "loop-mounting squashfs and stacking overlayfs")
	base, overlays := checkSIFs(t, r)
	files := sifFiles(r.Meta)

	var lowers []string
	for i := len(overlays) - 1; i >= 0; i-- {
		p := overlays[i]
		lowers = append(lowers, mountSquashfs(t, filepath.Join(r.Out, files[i]), p.Offset, p.Size))
	}
	return append(lowers, mountSquashfs(t, filepath.Join(r.Out, r.Meta.Base.File),
		base.Offset, base.Size))
}

// checkTree stacks the output the way Apptainer does, in every overlay
// mode, and compares the merged tree with the image; it also checks the
// Apptainer skeleton. It needs root.
func checkTree(t *testing.T, r result, img v1.Image) {
	t.Helper()
	t.Run("tree", func(t *testing.T) {
		lowers := mountLayers(t, r)
		want := referenceTree(t, img)
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
