package registry

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Errors that callers branch on. Every error this package returns for one of
// these conditions wraps the matching value, so errors.Is works on it.
var (
	// ErrBadReference means the source string could not be parsed.
	ErrBadReference = errors.New("malformed image reference")
	// ErrNotFound means the repository, tag, digest or file does not exist.
	ErrNotFound = errors.New("image not found")
	// ErrUnauthorized means the registry refused the credentials (or their absence).
	ErrUnauthorized = errors.New("authentication refused")
	// ErrUnreachable means the registry could not be reached in time.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrDigestMismatch means a blob's bytes do not match its digest, size or diffID.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrDiffIDMismatch means a layer's blob is intact but its content is not
	// what the config says; it wraps ErrDigestMismatch.
	ErrDiffIDMismatch = fmt.Errorf("layer content %w", ErrDigestMismatch)
	// ErrUnsupported means a media type or compression this tool cannot read.
	ErrUnsupported = errors.New("unsupported media type")
	// ErrNoPlatform means an index has no entry for the requested platform.
	ErrNoPlatform = errors.New("no matching platform")
	// ErrTooLarge means a manifest or config is larger than the configured limit.
	ErrTooLarge = errors.New("document too large")
)

// classify wraps err with the sentinel that describes it, so that the command
// line can map it to an exit code. It keeps the original text.
func classify(err error) error {
	if err == nil {
		return nil
	}

	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized, terr.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		case terr.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode,
				transport.BlobUnknownErrorCode:
				return fmt.Errorf("%w: %w", ErrNotFound, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("%w: %w", ErrUnauthorized, err)
			}
		}
		return err
	}

	var nerr net.Error
	var operr *net.OpError
	if errors.As(err, &operr) || (errors.As(err, &nerr) && nerr.Timeout()) {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if msg := err.Error(); strings.Contains(msg, "error verifying") ||
		strings.Contains(msg, "does not match expected size") {
		return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return err
}
