package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ListTags returns the tags of repo (HOST/REPO, without docker://), every
// page of them, in the registry's order. It goes through the same keychain,
// transport and plain-HTTP handling as Open. A repository the registry does
// not know gives an error wrapping ErrNotFound.
func ListTags(ctx context.Context, repo string, opts Options) ([]string, error) {
	repo = strings.TrimPrefix(repo, "docker://")
	r, err := name.NewRepository(repo, nameOptions(opts)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadReference, repo, err)
	}
	tags, err := remote.List(r, remoteOpts(ctx, withDefaults(opts))...)
	if err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", r, classify(err))
	}
	return tags, nil
}

// HeadDigest returns the digest ref (HOST/REPO:TAG or HOST/REPO@DIGEST,
// without docker://) names, asking with HEAD so that no manifest is
// downloaded. For a multi-platform image that is the index's digest, not a
// platform's manifest. A registry that refuses HEAD, or answers it without
// the digest, is asked with GET instead.
func HeadDigest(ctx context.Context, ref string, opts Options) (v1.Hash, error) {
	ref = strings.TrimPrefix(ref, "docker://")
	r, err := parseRemote(ref, opts)
	if err != nil {
		return v1.Hash{}, err
	}
	opts = withDefaults(opts)
	ropts := remoteOpts(ctx, opts)
	desc, err := remote.Head(r, ropts...)
	if err == nil {
		return desc.Digest, nil
	}
	if !headRefused(err) {
		return v1.Hash{}, fmt.Errorf("head manifest %s: %w", r, classify(err))
	}

	opts.Logger.Debug("HEAD refused; asking with GET", "ref", r, "err", err)
	got, err := remote.Get(r, ropts...)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("get manifest %s: %w", r, classify(err))
	}
	return got.Digest, nil
}

// withDefaults fills in the zero options remoteOpts and the callers rely on.
func withDefaults(opts Options) Options {
	if opts.MaxDocumentBytes <= 0 {
		opts.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return opts
}

// headRefused reports whether a HEAD failed because the registry does not
// serve HEAD properly, rather than because the manifest is missing, access
// was refused or the registry could not be reached.
func headRefused(err error) bool {
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode == http.StatusMethodNotAllowed ||
			terr.StatusCode == http.StatusNotImplemented
	}
	return strings.Contains(err.Error(), "response did not include")
}
