package convert

import (
	"context"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/remotecache"
)

// FromRemote is the "from" value of a file pulled from a remote cache.
const FromRemote = "remote"

// remotes are the remote caches of a run and what went through them.
type remotes struct {
	from   []*remotecache.Store
	to     *remotecache.Store
	pulled atomic.Int64
	pushed atomic.Int64
}

// openRemotes opens the stores Options.CacheFrom and Options.CacheTo name.
func (r *run) openRemotes(ctx context.Context) error {
	ropts := r.opts.Registry
	ropts.Logger = r.opts.Logger
	for _, repo := range r.opts.CacheFrom {
		s, err := remotecache.New(ctx, repo, ropts, r.opts.Logger)
		if err != nil {
			return err
		}
		r.remote.from = append(r.remote.from, s)
	}
	if r.opts.CacheTo != "" {
		s, err := remotecache.New(ctx, r.opts.CacheTo, ropts, r.opts.Logger)
		if err != nil {
			return err
		}
		r.remote.to = s
	}
	return nil
}

// entry describes a cache entry for a remote cache.
func (r *run) entry(k cache.Kind, key v1.Hash, o cache.Origin) remotecache.Entry {
	e := remotecache.Entry{Kind: k, Key: key, Origin: o}
	if k != cache.Index {
		e.Compression = r.opts.Compression
	}
	return e
}

// pull installs an entry the cache lacks from the first remote cache that
// has it, and reports whether it did. The caller holds the entry's lock.
func (r *run) pull(ctx context.Context, k cache.Kind, key v1.Hash, o cache.Origin) bool {
	e := r.entry(k, key, o)
	for _, s := range r.remote.from {
		if s.Pull(ctx, r.opts.Cache, e) {
			r.remote.pulled.Add(1)
			r.opts.Logger.Info("pulled from the remote cache", "cache", s.String(),
				"kind", k, "key", key)
			return true
		}
	}
	return false
}

// push stores every entry res names, and the indexes of the image's
// layers, in the --cache-to remote cache. A failure is a warning: the
// conversion stands without it.
func (r *run) push(ctx context.Context, res *Result) {
	if r.remote.to == nil {
		return
	}
	refs, err := res.entries()
	if err != nil {
		r.opts.Logger.Warn("cannot push to the remote cache", "err", err)
		return
	}
	var entries []remotecache.Entry
	for _, ref := range refs {
		entries = append(entries, r.entry(ref.kind, ref.key, r.resultOrigin(res, ref)))
	}
	for _, l := range r.img.Layers {
		if r.opts.Cache.Has(cache.Index, l.DiffID) {
			entries = append(entries, r.entry(cache.Index, l.DiffID,
				cache.Origin{Images: []string{r.opts.Source}, DiffIDs: []string{l.DiffID.String()}}))
		}
	}

	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(r.opts.Jobs)
	for _, e := range entries {
		eg.Go(func() error {
			pushed, err := r.remote.to.Push(ctx, e, r.opts.Cache.Path(e.Kind, e.Key))
			if err != nil {
				r.opts.Logger.Warn("cannot push to the remote cache", "cache", r.remote.to.String(),
					"kind", e.Kind, "key", e.Key, "err", err)
			} else if pushed {
				r.remote.pushed.Add(1)
			}
			return nil
		})
	}
	eg.Wait()
	r.opts.Logger.Info("pushed to the remote cache", "cache", r.remote.to.String(),
		"pushed", r.remote.pushed.Load(), "entries", len(entries))
}

// resultOrigin describes one of res's entries for its annotations.
func (r *run) resultOrigin(res *Result, ref entryRef) cache.Origin {
	o := cache.Origin{Images: []string{r.opts.Source}}
	switch {
	case ref.kind == cache.Base || ref.kind == cache.Flat:
		o.DiffIDs, o.ChainID = res.Base.DiffIDs, res.Base.ChainID
	case ref.kind == cache.Layer:
		for _, ov := range res.Overlays {
			if ov.Key == ref.key.String() {
				o.DiffIDs, o.ChainID = ov.DiffIDs, ov.ChainID
			}
		}
	}
	return o
}
