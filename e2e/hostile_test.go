package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
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
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// rawEntry is a tar entry written as is, with none of imagegen's checks.
type rawEntry struct {
	Name     string
	Typeflag byte
	Linkname string
	Content  string
	// Zeros, when positive, makes a regular file of that many zero bytes.
	Zeros int64
}

func rawFile(name, content string) rawEntry {
	return rawEntry{Name: name, Typeflag: tar.TypeReg, Content: content}
}

// rawLayer returns a gzip layer holding entries, compressed at the best
// level so that runs of zeros shrink about a thousandfold.
func rawLayer(t *testing.T, entries ...rawEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.Name, Typeflag: e.Typeflag, Linkname: e.Linkname,
			Mode: 0o644, ModTime: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
		var body io.Reader = strings.NewReader(e.Content)
		switch {
		case e.Typeflag == tar.TypeDir, e.Typeflag == tar.TypeSymlink:
			hdr.Mode = 0o755
		case e.Zeros > 0:
			hdr.Size, body = e.Zeros, io.LimitReader(repeatReader(0), e.Zeros)
		case e.Typeflag == tar.TypeReg:
			hdr.Size = int64(len(e.Content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write tar header %q: %v", e.Name, err)
		}
		if hdr.Size > 0 {
			if _, err := io.Copy(tw, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	blob := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageLayers(t *testing.T, img v1.Image) []v1.Layer {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// readCompressed returns a layer's blob.
func readCompressed(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostileBase is the harmless bottom layer under each hostile layer.
func hostileBase(t *testing.T) v1.Image {
	t.Helper()
	return buildImage(t, imagegen.Spec{Layers: []imagegen.Layer{{
		Comment: "hostile: base", Compression: imagegen.Gzip, Entries: []imagegen.Entry{
			imagegen.Dir("etc"),
			imagegen.File("etc/os-release", "ID=hostile\n"),
			imagegen.Dir("tmp").WithMode(0o1777),
		},
	}}})
}

// pushWithDiffIDs pushes img to repo:tag with the config's diffIDs replaced
// by diffIDs, which the blobs then do not match.
func pushWithDiffIDs(t *testing.T, addr, repo, tag string, img v1.Image, diffIDs []v1.Hash) {
	t.Helper()
	if err := imagegen.Push(t.Context(), addr+"/"+repo+":"+tag+"-true", img); err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = diffIDs
	cfg, err := json.Marshal(cf)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	m = m.DeepCopy()
	m.Config.Digest = pushBlob(t, addr, repo, cfg)
	m.Config.Size = int64(len(cfg))
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	putManifest(t, addr, repo, tag, string(m.MediaType), body)
}

// TestHostileLayers converts images whose top layer attacks the host or the
// converter: names that climb out of the layer root, links that point out,
// a gzip bomb, too many entries, and a config that lies about the layer's
// diffID. Each is refused with the right exit code, and nothing is written
// outside the cache and the output directory.
func TestHostileLayers(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	fr := startFaultRegistry(t)
	base := hostileBase(t)

	deep := strings.Repeat("../", 40)
	tests := []struct {
		name    string
		entries func(sentinel string) []rawEntry
		args    []string
		// wantCodes lists the accepted exit codes: 7 where the layer must be
		// refused; 0 too where a safe converter may also keep the entry
		// inside the image.
		wantCodes []int
		want      *regexp.Regexp
		fast      bool
		// kept is the name the entry must have in the top overlay when the
		// conversion succeeds.
		kept string
	}{
		{name: "dotdot", entries: func(string) []rawEntry {
			return []rawEntry{rawFile("../escape", "out\n")}
		}, wantCodes: []int{7}, want: regexp.MustCompile(`escape`)},
		{name: "dotdot-to-sentinel", entries: func(s string) []rawEntry {
			return []rawEntry{rawFile(deep+strings.TrimPrefix(s, "/")+"/escape-deep", "out\n")}
		}, wantCodes: []int{7}},
		{name: "dotdot-inside-name", entries: func(string) []rawEntry {
			return []rawEntry{{Name: "etc/", Typeflag: tar.TypeDir},
				rawFile("etc/../../escape-mid", "out\n")}
		}, wantCodes: []int{7}},
		{name: "hardlink-out", entries: func(string) []rawEntry {
			return []rawEntry{{Name: "escape-link", Typeflag: tar.TypeLink,
				Linkname: deep + "etc/passwd"}}
		}, wantCodes: []int{7}},
		{name: "absolute-name", entries: func(s string) []rawEntry {
			return []rawEntry{rawFile(s+"/escape-abs", "root-relative\n")}
		}, wantCodes: []int{0, 7}, kept: "escape-abs"},
		{name: "write-through-symlink", entries: func(s string) []rawEntry {
			return []rawEntry{{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: s},
				rawFile("evil/escape-pwned", "through a symlink\n")}
		}, wantCodes: []int{0, 7}, kept: "escape-pwned"},
		{name: "gzip-bomb", entries: func(string) []rawEntry {
			return []rawEntry{{Name: "zeros", Typeflag: tar.TypeReg, Zeros: 100_000_000}}
		}, args: []string{"--max-layer-bytes", "10000000"}, wantCodes: []int{7},
			want: regexp.MustCompile(`--max-layer-bytes`), fast: true},
		{name: "too-many-entries", entries: func(string) []rawEntry {
			var es []rawEntry
			for i := range 3000 {
				es = append(es, rawFile(fmt.Sprintf("f%04d", i), ""))
			}
			return es
		}, args: []string{"--max-layer-entries", "1000"}, wantCodes: []int{7},
			want: regexp.MustCompile(`--max-layer-entries`), fast: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sentinel := filepath.Join(dir, "sentinel")
			work := filepath.Join(dir, "work")
			for _, d := range []string{sentinel, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			img, err := mutate.AppendLayers(base, rawLayer(t, tt.entries(sentinel)...))
			if err != nil {
				t.Fatal(err)
			}
			ref := fmt.Sprintf("%s/hostile/img:%d", fr.Addr, i)
			if err := imagegen.Push(t.Context(), ref, img); err != nil {
				t.Fatal(err)
			}

			cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
			r := runBin(t, binOptions{Dir: work},
				convertArgs("docker://"+ref, out, cache, tt.args...)...)
			checkConfined(t, dir, sentinel, work)
			if !slices.Contains(tt.wantCodes, r.Code) {
				t.Errorf("exit %d, want one of %v\nstderr:\n%s", r.Code, tt.wantCodes, r.Stderr)
			}
			if tt.fast && r.Elapsed > 20*time.Second {
				t.Errorf("refusing the layer took %s, want a quick failure", r.Elapsed)
			}
			if r.Code == 0 {
				checkExit(t, r, 0, nil)
				checkNoRunDirs(t, cache)
				checkNoTemps(t, out)
				checkKept(t, readResult(t, out), tt.kept)
				return
			}
			checkExit(t, r, r.Code, tt.want)
			checkFailedOnDisk(t, cache, out, chainKeys(t, img, 1))
		})
	}

	t.Run("diffid-mismatch", func(t *testing.T) {
		img, err := mutate.AppendLayers(base, rawLayer(t, rawFile("app/file", "content\n")))
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		wrong := v1.Hash{Algorithm: "sha256", Hex: sha256Hex([]byte("not the layer"))}
		diffIDs := []v1.Hash{cf.RootFS.DiffIDs[0], wrong}
		pushWithDiffIDs(t, fr.Addr, "hostile/diffid", "v1", img, diffIDs)

		dir := t.TempDir()
		cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
		src := "docker://" + fr.Addr + "/hostile/diffid:v1"
		r := runBin(t, binOptions{}, convertArgs(src, out, cache)...)
		checkExit(t, r, 6, regexp.MustCompile(`(?i)diff ?id|mismatch|config says`))
		keys := []string{wrong.String(), chainID([]string{diffIDs[0].String(), wrong.String()})}
		checkFailedOnDisk(t, cache, out, keys)
	})
}

// checkKept checks that the top layer overlay of a successful conversion
// holds an entry named name: a converter that accepts an odd entry keeps it
// inside the image rather than dropping it.
func checkKept(t *testing.T, r result, name string) {
	t.Helper()
	if len(r.Meta.Overlays) == 0 {
		t.Fatalf("image.json lists no layer overlay")
	}
	file := filepath.Join(r.Out, r.Meta.Overlays[len(r.Meta.Overlays)-1].File)
	p := onePartition(t, file, sif.PartOverlay)
	out, err := exec.Command("unsquashfs", "-o", strconv.FormatInt(p.Offset, 10), "-l",
		file).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs -l %s: %v\n%s", file, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(l, "/"+name) {
			t.Logf("kept inside the image as %s", strings.TrimPrefix(l, "squashfs-root"))
			return
		}
	}
	t.Errorf("the conversion succeeded but the top overlay has no %s:\n%s", name, out)
}

// checkConfined checks that a conversion wrote nothing into dir but its
// cache and output directories: the sentinel and the working directory stay
// empty, dir holds nothing else, and no file anywhere under dir carries the
// name of an escaping entry.
func checkConfined(t *testing.T, dir, sentinel, work string) {
	t.Helper()
	for _, d := range []string{sentinel, work} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("%s escaped the layer root into %s", e.Name(), d)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case "sentinel", "work", "cache", "out":
		default:
			t.Errorf("%s appeared beside the cache and output", filepath.Join(dir, e.Name()))
		}
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), "escape") {
			t.Errorf("an escaping entry was written to %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
