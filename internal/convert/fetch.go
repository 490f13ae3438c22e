package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

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

// indexes returns every layer's index, from the cache or by fetching and
// scanning the layer.
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
			spool, err := r.fetch(ctx, i)
			if err != nil {
				return err
			}
			r.spoolMu.Lock()
			r.spools[i] = spool
			r.spoolMu.Unlock()

			idx, err := r.scan(ctx, i, spool)
			if err != nil {
				return err
			}
			out[i] = idx
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

func (r *run) cachedIndex(i int) *unpack.Index {
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
// verified against its digest and size, and returns the file's path.
func (r *run) fetch(ctx context.Context, i int) (string, error) {
	l := &r.img.Layers[i]
	var err error
	for attempt := 1; attempt <= fetchAttempts; attempt++ {
		var path string
		path, err = r.fetchOnce(ctx, l, fmt.Sprintf("layer %d", i+1))
		if err == nil {
			r.opts.Logger.Info("fetched layer", "layer", i+1, "digest", l.Digest, "bytes", l.Size)
			return path, nil
		}
		if ctx.Err() != nil || !retryable(err) || attempt == fetchAttempts {
			break
		}
		r.opts.Logger.Warn("retrying layer download", "layer", i+1, "attempt", attempt,
			"err", err)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	return "", fmt.Errorf("fetch layer %d (%s): %w", i+1, l.Digest, err)
}

func retryable(err error) bool {
	for _, e := range []error{registry.ErrNotFound, registry.ErrUnauthorized,
		registry.ErrUnsupported, context.Canceled, os.ErrPermission, os.ErrNotExist} {
		if errors.Is(err, e) {
			return false
		}
	}
	return true
}

func (r *run) fetchOnce(ctx context.Context, l *registry.Layer, item string) (string, error) {
	rc, err := l.Compressed(ctx)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	m := newMeter(r.opts.Progress, StageFetch, item, l.Size)

	f, err := os.CreateTemp(r.opts.Cache.TempDir(), atomicfile.TempPrefix+"blob-"+short(l.Digest)+"-*")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, m.reader(rc)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	m.finish()
	return f.Name(), nil
}

// openLayer opens layer i's uncompressed stream from its spool file,
// fetching the blob first if this run has not. m, if not nil, counts the
// compressed bytes read.
func (r *run) openLayer(ctx context.Context, i int, m *meter) (io.ReadCloser, error) {
	r.spoolMu.Lock()
	spool, ok := r.spools[i]
	r.spoolMu.Unlock()
	if !ok {
		var err error
		spool, err = r.fetch(ctx, i)
		if err != nil {
			return nil, err
		}
		r.spoolMu.Lock()
		r.spools[i] = spool
		r.spoolMu.Unlock()
	}
	f, err := os.Open(spool)
	if err != nil {
		return nil, fmt.Errorf("open layer %d: %w", i+1, err)
	}
	rc, _, err := registry.Uncompressed(metered(f, m), r.img.Layers[i].DiffID)
	if err != nil {
		f.Close()
		return nil, err
	}
	return rc, nil
}

// scan reads layer i's spool to its end, checks its diffID and caches its index.
func (r *run) scan(ctx context.Context, i int, spool string) (*unpack.Index, error) {
	l := &r.img.Layers[i]
	f, err := os.Open(spool)
	if err != nil {
		return nil, fmt.Errorf("scan layer %d: %w", i+1, err)
	}
	m := newMeter(r.opts.Progress, StageScan, fmt.Sprintf("layer %d", i+1), l.Size)
	rc, comp, err := registry.Uncompressed(metered(f, m), l.DiffID)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("scan layer %d: %w", i+1, err)
	}
	defer rc.Close()

	idx, err := unpack.Scan(ctx, rc, r.opts.Limits)
	if err != nil {
		return nil, fmt.Errorf("scan layer %d (%s): %w", i+1, l.DiffID, err)
	}
	if idx.Dropped > 0 {
		r.opts.Logger.Warn("dropped overlay xattrs a layer may not set", "layer", i+1,
			"count", idx.Dropped)
	}
	err = r.opts.Cache.Put(cache.Index, l.DiffID, func(w *os.File) error {
		return unpack.WriteIndex(w, idx)
	})
	if err != nil {
		return nil, err
	}
	m.finish()
	r.opts.Logger.Info("scanned layer", "layer", i+1, "compression", comp,
		"entries", len(idx.Entries), "bytes", idx.Bytes)
	return idx, nil
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
