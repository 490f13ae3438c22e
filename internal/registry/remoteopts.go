package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// parseRemote parses a registry reference (HOST/REPO:TAG or HOST/REPO@DIGEST),
// marking it for plain HTTP when opts asks.
func parseRemote(ref string, opts Options) (name.Reference, error) {
	r, err := name.ParseReference(ref, nameOptions(opts)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadReference, ref, err)
	}
	return r, nil
}

func nameOptions(opts Options) []name.Option {
	if opts.PlainHTTP {
		return []name.Option{name.Insecure}
	}
	return nil
}

// remoteOpts returns the options every request to a registry goes out with:
// the keychain, the transport that bounds waits and manifest sizes, and the
// user agent. opts.MaxDocumentBytes must be set.
func remoteOpts(ctx context.Context, opts Options) []remote.Option {
	keychain := opts.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(keychain),
		remote.WithTransport(&politeTransport{
			next:        newTransport(opts.InsecureSkipTLSVerify),
			attempts:    5,
			maxWait:     60 * time.Second,
			maxManifest: opts.MaxDocumentBytes,
		}),
		remote.WithUserAgent("oci2layers"),
	}
	if opts.AllowForeign {
		ropts = append(ropts, remote.WithNondistributable)
	}
	return ropts
}
