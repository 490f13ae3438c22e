package convert

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/sifwriter"
	"github.com/oci2layers/oci2layers/internal/skeleton"
	"github.com/oci2layers/oci2layers/internal/squash"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// group is one output file: the base, a layer overlay or the config overlay.
type group struct {
	kind   cache.Kind
	layers []int   // image positions, bottom to top
	chain  v1.Hash // chainID of the layers up to the group's top
	key    v1.Hash
	// byChain is set when the key comes from the chainID, not the diffID.
	byChain bool
	ov      *unpack.Overlay
	reused  bool

	done chan struct{} // closed when the entry is in the cache (or failed)
	err  error
}

// plan works out every group's overlay and key, bottom to top.
func (r *run) plan(idx []*unpack.Index) ([]*group, error) {
	diffIDs := make([]v1.Hash, len(r.img.Layers))
	for i, l := range r.img.Layers {
		diffIDs[i] = l.DiffID
	}
	chains := chainIDs(diffIDs)
	n := min(r.opts.BaseLayers, len(idx))

	tree := unpack.NewTree()
	var groups []*group
	for gi := 0; gi == 0 || n+gi-1 < len(idx); gi++ {
		g := &group{kind: cache.Layer, done: make(chan struct{})}
		mode := unpack.OverlayMode
		if gi == 0 {
			g.kind, mode = cache.Base, unpack.FlatMode
			for i := range n {
				g.layers = append(g.layers, i)
			}
		} else {
			g.layers = []int{n + gi - 1}
		}
		var layers []unpack.Layer
		for _, i := range g.layers {
			layers = append(layers, unpack.Layer{Position: i, Index: idx[i]})
		}
		ov, err := unpack.Plan(tree, mode, layers...)
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", r.opts.Source, err)
		}
		top := g.layers[len(g.layers)-1]
		g.ov, g.chain = ov, chains[top]
		switch {
		case gi == 0:
			addSkeleton(ov)
			g.key, g.byChain = variantKey(g.chain, r.opts.Compression), true
		case ov.LowerDependent:
			g.key, g.byChain = variantKey(g.chain, r.opts.Compression), true
			r.opts.Logger.Debug("layer depends on the layers below", "layer", top+1,
				"why", ov.Reasons)
		default:
			g.key = variantKey(diffIDs[top], r.opts.Compression)
		}
		tree.Apply(ov)
		groups = append(groups, g)
	}

	cfg, err := r.configGroup()
	if err != nil {
		return nil, err
	}
	return append(groups, cfg), nil
}

// addSkeleton puts Apptainer's runtime files into the base.
func addSkeleton(ov *unpack.Overlay) {
	for _, s := range skeleton.Base() {
		ov.AddInline(entryOf(s.Header), s.Data, s.IfMissing)
	}
}

// configGroup plans the overlay that carries the image config.
func (r *run) configGroup() (*group, error) {
	entries, err := skeleton.Config(r.img.Config)
	if err != nil {
		return nil, fmt.Errorf("write metadata for %s: %w", r.opts.Source, err)
	}
	ov, err := unpack.Plan(unpack.NewTree(), unpack.OverlayMode)
	if err != nil {
		return nil, err
	}
	for _, s := range entries {
		ov.AddInline(entryOf(s.Header), s.Data, false)
	}
	return &group{kind: cache.Config, key: variantKey(r.img.ConfigDigest, r.opts.Compression),
		ov: ov, done: make(chan struct{})}, nil
}

func entryOf(h *tar.Header) *unpack.Entry {
	e := &unpack.Entry{Name: h.Name, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid,
		MTime: h.ModTime.Unix(), Link: h.Linkname}
	switch h.Typeflag {
	case tar.TypeDir:
		e.Kind = unpack.Dir
	case tar.TypeSymlink:
		e.Kind = unpack.Symlink
	default:
		e.Kind = unpack.Reg
	}
	return e
}

// build makes every group the cache lacks. Groups start in order, each
// holding a slot, so a group that copies a file up from a lower group can
// wait for it without deadlock.
func (r *run) build(ctx context.Context, groups []*group) error {
	r.groups = groups
	var todo []*group
	for _, g := range groups {
		if r.opts.Cache.Has(g.kind, g.key) {
			g.reused = true
			close(g.done)
			continue
		}
		todo = append(todo, g)
	}
	if len(todo) == 0 {
		return nil
	}

	tool, err := squash.Find(ctx, r.opts.Logger)
	if err != nil {
		return err
	}
	r.tool = tool
	r.lower = newLowerFiles(r.opts.Cache.TempDir())

	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(r.opts.Jobs)
	for _, g := range groups {
		if g.reused {
			continue
		}
		eg.Go(func() error {
			defer close(g.done)
			g.err = r.buildGroup(ctx, g)
			return g.err
		})
	}
	return eg.Wait()
}

// buildGroup streams the group's overlay into mksquashfs and stores the
// result as a SIF in the cache.
func (r *run) buildGroup(ctx context.Context, g *group) error {
	start := time.Now()
	sqfs := filepath.Join(r.opts.Cache.TempDir(), fmt.Sprintf(".tmp-%s-%s.sqfs", g.kind, short(g.key)))
	os.Remove(sqfs)
	defer os.Remove(sqfs)

	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := g.ov.Write(ctx, pw, func(ctx context.Context, i int) (io.ReadCloser, error) {
			return r.openLayer(ctx, g.layers[i])
		}, r.openLower)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	opts := squash.Options{Compression: r.opts.Compression, Epoch: g.ov.MaxMTime()}
	sqErr := r.tool.FromTar(ctx, pr, sqfs, opts)
	pr.CloseWithError(fmt.Errorf("mksquashfs stopped reading"))
	if err := <-writeErr; err != nil {
		return fmt.Errorf("build %s: %w", describeGroup(g), err)
	}
	if sqErr != nil {
		return fmt.Errorf("build %s: %w", describeGroup(g), sqErr)
	}

	kind := sifwriter.Overlay
	if g.kind == cache.Base {
		kind = sifwriter.Base
	}
	err := r.opts.Cache.Put(g.kind, g.key, func(w *os.File) error {
		src, err := os.Open(sqfs)
		if err != nil {
			return err
		}
		defer src.Close()
		if err := sifwriter.Write(w, kind, src, r.arch()); err != nil {
			return err
		}
		return w.Chmod(0o444)
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", describeGroup(g), err)
	}
	st := g.ov.Stats()
	r.opts.Logger.Info("built", "what", describeGroup(g), "key", g.key, "files", st.Files,
		"dirs", st.Dirs, "whiteouts", st.Whiteouts,
		"seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return nil
}

func describeGroup(g *group) string {
	switch g.kind {
	case cache.Base:
		return fmt.Sprintf("base (layers 1-%d)", len(g.layers))
	case cache.Config:
		return "config overlay"
	}
	return fmt.Sprintf("layer %d", g.layers[0]+1)
}

func (r *run) arch() string {
	if a := r.img.Config.Architecture; a != "" {
		return a
	}
	return "amd64"
}

// openLower opens a file held by an earlier group's output, waiting for that
// group to be built if it is being built now.
func (r *run) openLower(ctx context.Context, gi int, path string) (io.ReadCloser, error) {
	g := r.groups[gi]
	select {
	case <-g.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if g.err != nil {
		return nil, g.err
	}
	return r.lower.open(ctx, r.opts.Cache.Path(g.kind, g.key), path)
}
