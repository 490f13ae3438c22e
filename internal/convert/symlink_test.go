package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oci2layers/oci2layers/internal/squash"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// TestLinkTargetsSurviveMksquashfs runs link targets that need more than a
// plain ustar header through the real mksquashfs and reads them back: 4.5.1
// drops a leading "/" from PAX linkpath records.
func TestLinkTargetsSurviveMksquashfs(t *testing.T) {
	tool, err := squash.Find(t.Context(), nil)
	if err != nil {
		t.Skipf("needs mksquashfs (squashfs-tools): %v", err)
	}
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Skip("needs unsquashfs (squashfs-tools)")
	}
	long := "/" + strings.Repeat("deep/", 30) + "target"
	links := map[string]string{
		"nonascii": "/usr/share/ca-certificates/Főtanúsítvány.crt",
		"long":     long,
		"ascii":    "/etc/alternatives/x",
		"relative": "../lib/Főtanúsítvány",
	}

	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for name, target := range links {
		h := &tar.Header{Typeflag: tar.TypeSymlink, Name: "l/" + name, Linkname: target,
			Mode: 0o777, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	idx, err := unpack.Scan(ctx, bytes.NewReader(layer.Bytes()), unpack.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	ov, err := unpack.Plan(unpack.NewTree(), unpack.OverlayMode,
		unpack.Layer{Position: 0, Index: idx})
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	open := func(context.Context, int) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer.Bytes())), nil
	}
	if err := ov.Write(ctx, &stream, open, nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "l.sqfs")
	if err := tool.FromTar(ctx, &stream, out, squash.Options{}); err != nil {
		t.Fatal(err)
	}

	listing, err := exec.Command("unsquashfs", "-lln", out).Output()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range links {
		marker := "squashfs-root/l/" + name + " -> "
		i := strings.Index(string(listing), marker)
		if i < 0 {
			t.Errorf("%s: missing from the squashfs:\n%s", name, listing)
			continue
		}
		got, _, _ := strings.Cut(string(listing[i+len(marker):]), "\n")
		if got != want {
			t.Errorf("%s: target %q, want %q", name, got, want)
		}
	}
}
