// Package convert runs a conversion: it opens an image, works out which
// layers the cache already holds, fetches, unpacks and squashes the others,
// and lays out the output directory.
//
// The work is split into groups. Group 0 is the base (the bottom layers,
// flattened, plus Apptainer's skeleton); every layer above it is a group of
// its own, built as an overlay; the image config is one more overlay on top.
// Each group is planned from the layer indexes alone (package unpack), which
// tells its cache key before anything is built: a layer whose overlay the
// layers below cannot change is keyed by its diffID, any other by its chainID.
//
// A run proceeds in three steps:
//
//  1. indexes: every layer whose index the cache lacks is fetched to a spool
//     file under the cache's tmp/ (its digest checked while it streams), then
//     scanned to its end (its diffID checked); the index is cached.
//  2. plan: groups are planned bottom to top on a merged tree; each gets its key.
//  3. build: every group whose key the cache lacks is streamed as a tar into
//     mksquashfs and wrapped in a SIF, concurrently up to Options.Jobs.
//
// A failure anywhere leaves finished cache entries in place and removes the
// spool and temporary files; the output directory is only written at the end.
package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/squash"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// Options controls a conversion.
type Options struct {
	// Source is the image, e.g. docker://host/repo:tag or oci:dir:tag.
	Source string
	// FlattenTo, when set, makes one classic single-partition SIF at this
	// path (what `apptainer build` makes) instead of an output directory.
	FlattenTo string
	// OutDir receives base.sif, overlays/, image.json and run.
	OutDir string
	// Cache holds converted layers.
	Cache *cache.Cache
	// Registry controls how the source is opened.
	Registry registry.Options
	// BaseLayers is how many bottom layers go into base.sif (at least 1).
	BaseLayers int
	// BaseImage, when set, names an image whose layers must be the bottom
	// layers of Source; they go into base.sif (BaseLayers is then ignored).
	BaseImage string
	// MaxOverlays bounds the overlay files, the config overlay included;
	// adjacent layers are merged to stay within it. Zero means
	// DefaultMaxOverlays.
	MaxOverlays int
	// Compression is the squashfs compressor (gzip by default).
	Compression string
	// Jobs bounds concurrent fetches and builds; zero means the CPU count.
	Jobs int
	// Limits bound what one layer may contain.
	Limits unpack.Limits
	// Logger receives one line per step; nil discards.
	Logger *slog.Logger
	// Progress, when set, receives byte counts as stages advance.
	Progress ProgressFunc
	// CacheFrom are remote caches (HOST/REPO) looked in, in order, for
	// an entry the local cache lacks before it is built; see package
	// remotecache. They are reached with the Registry options.
	CacheFrom []string
	// CacheTo, when set, is a remote cache every entry of the conversion
	// is pushed to once it is in the local cache.
	CacheTo string
}

// Run converts opts.Source into opts.OutDir (or opts.FlattenTo) and returns
// what image.json says.
func Run(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	r, img, err := newRun(ctx, &opts)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	defer r.cleanup()
	if err := r.openRemotes(ctx); err != nil {
		return nil, err
	}
	opts.Logger.Info("resolved image", "source", opts.Source, "manifest", img.ManifestDigest,
		"layers", len(img.Layers), "platform", img.Platform)
	if u := img.Config.Config.User; u != "" && u != "root" && u != "0" && u != "0:0" {
		opts.Logger.Warn("the image sets USER, but Apptainer runs containers as the "+
			"calling user", "user", u)
	}

	res, err := r.convert(ctx)
	if err != nil {
		return nil, err
	}
	if opts.FlattenTo != "" {
		var files map[string]string
		if files, err = res.files(opts.Cache); err == nil {
			err = place(files[res.Base.File], opts.FlattenTo)
		}
	} else {
		err = writeOutput(opts.OutDir, opts.Cache, res)
	}
	if err != nil {
		return nil, err
	}
	r.recordOutput(ctx, res)
	r.push(ctx, res)
	opts.Logger.Info("converted", "source", opts.Source, "built", res.built()-res.pulled(),
		"reused", res.reused(), "pulled", r.remote.pulled.Load(),
		"pushed", r.remote.pushed.Load(), "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return res, nil
}

// applyDefaults fills in the zero options.
func applyDefaults(opts *Options) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BaseLayers < 1 {
		opts.BaseLayers = 1
	}
	if opts.MaxOverlays < 2 {
		opts.MaxOverlays = DefaultMaxOverlays
	}
	if opts.Jobs <= 0 {
		opts.Jobs = runtime.NumCPU()
	}
	if opts.Compression == "" {
		opts.Compression = "gzip"
	}
	if opts.Limits == (unpack.Limits{}) {
		opts.Limits = unpack.DefaultLimits
	}
}

// run holds one conversion's state.
type run struct {
	opts   Options
	img    *registry.Image
	tool   *squash.Tool
	groups []*group
	lower  *lowerFiles

	remote remotes

	spoolMu sync.Mutex
	spools  map[int]string // layer position -> spooled blob, held in the spool table

	// unknown marks layers whose index is not known (inspect only).
	unknown map[int]bool
}

func (r *run) cleanup() {
	for i := range r.spools {
		spools.release(r.img.Layers[i].Digest)
	}
	if r.lower != nil {
		r.lower.close()
	}
}

// convert does the three steps and returns the result, with every entry in
// the cache.
func (r *run) convert(ctx context.Context) (*Result, error) {
	if res := r.memo(); res != nil {
		return res, nil
	}

	// TODO: groups are planned only once every layer is scanned, so the base
	// cannot start squashing while upper layers still download; planning
	// each group as soon as the layers it needs are known would overlap them.
	idx, err := r.indexes(ctx)
	if err != nil {
		return nil, err
	}
	plan := r.plan
	if r.opts.FlattenTo != "" {
		plan = r.planFlat
	}
	groups, err := plan(idx)
	if err != nil {
		return nil, err
	}
	if err := r.build(ctx, groups); err != nil {
		return nil, err
	}

	res := r.result(groups)
	r.saveMemo(ctx, res)
	return res, nil
}

// memoKey names what a conversion of this manifest with these options gives.
func (r *run) memoKey() v1.Hash {
	return digestOf("image", r.img.ManifestDigest.String(), r.img.ConfigDigest.String(),
		fmt.Sprint(r.opts.BaseLayers), fmt.Sprint(r.opts.MaxOverlays), r.opts.Compression,
		fmt.Sprint(r.opts.FlattenTo != ""))
}

// memo returns a previous run's result when every entry it names is still
// in the cache, marked as reused; nil otherwise. The entries it returns are
// marked as used (cache.Use), so they stay until the run ends.
func (r *run) memo() *Result {
	c := r.opts.Cache
	if ok, _ := c.Use(cache.Image, r.memoKey(), r.opts.Source); !ok {
		return nil
	}
	f, err := c.Open(cache.Image, r.memoKey())
	if err != nil {
		return nil
	}
	defer f.Close()
	var res Result
	if err := json.NewDecoder(f).Decode(&res); err != nil {
		return nil
	}
	if !res.use(c, r.opts.Source) {
		return nil
	}
	for _, l := range r.img.Layers {
		c.Use(cache.Index, l.DiffID, r.opts.Source) // last use only; the run needs no index
	}
	res.markReused()
	res.Source = r.opts.Source
	if res.Flat {
		res.Base.File = r.opts.FlattenTo
	}
	r.opts.Logger.Info("every layer is cached", "manifest", r.img.ManifestDigest)
	return &res
}

// saveMemo records the result, under the record's lock: two runs record
// different bytes (reused flags, source), and an entry must match the
// metadata written with it.
func (r *run) saveMemo(ctx context.Context, res *Result) {
	key := r.memoKey()
	unlock, err := r.opts.Cache.Lock(ctx, cache.Image, key)
	if err == nil {
		err = r.opts.Cache.PutWithOrigin(cache.Image, key, cache.Origin{Images: []string{
			r.opts.Source}}, func(w *os.File) error {
			return json.NewEncoder(w).Encode(res)
		})
		unlock()
	}
	if err != nil {
		r.opts.Logger.Warn("cannot record the conversion", "err", err)
	}
}

// ErrBaseMismatch means the --base image's layers are not the image's bottom layers.
var ErrBaseMismatch = errors.New("base image does not match")

// baseLayers opens the base image and returns how many bottom layers of img
// it accounts for.
func baseLayers(ctx context.Context, img *registry.Image, base string,
	ropts registry.Options) (int, error) {
	b, err := registry.Open(ctx, base, ropts)
	if err != nil {
		return 0, fmt.Errorf("open base %s: %w", base, err)
	}
	defer b.Close()

	if len(b.Layers) == 0 || len(b.Layers) > len(img.Layers) {
		return 0, fmt.Errorf("%w: %s has %d layers, %s has %d", ErrBaseMismatch, base,
			len(b.Layers), img.Source, len(img.Layers))
	}
	for i, l := range b.Layers {
		if l.DiffID != img.Layers[i].DiffID {
			return 0, fmt.Errorf("%w: layer %d of %s is %s, the image has %s; "+
				"%s is not built on %s", ErrBaseMismatch, i+1, base, l.DiffID,
				img.Layers[i].DiffID, img.Source, base)
		}
	}
	return len(b.Layers), nil
}

// documents adapts the cache to registry.DocumentStore.
type documents struct {
	c      *cache.Cache
	source string // the image being converted, recorded as the documents' user
	logger *slog.Logger
}

func (d documents) Document(digest v1.Hash) ([]byte, bool) {
	if ok, _ := d.c.Use(cache.Document, digest, d.source); !ok {
		return nil, false
	}
	f, err := d.c.Open(cache.Document, digest)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, registry.DefaultMaxDocumentBytes+1))
	return b, err == nil
}

func (d documents) PutDocument(digest v1.Hash, b []byte) {
	o := cache.Origin{Images: []string{d.source}}
	err := d.c.PutWithOrigin(cache.Document, digest, o, func(w *os.File) error {
		_, err := w.Write(b)
		return err
	})
	if err != nil {
		d.logger.Warn("cannot cache document", "digest", digest, "err", err)
	}
}
