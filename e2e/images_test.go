package e2e

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// standardImages builds the standard images once per test binary.
var standardImages = sync.OnceValues(func() (map[string]v1.Image, error) {
	return imagegen.StandardImages()
})

// standardImage returns the named standard image.
func standardImage(t *testing.T, name string) v1.Image {
	t.Helper()
	imgs, err := standardImages()
	if err != nil {
		t.Fatalf("build images: %v", err)
	}
	img, ok := imgs[name]
	if !ok {
		t.Fatalf("no standard image %q", name)
	}
	return img
}

// writeOCIArchive writes img as an OCI layout tarball ("oci-archive:FILE")
// tagged tag.
func writeOCIArchive(t *testing.T, file, tag string, img v1.Image) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	if err := imagegen.WriteLayout(dir, []imagegen.Tagged{{Tag: tag, Image: img}}); err != nil {
		t.Fatal(err)
	}
	if err := tarDir(dir, file); err != nil {
		t.Fatalf("write OCI archive: %v", err)
	}
}

// tarDir writes the regular files and directories under dir to a tar file.
func tarDir(dir, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
