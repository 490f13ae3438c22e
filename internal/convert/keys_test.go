package convert

import (
	"crypto/sha256"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// hashOf is sha256 of s as a v1.Hash, computed without the package's helpers.
func hashOf(s string) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256([]byte(s)))}
}

// TestChainIDs checks chainIDs against the OCI image spec's definition:
// ChainID(L0) = DiffID(L0) and ChainID(L0|...|Ln) =
// Digest(ChainID(L0|...|Ln-1) + " " + DiffID(Ln)), the digest being sha256
// over the string's bytes.
func TestChainIDs(t *testing.T) {
	a, b, c := hashOf("layer a"), hashOf("layer b"), hashOf("layer c")
	ab := hashOf(a.String() + " " + b.String())
	abc := hashOf(ab.String() + " " + c.String())
	tests := []struct {
		name    string
		diffIDs []v1.Hash
		want    []v1.Hash
	}{
		{name: "none", diffIDs: nil, want: []v1.Hash{}},
		{name: "one", diffIDs: []v1.Hash{a}, want: []v1.Hash{a}},
		{name: "two", diffIDs: []v1.Hash{a, b}, want: []v1.Hash{a, ab}},
		{name: "three", diffIDs: []v1.Hash{a, b, c}, want: []v1.Hash{a, ab, abc}},
		{name: "order matters", diffIDs: []v1.Hash{b, a},
			want: []v1.Hash{b, hashOf(b.String() + " " + a.String())}},
		{name: "repeated layer", diffIDs: []v1.Hash{a, a},
			want: []v1.Hash{a, hashOf(a.String() + " " + a.String())}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := chainIDs(tt.diffIDs)
			if len(got) != len(tt.want) {
				t.Fatalf("chainIDs returned %d IDs, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("chainID %d = %s, want %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestVariantKey(t *testing.T) {
	id, other := hashOf("id"), hashOf("other")
	tests := []struct {
		name        string
		compression string
		same        bool // the key is id itself
	}{
		{name: "default", compression: "", same: true},
		{name: "gzip", compression: "gzip", same: true},
		{name: "zstd", compression: "zstd"},
		{name: "lz4", compression: "lz4"},
		{name: "xz", compression: "xz"},
	}
	seen := map[v1.Hash]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := variantKey(id, tt.compression)
			if (got == id) != tt.same {
				t.Errorf("variantKey(id, %q) = %s; equal to id: %v, want %v", tt.compression,
					got, got == id, tt.same)
			}
			if again := variantKey(id, tt.compression); again != got {
				t.Errorf("variantKey is not stable: %s, then %s", got, again)
			}
			if !tt.same {
				if prev, ok := seen[got]; ok {
					t.Errorf("%s gives the same key as %s", tt.compression, prev)
				}
				seen[got] = tt.compression
				if variantKey(other, tt.compression) == got {
					t.Errorf("two ids give the same %s key", tt.compression)
				}
			}
			if got.Algorithm != "sha256" || len(got.Hex) != 64 {
				t.Errorf("key %s is not a sha256 digest", got)
			}
		})
	}
}
