package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/convert"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// Options controls a run.
type Options struct {
	// Cache receives the converted layers; it may be nil for a dry run.
	Cache *cache.Cache
	// Jobs bounds the images converted at once; zero means the CPU count.
	// Each conversion fetches and builds with the CPU count's concurrency.
	Jobs int
	// DryRun only lists tags and asks for digests: nothing is converted,
	// written or removed.
	DryRun bool
	// Prune removes the output directories an earlier sync created that
	// this run no longer produces.
	Prune bool
	// Shard, when set, limits the run to the tags of one shard: tags are
	// listed as for the whole work, then those of other shards are left
	// out of the conversion, the report, the state and prune. Each shard
	// keeps its own state file (see Shard).
	Shard Shard
	// Limits bound what one layer may contain.
	Limits unpack.Limits
	// CacheFrom and CacheTo name remote conversion caches (REGISTRY/REPO),
	// reached with each image's registry settings; see convert.Options.
	CacheFrom []string
	CacheTo   string
	// Logger receives progress, each line of an image's conversion with an
	// "image" attribute; nil discards.
	Logger *slog.Logger
}

// headJobs bounds the concurrent tag listings and HEAD requests.
const headJobs = 8

// Run converts every image cfg names into its output directory, skipping
// those whose digest, options and files are as the state file records.
// Images are converted concurrently; a failure is reported in its item and
// does not stop the others. The report is returned even when Run fails:
// when ctx is cancelled, finished outputs stay recorded and unfinished ones
// are reported as interrupted. Run fails only when the state cannot be read
// or locked, or when ctx ends.
func Run(ctx context.Context, cfg *Config, opts Options) (*Report, error) {
	s := &syncer{cfg: cfg, opts: opts, convert: convert.Run}
	return s.run(ctx)
}

// syncer holds one run's state.
type syncer struct {
	cfg     *Config
	opts    Options
	convert func(context.Context, convert.Options) (*convert.Result, error)

	mu    sync.Mutex // guards state and its file
	state *state
}

// target is one tag and platform to bring up to date.
type target struct {
	img      *Image
	tag      string
	platform string
	ref      string // HOST/REPO:TAG
	dir      string // relative to the output root, slash-separated
	index    int    // of its item in Report.Images
	item     *Item

	digest  v1.Hash
	convert bool // the output must be (re)written
	gone    bool // the registry says the tag does not exist
}

func (s *syncer) run(ctx context.Context) (*Report, error) {
	start := time.Now()
	if s.opts.Logger == nil {
		s.opts.Logger = slog.New(slog.DiscardHandler)
	}
	if s.opts.Jobs <= 0 {
		s.opts.Jobs = runtime.NumCPU()
	}
	rep := &Report{File: s.cfg.File, Output: s.cfg.Output, Shard: s.opts.Shard.String(),
		DryRun: s.opts.DryRun, Started: start}
	defer func() {
		rep.count()
		rep.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
	}()

	root := s.cfg.Output
	if !s.opts.DryRun {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return rep, fmt.Errorf("create output root: %w", err)
		}
		unlock, err := lockRoot(root, s.opts.Shard)
		if err != nil {
			return rep, err
		}
		defer unlock()
	}
	st, err := loadState(root, stateName(s.opts.Shard))
	if err != nil {
		return rep, err
	}
	s.state = st

	targets, unlisted := s.resolve(ctx, rep)
	s.check(ctx, targets)
	s.convertAll(ctx, targets)
	if s.opts.Prune && ctx.Err() == nil {
		s.prune(rep, targets, unlisted)
	}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("sync %s: %w", s.cfg.File, err)
	}
	return rep, nil
}

// resolve selects every entry's tags and lays out the report, one item per
// tag and platform. It returns the targets whose output directory could be
// worked out, and the repositories whose tags could not be listed.
func (s *syncer) resolve(ctx context.Context, rep *Report) ([]*target, map[string]bool) {
	tags, errs := s.selectAll(ctx)
	unlisted := map[string]bool{}
	var targets []*target
	var items []Item
	for i := range s.cfg.Images {
		img := &s.cfg.Images[i]
		if errs[i] != nil {
			unlisted[img.Name()] = true
			items = append(items, Item{Source: img.Name(), Registry: img.Registry,
				Repository: img.Repository, Status: Failed, Error: errs[i].Error()})
			s.opts.Logger.Warn("cannot list tags", "repository", img.Name(), "err", errs[i])
			continue
		}
		tmpl, tmplErr := parseTemplate(img.Path)
		for _, tag := range tags[i] {
			for _, pl := range img.Platforms {
				t := &target{img: img, tag: tag, platform: pl, ref: img.Name() + ":" + tag,
					index: len(items)}
				it := Item{Source: t.ref, Registry: img.Registry, Repository: img.Repository,
					Tag: tag, Platform: pl}
				err := tmplErr
				if err == nil {
					t.dir, err = tmpl.expand(values{img.Registry, img.Repository, tag, pl})
				}
				if err != nil {
					it.Status, it.Error = Failed, err.Error()
				}
				it.Dir = t.dir
				items = append(items, it)
				targets = append(targets, t)
			}
		}
	}
	for _, t := range targets {
		t.item = &items[t.index]
	}
	checkOverlap(targets)
	targets, rep.Images = s.shardOnly(targets, items)
	return targets, unlisted
}

// shardOnly keeps the targets of this run's shard and their items, plus
// the items of entries whose tags could not be listed: every shard reports
// those. The overlap of output paths is checked before, on the whole work,
// so that every shard fails the same tags.
func (s *syncer) shardOnly(targets []*target, items []Item) ([]*target, []Item) {
	mine := map[int]*target{}
	for _, t := range targets {
		if s.opts.Shard.Contains(t.img.Registry, t.img.Repository, t.tag) {
			mine[t.index] = t
		}
	}
	var kept []*target
	var keptItems []Item
	for i, it := range items {
		t := mine[i]
		if t == nil && it.Tag != "" {
			continue
		}
		if t != nil {
			t.index = len(keptItems)
			kept = append(kept, t)
		}
		keptItems = append(keptItems, it)
	}
	for _, t := range kept {
		t.item = &keptItems[t.index]
	}
	return kept, keptItems
}

// selectAll selects the tags of every image entry, headJobs at a time.
func (s *syncer) selectAll(ctx context.Context) ([][]string, []error) {
	tags := make([][]string, len(s.cfg.Images))
	errs := make([]error, len(s.cfg.Images))
	var g errgroup.Group
	g.SetLimit(headJobs)
	for i := range s.cfg.Images {
		img := &s.cfg.Images[i]
		g.Go(func() error {
			tags[i], errs[i] = selectTags(ctx, img, s.registryOptions(img, ""), s.opts.Logger)
			return nil
		})
	}
	g.Wait()
	return tags, errs
}

// checkOverlap fails every target whose output directory is another's, or
// lies inside another's.
func checkOverlap(targets []*target) {
	owner := map[string]*target{}
	for _, t := range targets {
		if t.item.Status == Failed {
			continue
		}
		if o, ok := owner[t.dir]; ok {
			msg := fmt.Sprintf("output path %s is also that of %s (%s); put {tag} or "+
				"{platform} in path", t.dir, o.ref, o.platform)
			t.item.Status, t.item.Error = Failed, msg
			o.item.Status, o.item.Error = Failed, msg
			continue
		}
		owner[t.dir] = t
	}
	for _, t := range targets {
		for p := path.Dir(t.dir); p != "." && t.item.Status != Failed; p = path.Dir(p) {
			if o, ok := owner[p]; ok {
				t.item.Status = Failed
				t.item.Error = fmt.Sprintf("output path %s lies inside %s, the output of %s",
					t.dir, p, o.ref)
			}
		}
	}
}

// registryOptions are the registry settings of an image entry.
func (s *syncer) registryOptions(img *Image, platform string) registry.Options {
	return registry.Options{
		Platform:              platform,
		PlainHTTP:             img.PlainHTTP,
		InsecureSkipTLSVerify: img.InsecureSkipTLSVerify,
		AllowForeign:          img.AllowForeignLayers,
		Logger:                s.opts.Logger,
	}
}

// check asks the registry for every tag's digest, once per tag, and
// decides which outputs must be converted.
func (s *syncer) check(ctx context.Context, targets []*target) {
	type head struct {
		once   sync.Once
		digest v1.Hash
		err    error
	}
	heads := map[string]*head{}
	for _, t := range targets {
		if heads[t.ref] == nil {
			heads[t.ref] = &head{}
		}
	}
	var g errgroup.Group
	g.SetLimit(headJobs)
	for _, t := range targets {
		if t.item.Status == Failed {
			continue
		}
		g.Go(func() error {
			h := heads[t.ref]
			h.once.Do(func() {
				h.digest, h.err = registry.HeadDigest(ctx, t.ref, s.registryOptions(t.img, ""))
			})
			t.digest = h.digest
			s.decide(t, h.err)
			return nil
		})
	}
	g.Wait()
}

// decide compares a target's digest with the state and its output.
func (s *syncer) decide(t *target, headErr error) {
	it := t.item
	if headErr != nil {
		it.Status, it.Error = Failed, headErr.Error()
		t.gone = errors.Is(headErr, registry.ErrNotFound)
		s.log(t).Warn("cannot get the digest", "err", headErr)
		return
	}
	it.Digest = t.digest.String()

	s.mu.Lock()
	prev := s.state.Outputs[t.dir]
	s.mu.Unlock()
	want := s.newRecord(t)
	switch {
	case prev == nil || prev.Digest == "":
		it.Reason = "new"
	case !prev.sameSource(want):
		it.Reason = "options changed"
	case prev.Digest != it.Digest:
		it.Reason = "digest changed"
	case !intact(s.abs(t.dir), prev.ManifestDigest):
		it.Reason = "output incomplete"
	default:
		it.Status, it.ManifestDigest = Unchanged, prev.ManifestDigest
		s.log(t).Info("unchanged", "digest", it.Digest, "dir", t.dir)
		return
	}
	if prev != nil {
		it.PreviousDigest = prev.Digest
	}
	t.convert = true
	if s.opts.DryRun {
		it.Status = Pending
		s.log(t).Info("would convert", "why", it.Reason, "dir", t.dir)
	}
}

// convertAll converts the targets that need it, Jobs at a time.
func (s *syncer) convertAll(ctx context.Context, targets []*target) {
	if s.opts.DryRun {
		return
	}
	var g errgroup.Group
	g.SetLimit(s.opts.Jobs)
	for _, t := range targets {
		if !t.convert {
			continue
		}
		g.Go(func() error {
			if ctx.Err() != nil {
				t.item.Status = Interrupted
				return nil
			}
			s.convertOne(ctx, t)
			return nil
		})
	}
	g.Wait()
}

// convertOne converts one target into its directory and records it.
func (s *syncer) convertOne(ctx context.Context, t *target) {
	start := time.Now()
	it := t.item
	logger := s.log(t)
	logger.Info("converting", "why", it.Reason, "digest", it.Digest, "dir", t.dir)
	if err := s.prepare(t); err != nil {
		it.Status, it.Error = Failed, err.Error()
		return
	}

	res, err := s.convert(ctx, convert.Options{
		Source:      "docker://" + t.ref + "@" + it.Digest,
		OutDir:      s.abs(t.dir),
		Cache:       s.opts.Cache,
		Registry:    s.registryOptions(t.img, t.platform),
		BaseLayers:  t.img.BaseLayers,
		MaxOverlays: t.img.MaxOverlays,
		Compression: t.img.Compression,
		Limits:      s.opts.Limits,
		Logger:      logger,
		CacheFrom:   s.opts.CacheFrom,
		CacheTo:     s.opts.CacheTo,
	})
	it.Seconds = time.Since(start).Round(time.Millisecond).Seconds()
	if err != nil {
		if ctx.Err() != nil {
			it.Status = Interrupted
			logger.Info("conversion interrupted")
		} else {
			it.Status, it.Error = Failed, err.Error()
			logger.Warn("conversion failed", "err", err)
		}
		s.forgetPending(t)
		return
	}

	it.ManifestDigest = res.ManifestDigest
	it.Built, it.Reused = res.Counts()
	if err := s.record(t, res); err != nil {
		it.Status, it.Error = Failed, err.Error()
		return
	}
	it.Status = Converted
}

// log returns the logger of a target's lines: its "image" attribute names
// the tag, and the platform when the entry converts several.
func (s *syncer) log(t *target) *slog.Logger {
	if len(t.img.Platforms) > 1 {
		return s.opts.Logger.With("image", t.ref+" "+t.platform)
	}
	return s.opts.Logger.With("image", t.ref)
}

// abs returns an output directory's path.
func (s *syncer) abs(dir string) string {
	return filepath.Join(s.cfg.Output, filepath.FromSlash(dir))
}

func (s *syncer) newRecord(t *target) *record {
	return &record{Registry: t.img.Registry, Repository: t.img.Repository, Tag: t.tag,
		Platform: t.platform, BaseLayers: t.img.BaseLayers, MaxOverlays: t.img.MaxOverlays,
		Compression: t.img.Compression}
}

// prepare records a directory sync is about to create before the
// conversion writes it, with the directories above it that it makes too,
// so that prune knows them even if the run is killed.
func (s *syncer) prepare(t *target) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Outputs[t.dir] != nil {
		return nil
	}
	rec := s.newRecord(t)
	if _, err := os.Lstat(s.abs(t.dir)); errors.Is(err, os.ErrNotExist) {
		rec.Created = true
		for p := path.Dir(t.dir); p != "."; p = path.Dir(p) {
			if _, err := os.Lstat(s.abs(p)); !errors.Is(err, os.ErrNotExist) {
				break
			}
			rec.MadeDirs = append(rec.MadeDirs, p)
		}
	}
	s.state.Outputs[t.dir] = rec
	return s.state.save(s.cfg.Output)
}

// forgetPending drops the record prepare made when the conversion failed
// before it wrote anything.
func (s *syncer) forgetPending(t *target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.state.Outputs[t.dir]
	if rec == nil || rec.Digest != "" {
		return
	}
	if _, err := os.Lstat(s.abs(t.dir)); !errors.Is(err, os.ErrNotExist) {
		return
	}
	delete(s.state.Outputs, t.dir)
	if err := s.state.save(s.cfg.Output); err != nil {
		s.opts.Logger.Warn("cannot update the sync state", "err", err)
	}
}

// record notes a finished conversion in the state file.
func (s *syncer) record(t *target, res *convert.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := s.newRecord(t)
	if rec := s.state.Outputs[t.dir]; rec != nil {
		want.Created, want.MadeDirs = rec.Created, rec.MadeDirs
	}
	want.Digest, want.ManifestDigest = t.digest.String(), res.ManifestDigest
	want.Converted = time.Now().UTC().Round(time.Second)
	s.state.Outputs[t.dir] = want
	return s.state.save(s.cfg.Output)
}
