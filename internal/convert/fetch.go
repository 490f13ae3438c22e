package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/oci2layers/oci2layers/internal/atomicfile"
	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// fetchAttempts bounds how often a blob download is started from scratch
// after a transient failure. A partial download is never resumed by
// splicing: each attempt hashes the whole blob again.
const fetchAttempts = 3

// indexes returns every layer's index, from the cache or by fetching the
// layer: the blob is written to its spool file and scanned in the same pass.
func (r *run) indexes(ctx context.Context) ([]*unpack.Index, error) {
	out := make([]*unpack.Index, len(r.img.Layers))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.opts.Jobs)
	for i := range r.img.Layers {
		if idx := r.cachedIndex(i); idx != nil {
			out[i] = idx
			continue
		}
		g.Go(func() error {
			c, diffID := r.opts.Cache, r.img.Layers[i].DiffID
			unlock, err := c.Lock(ctx, cache.Index, diffID)
			if err != nil {
				return err
			}
			defer unlock()
			if c.Has(cache.Index, diffID) {
				if err := c.Touch(cache.Index, diffID, r.opts.Source); err != nil {
					return err
				}
				if idx := r.readIndex(i); idx != nil {
					out[i] = idx // another conversion read the layer meanwhile
					return nil
				}
			}
			o := cache.Origin{Images: []string{r.opts.Source}, DiffIDs: []string{diffID.String()}}
			if r.pull(ctx, cache.Index, diffID, o) {
				if idx := r.readIndex(i); idx != nil {
					out[i] = idx
					return nil
				}
			}
			spool, idx, err := r.fetch(ctx, i, true)
			if err != nil {
				return err
			}
			r.spoolMu.Lock()
			r.spools[i] = spools.add(r.img.Layers[i].Digest, spool)
			r.spoolMu.Unlock()
			out[i] = idx
			return r.saveIndex(i, idx)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// cachedIndex returns layer i's index when the cache has it, recording the
// use; nil otherwise.
func (r *run) cachedIndex(i int) *unpack.Index {
	ok, err := r.opts.Cache.Use(cache.Index, r.img.Layers[i].DiffID, r.opts.Source)
	if err != nil || !ok {
		return nil
	}
	return r.readIndex(i)
}

// readIndex reads layer i's index from the cache; nil when it is missing or
// unreadable.
func (r *run) readIndex(i int) *unpack.Index {
	l := &r.img.Layers[i]
	f, err := r.opts.Cache.Open(cache.Index, l.DiffID)
	if err != nil {
		return nil
	}
	defer f.Close()
	idx, err := unpack.ReadIndex(f)
	if err != nil {
		r.opts.Logger.Warn("ignoring unreadable index", "diff_id", l.DiffID, "err", err)
		return nil
	}
	return idx
}

// fetch downloads layer i's blob to a spool file in the cache's tmp/,
// verified against its digest and size, and returns the file's path. With
// scan set it also reads the layer into its index while it downloads, which
// checks the diffID.
func (r *run) fetch(ctx context.Context, i int, scan bool) (string, *unpack.Index, error) {
	l := &r.img.Layers[i]
	var err error
	for attempt := 1; attempt <= fetchAttempts; attempt++ {
		var path string
		var idx *unpack.Index
		path, idx, err = r.fetchOnce(ctx, i, scan)
		if err == nil {
			r.opts.Logger.Info("fetched layer", "layer", i+1, "digest", l.Digest, "bytes", l.Size)
			return path, idx, nil
		}
		if ctx.Err() != nil || !retryable(err) || attempt == fetchAttempts {
			break
		}
		r.opts.Logger.Warn("retrying layer download", "layer", i+1, "attempt", attempt,
			"err", err)
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	return "", nil, fmt.Errorf("fetch layer %d (%s): %w", i+1, l.Digest, err)
}

func retryable(err error) bool {
	for _, e := range []error{registry.ErrNotFound, registry.ErrUnauthorized,
		registry.ErrUnsupported, registry.ErrDiffIDMismatch, context.Canceled,
		os.ErrPermission, os.ErrNotExist, unpack.ErrEscape, unpack.ErrInvalid, unpack.ErrLimit} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

func (r *run) fetchOnce(ctx context.Context, i int, scan bool) (string, *unpack.Index, error) {
	l := &r.img.Layers[i]
	rc, err := l.Compressed(ctx)
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	m := newMeter(r.opts.Progress, StageFetch, fmt.Sprintf("layer %d", i+1), l.Size)

	f, err := os.CreateTemp(r.opts.Cache.TempDir(), atomicfile.TempPrefix+"blob-"+short(l.Digest)+"-*")
	if err != nil {
		return "", nil, err
	}
	idx, err := r.download(ctx, i, io.TeeReader(m.reader(rc), f), scan)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", nil, err
	}
	m.finish()

	// Verified: give it the name other processes look for (see openLayer).
	random := f.Name()[strings.LastIndex(f.Name(), "-")+1:]
	final := filepath.Join(filepath.Dir(f.Name()), blobPrefix(l.Digest)+"-"+random)
	if err := os.Rename(f.Name(), final); err != nil {
		os.Remove(f.Name())
		return "", nil, err
	}
	return final, idx, nil
}

// blobPrefix starts the name of a verified blob in a run's work directory.
func blobPrefix(d v1.Hash) string { return "blob-" + d.Hex }

// download reads a verified blob stream to its end, scanning it on the way
// when asked to.
func (r *run) download(ctx context.Context, i int, blob io.Reader, scan bool) (*unpack.Index,
	error) {
	if !scan {
		_, err := io.Copy(io.Discard, blob)
		return nil, err
	}
	l := &r.img.Layers[i]
	rc, comp, err := registry.Uncompressed(io.NopCloser(blob), l.DiffID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	idx, err := unpack.Scan(ctx, rc, r.opts.Limits)
	if err != nil {
		// A damaged blob often breaks decompression before its end, where
		// its digest is checked: read on, so the damage is named as such.
		if _, derr := io.Copy(io.Discard, blob); errors.Is(derr, registry.ErrDigestMismatch) {
			return nil, derr
		}
		return nil, fmt.Errorf("scan layer %d (%s): %w", i+1, l.DiffID, err)
	}
	if idx.Dropped > 0 {
		r.opts.Logger.Warn("dropped overlay xattrs a layer may not set", "layer", i+1,
			"count", idx.Dropped)
	}
	r.opts.Logger.Info("scanned layer", "layer", i+1, "compression", comp,
		"entries", len(idx.Entries), "bytes", idx.Bytes)
	return idx, nil
}

// openLayer opens layer i's uncompressed stream from its spool file,
// fetching the blob first if this run has not. m, if not nil, counts the
// compressed bytes read.
func (r *run) openLayer(ctx context.Context, i int, m *meter) (io.ReadCloser, error) {
	digest := r.img.Layers[i].Digest
	r.spoolMu.Lock()
	spool, ok := r.spools[i]
	if !ok {
		if spool, ok = spools.get(digest); ok {
			r.spools[i] = spool // downloaded by another conversion of this process
		}
	}
	r.spoolMu.Unlock()
	if !ok {
		// Another process converting at the same moment may have it.
		if f, found := r.opts.Cache.OpenPeer(blobPrefix(digest) + "-*"); found {
			r.opts.Logger.Info("reusing a layer another conversion downloaded", "layer", i+1)
			return r.uncompressed(f, i, m)
		}
		var err error
		spool, _, err = r.fetch(ctx, i, false)
		if err != nil {
			return nil, err
		}
		r.spoolMu.Lock()
		r.spools[i] = spools.add(digest, spool)
		r.spoolMu.Unlock()
	}
	f, err := os.Open(spool)
	if err != nil {
		return nil, fmt.Errorf("open layer %d: %w", i+1, err)
	}
	return r.uncompressed(f, i, m)
}

// uncompressed reads layer i's blob from f, checking its diffID.
func (r *run) uncompressed(f *os.File, i int, m *meter) (io.ReadCloser, error) {
	rc, _, err := registry.Uncompressed(metered(f, m), r.img.Layers[i].DiffID)
	if err != nil {
		f.Close()
		return nil, err
	}
	return rc, nil
}

// saveIndex caches layer i's index, keyed by its diffID.
func (r *run) saveIndex(i int, idx *unpack.Index) error {
	d := r.img.Layers[i].DiffID
	o := cache.Origin{Images: []string{r.opts.Source}, DiffIDs: []string{d.String()}}
	return r.opts.Cache.PutWithOrigin(cache.Index, d, o, func(w *os.File) error {
		return unpack.WriteIndex(w, idx)
	})
}

// metered counts what is read from f with m (when m is not nil).
func metered(f *os.File, m *meter) io.ReadCloser {
	if m == nil {
		return f
	}
	return struct {
		io.Reader
		io.Closer
	}{m.reader(f), f}
}
