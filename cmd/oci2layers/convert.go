package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/convert"
	"github.com/oci2layers/oci2layers/internal/squash"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// convertOptions holds the convert command's flags.
type convertOptions struct {
	source      string
	outDir      string
	cacheDir    string
	platform    string
	plainHTTP   bool
	insecureTLS bool
	foreign     bool
	jobs        int
	jsonOut     bool
	baseLayers  int
	compression string
	quiet       bool
	verbose     bool
	limits      unpack.Limits
}

const convertUsage = `Usage: oci2layers convert SOURCE -o OUTDIR [OPTIONS]

SOURCE is docker://HOST/REPO:TAG, docker://HOST/REPO@sha256:..., REPO:TAG
(meaning docker://), oci:DIR[:TAG], oci-archive:FILE[:TAG] or
docker-archive:FILE[:REF].

OUTDIR receives base.sif, overlays/NN-KEY.sif (bottom to top),
overlays/config-KEY.sif, image.json and an executable 'run' wrapper:
  OUTDIR/run exec cat /etc/os-release

Options:
`

func newConvertFlags(o *convertOptions, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, convertUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.outDir, "o", "", "output directory (required)")
	fs.StringVar(&o.outDir, "output", "", "same as -o")
	fs.StringVar(&o.cacheDir, "cache", "",
		"cache directory (default $OCI2LAYERS_CACHE, $XDG_CACHE_HOME/oci2layers or ~/.cache/oci2layers)")
	fs.StringVar(&o.platform, "platform", "", "os/arch[/variant] to pick from an index (default linux/<this machine>)")
	fs.BoolVar(&o.plainHTTP, "plain-http", false, "talk to the registry over plain HTTP")
	fs.BoolVar(&o.insecureTLS, "insecure-skip-tls-verify", false, "accept any TLS certificate")
	fs.BoolVar(&o.foreign, "allow-foreign-layers", false,
		"fetch foreign (non-distributable) layers from the URLs they name")
	fs.IntVar(&o.jobs, "jobs", 0, "concurrent downloads and builds (default: number of CPUs)")
	fs.BoolVar(&o.jsonOut, "json", false, "print image.json to stdout")
	fs.IntVar(&o.baseLayers, "base-layers", 1, "bottom layers to put together in base.sif")
	fs.StringVar(&o.compression, "compression", "gzip",
		"squashfs compression: "+strings.Join(squash.Compressions, ", "))
	fs.BoolVar(&o.quiet, "quiet", false, "log only warnings and errors")
	fs.BoolVar(&o.verbose, "verbose", false, "log debug detail")
	fs.Int64Var(&o.limits.Bytes, "max-layer-bytes", unpack.DefaultLimits.Bytes,
		"largest uncompressed layer accepted, in bytes")
	fs.IntVar(&o.limits.Entries, "max-layer-entries", unpack.DefaultLimits.Entries,
		"most tar entries accepted in one layer")
	fs.IntVar(&o.limits.Depth, "max-path-depth", unpack.DefaultLimits.Depth,
		"deepest path accepted in a layer, in components")
	return fs
}

func runConvertCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o convertOptions
	fs := newConvertFlags(&o, stderr)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if len(pos) != 1 {
		return usageError{fmt.Errorf("convert: want one SOURCE, got %d arguments", len(pos))}
	}
	o.source = pos[0]
	if o.outDir == "" {
		return usageError{errors.New("convert: -o OUTDIR is required")}
	}
	if !validCompression(o.compression) {
		return usageError{fmt.Errorf("convert: unknown compression %q", o.compression)}
	}
	if o.baseLayers < 1 {
		return usageError{errors.New("convert: --base-layers must be at least 1")}
	}
	return runConvert(ctx, o, stdout, stderr)
}

func validCompression(c string) bool {
	for _, k := range squash.Compressions {
		if c == k {
			return true
		}
	}
	return false
}

// runConvert does the conversion with parsed options.
func runConvert(ctx context.Context, o convertOptions, stdout, stderr io.Writer) error {
	logger := newLogger(stderr, o.quiet, o.verbose)
	dir := o.cacheDir
	if dir == "" {
		var err error
		if dir, err = cache.DefaultDir(); err != nil {
			return err
		}
	}
	c, err := cache.Open(dir)
	if err != nil {
		return err
	}
	defer c.Close()

	opts := convert.Options{
		Source:      o.source,
		OutDir:      o.outDir,
		Cache:       c,
		BaseLayers:  o.baseLayers,
		Compression: o.compression,
		Jobs:        o.jobs,
		Limits:      o.limits,
		Logger:      logger,
	}
	opts.Registry.Platform = o.platform
	opts.Registry.PlainHTTP = o.plainHTTP
	opts.Registry.InsecureSkipTLSVerify = o.insecureTLS
	opts.Registry.AllowForeign = o.foreign

	res, err := convert.Run(ctx, opts)
	if err != nil {
		return err
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printSummary(stdout, o.outDir, res)
	return nil
}

func printSummary(w io.Writer, out string, res *convert.Result) {
	built, reused := 0, 0
	count := func(r bool) {
		if r {
			reused++
		} else {
			built++
		}
	}
	count(res.Base.Reused)
	count(res.ConfigOverlay.Reused)
	for _, ov := range res.Overlays {
		count(ov.Reused)
	}
	fmt.Fprintf(w, "%s: %d files (%d built, %d reused) in %s\n", res.Source,
		built+reused, built, reused, out)
	fmt.Fprintf(w, "run it with: %s exec CMD\n", filepath.Join(out, "run"))
}

func newLogger(w io.Writer, quiet, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	switch {
	case quiet:
		level = slog.LevelWarn
	case verbose:
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
