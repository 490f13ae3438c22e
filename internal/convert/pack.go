package convert

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/oci2layers/oci2layers/internal/atomicfile"
	"github.com/oci2layers/oci2layers/internal/sifwriter"
)

// SingleFile is the name Pack gives the one-file SIF in an output directory.
const SingleFile = "image.sif"

// Pack writes dir/image.sif from a conversion's output directory: base.sif's
// system partition, then every overlay's partition bottom to top as embedded
// read-only overlays (group 1, so Apptainer mounts them all), then the image
// config. The squashfs bytes are copied, never squashed again. On error no
// image.sif appears (an earlier one stays).
func Pack(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return "", fmt.Errorf("pack %s: %w", dir, err)
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		return "", fmt.Errorf("pack %s: read image.json: %w", dir, err)
	}

	files := []string{res.Base.File}
	for _, o := range res.Overlays {
		files = append(files, o.File)
	}
	files = append(files, res.ConfigOverlay.File)

	var parts []sifwriter.Part
	for i, f := range files {
		r, _, err := sifwriter.Partition(filepath.Join(dir, f))
		if err != nil {
			return "", fmt.Errorf("pack %s: %w", dir, err)
		}
		defer r.Close()
		kind := sifwriter.Overlay
		if i == 0 {
			kind = sifwriter.Base
		}
		parts = append(parts, sifwriter.Part{Kind: kind, Squashfs: r})
	}
	stack := sifwriter.Stack{Parts: parts}
	cfg, err := sifwriter.JSONObject(filepath.Join(dir, res.ConfigOverlay.File), OCIConfigObject)
	if err != nil {
		return "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if cfg != nil {
		stack.JSON = map[string][]byte{OCIConfigObject: cfg}
	}

	out := filepath.Join(dir, SingleFile)
	f, err := atomicfile.Create(out, 0o644)
	if err != nil {
		return "", fmt.Errorf("pack %s: %w", dir, err)
	}
	defer f.Abort()
	if err := sifwriter.WriteStack(f.File, stack, archOf(res.Platform)); err != nil {
		return "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := f.Commit(); err != nil {
		return "", fmt.Errorf("pack %s: %w", dir, err)
	}
	return out, nil
}

// archOf takes the architecture from os/arch[/variant].
func archOf(platform string) string {
	parts := strings.Split(platform, "/")
	if len(parts) >= 2 && parts[1] != "" {
		return parts[1]
	}
	return "amd64"
}
