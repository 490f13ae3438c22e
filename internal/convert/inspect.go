package convert

import (
	"context"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// Report says what a conversion of an image would fetch and build, without
// doing either.
type Report struct {
	Source         string        `json:"source"`
	ManifestDigest string        `json:"manifest_digest"`
	ConfigDigest   string        `json:"config_digest"`
	Platform       string        `json:"platform"`
	Layers         []LayerReport `json:"layers"`
	Files          []FileReport  `json:"files"`
	// FetchBlobs and FetchBytes count the layer blobs a conversion would
	// download (those whose index the cache lacks, plus those of files to
	// build).
	FetchBlobs int   `json:"fetch_blobs"`
	FetchBytes int64 `json:"fetch_bytes"`
	// Exact is false when some layer has never been seen: the files above it
	// are then predicted from diffIDs, as the layers' contents decide
	// whether a file is keyed by diffID or chainID.
	Exact bool `json:"exact"`
}

// LayerReport describes one layer of the image.
type LayerReport struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diff_id"`
	MediaType string `json:"media_type"`
	Size      int64  `json:"size"`
	// Bytes is the uncompressed size of its files, when the cache knows it.
	Bytes   int64 `json:"bytes,omitempty"`
	Indexed bool  `json:"indexed"`
	Fetch   bool  `json:"fetch"`
}

// FileReport describes one file a conversion would produce.
type FileReport struct {
	File    string   `json:"file"`
	DiffIDs []string `json:"diff_ids,omitempty"`
	Key     string   `json:"key"`
	KeyedBy string   `json:"keyed_by,omitempty"`
	Cached  bool     `json:"cached"`
}

// Inspect opens opts.Source and reports, from the cache alone, what Run would
// fetch and build. It downloads no layer and writes nothing but the image
// config to the cache.
func Inspect(ctx context.Context, opts Options) (*Report, error) {
	r, img, err := newRun(ctx, &opts)
	if err != nil {
		return nil, err
	}
	defer r.cleanup()
	defer img.Close()

	rep := &Report{Source: opts.Source, ManifestDigest: img.ManifestDigest.String(),
		ConfigDigest: img.ConfigDigest.String(), Platform: img.Platform, Exact: true}
	idx := make([]*unpack.Index, len(img.Layers))
	for i, l := range img.Layers {
		idx[i] = r.readIndex(i)
		lr := LayerReport{Digest: l.Digest.String(), DiffID: l.DiffID.String(),
			MediaType: string(l.MediaType), Size: l.Size, Indexed: idx[i] != nil}
		if idx[i] != nil {
			lr.Bytes = idx[i].Bytes
		} else {
			rep.Exact = false
			idx[i] = &unpack.Index{Bytes: l.Size}
			r.unknown[i] = true
		}
		rep.Layers = append(rep.Layers, lr)
	}

	groups, err := r.plan(idx)
	if err != nil {
		return nil, err
	}
	if !rep.Exact {
		r.predictKeys(groups)
	}
	res := r.result(groups)
	files, err := res.files(opts.Cache)
	if err != nil {
		return nil, err
	}
	add := func(file string, ids []string, key, keyedBy string) {
		_, statErr := os.Stat(files[file])
		rep.Files = append(rep.Files, FileReport{File: file, DiffIDs: ids, Key: key,
			KeyedBy: keyedBy, Cached: statErr == nil})
	}
	add(res.Base.File, res.Base.DiffIDs, res.Base.Key, "chain_id")
	for _, o := range res.Overlays {
		add(o.File, o.DiffIDs, o.Key, o.KeyedBy)
	}
	add(res.ConfigOverlay.File, nil, res.ConfigOverlay.Key, "config")

	r.countFetches(rep, groups)
	return rep, nil
}

// predictKeys keys every group that has a layer never seen by its diffIDs,
// which is right unless its contents turn out to depend on the layers below.
func (r *run) predictKeys(groups []*group) {
	for _, g := range groups {
		for _, i := range g.layers {
			if r.unknown[i] && g.kind == cache.Layer {
				g.ov.LowerDependent = false
			}
		}
	}
	var diffIDs []v1.Hash
	for _, l := range r.img.Layers {
		diffIDs = append(diffIDs, l.DiffID)
	}
	chains := chainIDs(diffIDs)
	for _, g := range groups {
		if g.kind == cache.Layer {
			r.setKey(g, diffIDs, chains)
		}
	}
}

// countFetches marks the layers a conversion would download: those without
// an index, and those of every file the cache lacks.
func (r *run) countFetches(rep *Report, groups []*group) {
	for _, g := range groups {
		if r.opts.Cache.Has(g.kind, g.key) {
			continue
		}
		for _, i := range g.layers {
			rep.Layers[i].Fetch = true
		}
	}
	for i := range rep.Layers {
		if !rep.Layers[i].Indexed {
			rep.Layers[i].Fetch = true
		}
		if rep.Layers[i].Fetch {
			rep.FetchBlobs++
			rep.FetchBytes += rep.Layers[i].Size
		}
	}
}

// newRun opens the image and prepares a run, applying option defaults.
func newRun(ctx context.Context, opts *Options) (*run, *registry.Image, error) {
	applyDefaults(opts)
	ropts := opts.Registry
	ropts.TempDir = opts.Cache.TempDir()
	ropts.Documents = documents{c: opts.Cache, source: opts.Source, logger: opts.Logger}
	if ropts.Logger == nil {
		ropts.Logger = opts.Logger
	}
	img, err := registry.Open(ctx, opts.Source, ropts)
	if err != nil {
		return nil, nil, err
	}
	if len(img.Layers) == 0 {
		img.Close()
		return nil, nil, fmt.Errorf("convert %s: the image has no layers", opts.Source)
	}
	if opts.BaseImage != "" {
		if opts.BaseLayers, err = baseLayers(ctx, img, opts.BaseImage, ropts); err != nil {
			img.Close()
			return nil, nil, err
		}
	}
	r := &run{opts: *opts, img: img, spools: map[int]string{}, unknown: map[int]bool{}}
	return r, img, nil
}
