package imagegen

import (
	"context"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// RefNameAnnotation is the index annotation that names a tag in an OCI
// layout, as in "oci:DIR:TAG".
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Tagged is an image with the tag it gets in an OCI layout.
type Tagged struct {
	Tag   string
	Image v1.Image
}

// WriteLayout writes images to an OCI image layout at dir, creating dir if
// needed, with one index.json entry per image in the given order, each
// annotated with its tag. An index.json already in dir is replaced; blobs
// already there stay. On failure dir may hold some blobs but the old or no
// index.json.
func WriteLayout(dir string, images []Tagged) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create layout dir: %w", err)
	}
	adds := make([]mutate.IndexAddendum, 0, len(images))
	for _, ti := range images {
		adds = append(adds, mutate.IndexAddendum{
			Add: ti.Image,
			Descriptor: v1.Descriptor{
				Annotations: map[string]string{RefNameAnnotation: ti.Tag},
			},
		})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	if _, err := layout.Write(dir, idx); err != nil {
		return fmt.Errorf("write layout %s: %w", dir, err)
	}
	return nil
}

// Push uploads img to the registry reference ref ("HOST:PORT/REPO:TAG"),
// over plain HTTP.
func Push(ctx context.Context, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("parse reference %q: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// WriteDockerArchive writes img to file as a "docker save" tarball tagged
// tag ("REPO:TAG"). Layer blobs are stored as they are, compressed.
func WriteDockerArchive(file, tag string, img v1.Image) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("parse tag %q: %w", tag, err)
	}
	if err := tarball.WriteToFile(file, t, img); err != nil {
		return fmt.Errorf("write docker archive %s: %w", file, err)
	}
	return nil
}
