package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/oci2layers/oci2layers/internal/convert"
)

const flattenUsage = `Usage: oci2layers flatten SOURCE -o FILE.sif [OPTIONS]

Writes the classic single-partition SIF that 'apptainer build' makes: every
layer applied into one squashfs, with Apptainer's runtime files and the
image's metadata. It is cached like everything else.

Options:
`

func runFlattenCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var src sourceOptions
	var out string
	fs := newFlags("flatten", flattenUsage, stderr)
	src.bind(fs)
	fs.StringVar(&out, "o", "", "SIF file to write (required)")
	fs.StringVar(&out, "output", "", "same as -o")
	pos, err := parseArgs(fs, args, 1, "one SOURCE")
	if err != nil {
		return err
	}
	if out == "" {
		return usageError{errors.New("flatten: -o FILE is required")}
	}
	if err := src.check(); err != nil {
		return usageError{fmt.Errorf("flatten: %w", err)}
	}

	opts, sess, err := src.open(pos[0], stderr, true)
	if err != nil {
		return err
	}
	defer sess.close()
	opts.FlattenTo = out
	res, err := convert.Run(ctx, opts)
	if err != nil {
		return err
	}
	if src.jsonOut {
		return writeJSON(stdout, res)
	}
	state := "built"
	if res.Base.Reused {
		state = "reused"
	}
	fmt.Fprintf(stdout, "%s: %s (%s)\n", res.Source, out, state)
	return nil
}

const packUsage = `Usage: oci2layers pack OUTDIR

Writes OUTDIR/image.sif from a conversion's output: base.sif's partition as
the system partition and every overlay as an embedded read-only overlay
partition, bottom to top, by copying their bytes.
`

func runPackCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("pack", packUsage, stderr)
	pos, err := parseArgs(fs, args, 1, "one OUTDIR")
	if err != nil {
		return err
	}
	out, err := convert.Pack(pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, out)
	return nil
}

const inspectUsage = `Usage: oci2layers inspect SOURCE [OPTIONS]

Lists the image's layers and the files a conversion would make, with their
cache keys and whether the cache has them, and what a conversion would fetch.
Nothing is fetched or built.

Options:
`

func runInspectCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var src sourceOptions
	var lay layoutOptions
	fs := newFlags("inspect", inspectUsage, stderr)
	src.bind(fs)
	lay.bind(fs)
	pos, err := parseArgs(fs, args, 1, "one SOURCE")
	if err != nil {
		return err
	}
	if err := errors.Join(src.check(), lay.check()); err != nil {
		return usageError{fmt.Errorf("inspect: %w", err)}
	}
	opts, sess, err := src.open(pos[0], stderr, false)
	if err != nil {
		return err
	}
	defer sess.close()
	lay.apply(&opts)

	rep, err := convert.Inspect(ctx, opts)
	if err != nil {
		return err
	}
	if src.jsonOut {
		return writeJSON(stdout, rep)
	}
	printReport(stdout, rep)
	return nil
}

func printReport(w io.Writer, rep *convert.Report) {
	fmt.Fprintf(w, "%s\n  manifest %s\n  platform %s\n\n", rep.Source, rep.ManifestDigest,
		rep.Platform)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tSIZE\tDIFF ID\tSEEN\tFETCH")
	for i, l := range rep.Layers {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, humanBytes(l.Size), shortDigest(l.DiffID),
			yesNo(l.Indexed), yesNo(l.Fetch))
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tLAYERS\tKEY\tKEYED BY\tCACHED")
	for _, f := range rep.Files {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", f.File, len(f.DiffIDs), shortDigest(f.Key),
			f.KeyedBy, yesNo(f.Cached))
	}
	tw.Flush()

	build := 0
	for _, f := range rep.Files {
		if !f.Cached {
			build++
		}
	}
	fmt.Fprintf(w, "\nwould fetch %d blobs (%s) and build %d of %d files\n", rep.FetchBlobs,
		humanBytes(rep.FetchBytes), build, len(rep.Files))
	if !rep.Exact {
		fmt.Fprintln(w, "keys above a layer never seen are predicted from diffIDs")
	}
}

func shortDigest(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
