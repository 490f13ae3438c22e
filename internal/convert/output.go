package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/atomicfile"
	"github.com/oci2layers/oci2layers/internal/cache"
)

// Result is what image.json holds. Every list runs bottom to top.
type Result struct {
	Source         string        `json:"source"`
	ManifestDigest string        `json:"manifest_digest"`
	ConfigDigest   string        `json:"config_digest"`
	Platform       string        `json:"platform"`
	Base           BaseFile      `json:"base"`
	Overlays       []OverlayFile `json:"overlays"`
	ConfigOverlay  ConfigFile    `json:"config_overlay"`
	// WorkingDir is the image's WORKDIR, which the run wrapper passes as
	// --pwd (Apptainer's native runtime ignores it otherwise).
	WorkingDir string `json:"working_dir,omitempty"`
	// User is the image's USER. Apptainer runs containers as the calling
	// user, so it is only reported.
	User string `json:"user,omitempty"`
	// Flat is set for a single-partition SIF made by flatten; Base then
	// names it and there are no overlays.
	Flat bool `json:"flat,omitempty"`
	// ExecArgs are the arguments for `apptainer exec` before the image,
	// with paths relative to the output directory; the last --overlay is
	// the top of the stack.
	ExecArgs []string `json:"exec_args"`
}

// BaseFile describes base.sif.
type BaseFile struct {
	File string `json:"file"`
	// Image is the --base image the layers come from, if one was given.
	Image   string   `json:"image,omitempty"`
	DiffIDs []string `json:"diff_ids"`
	ChainID string   `json:"chain_id"`
	Key     string   `json:"key"`
	Reused  bool     `json:"reused"`
	// From is "remote" when the file was pulled from a remote cache.
	From string `json:"from,omitempty"`
}

// OverlayFile describes one layer overlay.
type OverlayFile struct {
	File    string   `json:"file"`
	DiffIDs []string `json:"diff_ids"`
	ChainID string   `json:"chain_id"`
	Key     string   `json:"key"`
	// KeyedBy is "diff_id", or "chain_id" when the layers below shape the overlay.
	KeyedBy string `json:"keyed_by"`
	Reused  bool   `json:"reused"`
	// From is "remote" when the file was pulled from a remote cache.
	From string `json:"from,omitempty"`
}

// ConfigFile describes the metadata overlay.
type ConfigFile struct {
	File   string `json:"file"`
	Key    string `json:"key"`
	Reused bool   `json:"reused"`
	// From is "remote" when the file was pulled from a remote cache.
	From string `json:"from,omitempty"`
}

func (r *run) result(groups []*group) *Result {
	res := &Result{
		Source:         r.opts.Source,
		ManifestDigest: r.img.ManifestDigest.String(),
		ConfigDigest:   r.img.ConfigDigest.String(),
		Platform:       r.img.Platform,
		WorkingDir:     r.img.Config.Config.WorkingDir,
		User:           r.img.Config.Config.User,
	}
	for _, g := range groups {
		var ids []string
		for _, i := range g.layers {
			ids = append(ids, r.img.Layers[i].DiffID.String())
		}
		switch g.kind {
		case cache.Flat:
			res.Flat = true
			res.Base = BaseFile{File: r.opts.FlattenTo, DiffIDs: ids, ChainID: g.chain.String(),
				Key: g.key.String(), Reused: g.reused, From: fromOf(g)}
		case cache.Base:
			res.Base = BaseFile{File: "base.sif", Image: r.opts.BaseImage, DiffIDs: ids,
				ChainID: g.chain.String(), Key: g.key.String(), Reused: g.reused,
				From: fromOf(g)}
		case cache.Layer:
			keyedBy := "diff_id"
			if g.byChain {
				keyedBy = "chain_id"
			}
			res.Overlays = append(res.Overlays, OverlayFile{
				File:    fmt.Sprintf("overlays/%02d-%s.sif", len(res.Overlays)+1, short(g.key)),
				DiffIDs: ids, ChainID: g.chain.String(), Key: g.key.String(),
				KeyedBy: keyedBy, Reused: g.reused, From: fromOf(g),
			})
		case cache.Config:
			res.ConfigOverlay = ConfigFile{File: "overlays/config-" + short(g.key) + ".sif",
				Key: g.key.String(), Reused: g.reused, From: fromOf(g)}
		}
	}
	if res.Flat {
		return res
	}
	for _, o := range res.Overlays {
		res.ExecArgs = append(res.ExecArgs, "--overlay", o.File+":ro")
	}
	res.ExecArgs = append(res.ExecArgs, "--overlay", res.ConfigOverlay.File+":ro")
	return res
}

// entryRef is an output file and the cache entry it comes from.
type entryRef struct {
	file string
	kind cache.Kind
	key  v1.Hash
}

// entries lists each output file with the cache entry it comes from.
func (res *Result) entries() ([]entryRef, error) {
	var out []entryRef
	add := func(file string, k cache.Kind, key string) error {
		h, err := v1.NewHash(key)
		if err != nil {
			return fmt.Errorf("read result: %w", err)
		}
		out = append(out, entryRef{file, k, h})
		return nil
	}
	if res.Flat {
		return out, add(res.Base.File, cache.Flat, res.Base.Key)
	}
	if err := add(res.Base.File, cache.Base, res.Base.Key); err != nil {
		return nil, err
	}
	for _, o := range res.Overlays {
		if err := add(o.File, cache.Layer, o.Key); err != nil {
			return nil, err
		}
	}
	if err := add(res.ConfigOverlay.File, cache.Config, res.ConfigOverlay.Key); err != nil {
		return nil, err
	}
	return out, nil
}

// files maps each output file to the path of the cache entry it comes from.
func (res *Result) files(c *cache.Cache) (map[string]string, error) {
	refs, err := res.entries()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range refs {
		out[e.file] = c.Path(e.kind, e.key)
	}
	return out, nil
}

// use marks every entry of the result as used by source (cache.Use) and
// reports whether the cache has them all.
func (res *Result) use(c *cache.Cache, source string) bool {
	refs, err := res.entries()
	if err != nil {
		return false
	}
	for _, e := range refs {
		if ok, err := c.Use(e.kind, e.key, source); err != nil || !ok {
			return false
		}
	}
	return true
}

// recordOutput tells the cache which entries the output just written
// holds, so that cache gc keeps them while the output exists: its files,
// the layers' indexes, the config and the conversion record. A failure
// costs only that protection, so it is logged.
func (r *run) recordOutput(ctx context.Context, res *Result) {
	refs, err := res.entries()
	if err != nil {
		r.opts.Logger.Warn("cannot record the output in the cache", "err", err)
		return
	}
	keys := map[cache.Kind][]string{}
	for _, e := range refs {
		keys[e.kind] = append(keys[e.kind], e.key.String())
	}
	for _, l := range r.img.Layers {
		keys[cache.Index] = append(keys[cache.Index], l.DiffID.String())
	}
	keys[cache.Document] = []string{r.img.ConfigDigest.String()}
	keys[cache.Image] = []string{r.memoKey().String()}
	rec := cache.OutputRecord{Dir: r.opts.OutDir, Source: r.opts.Source, Keys: keys,
		Time: time.Now().UTC()}
	if r.opts.FlattenTo != "" {
		rec.Dir, rec.File = "", r.opts.FlattenTo
	}
	if err := r.opts.Cache.RecordOutput(ctx, rec); err != nil {
		r.opts.Logger.Warn("cannot record the output in the cache", "err", err)
	}
}

func (res *Result) markReused() {
	res.Base.Reused, res.Base.From = true, ""
	for i := range res.Overlays {
		res.Overlays[i].Reused, res.Overlays[i].From = true, ""
	}
	res.ConfigOverlay.Reused, res.ConfigOverlay.From = true, ""
}

// pulled counts the files pulled from a remote cache.
func (res *Result) pulled() int {
	froms := []string{res.Base.From, res.ConfigOverlay.From}
	for _, o := range res.Overlays {
		froms = append(froms, o.From)
	}
	n := 0
	for _, f := range froms {
		if f == FromRemote {
			n++
		}
	}
	return n
}

// fromOf is the From of a group's file.
func fromOf(g *group) string {
	if g.remote {
		return FromRemote
	}
	return ""
}

// Counts returns how many of the output's files this conversion built and
// how many it found already in the cache.
func (res *Result) Counts() (built, reused int) {
	for _, r := range res.flags() {
		if r {
			reused++
		} else {
			built++
		}
	}
	return built, reused
}

func (res *Result) built() int {
	n, _ := res.Counts()
	return n
}

func (res *Result) reused() int {
	_, n := res.Counts()
	return n
}

func (res *Result) flags() []bool {
	if res.Flat {
		return []bool{res.Base.Reused}
	}
	out := []bool{res.Base.Reused, res.ConfigOverlay.Reused}
	for _, o := range res.Overlays {
		out = append(out, o.Reused)
	}
	return out
}

var ownFile = regexp.MustCompile(`^(\d\d+-|config-)[0-9a-f]{12}\.sif$`)

// writeOutput lays out dir: every file is a hard link into the cache where
// the file system allows, else a copy; each appears atomically. Overlay files
// of an earlier conversion into the same directory are removed.
func writeOutput(dir string, c *cache.Cache, res *Result) error {
	files, err := res.files(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "overlays"), 0o755); err != nil {
		return fmt.Errorf("write output %s: %w", dir, err)
	}
	for file, src := range files {
		if err := place(src, filepath.Join(dir, file)); err != nil {
			return fmt.Errorf("write output %s: %w", file, err)
		}
	}
	if err := removeStale(filepath.Join(dir, "overlays"), files); err != nil {
		return err
	}
	removeTemps(dir)

	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("write image.json: %w", err)
	}
	err = cache.WriteFile(filepath.Join(dir, "image.json"), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		return err
	}
	return cache.WriteFile(filepath.Join(dir, "run"), 0o755, func(w io.Writer) error {
		_, err := io.WriteString(w, runScript(res))
		return err
	})
}

// place makes dst a hard link to src, or a copy when linking is not possible,
// replacing whatever dst was.
func place(src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), atomicfile.TempPrefix+filepath.Base(dst))
	os.Remove(tmp)
	if err := os.Link(src, tmp); err == nil {
		if err := os.Rename(tmp, dst); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return cache.WriteFile(dst, 0o444, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func removeStale(dir string, keep map[string]string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("write output %s: %w", dir, err)
	}
	for _, e := range entries {
		rel := "overlays/" + e.Name()
		_, ok := keep[rel]
		if ok || !(ownFile.MatchString(e.Name()) || isTemp(e.Name())) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil &&
			!errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", rel, err)
		}
	}
	return nil
}

// shellQuote quotes s for sh, literally.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// removeTemps removes what an interrupted earlier run left in dir.
func removeTemps(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if isTemp(e.Name()) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func isTemp(name string) bool { return strings.HasPrefix(name, atomicfile.TempPrefix) }

// runScript writes the wrapper that runs the image with its overlay stack.
func runScript(res *Result) string {
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# Runs the image converted by oci2layers with its overlay stack:
#   ./run [exec|run|shell|test] [ARGS...]   (default: run)
# Extra options for the runtime go in OCI2LAYERS_RUN_FLAGS.
set -e
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
if command -v apptainer >/dev/null 2>&1; then
	runtime=apptainer
elif command -v singularity >/dev/null 2>&1; then
	runtime=singularity
else
	echo "run: neither apptainer nor singularity is on PATH" >&2
	exit 127
fi
action=run
case "${1:-}" in
exec|run|shell|test) action=$1; shift ;;
esac
exec "$runtime" "$action" ${OCI2LAYERS_RUN_FLAGS:-} \
`)
	if res.WorkingDir != "" {
		fmt.Fprintf(&b, "\t--pwd %s \\\n", shellQuote(res.WorkingDir))
	}
	for i := 0; i < len(res.ExecArgs); i += 2 {
		fmt.Fprintf(&b, "\t--overlay \"$here/%s\" \\\n", res.ExecArgs[i+1])
	}
	fmt.Fprintf(&b, "\t\"$here/%s\" \"$@\"\n", res.Base.File)
	return b.String()
}
