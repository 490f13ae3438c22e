package registry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ParseRepository parses a repository name, HOST/REPO, marking it for plain
// HTTP when opts asks.
func ParseRepository(repo string, opts Options) (name.Repository, error) {
	r, err := name.NewRepository(repo, nameOptions(opts)...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("%w: %q: %w", ErrBadReference, repo, err)
	}
	return r, nil
}

// RemoteOptions returns the options every request to a registry goes out
// with, as for a source opened with opts: the Docker config keychain (or
// opts.Keychain), the transport that retries politely and bounds manifest
// sizes, TLS verification as opts says, and the user agent.
func RemoteOptions(ctx context.Context, opts Options) []remote.Option {
	return remoteOpts(ctx, withDefaults(opts))
}
