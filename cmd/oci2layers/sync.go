package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/mirror"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

const syncUsage = `Usage: oci2layers sync -f SYNC.yaml [OPTIONS]

Converts every image the sync file names, each tag and platform into its
own output directory below the file's output root, --jobs images at a time.
Each tag's digest is asked for with HEAD: a tag whose digest, options and
output files are those of its last sync is left alone and nothing is
fetched for it. Layers are cached and shared as with convert. One image
failing does not stop the others.

SYNC.yaml:
  output: /scratch/sif               root of the outputs (relative: to the file)
  path: "{registry}/{repo}/{tag}"    output directory; also {platform} {os} {arch}
  platforms: [linux/amd64]           default: linux/<this machine>
  plain_http: false                  also insecure_skip_tls_verify,
  base_layers: 1                       allow_foreign_layers, max_overlays,
  compression: gzip                    as convert's options
  images:
    - registry: 127.0.0.1:5000       default docker.io
      repository: library/python
      tags: ["3.12-slim", "3.11-slim"]
      plain_http: true               an image may override any setting but output
    - repository: library/debian
      tag_regex: "^bookworm-[0-9]+$" the registry's tags it matches
    - registry: ghcr.io
      repository: org/app
      newest_semver: 3               the newest 3 X.Y.Z tags, pre-releases excluded
      path: "apps/{repo}/{tag}"

--shard I/N converts shard I of N (1 <= I <= N): the tags whose
fnv64a(REGISTRY/REPOSITORY:TAG) mod N is I-1, all platforms of a tag
together. Every shard lists the same tags, so N runs with I = 1..N convert
each image exactly once, and a tag stays in its shard from run to run while
N stays the same. Shards may share one output root (a Slurm array or a
Kubernetes Indexed Job): each records its outputs in
.oci2layers-sync.I-of-N.json and prunes only those.

The summary goes to stdout (with --json, the report as JSON); --report FILE
writes the JSON report as well. The output root holds .oci2layers-sync.json,
the record of what sync wrote. --prune removes the outputs an earlier sync
created that this run no longer produces (tag gone from the registry, no
longer selected, entry removed from the file), and nothing else.

Exit status: 0 every image converted or unchanged; 1 one or more failed (the
summary says which and why); 2 the sync file or the command line is wrong;
130 interrupted (finished outputs are kept and reported).

Options:
`

// syncOptions are the sync command's flags.
type syncOptions struct {
	file     string
	cacheDir string
	report   string
	jobs     int
	dryRun   bool
	prune    bool
	jsonOut  bool
	quiet    bool
	verbose  bool
	shard    string
	limits   unpack.Limits
	// cacheFrom and cacheTo name remote conversion caches shared by a fleet.
	cacheFrom stringList
	cacheTo   string
}

func (o *syncOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "f", "", "sync file (required)")
	fs.StringVar(&o.file, "file", "", "same as -f")
	fs.StringVar(&o.cacheDir, "cache", "", "cache directory (default $OCI2LAYERS_CACHE, "+
		"$XDG_CACHE_HOME/oci2layers or ~/.cache/oci2layers)")
	fs.StringVar(&o.report, "report", "", "also write the report as JSON to this file")
	fs.IntVar(&o.jobs, "jobs", 0, "images converted at once (default: number of CPUs)")
	bindRemoteCache(fs, &o.cacheFrom, &o.cacheTo)
	fs.BoolVar(&o.dryRun, "dry-run", false,
		"only list tags and ask for digests: show what would be converted and pruned")
	fs.BoolVar(&o.prune, "prune", false,
		"remove the outputs of an earlier sync that this one no longer produces")
	fs.StringVar(&o.shard, "shard", "", "convert only shard `I/N` of the images, I from 1 to N")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON to stdout")
	fs.BoolVar(&o.quiet, "quiet", false, "log only warnings and errors")
	fs.BoolVar(&o.verbose, "verbose", false, "log debug detail")
	bindLimits(fs, &o.limits)
}

func runSyncCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o syncOptions
	fs := newFlags("sync", syncUsage, stderr)
	o.bind(fs)
	if _, err := parseArgs(fs, args, 0, "no arguments besides options"); err != nil {
		return err
	}
	if o.file == "" {
		return usageError{errors.New("sync: -f SYNC.yaml is required")}
	}
	if o.jobs < 0 {
		return usageError{errors.New("sync: --jobs must not be negative")}
	}
	var shard mirror.Shard
	if o.shard != "" {
		var err error
		if shard, err = mirror.ParseShard(o.shard); err != nil {
			return usageError{fmt.Errorf("sync: %w", err)}
		}
	}
	cfg, err := mirror.Load(o.file)
	if err != nil {
		return usageError{err}
	}

	opts := mirror.Options{Jobs: o.jobs, DryRun: o.dryRun, Prune: o.prune, Shard: shard,
		Limits: o.limits, Logger: newLogger(stderr, o.quiet, o.verbose),
		CacheFrom: o.cacheFrom, CacheTo: o.cacheTo}
	if !o.dryRun {
		c, err := openSyncCache(o.cacheDir)
		if err != nil {
			return err
		}
		defer c.Close()
		opts.Cache = c
	}

	rep, runErr := mirror.Run(ctx, cfg, opts)
	if err := writeSyncReport(o, rep, stdout); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr != nil {
		return runErr
	}
	if !rep.OK() {
		return fmt.Errorf("sync: %d of %d images failed", rep.Failed, len(rep.Images))
	}
	return nil
}

func openSyncCache(dir string) (*cache.Cache, error) {
	if dir == "" {
		var err error
		if dir, err = cache.DefaultDir(); err != nil {
			return nil, err
		}
	}
	return cache.Open(dir)
}

// writeSyncReport writes the report to --report and prints it to stdout.
func writeSyncReport(o syncOptions, rep *mirror.Report, stdout io.Writer) error {
	if o.report != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
		err = cache.WriteFile(o.report, 0o644, func(w io.Writer) error {
			_, err := w.Write(append(b, '\n'))
			return err
		})
		if err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	if o.jsonOut {
		return writeJSON(stdout, rep)
	}
	printSyncSummary(stdout, rep)
	return nil
}

// printSyncSummary prints one line per tag and platform, one per pruned
// directory, and the totals.
func printSyncSummary(w io.Writer, rep *mirror.Report) {
	for _, it := range rep.Images {
		what := it.Source
		if it.Platform != "" {
			what += " " + it.Platform
		}
		switch it.Status {
		case mirror.Converted:
			fmt.Fprintf(w, "%-13s %s -> %s (%s: %d built, %d reused, %.1fs)\n", it.Status, what,
				it.Dir, it.Reason, it.Built, it.Reused, it.Seconds)
		case mirror.Pending:
			fmt.Fprintf(w, "%-13s %s -> %s (%s)\n", it.Status, what, it.Dir, it.Reason)
		case mirror.Failed:
			fmt.Fprintf(w, "%-13s %s: %s\n", it.Status, what, oneLine(errors.New(it.Error)))
		default:
			fmt.Fprintf(w, "%-13s %s -> %s\n", it.Status, what, it.Dir)
		}
	}
	pruned := 0
	for _, p := range rep.Pruned {
		status := "pruned"
		switch {
		case rep.DryRun:
			status = "would-prune"
		case p.Removed:
			pruned++
		default:
			status = "kept"
		}
		line := fmt.Sprintf("%-13s %s (%s)", status, p.Dir, p.Source)
		if p.Note != "" && !rep.DryRun {
			line += ": " + p.Note
		}
		fmt.Fprintln(w, line)
	}

	parts := []string{fmt.Sprintf("%d converted", rep.Converted),
		fmt.Sprintf("%d unchanged", rep.Unchanged), fmt.Sprintf("%d failed", rep.Failed)}
	if rep.DryRun {
		parts = []string{fmt.Sprintf("%d to convert", rep.Pending),
			fmt.Sprintf("%d unchanged", rep.Unchanged), fmt.Sprintf("%d failed", rep.Failed),
			fmt.Sprintf("%d to prune", len(rep.Pruned))}
	} else if len(rep.Pruned) > 0 {
		parts = append(parts, fmt.Sprintf("%d pruned", pruned))
	}
	if rep.Interrupted > 0 {
		parts = append(parts, fmt.Sprintf("%d interrupted", rep.Interrupted))
	}
	shard := ""
	if rep.Shard != "" {
		shard = " shard " + rep.Shard + ":"
	}
	fmt.Fprintf(w, "sync:%s %s in %.1fs\n", shard, strings.Join(parts, ", "), rep.Seconds)
}
