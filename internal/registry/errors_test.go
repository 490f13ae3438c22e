package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestClassify(t *testing.T) {
	status := func(code int, codes ...transport.ErrorCode) error {
		e := &transport.Error{StatusCode: code}
		for _, c := range codes {
			e.Errors = append(e.Errors, transport.Diagnostic{Code: c, Message: "m"})
		}
		return e
	}
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	sentinels := []error{ErrBadReference, ErrNotFound, ErrUnauthorized, ErrUnreachable,
		ErrDigestMismatch, ErrUnsupported, ErrNoPlatform, ErrTooLarge}

	tests := []struct {
		name string
		err  error
		want error // nil: no sentinel
	}{
		{name: "401", err: status(http.StatusUnauthorized), want: ErrUnauthorized},
		{name: "403", err: status(http.StatusForbidden), want: ErrUnauthorized},
		{name: "404", err: status(http.StatusNotFound), want: ErrNotFound},
		{name: "manifest unknown code", err: status(http.StatusBadRequest,
			transport.ManifestUnknownErrorCode), want: ErrNotFound},
		{name: "name unknown code", err: status(http.StatusBadRequest,
			transport.NameUnknownErrorCode), want: ErrNotFound},
		{name: "blob unknown code", err: status(http.StatusBadRequest,
			transport.BlobUnknownErrorCode), want: ErrNotFound},
		{name: "unauthorized code", err: status(http.StatusBadRequest,
			transport.UnauthorizedErrorCode), want: ErrUnauthorized},
		{name: "denied code", err: status(http.StatusBadRequest, transport.DeniedErrorCode),
			want: ErrUnauthorized},
		{name: "first known code wins", err: status(http.StatusBadRequest,
			transport.TooManyRequestsErrorCode, transport.DeniedErrorCode), want: ErrUnauthorized},
		{name: "500", err: status(http.StatusInternalServerError)},
		{name: "wrapped 404", err: fmt.Errorf("get: %w", status(http.StatusNotFound)),
			want: ErrNotFound},
		{name: "op error", err: opErr, want: ErrUnreachable},
		{name: "wrapped op error", err: fmt.Errorf("dial: %w", opErr), want: ErrUnreachable},
		{name: "deadline", err: context.DeadlineExceeded, want: ErrUnreachable},
		{name: "verification", err: errors.New("error verifying sha256 checksum"),
			want: ErrDigestMismatch},
		{name: "size", err: errors.New("blob does not match expected size"),
			want: ErrDigestMismatch},
		{name: "other", err: errors.New("something else")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.err)
			if !errors.Is(got, tt.err) {
				t.Errorf("classify(%v) = %v, which does not wrap the original", tt.err, got)
			}
			if !strings.Contains(got.Error(), tt.err.Error()) {
				t.Errorf("classify(%v) = %q, which loses the text", tt.err, got)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(got, s), s == tt.want; got != want {
					t.Errorf("errors.Is(classify(%v), %v) = %v, want %v", tt.err, s, got, want)
				}
			}
		})
	}

	if err := classify(nil); err != nil {
		t.Errorf("classify(nil) = %v, want nil", err)
	}
}
