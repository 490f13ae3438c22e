// Command oci2layers converts OCI and Docker images into Apptainer SIF files
// layer by layer: a base SIF plus one read-only overlay SIF per layer, with
// every converted layer cached and reused across images, tags and runs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/oci2layers/oci2layers/internal/convert"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/squash"
	"github.com/oci2layers/oci2layers/internal/unpack"
)

// Exit codes, documented in the help text.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitAuth        = 4
	exitUnreachable = 5
	exitVerify      = 6
	exitBadImage    = 7
	exitMissingTool = 8
	exitInterrupted = 130
)

const usageText = `Usage: oci2layers COMMAND [OPTIONS]

Commands:
  convert SOURCE -o OUTDIR   convert an image into base.sif + per-layer overlay SIFs
  flatten SOURCE -o FILE     write one classic single-partition SIF of the image
  pack OUTDIR                write OUTDIR/image.sif: the converted stack in one file
  inspect SOURCE             show the layers, their cache keys and what a conversion would do
  cache ls|du|verify|gc|rm   list, total, check and clean the cache ('cache help')
  sync -f SYNC.yaml          convert every image a sync file names; unchanged tags cost a HEAD
  version                    print the version

Run 'oci2layers COMMAND -h' for a command's options.

Exit codes:
  0 success            4 authentication refused   7 unsupported or invalid image
  1 other failure      5 registry unreachable     8 a required tool is missing
  2 usage error        6 verification failed      130 interrupted
  3 image not found
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "convert":
		err = runConvertCommand(ctx, args[1:], stdout, stderr)
	case "flatten":
		err = runFlattenCommand(ctx, args[1:], stdout, stderr)
	case "pack":
		err = runPackCommand(args[1:], stdout, stderr)
	case "inspect":
		err = runInspectCommand(ctx, args[1:], stdout, stderr)
	case "cache":
		err = runCacheCommand(ctx, args[1:], stdout, stderr)
	case "sync":
		err = runSyncCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "oci2layers", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
	default:
		err = usageError{fmt.Errorf("unknown command %q", args[0])}
	}
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "oci2layers: %s\n", oneLine(err))
	return exitCode(ctx, err)
}

// usageError marks a command line the user must correct.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// exitCode maps an error to the documented exit codes.
func exitCode(ctx context.Context, err error) int {
	var ue usageError
	switch {
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &ue), errors.Is(err, registry.ErrBadReference):
		return exitUsage
	case errors.Is(err, registry.ErrNotFound):
		return exitNotFound
	case errors.Is(err, registry.ErrUnauthorized):
		return exitAuth
	case errors.Is(err, registry.ErrUnreachable):
		return exitUnreachable
	case errors.Is(err, registry.ErrDigestMismatch):
		return exitVerify
	case errors.Is(err, registry.ErrUnsupported), errors.Is(err, registry.ErrNoPlatform),
		errors.Is(err, registry.ErrTooLarge), errors.Is(err, unpack.ErrEscape),
		errors.Is(err, unpack.ErrInvalid), errors.Is(err, unpack.ErrLimit),
		errors.Is(err, convert.ErrBaseMismatch):
		return exitBadImage
	case errors.Is(err, squash.ErrMissing):
		return exitMissingTool
	}
	return exitFailure
}

// oneLine keeps an error message on one line, as scripts expect.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// parseInterspersed parses flags that may come before or after positional
// arguments ("convert SOURCE -o OUT" as well as "convert -o OUT SOURCE").
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}
