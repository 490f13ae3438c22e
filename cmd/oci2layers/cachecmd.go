package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/registry"
)

const cacheUsage = `Usage: oci2layers cache COMMAND [OPTIONS]

Commands:
  ls                      list the entries: kind, key, size, last use, the
                          outputs that hold them and the images that used them
  du                      total the entries' sizes per kind and overall
  verify [--repair]       re-hash every entry against its recorded digest;
                          --repair removes what is damaged or unverifiable and
                          what interrupted runs left
  gc [--older-than AGE]   remove the entries no output holds that were not
                          used for AGE (default 720h; Go durations, plus Nd
                          for days, e.g. 30d or 1d12h); never one a running
                          conversion uses; --dry-run only reports
  rm [KIND/]KEY           remove the entries of a key or of a unique prefix of
                          one (any kind, or only KIND: layers, bases, ...),
                          unless a running conversion uses them

Options of every command:
  --cache DIR   the cache (default $OCI2LAYERS_CACHE, $XDG_CACHE_HOME/oci2layers
                or ~/.cache/oci2layers); it must exist
  --json        print the result as JSON to stdout

Exit codes:
  0    success
  1    other failure; rm of an entry a running conversion uses
  2    usage error; a key prefix that matches several keys
  3    rm: no entry has the key
  6    verify found damaged or unverifiable entries and did not remove them
  130  interrupted
`

// runCacheCommand dispatches "oci2layers cache SUBCOMMAND".
func runCacheCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, cacheUsage)
		return usageError{errors.New("cache: missing command")}
	}
	switch args[0] {
	case "ls", "list":
		return runCacheLsCommand(ctx, args[1:], stdout, stderr)
	case "du":
		return runCacheDuCommand(ctx, args[1:], stdout, stderr)
	case "verify":
		return runCacheVerifyCommand(ctx, args[1:], stdout, stderr)
	case "gc":
		return runCacheGCCommand(ctx, args[1:], stdout, stderr)
	case "rm":
		return runCacheRmCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, cacheUsage)
		return nil
	}
	return usageError{fmt.Errorf("cache: unknown command %q", args[0])}
}

// cacheOptions are the flags every cache command takes.
type cacheOptions struct {
	dir     string
	jsonOut bool
}

func (o *cacheOptions) bind(fs *flag.FlagSet) {
	fs.StringVar(&o.dir, "cache", "", "cache directory (default $OCI2LAYERS_CACHE, "+
		"$XDG_CACHE_HOME/oci2layers or ~/.cache/oci2layers)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as JSON to stdout")
}

// open opens the cache, which must exist: a mistyped --cache makes no new
// one. The caller closes it.
func (o *cacheOptions) open() (*cache.Cache, error) {
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = cache.DefaultDir(); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	return cache.Open(dir)
}

// cacheFlags makes the flag set of cache command name.
func cacheFlags(name, synopsis string, o *cacheOptions, stderr io.Writer) *flag.FlagSet {
	fs := newFlags("cache "+name, "Usage: oci2layers cache "+synopsis+"\n\nOptions:\n", stderr)
	o.bind(fs)
	return fs
}

func runCacheLsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cacheOptions
	fs := cacheFlags("ls", "ls [--cache DIR] [--json]", &o, stderr)
	if _, err := parseArgs(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	return runCacheLs(ctx, o, stdout)
}

// runCacheLs lists the entries.
func runCacheLs(ctx context.Context, o cacheOptions, stdout io.Writer) error {
	c, err := o.open()
	if err != nil {
		return err
	}
	defer c.Close()
	list, err := c.List(ctx)
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tKEY\tSIZE\tLAST USED\tOUTPUTS\tIMAGES")
	var total int64
	for _, e := range list {
		images := strings.Join(e.Images, ", ")
		switch {
		case e.InUse:
			images += " (in use)"
		case !e.Meta:
			images += " (no metadata)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.Kind, shortDigest(e.Key), humanBytes(e.Size),
			e.LastUsed.Local().Format("2006-01-02 15:04"), len(e.Outputs), images)
		total += e.Size
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d entries, %s\n", len(list), humanBytes(total))
	return nil
}

func runCacheDuCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cacheOptions
	fs := cacheFlags("du", "du [--cache DIR] [--json]", &o, stderr)
	if _, err := parseArgs(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	return runCacheDu(ctx, o, stdout)
}

// runCacheDu totals the entries per kind.
func runCacheDu(ctx context.Context, o cacheOptions, stdout io.Writer) error {
	c, err := o.open()
	if err != nil {
		return err
	}
	defer c.Close()
	u, err := c.DiskUsage(ctx)
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, u)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "KIND\tENTRIES\tBYTES\tSIZE\t")
	for _, k := range cache.AllKinds {
		ku := u.Kinds[k]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", k, ku.Entries, ku.Bytes, humanBytes(ku.Bytes))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%s\t\n", u.Entries, u.Bytes, humanBytes(u.Bytes))
	tw.Flush()
	fmt.Fprintf(stdout, "besides: %s of metadata, last-use, output and lock files; "+
		"%s of work in progress\n", humanBytes(u.MetadataBytes), humanBytes(u.TempBytes))
	return nil
}

func runCacheVerifyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cacheOptions
	var repair bool
	fs := cacheFlags("verify", "verify [--repair] [--cache DIR] [--json]", &o, stderr)
	fs.BoolVar(&repair, "repair", false,
		"remove damaged and unverifiable entries and leftover files")
	if _, err := parseArgs(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	return runCacheVerify(ctx, o, repair, stdout)
}

// runCacheVerify checks every entry; a damaged or unverifiable entry left
// in the cache makes it fail with exitVerify.
func runCacheVerify(ctx context.Context, o cacheOptions, repair bool, stdout io.Writer) error {
	c, err := o.open()
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.Verify(ctx, repair)
	if err != nil {
		return err
	}
	if o.jsonOut {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		printVerify(stdout, rep)
	}
	if !rep.Failed() {
		return nil
	}
	left := 0
	for _, p := range rep.Problems {
		if (p.Class == cache.Damaged || p.Class == cache.Unverifiable) && !p.Removed {
			left++
		}
	}
	noun := "entries"
	if left == 1 {
		noun = "entry"
	}
	return classified{fmt.Errorf("verify cache %s: found %d damaged or unverifiable %s "+
		"(cache verify --repair removes them)", c.Root(), left, noun), registry.ErrDigestMismatch}
}

func printVerify(w io.Writer, rep *cache.VerifyReport) {
	count := map[cache.ProblemClass]int{}
	removed := 0
	for _, p := range rep.Problems {
		count[p.Class]++
		what := p.Path
		if p.Key != "" {
			what = string(p.Kind) + " " + p.Key
		}
		note := ""
		if p.Removed {
			note = " (removed)"
			removed++
		}
		fmt.Fprintf(w, "%-12s %s: %s%s\n", p.Class, what, p.Detail, note)
	}
	fmt.Fprintf(w, "checked %d entries (%s): %d damaged, %d unverifiable, %d leftover, "+
		"%d unexpected files; removed %d\n", rep.Entries, humanBytes(rep.Bytes),
		count[cache.Damaged], count[cache.Unverifiable], count[cache.Leftover],
		count[cache.Unexpected], removed)
}

// ageFlag is a duration flag that also takes days: "30d", "1d12h".
type ageFlag time.Duration

func (a *ageFlag) String() string { return time.Duration(*a).String() }

func (a *ageFlag) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	*a = ageFlag(d)
	return nil
}

// parseAge parses a Go duration with an optional leading count of days.
func parseAge(s string) (time.Duration, error) {
	var days time.Duration
	if n, rest, ok := strings.Cut(s, "d"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		v, err := strconv.ParseInt(n, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("bad age %q: %w", s, err)
		}
		days, s = time.Duration(v)*24*time.Hour, rest
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad age %q: want a duration such as 720h, 30d or 1d12h", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("bad age %q: negative", s)
	}
	return days + d, nil
}

func runCacheGCCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cacheOptions
	age := ageFlag(720 * time.Hour)
	var dryRun bool
	fs := cacheFlags("gc", "gc [--older-than AGE] [--dry-run] [--cache DIR] [--json]", &o,
		stderr)
	fs.Var(&age, "older-than", "remove entries not used for this long (Go duration, or Nd days)")
	fs.BoolVar(&dryRun, "dry-run", false, "report what would be removed; remove nothing")
	if _, err := parseArgs(fs, args, 0, "no arguments"); err != nil {
		return err
	}
	return runCacheGC(ctx, o, time.Duration(age), dryRun, stdout)
}

// runCacheGC removes unreferenced entries unused for olderThan.
func runCacheGC(ctx context.Context, o cacheOptions, olderThan time.Duration, dryRun bool,
	stdout io.Writer) error {
	c, err := o.open()
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := c.GC(ctx, olderThan, dryRun)
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, rep)
	}
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	for _, e := range rep.Removed {
		fmt.Fprintf(stdout, "%s %s %s (%s, last used %s)\n", verb, e.Kind, e.Key,
			humanBytes(e.Size), e.LastUsed.Local().Format("2006-01-02 15:04"))
	}
	for _, out := range rep.StaleOutputs {
		fmt.Fprintf(stdout, "%s the record of %s (gone or converted again)\n", verb, out)
	}
	fmt.Fprintf(stdout, "%s %d entries (%s) and %d leftover files; kept %d held by outputs, "+
		"%d used within %s, %d in use\n", verb, len(rep.Removed), humanBytes(rep.Freed),
		rep.Leftovers, rep.Referenced, rep.Recent, olderThan, rep.InUse)
	return nil
}

func runCacheRmCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o cacheOptions
	fs := cacheFlags("rm", "rm [--cache DIR] [--json] [KIND/]KEY...", &o, stderr)
	keys, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if len(keys) == 0 {
		return usageError{errors.New("cache rm: want at least one KEY")}
	}
	return runCacheRm(ctx, o, keys, stdout)
}

// runCacheRm removes the entries of each key in turn, stopping at the first
// that fails.
func runCacheRm(ctx context.Context, o cacheOptions, keys []string, stdout io.Writer) error {
	c, err := o.open()
	if err != nil {
		return err
	}
	defer c.Close()
	var removed []cache.EntryInfo
	for _, k := range keys {
		infos, err := c.Remove(ctx, k)
		removed = append(removed, infos...)
		if err != nil {
			if o.jsonOut {
				writeJSON(stdout, removed)
			}
			return rmError(err)
		}
		if !o.jsonOut {
			for _, e := range infos {
				fmt.Fprintf(stdout, "removed %s %s (%s)\n", e.Kind, e.Key, humanBytes(e.Size))
			}
		}
	}
	if o.jsonOut {
		return writeJSON(stdout, removed)
	}
	return nil
}

// rmError gives Remove's errors their exit codes.
func rmError(err error) error {
	switch {
	case errors.Is(err, cache.ErrBadKey), errors.Is(err, cache.ErrAmbiguous):
		return usageError{err}
	case errors.Is(err, cache.ErrNoEntry):
		return classified{err, registry.ErrNotFound}
	}
	return err
}

// classified gives err the exit code of another error, as, keeping its
// text.
type classified struct {
	error
	as error
}

func (c classified) Is(target error) bool { return target == c.as }

func (c classified) Unwrap() error { return c.error }
