package registry

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// openOCIArchive unpacks a tar of an OCI image layout into a temporary
// directory and opens it as a layout. The returned cleanup removes the
// directory; on error it is already gone.
func openOCIArchive(ctx context.Context, spec string, want v1.Platform,
	opts Options) (v1.Image, v1.Hash, func() error, error) {
	file, tag := splitPathRef(spec)
	f, err := os.Open(file)
	if err != nil {
		return nil, v1.Hash{}, nil, fmt.Errorf("open archive %s: %w: %w", file, ErrNotFound, err)
	}
	defer f.Close()

	dir, err := os.MkdirTemp(opts.TempDir, "oci-archive-")
	if err != nil {
		return nil, v1.Hash{}, nil, fmt.Errorf("open archive %s: %w", file, err)
	}
	cleanup := func() error { return os.RemoveAll(dir) }
	if err := extractLayout(ctx, f, dir); err != nil {
		_ = cleanup()
		return nil, v1.Hash{}, nil, fmt.Errorf("unpack archive %s: %w", file, err)
	}

	ref := dir
	if tag != "" {
		ref += ":" + tag
	}
	img, digest, err := openLayout(ref, want, opts.Platform != "")
	if err != nil {
		_ = cleanup()
		return nil, v1.Hash{}, nil, err
	}
	return img, digest, cleanup, nil
}

// extractLayout writes the regular files and directories of an OCI layout tar
// below dir. Every other entry type is skipped; names are confined to dir by
// an os.Root, so a hostile archive cannot write elsewhere.
func extractLayout(ctx context.Context, r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(strings.TrimLeft(h.Name, "/"))
		if name == "." {
			continue
		}
		if name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q: name leaves the archive", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(name, 0o755)
		case tar.TypeReg:
			err = extractFile(root, name, tr)
		}
		if err != nil {
			return fmt.Errorf("entry %q: %w", h.Name, err)
		}
	}
}

func extractFile(root *os.Root, name string, r io.Reader) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
