package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/oci2layers/oci2layers/internal/convert"
)

const convertUsage = `Usage: oci2layers convert SOURCE -o OUTDIR [OPTIONS]

SOURCE is docker://HOST/REPO:TAG, docker://HOST/REPO@sha256:..., REPO:TAG
(meaning docker://), oci:DIR[:TAG], oci-archive:FILE[:TAG] or
docker-archive:FILE[:REF].

OUTDIR receives base.sif, overlays/NN-KEY.sif (bottom to top),
overlays/config-KEY.sif, image.json and an executable 'run' wrapper:
  OUTDIR/run exec cat /etc/os-release
With --single-file it also gets image.sif, the whole stack in one file.

Options:
`

func runConvertCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var src sourceOptions
	var lay layoutOptions
	var outDir string
	var single bool
	fs := newFlags("convert", convertUsage, stderr)
	src.bind(fs)
	lay.bind(fs)
	fs.StringVar(&outDir, "o", "", "output directory (required)")
	fs.StringVar(&outDir, "output", "", "same as -o")
	fs.BoolVar(&single, "single-file", false,
		"also write OUTDIR/image.sif: base and every overlay as partitions of one SIF")
	pos, err := parseArgs(fs, args, 1, "one SOURCE")
	if err != nil {
		return err
	}
	if outDir == "" {
		return usageError{errors.New("convert: -o OUTDIR is required")}
	}
	if err := errors.Join(src.check(), lay.check()); err != nil {
		return usageError{fmt.Errorf("convert: %w", err)}
	}

	opts, sess, err := src.open(pos[0], stderr, true)
	if err != nil {
		return err
	}
	defer sess.close()
	opts.OutDir = outDir
	lay.apply(&opts)

	res, err := convert.Run(ctx, opts)
	if err != nil {
		return err
	}
	if sess.bars != nil {
		sess.bars.wait()
		sess.bars = nil
	}
	packed := ""
	if single {
		if packed, err = convert.Pack(outDir); err != nil {
			return err
		}
	}
	if src.jsonOut {
		return writeJSON(stdout, res)
	}
	printSummary(stdout, outDir, res)
	if packed != "" {
		fmt.Fprintf(stdout, "one file: %s\n", packed)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printSummary(w io.Writer, out string, res *convert.Result) {
	built, reused := res.Counts()
	fmt.Fprintf(w, "%s: %d files (%d built, %d reused) in %s\n", res.Source,
		built+reused, built, reused, out)
	fmt.Fprintf(w, "run it with: %s exec CMD\n", filepath.Join(out, "run"))
}
