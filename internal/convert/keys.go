package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// chainIDs returns the OCI chainID of every prefix of diffIDs:
// ChainID(L0) = DiffID(L0), ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
func chainIDs(diffIDs []v1.Hash) []v1.Hash {
	out := make([]v1.Hash, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digestOf(out[i-1].String() + " " + d.String())
	}
	return out
}

// variantKey names an entry built from id with non-default options. With
// the defaults the key is id itself, so a layer's key reads as its diffID.
func variantKey(id v1.Hash, compression string) v1.Hash {
	if compression == "" || compression == "gzip" {
		return id
	}
	return digestOf(id.String() + "+comp=" + compression)
}

func digestOf(parts ...string) v1.Hash {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// short is the first 12 hex digits of a key, as used in file names.
func short(h v1.Hash) string { return h.Hex[:12] }
