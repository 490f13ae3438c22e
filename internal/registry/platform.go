package registry

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ParsePlatform reads os/arch[/variant]. Empty means linux on this machine's
// architecture.
func ParsePlatform(s string) (v1.Platform, error) {
	if s == "" {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, fmt.Errorf("%w: platform %q: want os/arch[/variant]",
			ErrBadReference, s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// FormatPlatform writes os/arch[/variant].
func FormatPlatform(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// platformMatches reports whether have satisfies want. A missing variant on
// either side matches any variant.
func platformMatches(have, want v1.Platform) bool {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	if want.Variant == "" || have.Variant == "" {
		return true
	}
	return have.Variant == want.Variant
}

// choosePlatform picks the index entry for want, preferring an exact variant
// match, and lists what the index has when nothing fits.
func choosePlatform(idx v1.ImageIndex, want v1.Platform) (v1.Hash, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("read index: %w", classify(err))
	}

	var best *v1.Descriptor
	var have []string
	for i := range im.Manifests {
		d := &im.Manifests[i]
		if d.Platform == nil || !d.MediaType.IsImage() {
			continue
		}
		if d.Platform.OS == "unknown" {
			continue // attestation manifests
		}
		have = append(have, FormatPlatform(*d.Platform))
		if !platformMatches(*d.Platform, want) {
			continue
		}
		if best == nil || (d.Platform.Variant == want.Variant && best.Platform.Variant != want.Variant) {
			best = d
		}
	}
	if best == nil {
		sort.Strings(have)
		return v1.Hash{}, fmt.Errorf("%w for %s; the index has %s", ErrNoPlatform,
			FormatPlatform(want), strings.Join(have, ", "))
	}
	return best.Digest, nil
}
