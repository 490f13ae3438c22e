package registry

import (
	"errors"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    v1.Platform
		wantErr error
	}{
		{name: "empty means linux here", in: "",
			want: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}},
		{name: "os and arch", in: "linux/amd64",
			want: v1.Platform{OS: "linux", Architecture: "amd64"}},
		{name: "with variant", in: "linux/arm/v7",
			want: v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{name: "os only", in: "linux", wantErr: ErrBadReference},
		{name: "empty arch", in: "linux/", wantErr: ErrBadReference},
		{name: "empty os", in: "/amd64", wantErr: ErrBadReference},
		{name: "too many parts", in: "linux/arm/v7/x", wantErr: ErrBadReference},
		{name: "only slashes", in: "//", wantErr: ErrBadReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePlatform(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ParsePlatform(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q does not name the input %q", err, tt.in)
				}
				return
			}
			if !got.Equals(tt.want) {
				t.Errorf("ParsePlatform(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatPlatformRoundTrip(t *testing.T) {
	for _, s := range []string{"linux/amd64", "linux/arm64/v8", "linux/arm/v6", "windows/amd64"} {
		t.Run(s, func(t *testing.T) {
			p, err := ParsePlatform(s)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := FormatPlatform(p), s; got != want {
				t.Errorf("FormatPlatform(ParsePlatform(%q)) = %q, want %q", s, got, want)
			}
		})
	}
}

func TestPlatformMatches(t *testing.T) {
	p := func(os, arch, variant string) v1.Platform {
		return v1.Platform{OS: os, Architecture: arch, Variant: variant}
	}
	tests := []struct {
		name       string
		have, want v1.Platform
		match      bool
	}{
		{name: "same", have: p("linux", "amd64", ""), want: p("linux", "amd64", ""), match: true},
		{name: "other arch", have: p("linux", "arm64", ""), want: p("linux", "amd64", "")},
		{name: "other os", have: p("windows", "amd64", ""), want: p("linux", "amd64", "")},
		{name: "same variant", have: p("linux", "arm", "v7"), want: p("linux", "arm", "v7"),
			match: true},
		{name: "other variant", have: p("linux", "arm", "v6"), want: p("linux", "arm", "v7")},
		{name: "variantless entry", have: p("linux", "arm64", ""), want: p("linux", "arm64", "v8"),
			match: true},
		{name: "variantless request", have: p("linux", "arm64", "v8"),
			want: p("linux", "arm64", ""), match: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := platformMatches(tt.have, tt.want), tt.match; got != want {
				t.Errorf("platformMatches(%s, %s) = %v, want %v",
					FormatPlatform(tt.have), FormatPlatform(tt.want), got, want)
			}
		})
	}
}

// platformIndex builds an index with one random image per platform, in
// order, and returns it with the digest of each entry.
func platformIndex(t *testing.T, platforms ...string) (v1.ImageIndex, map[string]v1.Hash) {
	t.Helper()
	var adds []mutate.IndexAddendum
	digests := map[string]v1.Hash{}
	for _, s := range platforms {
		parts := strings.SplitN(s, "/", 3)
		plat := v1.Platform{OS: parts[0], Architecture: parts[1]}
		if len(parts) == 3 {
			plat.Variant = parts[2]
		}
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[s] = d
		adds = append(adds, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &plat}})
	}
	return mutate.AppendManifests(empty.Index, adds...), digests
}

func TestChoosePlatform(t *testing.T) {
	tests := []struct {
		name      string
		platforms []string
		want      string
		pick      string // key of the entry that must be chosen
		wantErr   error
		listed    string // the platforms the error must list
	}{
		{name: "exact variant after variantless",
			platforms: []string{"linux/arm64", "linux/arm64/v8", "linux/amd64"},
			want:      "linux/arm64/v8", pick: "linux/arm64/v8"},
		{name: "exact variant before variantless",
			platforms: []string{"linux/arm64/v8", "linux/arm64", "linux/amd64"},
			want:      "linux/arm64/v8", pick: "linux/arm64/v8"},
		{name: "variantless entry serves a variant",
			platforms: []string{"linux/amd64", "linux/arm64"},
			want:      "linux/arm64/v8", pick: "linux/arm64"},
		{name: "variantless request prefers variantless entry",
			platforms: []string{"linux/arm/v7", "linux/arm"},
			want:      "linux/arm", pick: "linux/arm"},
		{name: "variant mismatch is skipped",
			platforms: []string{"linux/arm/v6", "linux/arm/v7"},
			want:      "linux/arm/v7", pick: "linux/arm/v7"},
		{name: "attestations are skipped",
			platforms: []string{"unknown/unknown", "linux/amd64"},
			want:      "linux/amd64", pick: "linux/amd64"},
		{name: "no match lists platforms sorted",
			platforms: []string{"linux/s390x", "unknown/unknown", "linux/arm64/v8", "linux/amd64"},
			want:      "linux/riscv64", wantErr: ErrNoPlatform,
			listed: "linux/amd64, linux/arm64/v8, linux/s390x"},
		{name: "only attestations",
			platforms: []string{"unknown/unknown"},
			want:      "linux/amd64", wantErr: ErrNoPlatform},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx, digests := platformIndex(t, tt.platforms...)
			want, err := ParsePlatform(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := choosePlatform(idx, want)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("choosePlatform error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.HasSuffix(err.Error(), "the index has "+tt.listed) {
					t.Errorf("error %q does not end with the list %q", err, tt.listed)
				}
				if strings.Contains(err.Error(), "unknown/unknown") {
					t.Errorf("error %q lists an attestation entry", err)
				}
				return
			}
			if got != digests[tt.pick] {
				t.Errorf("choosePlatform picked %s, want the %s entry %s", got, tt.pick,
					digests[tt.pick])
			}
		})
	}
}

// TestChoosePlatformSkipsNestedIndex checks that an entry which is itself an
// index is not mistaken for an image, even with a matching platform.
func TestChoosePlatformSkipsNestedIndex(t *testing.T) {
	inner, _ := platformIndex(t, "linux/amd64")
	plat := v1.Platform{OS: "linux", Architecture: "amd64"}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: inner, Descriptor: v1.Descriptor{Platform: &plat}})
	if _, err := choosePlatform(idx, plat); !errors.Is(err, ErrNoPlatform) {
		t.Errorf("choosePlatform error = %v, want %v", err, ErrNoPlatform)
	}
}
