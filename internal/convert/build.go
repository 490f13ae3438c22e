package convert

import (
	"archive/tar"
	"context"
	"encoding/json"
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
	json    map[string][]byte // generic JSON objects stored in the SIF
	reused  bool
	// remote is set when the entry was pulled from a remote cache.
	remote bool

	done chan struct{} // closed when the entry is in the cache (or failed)
	err  error
}

// plan groups the layers, then works out every group's overlay and key,
// bottom to top.
func (r *run) plan(idx []*unpack.Index) ([]*group, error) {
	diffIDs := make([]v1.Hash, len(r.img.Layers))
	infos := make([]layerInfo, len(r.img.Layers))
	for i, l := range r.img.Layers {
		diffIDs[i] = l.DiffID
		infos[i] = layerInfo{size: idx[i].Bytes, empty: len(idx[i].Entries) == 0 && !r.unknown[i]}
	}
	chains := chainIDs(diffIDs)
	baseLayers, overlays := partition(infos, min(r.opts.BaseLayers, len(idx)),
		r.opts.MaxOverlays-1)

	tree := unpack.NewTree()
	var groups []*group
	for gi, positions := range append([][]int{baseLayers}, overlays...) {
		g := &group{kind: cache.Layer, layers: positions, done: make(chan struct{})}
		mode := unpack.OverlayMode
		if gi == 0 {
			g.kind, mode = cache.Base, unpack.FlatMode
		}
		var layers []unpack.Layer
		for _, i := range positions {
			layers = append(layers, unpack.Layer{Position: i, Index: idx[i]})
		}
		ov, err := unpack.Plan(tree, mode, layers...)
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", r.opts.Source, err)
		}
		if gi == 0 {
			addSkeleton(ov)
		}
		g.ov = ov
		r.setKey(g, diffIDs, chains)
		tree.Apply(ov)
		groups = append(groups, g)
	}

	cfg, err := r.configGroup()
	if err != nil {
		return nil, err
	}
	return append(groups, cfg), nil
}

// setKey names a group's cache entry. A base is named by its chainID. An
// overlay the layers below cannot change is named by its diffID (by the list
// of its diffIDs when it merges several layers); any other by the chainID of
// its top layer (and of the layer below its bottom, when it merges several).
func (r *run) setKey(g *group, diffIDs, chains []v1.Hash) {
	first, top := g.layers[0], g.layers[len(g.layers)-1]
	g.chain = chains[top]
	var id v1.Hash
	switch {
	case g.kind == cache.Base:
		id, g.byChain = g.chain, true
	case len(g.layers) == 1 && !g.ov.LowerDependent:
		id = diffIDs[top]
	case len(g.layers) == 1:
		id, g.byChain = g.chain, true
	case !g.ov.LowerDependent:
		parts := []string{"layers"}
		for _, i := range g.layers {
			parts = append(parts, diffIDs[i].String())
		}
		id = digestOf(parts...)
	default:
		below := ""
		if first > 0 {
			below = chains[first-1].String()
		}
		id, g.byChain = digestOf("chain", below, g.chain.String()), true
	}
	if g.ov.LowerDependent && g.kind != cache.Base {
		r.opts.Logger.Debug("overlay depends on the layers below", "layers", len(g.layers),
			"top", top+1, "why", g.ov.Reasons)
	}
	g.key = variantKey(id, r.opts.Compression)
}

// planFlat plans one flat file system of every layer, with Apptainer's
// skeleton and the image's metadata, as `apptainer build` would make it.
func (r *run) planFlat(idx []*unpack.Index) ([]*group, error) {
	var layers []unpack.Layer
	var positions []int
	diffIDs := make([]v1.Hash, len(idx))
	for i := range idx {
		layers = append(layers, unpack.Layer{Position: i, Index: idx[i]})
		positions = append(positions, i)
		diffIDs[i] = r.img.Layers[i].DiffID
	}
	ov, err := unpack.Plan(unpack.NewTree(), unpack.FlatMode, layers...)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", r.opts.Source, err)
	}
	addSkeleton(ov)
	cfg, err := r.configGroup()
	if err != nil {
		return nil, err
	}
	entries, err := skeleton.Config(r.img.Config)
	if err != nil {
		return nil, err
	}
	for _, s := range entries {
		ov.AddInline(entryOf(s.Header), s.Data, false)
	}

	chain := chainIDs(diffIDs)[len(idx)-1]
	key := variantKey(digestOf("flat", chain.String(), r.img.ConfigDigest.String()),
		r.opts.Compression)
	return []*group{{kind: cache.Flat, layers: positions, chain: chain, key: key,
		byChain: true, ov: ov, json: cfg.json, done: make(chan struct{})}}, nil
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
	ociConfig, err := ociConfigJSON(r.img.Config)
	if err != nil {
		return nil, err
	}
	return &group{kind: cache.Config, key: variantKey(r.img.ConfigDigest, r.opts.Compression),
		ov: ov, json: map[string][]byte{OCIConfigObject: ociConfig},
		done: make(chan struct{})}, nil
}

// OCIConfigObject names the SIF object that holds the image's run-time
// config, where Apptainer keeps it in the SIFs it builds.
const OCIConfigObject = "oci-config.json"

// ociConfigJSON writes the OCI image config's "config" section the way
// Apptainer stores it.
func ociConfigJSON(cfg *v1.ConfigFile) ([]byte, error) {
	c := cfg.Config
	oc := struct {
		User         string              `json:"User,omitempty"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
		Env          []string            `json:"Env,omitempty"`
		Entrypoint   []string            `json:"Entrypoint,omitempty"`
		Cmd          []string            `json:"Cmd,omitempty"`
		Volumes      map[string]struct{} `json:"Volumes,omitempty"`
		WorkingDir   string              `json:"WorkingDir,omitempty"`
		Labels       map[string]string   `json:"Labels,omitempty"`
		StopSignal   string              `json:"StopSignal,omitempty"`
	}{c.User, c.ExposedPorts, c.Env, c.Entrypoint, c.Cmd, c.Volumes, c.WorkingDir,
		c.Labels, c.StopSignal}
	b, err := json.Marshal(oc)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", OCIConfigObject, err)
	}
	return b, nil
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
		ok, err := r.opts.Cache.Use(g.kind, g.key, r.opts.Source)
		if err != nil {
			return err
		}
		if ok {
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
			g.err = r.buildLocked(ctx, g)
			return g.err
		})
	}
	return eg.Wait()
}

// buildLocked builds a group under its cache lock, unless whoever held the
// lock before built it meanwhile.
func (r *run) buildLocked(ctx context.Context, g *group) error {
	unlock, err := r.opts.Cache.Lock(ctx, g.kind, g.key)
	if err != nil {
		return err
	}
	defer unlock()
	if r.opts.Cache.Has(g.kind, g.key) {
		g.reused = true
		r.opts.Logger.Info("built by another conversion meanwhile", "what", groupItem(g))
		return r.opts.Cache.Touch(g.kind, g.key, r.opts.Source)
	}
	if r.pull(ctx, g.kind, g.key, r.origin(g)) {
		g.remote = true
		return nil
	}
	return r.buildGroup(ctx, g)
}

// buildGroup streams the group's overlay into mksquashfs and stores the
// result as a SIF in the cache.
func (r *run) buildGroup(ctx context.Context, g *group) error {
	start := time.Now()
	sqfs := filepath.Join(r.opts.Cache.TempDir(), fmt.Sprintf(".tmp-%s-%s.sqfs", g.kind, short(g.key)))
	os.Remove(sqfs)
	defer os.Remove(sqfs)

	var total int64
	for _, i := range g.layers {
		total += r.img.Layers[i].Size
	}
	m := newMeter(r.opts.Progress, StageBuild, groupItem(g), total)
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := g.ov.Write(ctx, pw, func(ctx context.Context, i int) (io.ReadCloser, error) {
			return r.openLayer(ctx, g.layers[i], m)
		}, r.openLower)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	opts := squash.Options{Compression: r.opts.Compression, Epoch: g.ov.MaxMTime(),
		Processors: r.processors(g)}
	sqErr := r.tool.FromTar(ctx, pr, sqfs, opts)
	pr.CloseWithError(fmt.Errorf("mksquashfs stopped reading"))
	if err := <-writeErr; err != nil {
		return fmt.Errorf("build %s: %w", groupItem(g), err)
	}
	if sqErr != nil {
		return fmt.Errorf("build %s: %w", groupItem(g), sqErr)
	}

	kind := sifwriter.Overlay
	if g.kind == cache.Base || g.kind == cache.Flat {
		kind = sifwriter.Base
	}
	err := r.opts.Cache.PutWithOrigin(g.kind, g.key, r.origin(g), func(w *os.File) error {
		src, err := os.Open(sqfs)
		if err != nil {
			return err
		}
		defer src.Close()
		stack := sifwriter.Stack{Parts: []sifwriter.Part{{Kind: kind, Squashfs: src}},
			JSON: g.json}
		if err := sifwriter.WriteStack(w, stack, r.arch()); err != nil {
			return err
		}
		return w.Chmod(0o444)
	})
	if err != nil {
		return fmt.Errorf("build %s: %w", groupItem(g), err)
	}
	m.finish()
	st := g.ov.Stats()
	r.opts.Logger.Info("built", "what", groupItem(g), "key", g.key, "files", st.Files,
		"dirs", st.Dirs, "whiteouts", st.Whiteouts,
		"seconds", time.Since(start).Round(time.Millisecond).Seconds())
	return nil
}

// origin describes a group for its cache metadata.
func (r *run) origin(g *group) cache.Origin {
	o := cache.Origin{Images: []string{r.opts.Source}}
	for _, i := range g.layers {
		o.DiffIDs = append(o.DiffIDs, r.img.Layers[i].DiffID.String())
	}
	if len(g.layers) > 0 {
		o.ChainID = g.chain.String()
	}
	return o
}

// smallGroup is the size below which a group's mksquashfs gets one thread:
// starting more costs more than it gains, and the other CPUs serve the
// large layers being built at the same time.
const smallGroup = 32 << 20

// processors gives mksquashfs all CPUs for a large group and one for a small.
func (r *run) processors(g *group) int {
	var n int64
	for _, i := range g.layers {
		n += r.img.Layers[i].Size
	}
	if n < smallGroup {
		return 1
	}
	return 0
}

// groupItem names a group briefly, for progress.
func groupItem(g *group) string {
	switch {
	case g.kind == cache.Base:
		return "base"
	case g.kind == cache.Config:
		return "config"
	case g.kind == cache.Flat:
		return "image"
	case len(g.layers) == 1:
		return fmt.Sprintf("layer %d", g.layers[0]+1)
	}
	return fmt.Sprintf("layers %d-%d", g.layers[0]+1, g.layers[len(g.layers)-1]+1)
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
