package registry

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Layer is one layer of an Image.
type Layer struct {
	// Digest names the blob as stored (usually compressed).
	Digest v1.Hash
	// DiffID names the uncompressed tar, as the config lists it.
	DiffID v1.Hash
	// Size is the blob's size in bytes.
	Size int64
	// MediaType is the blob's media type from the manifest.
	MediaType types.MediaType

	blob v1.Layer
}

// Compressed opens the blob as stored. The stream is hashed as it is read:
// the Read that reaches its end returns an error wrapping ErrDigestMismatch
// instead of io.EOF when the bytes or their count differ from the manifest.
func (l *Layer) Compressed(ctx context.Context) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rc, err := l.blob.Compressed()
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", l.Digest, classify(err))
	}
	return &verifier{rc: rc, want: l.Digest, size: l.Size, h: sha256.New(), ctx: ctx}, nil
}

// verifier checks a stream's sha256 and length when it reaches its end.
type verifier struct {
	rc   io.ReadCloser
	ctx  context.Context
	want v1.Hash
	size int64 // -1 when unknown
	h    hash.Hash
	n    int64
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.ctx != nil {
		if err := v.ctx.Err(); err != nil {
			return 0, err
		}
	}
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.size >= 0 && v.n > v.size {
		return n, fmt.Errorf("%w: %s is longer than its %d bytes", ErrDigestMismatch, v.want, v.size)
	}
	if errors.Is(err, io.EOF) {
		if v.size >= 0 && v.n != v.size {
			return n, fmt.Errorf("%w: %s has %d bytes, want %d (truncated)", ErrDigestMismatch,
				v.want, v.n, v.size)
		}
		got := "sha256:" + hex.EncodeToString(v.h.Sum(nil))
		if v.want.Algorithm != "sha256" || got != v.want.String() {
			return n, fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, v.want)
		}
		return n, io.EOF
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return n, fmt.Errorf("%w: %s ended after %d of %d bytes (truncated)", ErrDigestMismatch,
			v.want, v.n, v.size)
	}
	if err != nil {
		return n, classify(err)
	}
	return n, nil
}

func (v *verifier) Close() error { return v.rc.Close() }

// Compression names how a blob is compressed.
type Compression string

// The compressions a layer may use. They are recognised by their magic bytes,
// not by the media type, which registries and tools get wrong.
const (
	None Compression = "none"
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
)

// Uncompressed wraps a compressed layer stream: it decompresses gzip, zstd or
// nothing, hashes the uncompressed bytes and, at their end, reads the rest of
// the compressed stream (so its own check runs) and compares the diffID. The
// final Read returns an error wrapping ErrDigestMismatch instead of io.EOF
// when anything differs. Close closes r.
func Uncompressed(r io.ReadCloser, diffID v1.Hash) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", fmt.Errorf("read layer %s: %w", diffID, err)
	}

	u := &uncompressed{raw: r, src: br, want: diffID, h: sha256.New()}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", fmt.Errorf("read layer %s: %w", diffID, err)
		}
		u.dec, u.closeDec = zr, func() { zr.Close() }
		return u, Gzip, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			return nil, "", fmt.Errorf("read layer %s: %w", diffID, err)
		}
		u.dec, u.closeDec = zr, zr.Close
		return u, Zstd, nil
	default:
		u.dec = br
		return u, None, nil
	}
}

type uncompressed struct {
	raw      io.ReadCloser
	src      io.Reader
	dec      io.Reader
	closeDec func()
	want     v1.Hash
	h        hash.Hash
	done     bool
}

func (u *uncompressed) Read(p []byte) (int, error) {
	if u.done {
		return 0, io.EOF
	}
	n, err := u.dec.Read(p)
	u.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if _, err := io.Copy(io.Discard, u.src); err != nil {
			return n, fmt.Errorf("read layer %s: %w", u.want, err)
		}
		got := "sha256:" + hex.EncodeToString(u.h.Sum(nil))
		if got != u.want.String() {
			return n, fmt.Errorf("%w: it is %s, the config says %s", ErrDiffIDMismatch,
				got, u.want)
		}
		u.done = true
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("decompress layer %s: %w", u.want, err)
	}
	return n, nil
}

func (u *uncompressed) Close() error {
	if u.closeDec != nil {
		u.closeDec()
	}
	return u.raw.Close()
}

// checkBytes verifies an in-memory document against its descriptor.
func checkBytes(b []byte, want v1.Hash, size int64) error {
	sum := sha256.Sum256(b)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if got != want.String() {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	if size >= 0 && int64(len(b)) != size {
		return fmt.Errorf("%w: %s has %d bytes, want %d", ErrDigestMismatch, want, len(b), size)
	}
	return nil
}
