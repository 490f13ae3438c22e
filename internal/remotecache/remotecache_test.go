package remotecache

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/sifwriter"
)

// newStore serves an in-process registry on loopback and opens a store in
// it whose warnings go to the returned buffer.
func newStore(t *testing.T) (*Store, *bytes.Buffer) {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	var logs bytes.Buffer
	repo := strings.TrimPrefix(srv.URL, "http://") + "/cache"
	s, err := New(t.Context(), repo, registry.Options{PlainHTTP: true},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, &logs
}

func openCache(t *testing.T) *cache.Cache {
	t.Helper()
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeSIF writes a SIF of the given kind holding payload as its partition.
func writeSIF(t *testing.T, kind sifwriter.Kind, payload string) string {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "entry.sif"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := sifwriter.Write(f, kind, strings.NewReader(payload), "amd64"); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func hashOf(s string) v1.Hash {
	h, _, _ := v1.SHA256(strings.NewReader(s))
	return h
}

func layerEntry(key string) Entry {
	return Entry{Kind: cache.Layer, Key: hashOf(key), Compression: "gzip",
		Origin: cache.Origin{DiffIDs: []string{hashOf(key).String()}, ChainID: hashOf(key).String()}}
}

func TestTag(t *testing.T) {
	key := hashOf("k")
	tests := []struct {
		name string
		kind cache.Kind
		want string
	}{
		{name: "layer", kind: cache.Layer, want: "v1-layer-" + key.Hex},
		{name: "base", kind: cache.Base, want: "v1-base-" + key.Hex},
		{name: "config", kind: cache.Config, want: "v1-config-" + key.Hex},
		{name: "flat", kind: cache.Flat, want: "v1-flat-" + key.Hex},
		{name: "index", kind: cache.Index, want: "v1-index-" + key.Hex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Tag(tt.kind, key); got != tt.want {
				t.Errorf("Tag = %q, want %q", got, tt.want)
			}
			if len(tt.want) > 128 {
				t.Errorf("tag %q longer than 128", tt.want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	s, logs := newStore(t)
	e := layerEntry("layer")
	path := writeSIF(t, sifwriter.Overlay, "squashfs bytes")

	pushed, err := s.Push(t.Context(), e, path)
	if err != nil || !pushed {
		t.Fatalf("Push = %v, %v; want true, nil", pushed, err)
	}
	if pushed, err := s.Push(t.Context(), e, path); err != nil || pushed {
		t.Errorf("second Push = %v, %v; want false, nil", pushed, err)
	}
	checkArtifact(t, s, e)

	c := openCache(t)
	if !s.Pull(t.Context(), c, e) {
		t.Fatalf("Pull missed; log:\n%s", logs)
	}
	got, err := os.ReadFile(c.Path(e.Kind, e.Key))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(path)
	if !bytes.Equal(got, want) {
		t.Errorf("pulled %d bytes differ from the %d pushed", len(got), len(want))
	}

	if s.Pull(t.Context(), c, layerEntry("absent")) {
		t.Errorf("Pull of an absent entry hit")
	}
	if logs.Len() != 0 {
		t.Errorf("warnings for a clean round trip:\n%s", logs)
	}
}

// checkArtifact checks the pushed manifest is what Apptainer's oras://
// transport reads.
func checkArtifact(t *testing.T, s *Store, e Entry) {
	t.Helper()
	d, err := remote.Get(s.ref(e), s.options(t.Context())...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != string(ConfigMediaType) || m.Config.MediaType != ConfigMediaType ||
		len(m.Layers) != 1 || m.Layers[0].MediaType != SIFMediaType {
		t.Errorf("manifest %s", d.Manifest)
	}
	if got, want := m.Layers[0].Annotations[annotationTitle], "layer-"+e.Key.Hex[:12]+".sif"; got != want {
		t.Errorf("title %q, want %q", got, want)
	}
	if m.Annotations[AnnotationKey] != e.Key.String() || m.Annotations[AnnotationKind] != "layer" {
		t.Errorf("annotations %v", m.Annotations)
	}
}

// putArtifact pushes blob under e's tag with e's manifest, changed by edit.
func putArtifact(t *testing.T, s *Store, e Entry, blob []byte, edit func(*v1.Manifest)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := newFileLayer(path, SIFMediaType)
	if err != nil {
		t.Fatal(err)
	}
	config := static.NewLayer([]byte("{}"), ConfigMediaType)
	raw, err := manifest(e, l, config)
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw.raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	opts := s.options(context.Background())
	for _, l := range []v1.Layer{config, l} {
		if err := remote.WriteLayer(s.repo, l, opts...); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.Put(s.ref(e), rawManifest{raw: b}, opts...); err != nil {
		t.Fatal(err)
	}
}

func TestRejected(t *testing.T) {
	good, err := os.ReadFile(writeSIF(t, sifwriter.Overlay, "squashfs bytes"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(writeSIF(t, sifwriter.Base, "squashfs bytes"))
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(good)
	altered[len(altered)-1] ^= 0xff
	goodSum := hashOf(string(good)).String()
	tests := []struct {
		name string
		blob []byte
		edit func(*v1.Manifest)
	}{
		{name: "altered bytes claiming the original sha256", blob: altered,
			edit: func(m *v1.Manifest) { m.Annotations[AnnotationSHA256] = goodSum }},
		{name: "not a sif", blob: []byte("not a sif at all"), edit: func(*v1.Manifest) {}},
		{name: "wrong partition type", blob: base, edit: func(*v1.Manifest) {}},
		{name: "wrong kind", blob: good,
			edit: func(m *v1.Manifest) { m.Annotations[AnnotationKind] = "base" }},
		{name: "wrong key", blob: good,
			edit: func(m *v1.Manifest) { m.Annotations[AnnotationKey] = hashOf("x").String() }},
		{name: "other format", blob: good,
			edit: func(m *v1.Manifest) { m.Annotations[AnnotationFormat] = "v0" }},
		{name: "other compression", blob: good,
			edit: func(m *v1.Manifest) { m.Annotations[AnnotationCompression] = "zstd" }},
		{name: "wrong size", blob: good,
			edit: func(m *v1.Manifest) { m.Annotations[AnnotationSize] = "1" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := newStore(t)
			e := layerEntry("layer")
			putArtifact(t, s, e, tt.blob, tt.edit)

			c := openCache(t)
			if s.Pull(t.Context(), c, e) {
				t.Fatalf("Pull accepted the entry")
			}
			if c.Has(e.Kind, e.Key) {
				t.Errorf("a rejected entry is in the cache")
			}
			if !strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("no warning; log:\n%s", logs)
			}
		})
	}
}
