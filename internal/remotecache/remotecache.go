// Package remotecache keeps converted cache entries in an OCI registry, so
// that one machine's conversions serve another's.
//
// Each entry is an OCI artifact that Apptainer's oras:// transport can pull
// (`apptainer pull oras://HOST/REPO:TAG` gives the SIF):
//
//	manifest  application/vnd.oci.image.manifest.v1+json
//	          artifactType application/vnd.sylabs.sif.config.v1+json
//	          annotations  org.oci2layers.{kind,key,format,diff_ids,chain_id,
//	                       compression,size,sha256}
//	config    application/vnd.sylabs.sif.config.v1+json, content {}
//	layer     application/vnd.sylabs.sif.layer.v1.sif, the SIF bytes,
//	          annotation org.opencontainers.image.title <kind>-<hex12>.sif
//
// A layer index (not a SIF) is stored the same way with the layer media type
// application/vnd.oci2layers.index.v1, so that a machine can plan a
// conversion without fetching the image's layers.
//
// The tag is "<format>-<kind>-<hex of the key>", e.g. v1-layer-3f2a...; the
// key already covers the squashfs options. An entry is accepted only when its
// annotations name the kind, key, format and compression looked for, its
// bytes match the layer digest, the size and the sha256 annotation, and it
// parses: a SIF with one squashfs partition of the right type, or an index.
package remotecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/apptainer/sif/v2/pkg/sif"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// Media types of the artifacts.
const (
	// ConfigMediaType is the artifact type and config media type Apptainer
	// uses for SIFs in OCI registries.
	ConfigMediaType types.MediaType = "application/vnd.sylabs.sif.config.v1+json"
	// SIFMediaType is the media type of the layer that holds a SIF.
	SIFMediaType types.MediaType = "application/vnd.sylabs.sif.layer.v1.sif"
	// IndexMediaType is the media type of the layer that holds a layer index.
	IndexMediaType types.MediaType = "application/vnd.oci2layers.index.v1"
)

// Format is the version of the entry format, part of every tag: an entry
// written in another format is never found.
const Format = "v1"

// Annotation keys on the manifest.
const (
	AnnotationKind        = "org.oci2layers.kind"
	AnnotationKey         = "org.oci2layers.key"
	AnnotationFormat      = "org.oci2layers.format"
	AnnotationDiffIDs     = "org.oci2layers.diff_ids"
	AnnotationChainID     = "org.oci2layers.chain_id"
	AnnotationCompression = "org.oci2layers.compression"
	AnnotationSize        = "org.oci2layers.size"
	AnnotationSHA256      = "org.oci2layers.sha256"
	annotationTitle       = "org.opencontainers.image.title"
)

// ErrRejected means a remote entry exists but failed verification.
var ErrRejected = errors.New("remote cache entry rejected")

// Entry names a cache entry and describes it for the annotations.
type Entry struct {
	Kind cache.Kind
	Key  v1.Hash
	// Compression is the squashfs compressor the entry was built with
	// (empty for an index).
	Compression string
	// Origin supplies the diffIDs and chainID annotations and, on a pull,
	// the local entry's metadata.
	Origin cache.Origin
}

// kindNames are the short kind names used in tags and file names.
var kindNames = map[cache.Kind]string{cache.Base: "base", cache.Layer: "layer",
	cache.Config: "config", cache.Flat: "flat", cache.Index: "index"}

// Supported reports whether entries of kind k can be stored remotely.
func Supported(k cache.Kind) bool { return kindNames[k] != "" }

// Tag is the tag an entry is stored under: "<format>-<kind>-<key hex>".
func Tag(k cache.Kind, key v1.Hash) string {
	t := Format + "-" + kindNames[k] + "-" + key.Hex
	return t[:min(len(t), 128)]
}

// Store is one remote cache: a repository in a registry.
type Store struct {
	repo   name.Repository
	opts   []remote.Option
	logger *slog.Logger
}

// New opens the remote cache in repo (HOST/REPO), reached as opts says
// (credentials, plain HTTP, TLS). It makes no request. logger (nil
// discards) receives the warnings about rejected entries.
func New(ctx context.Context, repo string, opts registry.Options,
	logger *slog.Logger) (*Store, error) {
	r, err := registry.ParseRepository(repo, opts)
	if err != nil {
		return nil, fmt.Errorf("open remote cache: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{repo: r, opts: registry.RemoteOptions(ctx, opts), logger: logger}, nil
}

// String names the store's repository.
func (s *Store) String() string { return s.repo.String() }

// options returns the store's request options bound to ctx.
func (s *Store) options(ctx context.Context) []remote.Option {
	return append(slices.Clip(s.opts), remote.WithContext(ctx))
}

func (s *Store) ref(e Entry) name.Tag { return s.repo.Tag(Tag(e.Kind, e.Key)) }

// Push stores the cache entry file at path as e, unless the registry
// already holds exactly that artifact under e's tag; it reports whether it
// uploaded. A failed push may leave blobs in the registry, but the tag is
// only written last, so it never names a partial artifact.
func (s *Store) Push(ctx context.Context, e Entry, path string) (bool, error) {
	if !Supported(e.Kind) {
		return false, fmt.Errorf("push %s %s: kind not supported", e.Kind, e.Key)
	}
	layer, err := newFileLayer(path, layerMediaType(e.Kind))
	if err != nil {
		return false, fmt.Errorf("push %s %s: %w", e.Kind, e.Key, err)
	}
	config := static.NewLayer([]byte("{}"), ConfigMediaType)
	m, err := manifest(e, layer, config)
	if err != nil {
		return false, fmt.Errorf("push %s %s: %w", e.Kind, e.Key, err)
	}
	ref := s.ref(e)
	ropts := s.options(ctx)
	if d, err := remote.Head(ref, ropts...); err == nil && d.Digest == m.digest {
		return false, nil
	}
	for _, l := range []v1.Layer{config, layer} {
		if err := remote.WriteLayer(s.repo, l, ropts...); err != nil {
			return false, fmt.Errorf("push %s %s to %s: %w", e.Kind, e.Key, s.repo, err)
		}
	}
	if err := remote.Put(ref, m, ropts...); err != nil {
		return false, fmt.Errorf("push %s %s to %s: %w", e.Kind, e.Key, ref, err)
	}
	return true, nil
}

func layerMediaType(k cache.Kind) types.MediaType {
	if k == cache.Index {
		return IndexMediaType
	}
	return SIFMediaType
}

// rawManifest is a manifest ready to PUT.
type rawManifest struct {
	raw    []byte
	digest v1.Hash
}

func (m rawManifest) RawManifest() ([]byte, error) { return m.raw, nil }

func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// manifest writes e's manifest; it is a function of the entry's bytes and
// description only, so pushing the same entry twice gives the same digest.
func manifest(e Entry, layer *fileLayer, config v1.Layer) (rawManifest, error) {
	cd, err := config.Digest()
	if err != nil {
		return rawManifest{}, err
	}
	ext := ".sif"
	if e.Kind == cache.Index {
		ext = ".index"
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  string(ConfigMediaType),
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: 2, Digest: cd},
		Layers: []v1.Descriptor{{MediaType: layer.mediaType, Size: layer.size,
			Digest: layer.digest, Annotations: map[string]string{
				annotationTitle: kindNames[e.Kind] + "-" + e.Key.Hex[:12] + ext}}},
		Annotations: map[string]string{
			AnnotationKind:        kindNames[e.Kind],
			AnnotationKey:         e.Key.String(),
			AnnotationFormat:      Format,
			AnnotationDiffIDs:     strings.Join(e.Origin.DiffIDs, ","),
			AnnotationChainID:     e.Origin.ChainID,
			AnnotationCompression: e.Compression,
			AnnotationSize:        strconv.FormatInt(layer.size, 10),
			AnnotationSHA256:      layer.digest.String(),
		},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return rawManifest{}, err
	}
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	return rawManifest{raw: raw, digest: d}, err
}

// Pull installs e into c from the store, under e's key, with e.Origin as
// its metadata; the caller holds the entry's lock (cache.Lock) and has
// checked the cache lacks it. It reports whether the entry is now in c. A
// missing entry is a quiet miss; one that cannot be fetched or fails
// verification is logged as a warning and is a miss too. On a miss nothing
// is left in c.
func (s *Store) Pull(ctx context.Context, c *cache.Cache, e Entry) bool {
	err := s.pull(ctx, c, e)
	var terr *transport.Error
	switch {
	case err == nil:
		return true
	case errors.As(err, &terr) && terr.StatusCode == 404, ctx.Err() != nil:
	default:
		s.logger.Warn("ignoring remote cache entry", "cache", s.repo.String(),
			"tag", Tag(e.Kind, e.Key), "err", err)
	}
	return false
}

func (s *Store) pull(ctx context.Context, c *cache.Cache, e Entry) error {
	if !Supported(e.Kind) {
		return fmt.Errorf("pull %s %s: kind not supported", e.Kind, e.Key)
	}
	ref := s.ref(e)
	ropts := s.options(ctx)
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return err
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fmt.Errorf("%w: parse manifest: %w", ErrRejected, err)
	}
	size, sum, err := checkManifest(m, e)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	l, err := remote.Layer(s.repo.Digest(m.Layers[0].Digest.String()), ropts...)
	if err != nil {
		return err
	}
	return c.PutWithOrigin(e.Kind, e.Key, e.Origin, func(w *os.File) error {
		return s.download(l, w, e.Kind, size, sum)
	})
}

// checkManifest checks that m describes e, and returns the size and sha256
// its annotations promise.
func checkManifest(m *v1.Manifest, e Entry) (int64, v1.Hash, error) {
	a := m.Annotations
	want := map[string]string{AnnotationKind: kindNames[e.Kind], AnnotationKey: e.Key.String(),
		AnnotationFormat: Format, AnnotationCompression: e.Compression}
	for k, v := range want {
		if a[k] != v {
			return 0, v1.Hash{}, fmt.Errorf("annotation %s is %q, want %q", k, a[k], v)
		}
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != layerMediaType(e.Kind) {
		return 0, v1.Hash{}, fmt.Errorf("want one layer of type %s", layerMediaType(e.Kind))
	}
	size, err := strconv.ParseInt(a[AnnotationSize], 10, 64)
	if err != nil || size != m.Layers[0].Size {
		return 0, v1.Hash{}, fmt.Errorf("size annotation %q, layer size %d", a[AnnotationSize],
			m.Layers[0].Size)
	}
	sum, err := v1.NewHash(a[AnnotationSHA256])
	if err != nil || sum != m.Layers[0].Digest {
		return 0, v1.Hash{}, fmt.Errorf("sha256 annotation %q, layer digest %s",
			a[AnnotationSHA256], m.Layers[0].Digest)
	}
	return size, sum, nil
}

// download copies l's blob into w, hashing it on the way, then checks its
// size, digest and content.
func (s *Store) download(l v1.Layer, w *os.File, k cache.Kind, size int64, sum v1.Hash) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(rc, size+1))
	if err != nil {
		return fmt.Errorf("download %s: %w", sum, err)
	}
	got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	if n != size || got != sum {
		return fmt.Errorf("%w: blob has %d bytes hashing to %s, want %d bytes %s",
			ErrRejected, n, got, size, sum)
	}
	if err := checkContent(w, k); err != nil {
		return fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if k == cache.Index {
		return nil
	}
	return w.Chmod(0o444)
}

// checkContent checks that f holds an entry of kind k: an index that reads,
// or a SIF with one squashfs partition of the right type.
func checkContent(f *os.File, k cache.Kind) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if k == cache.Index {
		if _, err := unpack.ReadIndex(f); err != nil {
			return fmt.Errorf("read index: %w", err)
		}
		return nil
	}
	img, err := sif.LoadContainer(f, sif.OptLoadWithFlag(os.O_RDONLY),
		sif.OptLoadWithCloseOnUnload(false))
	if err != nil {
		return fmt.Errorf("load sif: %w", err)
	}
	ds, err := img.GetDescriptors(sif.WithDataType(sif.DataPartition))
	if err != nil || len(ds) != 1 {
		return fmt.Errorf("want one partition in the sif, found %d (%v)", len(ds), err)
	}
	fs, pt, _, err := ds[0].PartitionMetadata()
	if err != nil {
		return fmt.Errorf("read partition: %w", err)
	}
	want := sif.PartOverlay
	if k == cache.Base || k == cache.Flat {
		want = sif.PartPrimSys
	}
	if fs != sif.FsSquash || pt != want {
		return fmt.Errorf("partition is %v/%v, want %v/%v", fs, pt, sif.FsSquash, want)
	}
	return nil
}

// fileLayer is a blob read from a file, hashed once when it is made.
type fileLayer struct {
	path      string
	mediaType types.MediaType
	size      int64
	digest    v1.Hash
}

func newFileLayer(path string, mt types.MediaType) (*fileLayer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, n, err := v1.SHA256(f)
	if err != nil {
		return nil, fmt.Errorf("hash %s: %w", path, err)
	}
	return &fileLayer{path: path, mediaType: mt, size: n, digest: d}, nil
}

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.digest, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }
