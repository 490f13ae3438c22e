package imagegen

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"runtime"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// Build returns the image s describes, with OCI media types. Layer blobs are
// built and compressed in memory.
func Build(s Spec) (v1.Image, error) {
	cf := &v1.ConfigFile{
		Architecture: s.Architecture,
		OS:           s.OS,
		Created:      v1.Time{Time: epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Env:        s.Config.Env,
			Entrypoint: s.Config.Entrypoint,
			Cmd:        s.Config.Cmd,
			Labels:     s.Config.Labels,
			WorkingDir: s.Config.WorkingDir,
			User:       s.Config.User,
		},
	}
	if cf.OS == "" {
		cf.OS = "linux"
	}
	if cf.Architecture == "" {
		cf.Architecture = runtime.GOARCH
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}

	adds := make([]mutate.Addendum, 0, len(s.Layers))
	for i, l := range s.Layers {
		layer, err := BuildLayer(l)
		if err != nil {
			return nil, fmt.Errorf("build layer %d: %w", i+1, err)
		}
		adds = append(adds, mutate.Addendum{
			Layer:   layer,
			History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: l.Comment},
		})
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	return img, nil
}

// BuildLayer returns l as a layer compressed as l.Compression asks, with the
// matching OCI media type.
func BuildLayer(l Layer) (v1.Layer, error) {
	raw, err := LayerTar(l)
	if err != nil {
		return nil, err
	}

	var (
		blob []byte
		opts []tarball.LayerOption
	)
	switch l.Compression {
	case Uncompressed:
		return static.NewLayer(raw, types.OCIUncompressedLayer), nil
	case Gzip, "":
		blob, err = gzipBytes(raw)
		opts = []tarball.LayerOption{tarball.WithMediaType(types.OCILayer)}
	case Zstd:
		blob, err = zstdBytes(raw)
		opts = []tarball.LayerOption{
			tarball.WithCompression(compression.ZStd),
			tarball.WithMediaType(types.OCILayerZStd),
		}
	default:
		return nil, fmt.Errorf("compress layer: unknown compression %q", l.Compression)
	}
	if err != nil {
		return nil, err
	}

	opener := func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}
	layer, err := tarball.LayerFromOpener(opener, opts...)
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	return layer, nil
}

// gzipBytes compresses b at the fastest level with a header that carries no
// name or time, so the output depends only on b.
func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("start gzip: %w", err)
	}
	if _, err := zw.Write(b); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip layer: %w", err)
	}
	return buf.Bytes(), nil
}

// zstdBytes compresses b with one encoder goroutine so the frame layout does
// not depend on scheduling.
func zstdBytes(b []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("start zstd: %w", err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil), nil
}
