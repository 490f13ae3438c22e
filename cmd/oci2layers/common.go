package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/convert"
	"github.com/oci2layers/oci2layers/internal/squash"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// sourceOptions are the flags every command that reads an image shares.
type sourceOptions struct {
	cacheDir    string
	platform    string
	plainHTTP   bool
	insecureTLS bool
	foreign     bool
	jobs        int
	compression string
	quiet       bool
	verbose     bool
	jsonOut     bool
	limits      unpack.Limits
	cacheFrom   stringList
	cacheTo     string
}

// stringList is a flag that may be given several times.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func (o *sourceOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.cacheDir, "cache", "", "cache directory (default $OCI2LAYERS_CACHE, "+
		"$XDG_CACHE_HOME/oci2layers or ~/.cache/oci2layers)")
	fs.StringVar(&o.platform, "platform", "",
		"os/arch[/variant] to pick from an index (default linux/<this machine>)")
	fs.BoolVar(&o.plainHTTP, "plain-http", false, "talk to the registry over plain HTTP")
	fs.BoolVar(&o.insecureTLS, "insecure-skip-tls-verify", false, "accept any TLS certificate")
	fs.BoolVar(&o.foreign, "allow-foreign-layers", false,
		"fetch foreign (non-distributable) layers from the URLs they name")
	fs.IntVar(&o.jobs, "jobs", 0, "concurrent downloads and builds (default: number of CPUs)")
	fs.StringVar(&o.compression, "compression", "gzip",
		"squashfs compression: "+strings.Join(squash.Compressions, ", "))
	fs.BoolVar(&o.quiet, "quiet", false, "log only warnings and errors")
	fs.BoolVar(&o.verbose, "verbose", false, "log debug detail")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON to stdout")
	bindRemoteCache(fs, &o.cacheFrom, &o.cacheTo)
	bindLimits(fs, &o.limits)
}

// bindRemoteCache binds the flags naming remote conversion caches.
func bindRemoteCache(fs *flag.FlagSet, from *stringList, to *string) {
	fs.Var(from, "cache-from",
		"remote cache REGISTRY/REPO to pull converted entries from before building (repeatable)")
	fs.StringVar(to, "cache-to", "",
		"remote cache REGISTRY/REPO to push every converted entry to")
}

// bindLimits binds the flags that bound what one layer may contain.
func bindLimits(fs *flag.FlagSet, l *unpack.Limits) {
	fs.Int64Var(&l.Bytes, "max-layer-bytes", unpack.DefaultLimits.Bytes,
		"largest uncompressed layer accepted, in bytes")
	fs.IntVar(&l.Entries, "max-layer-entries", unpack.DefaultLimits.Entries,
		"most tar entries accepted in one layer")
	fs.IntVar(&l.Depth, "max-path-depth", unpack.DefaultLimits.Depth,
		"deepest path accepted in a layer, in components")
}

func (o *sourceOptions) check() error {
	for _, c := range squash.Compressions {
		if o.compression == c {
			return nil
		}
	}
	return fmt.Errorf("unknown compression %q", o.compression)
}

// session is what a command opened: the cache, and the progress bars if any.
type session struct {
	cache *cache.Cache
	bars  *bars
}

// close stops the bars and closes the cache.
func (s *session) close() {
	if s.bars != nil {
		s.bars.wait()
	}
	s.cache.Close()
}

// open opens the cache and fills the conversion options these flags set. On
// a terminal, unless --quiet or --json, progress is drawn as bars and the
// log shows only warnings. The caller closes the session.
func (o *sourceOptions) open(source string, stderr io.Writer, progress bool) (convert.Options,
	*session, error) {
	dir := o.cacheDir
	if dir == "" {
		var err error
		if dir, err = cache.DefaultDir(); err != nil {
			return convert.Options{}, nil, err
		}
	}
	c, err := cache.Open(dir)
	if err != nil {
		return convert.Options{}, nil, err
	}
	sess := &session{cache: c}
	quiet := o.quiet
	if progress && !o.quiet && !o.jsonOut && !o.verbose {
		if sess.bars = newBars(stderr); sess.bars != nil {
			quiet = true
		}
	}
	opts := convert.Options{
		Source:      source,
		Cache:       c,
		Compression: o.compression,
		Jobs:        o.jobs,
		Limits:      o.limits,
		Logger:      newLogger(stderr, quiet, o.verbose),
		CacheFrom:   o.cacheFrom,
		CacheTo:     o.cacheTo,
	}
	if sess.bars != nil {
		opts.Progress = sess.bars.update
	}
	opts.Registry.Platform = o.platform
	opts.Registry.PlainHTTP = o.plainHTTP
	opts.Registry.InsecureSkipTLSVerify = o.insecureTLS
	opts.Registry.AllowForeign = o.foreign
	return opts, sess, nil
}

// layoutOptions are the flags that decide how layers become files.
type layoutOptions struct {
	baseLayers  int
	baseImage   string
	maxOverlays int
}

func (o *layoutOptions) bind(fs *flag.FlagSet) {
	fs.IntVar(&o.baseLayers, "base-layers", 1, "bottom layers to put together in base.sif")
	fs.StringVar(&o.baseImage, "base", "",
		"image whose layers (the bottom layers of SOURCE) make base.sif, shared by its family")
	fs.IntVar(&o.maxOverlays, "max-overlays", convert.DefaultMaxOverlays,
		"most overlay files, the config overlay included; adjacent layers are merged beyond")
}

func (o *layoutOptions) check() error {
	if o.baseLayers < 1 {
		return errors.New("--base-layers must be at least 1")
	}
	if o.maxOverlays < 2 {
		return errors.New("--max-overlays must be at least 2")
	}
	return nil
}

func (o *layoutOptions) apply(opts *convert.Options) {
	opts.BaseLayers = o.baseLayers
	opts.BaseImage = o.baseImage
	opts.MaxOverlays = o.maxOverlays
}

// newFlags makes a flag set whose usage text starts with usage.
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs parses flags around n positional arguments.
func parseArgs(fs *flag.FlagSet, args []string, n int, what string) ([]string, error) {
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if len(pos) != n {
		return nil, usageError{fmt.Errorf("%s: want %s, got %d arguments", fs.Name(), what,
			len(pos))}
	}
	return pos, nil
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
