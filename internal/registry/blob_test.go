package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func sha(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// layerTar returns a small tar stream.
func layerTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"a", "b/c"} {
		body := strings.Repeat(name, 3000)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)),
			Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// blobLayer is a Layer whose manifest says want (digest and size) while
// its blob holds have.
func blobLayer(want, have []byte) *Layer {
	return &Layer{Digest: sha(want), Size: int64(len(want)), MediaType: types.OCILayer,
		blob: static.NewLayer(have, types.OCILayer)}
}

func TestLayerCompressed(t *testing.T) {
	good := gzipped(t, layerTar(t))
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff

	tests := []struct {
		name    string
		have    []byte
		wantErr error
		errText string
	}{
		{name: "good", have: good},
		{name: "flipped byte", have: flipped, wantErr: ErrDigestMismatch, errText: "got sha256:"},
		{name: "short", have: good[:len(good)-1], wantErr: ErrDigestMismatch,
			errText: "truncated"},
		{name: "long", have: append(bytes.Clone(good), 0), wantErr: ErrDigestMismatch,
			errText: "longer"},
		{name: "empty", have: []byte{}, wantErr: ErrDigestMismatch, errText: "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := blobLayer(good, tt.have).Compressed(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadAll error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("error %q does not say %q", err, tt.errText)
				}
				return
			}
			if !bytes.Equal(got, good) {
				t.Errorf("read %d bytes that differ from the blob", len(got))
			}
		})
	}
}

// TestLayerCompressedMismatchAtEOF checks that a corrupt blob's bytes are
// all handed out and only the Read that reaches the end fails.
func TestLayerCompressedMismatchAtEOF(t *testing.T) {
	good := gzipped(t, layerTar(t))
	bad := bytes.Clone(good)
	bad[0] ^= 1
	rc, err := blobLayer(good, bad).Compressed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(io.LimitReader(rc, int64(len(bad))))
	if err != nil {
		t.Fatalf("reading up to the size failed early: %v", err)
	}
	if !bytes.Equal(got, bad) {
		t.Fatalf("the bytes were changed on the way")
	}
	if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Read at the end = %v, want %v", err, ErrDigestMismatch)
	}
}

func TestLayerCompressedContext(t *testing.T) {
	good := gzipped(t, layerTar(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := blobLayer(good, good).Compressed(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Compressed with a cancelled context = %v, want %v", err, context.Canceled)
	}

	ctx, cancel = context.WithCancel(context.Background())
	rc, err := blobLayer(good, good).Compressed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Errorf("Read after cancel = %v, want %v", err, context.Canceled)
	}
}

// TestVerifierUnexpectedEOF checks that a stream cut by the transport
// counts as a truncated blob.
func TestVerifierUnexpectedEOF(t *testing.T) {
	good := []byte("0123456789")
	r := io.MultiReader(bytes.NewReader(good[:4]), iotest.ErrReader(io.ErrUnexpectedEOF))
	v := &verifier{rc: io.NopCloser(r), want: sha(good), size: int64(len(good)),
		h: sha256.New()}
	_, err := io.ReadAll(v)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("ReadAll error = %v, want a truncated %v", err, ErrDigestMismatch)
	}
}

// countingReader counts the bytes read and whether EOF was seen.
type countingReader struct {
	r   io.Reader
	n   int
	eof bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if errors.Is(err, io.EOF) {
		c.eof = true
	}
	return n, err
}

func (c *countingReader) Close() error { return nil }

func TestUncompressed(t *testing.T) {
	plain := layerTar(t)
	diffID := sha(plain)

	tests := []struct {
		name    string
		blob    []byte
		diffID  v1.Hash
		comp    Compression
		wantErr error
	}{
		{name: "gzip", blob: gzipped(t, plain), diffID: diffID, comp: Gzip},
		{name: "zstd", blob: zstded(t, plain), diffID: diffID, comp: Zstd},
		{name: "plain tar", blob: plain, diffID: diffID, comp: None},
		{name: "two gzip members", comp: Gzip, diffID: diffID,
			blob: append(gzipped(t, plain[:1000]), gzipped(t, plain[1000:])...)},
		{name: "gzip wrong diffID", blob: gzipped(t, plain), diffID: sha([]byte("x")), comp: Gzip,
			wantErr: ErrDiffIDMismatch},
		{name: "zstd wrong diffID", blob: zstded(t, plain), diffID: sha([]byte("x")), comp: Zstd,
			wantErr: ErrDiffIDMismatch},
		{name: "plain wrong diffID", blob: plain, diffID: sha([]byte("x")), comp: None,
			wantErr: ErrDiffIDMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &countingReader{r: bytes.NewReader(tt.blob)}
			rc, comp, err := Uncompressed(src, tt.diffID)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, want := comp, tt.comp; got != want {
				t.Errorf("compression = %s, want %s", got, want)
			}
			got, err := io.ReadAll(rc)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadAll error = %v, want %v", err, tt.wantErr)
			}
			if errors.Is(err, ErrDiffIDMismatch) && !errors.Is(err, ErrDigestMismatch) {
				t.Errorf("%v does not wrap %v", err, ErrDigestMismatch)
			}
			if got, want := src.n, len(tt.blob); got != want || !src.eof {
				t.Errorf("read %d of %d compressed bytes (EOF seen: %v)", got, want, src.eof)
			}
			if err == nil && !bytes.Equal(got, plain) {
				t.Errorf("decompressed %d bytes that differ from the tar", len(got))
			}
			if n, err := rc.Read(make([]byte, 1)); err == nil || n != 0 {
				t.Errorf("Read after the end = %d, %v", n, err)
			}
		})
	}
}

// TestUncompressedTrailingGarbage checks that bytes after the end of a gzip
// stream are not silently accepted.
func TestUncompressedTrailingGarbage(t *testing.T) {
	plain := layerTar(t)
	blob := append(gzipped(t, plain), []byte("garbage after the stream")...)
	rc, _, err := Uncompressed(io.NopCloser(bytes.NewReader(blob)), sha(plain))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil {
		t.Errorf("ReadAll accepted garbage after the gzip stream")
	}
}

// TestUncompressedDrainsRemainder checks that the compressed stream is read
// to its end after the tar, so that the blob's own check runs: a blob with
// a wrong digest but the right content fails.
func TestUncompressedDrainsRemainder(t *testing.T) {
	plain := layerTar(t)
	for _, tt := range []struct {
		name string
		blob []byte
	}{
		{name: "gzip", blob: gzipped(t, plain)},
		{name: "zstd", blob: zstded(t, plain)},
		{name: "plain", blob: plain},
	} {
		t.Run(tt.name, func(t *testing.T) {
			manifest := bytes.Clone(tt.blob)
			manifest[len(manifest)-1] ^= 0xff // same size, other digest
			l := &Layer{Digest: sha(manifest), Size: int64(len(manifest)),
				blob: static.NewLayer(tt.blob, types.OCILayer)}
			compressed, err := l.Compressed(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			rc, _, err := Uncompressed(compressed, sha(plain))
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			_, err = io.ReadAll(rc)
			if !errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrDiffIDMismatch) {
				t.Errorf("ReadAll error = %v, want %v and not %v", err, ErrDigestMismatch,
					ErrDiffIDMismatch)
			}
		})
	}
}

func TestUncompressedBadHeader(t *testing.T) {
	// gzip magic followed by a header that is not gzip.
	blob := []byte{0x1f, 0x8b, 0, 0, 0, 0}
	if _, _, err := Uncompressed(io.NopCloser(bytes.NewReader(blob)), sha(nil)); err == nil {
		t.Errorf("Uncompressed accepted a broken gzip header")
	}
}

func TestCheckBytes(t *testing.T) {
	doc := []byte(`{"a":1}`)
	tests := []struct {
		name    string
		b       []byte
		want    v1.Hash
		size    int64
		wantErr error
	}{
		{name: "good", b: doc, want: sha(doc), size: int64(len(doc))},
		{name: "size unknown", b: doc, want: sha(doc), size: -1},
		{name: "other bytes", b: []byte(`{"a":2}`), want: sha(doc), size: int64(len(doc)),
			wantErr: ErrDigestMismatch},
		{name: "wrong size", b: doc, want: sha(doc), size: int64(len(doc)) + 1,
			wantErr: ErrDigestMismatch},
		{name: "other algorithm", b: doc,
			want: v1.Hash{Algorithm: "sha512", Hex: sha(doc).Hex}, size: -1,
			wantErr: ErrDigestMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkBytes(tt.b, tt.want, tt.size); !errors.Is(err, tt.wantErr) {
				t.Errorf("checkBytes = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
