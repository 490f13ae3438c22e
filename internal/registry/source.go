// Package registry opens container images from the places users keep them
// and hands out their layers as verified byte streams.
//
// A source is written with skopeo's transport names:
//
//	docker://HOST/REPO:TAG, docker://HOST/REPO@sha256:...   (a bare REPO:TAG means docker://)
//	oci:DIR[:TAG]                                            OCI image layout
//	oci-archive:FILE[:TAG]                                   tar of an OCI image layout
//	docker-archive:FILE[:REF]                                `docker save` output
//
// Registry access goes through go-containerregistry with the Docker config
// keychain. An index is resolved to one image by platform. Nothing this package
// returns has been trusted without a check: manifests and configs are read
// with size limits, blobs are hashed while they stream (see Blob).
package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultMaxDocumentBytes bounds manifests and configs unless Options says otherwise.
const DefaultMaxDocumentBytes = 8 << 20

// Options controls how a source is opened.
type Options struct {
	// Platform is os/arch[/variant]; empty means linux and this machine's architecture.
	Platform string
	// PlainHTTP talks to the registry over plain HTTP (loopback and test registries).
	PlainHTTP bool
	// InsecureSkipTLSVerify accepts any TLS certificate.
	InsecureSkipTLSVerify bool
	// Keychain supplies credentials; nil means the Docker config keychain.
	Keychain authn.Keychain
	// TempDir receives archives unpacked for reading; empty means os.TempDir().
	TempDir string
	// MaxDocumentBytes bounds a manifest or config; zero means DefaultMaxDocumentBytes.
	MaxDocumentBytes int64
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// AllowForeign accepts foreign (non-distributable) layers, fetched from
	// the URLs their descriptors name.
	AllowForeign bool
	// Documents, when set, keeps configs so that a known image is opened
	// with no blob request at all.
	Documents DocumentStore
}

// DocumentStore keeps verified documents by digest.
type DocumentStore interface {
	// Document returns the bytes stored for digest, if any. They are
	// verified again before use.
	Document(digest v1.Hash) ([]byte, bool)
	// PutDocument stores verified bytes; errors are the store's to report.
	PutDocument(digest v1.Hash, b []byte)
}

// Image is one platform's image, resolved from a source.
type Image struct {
	// Source is the source string as given.
	Source string
	// ManifestDigest names the image manifest (not the index that led to it).
	ManifestDigest v1.Hash
	// ConfigDigest names the image config.
	ConfigDigest v1.Hash
	// RawConfig holds the config bytes, verified against ConfigDigest.
	RawConfig []byte
	// Config is RawConfig parsed.
	Config *v1.ConfigFile
	// Platform is the image's os/arch[/variant].
	Platform string
	// Layers lists the layers bottom to top.
	Layers []Layer

	cleanup func() error
}

// Close releases what opening the image needed, such as an unpacked archive.
func (im *Image) Close() error {
	if im.cleanup == nil {
		return nil
	}
	return im.cleanup()
}

// Open resolves source to one image. It reads the manifest and config but no
// layer. On error nothing is left behind.
func Open(ctx context.Context, source string, opts Options) (*Image, error) {
	want, err := ParsePlatform(opts.Platform)
	if err != nil {
		return nil, err
	}
	if opts.MaxDocumentBytes <= 0 {
		opts.MaxDocumentBytes = DefaultMaxDocumentBytes
	}

	transportName, rest := splitTransport(source)
	var img v1.Image
	var cleanup func() error
	var digest v1.Hash
	switch transportName {
	case "docker":
		img, digest, err = openRemote(ctx, rest, want, opts)
	case "oci":
		img, digest, err = openLayout(rest, want, opts.Platform != "")
	case "oci-archive":
		img, digest, cleanup, err = openOCIArchive(ctx, rest, want, opts)
	case "docker-archive":
		img, digest, err = openDockerArchive(rest)
	default:
		err = fmt.Errorf("%w: unknown transport %q (want docker, oci, oci-archive or docker-archive)",
			ErrBadReference, transportName)
	}
	if err != nil {
		return nil, err
	}

	im, err := describe(source, img, digest, opts)
	if err != nil {
		if cleanup != nil {
			_ = cleanup()
		}
		return nil, err
	}
	im.cleanup = cleanup
	return im, nil
}

// splitTransport separates "transport:rest"; a bare reference means docker.
func splitTransport(source string) (string, string) {
	if rest, ok := strings.CutPrefix(source, "docker://"); ok {
		return "docker", rest
	}
	for _, t := range []string{"oci-archive", "docker-archive", "oci"} {
		if rest, ok := strings.CutPrefix(source, t+":"); ok {
			return t, rest
		}
	}
	if i := strings.Index(source, "://"); i > 0 {
		return source[:i], source[i+3:]
	}
	return "docker", source
}

func openRemote(ctx context.Context, ref string, want v1.Platform,
	opts Options) (v1.Image, v1.Hash, error) {
	r, err := parseRemote(ref, opts)
	if err != nil {
		return nil, v1.Hash{}, err
	}
	ropts := remoteOpts(ctx, opts)
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("get manifest %s: %w", r, classify(err))
	}
	if desc.Size > opts.MaxDocumentBytes {
		return nil, v1.Hash{}, fmt.Errorf("get manifest %s: %w: %d bytes", r, ErrTooLarge, desc.Size)
	}

	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("read index %s: %w", r, classify(err))
		}
		child, err := choosePlatform(idx, want)
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("resolve %s: %w", r, err)
		}
		img, err := idx.Image(child)
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("get manifest %s@%s: %w", r.Context(), child, classify(err))
		}
		return img, child, nil
	}
	if !desc.MediaType.IsImage() {
		return nil, v1.Hash{}, fmt.Errorf("get manifest %s: %w: %s", r, ErrUnsupported, desc.MediaType)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("read manifest %s: %w", r, classify(err))
	}
	return img, desc.Digest, nil
}

// newTransport bounds how long an unreachable registry can hold a conversion.
func newTransport(insecure bool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 15 * time.Second
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 8
	if insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the user asked
	}
	return t
}

// splitPathRef splits "PATH[:REF]" where PATH may itself contain colons: the
// longest prefix that exists on disk is the path.
func splitPathRef(s string) (string, string) {
	if _, err := os.Stat(s); err == nil {
		return s, ""
	}
	for i := strings.LastIndex(s, ":"); i > 0; i = strings.LastIndex(s[:i], ":") {
		if _, err := os.Stat(s[:i]); err == nil {
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func openLayout(spec string, want v1.Platform, explicit bool) (v1.Image, v1.Hash, error) {
	dir, tag := splitPathRef(spec)
	p, err := layout.FromPath(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, v1.Hash{}, fmt.Errorf("open layout %s: %w: %w", dir, ErrNotFound, err)
		}
		return nil, v1.Hash{}, fmt.Errorf("open layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("read layout index %s: %w", dir, err)
	}
	img, digest, err := pickFromLayout(idx, tag, want, explicit)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("open layout %s: %w", spec, err)
	}
	return img, digest, nil
}

// pickFromLayout finds the manifest a layout's index names by tag (or its only
// manifest) and resolves nested indexes by platform.
func pickFromLayout(idx v1.ImageIndex, tag string, want v1.Platform,
	explicit bool) (v1.Image, v1.Hash, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("read index: %w", err)
	}
	var matches []v1.Descriptor
	for _, d := range im.Manifests {
		ref := d.Annotations["org.opencontainers.image.ref.name"]
		if tag == "" || ref == tag || strings.HasSuffix(ref, ":"+tag) {
			matches = append(matches, d)
		}
	}
	if tag == "" && len(matches) > 1 {
		if child, err := choosePlatform(idx, want); err == nil {
			img, err := idx.Image(child)
			return img, child, err
		}
		return nil, v1.Hash{}, fmt.Errorf("%w: the layout holds %d manifests; name one with :TAG",
			ErrBadReference, len(matches))
	}
	if len(matches) == 0 {
		return nil, v1.Hash{}, fmt.Errorf("%w: no manifest tagged %q", ErrNotFound, tag)
	}
	d := matches[0]
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("read index %s: %w", d.Digest, err)
		}
		return pickFromLayout(child, "", want, explicit)
	}
	if !d.MediaType.IsImage() {
		return nil, v1.Hash{}, fmt.Errorf("%w: %s", ErrUnsupported, d.MediaType)
	}
	if explicit && d.Platform != nil && !platformMatches(*d.Platform, want) {
		return nil, v1.Hash{}, fmt.Errorf("%w: the image is %s, not %s", ErrNoPlatform,
			FormatPlatform(*d.Platform), FormatPlatform(want))
	}
	img, err := idx.Image(d.Digest)
	return img, d.Digest, err
}

func openDockerArchive(spec string) (v1.Image, v1.Hash, error) {
	file, ref := splitPathRef(spec)
	if _, err := os.Stat(file); err != nil {
		return nil, v1.Hash{}, fmt.Errorf("open archive %s: %w: %w", file, ErrNotFound, err)
	}
	var tag *name.Tag
	if ref != "" {
		t, err := name.NewTag(ref)
		if err != nil {
			return nil, v1.Hash{}, fmt.Errorf("%w: %q: %w", ErrBadReference, ref, err)
		}
		tag = &t
	}
	img, err := tarball.ImageFromPath(file, tag)
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("read archive %s: %w", file, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, v1.Hash{}, fmt.Errorf("read archive %s: %w", file, err)
	}
	return img, digest, nil
}

// describe reads the config and layer list and checks that they agree.
func describe(source string, img v1.Image, digest v1.Hash, opts Options) (*Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", classify(err))
	}
	if m.Config.Size > opts.MaxDocumentBytes {
		return nil, fmt.Errorf("read config %s: %w: %d bytes", m.Config.Digest, ErrTooLarge,
			m.Config.Size)
	}
	raw, err := readConfig(img, m.Config, opts.Documents)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("parse config %s: %w", m.Config.Digest, err)
	}

	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("read image: config lists %d diffIDs for %d layers",
			len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	im := &Image{
		Source:         source,
		ManifestDigest: digest,
		ConfigDigest:   m.Config.Digest,
		RawConfig:      raw,
		Config:         cfg,
		Platform:       FormatPlatform(v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}),
	}
	for i, d := range m.Layers {
		if err := checkLayerType(d.MediaType, opts.AllowForeign); err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i+1, d.Digest, err)
		}
		blob, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i+1, d.Digest, classify(err))
		}
		im.Layers = append(im.Layers, Layer{
			Digest:    d.Digest,
			DiffID:    cfg.RootFS.DiffIDs[i],
			Size:      d.Size,
			MediaType: d.MediaType,
			blob:      blob,
		})
	}
	return im, nil
}

// readConfig takes the config from the store when it has the right bytes,
// else from the image, and verifies it either way.
func readConfig(img v1.Image, d v1.Descriptor, store DocumentStore) ([]byte, error) {
	if store != nil {
		if b, ok := store.Document(d.Digest); ok && checkBytes(b, d.Digest, d.Size) == nil {
			return b, nil
		}
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", d.Digest, classify(err))
	}
	if err := checkBytes(raw, d.Digest, d.Size); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if store != nil {
		store.PutDocument(d.Digest, raw)
	}
	return raw, nil
}

func checkLayerType(mt types.MediaType, allowForeign bool) error {
	switch mt {
	case types.DockerLayer, types.OCILayer, types.OCILayerZStd,
		types.DockerUncompressedLayer, types.OCIUncompressedLayer,
		types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return nil
	case types.DockerForeignLayer:
		if allowForeign {
			return nil
		}
		return fmt.Errorf("%w: foreign layer %s (its bytes live outside the registry; "+
			"--allow-foreign-layers fetches them)", ErrUnsupported, mt)
	}
	return fmt.Errorf("%w: %s", ErrUnsupported, mt)
}
