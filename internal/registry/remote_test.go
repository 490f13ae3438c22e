package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is go-containerregistry's in-process registry on 127.0.0.1,
// recording the requests it serves.
type testRegistry struct {
	host string

	mu   sync.Mutex
	reqs []string // "METHOD path"
}

func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	tr := &testRegistry{}
	next := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tr.reqs = append(tr.reqs, r.Method+" "+r.URL.Path)
		tr.mu.Unlock()
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.host = srv.Listener.Addr().String()
	return tr
}

// requests returns the recorded requests whose path contains part, and
// forgets every request.
func (tr *testRegistry) requests(part string) []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for _, r := range tr.reqs {
		if strings.Contains(r, part) {
			out = append(out, r)
		}
	}
	tr.reqs = nil
	return out
}

func (tr *testRegistry) push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(tr.host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

func remoteOptions() Options {
	return Options{PlainHTTP: true, Keychain: authn.NewMultiKeychain()}
}

func TestOpenRemote(t *testing.T) {
	reg := startRegistry(t)
	img, digest := randomImage(t, 2)
	reg.push(t, "test/img:v1", img)

	amd, amdDigest := randomImage(t, 1)
	arm, armDigest := randomImage(t, 1)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}})
	r, err := name.ParseReference(reg.host+"/test/multi:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		source   string
		platform string
		img      v1.Image
		digest   v1.Hash
		wantErr  error
	}{
		{name: "by tag", source: "docker://" + reg.host + "/test/img:v1", img: img, digest: digest},
		{name: "bare by tag", source: reg.host + "/test/img:v1", img: img, digest: digest},
		{name: "by digest", source: "docker://" + reg.host + "/test/img@" + digest.String(),
			img: img, digest: digest},
		{name: "index by platform", source: "docker://" + reg.host + "/test/multi:v1",
			platform: "linux/arm64", img: arm, digest: armDigest},
		{name: "index other platform", source: "docker://" + reg.host + "/test/multi:v1",
			platform: "linux/amd64", img: amd, digest: amdDigest},
		{name: "index without the platform", source: "docker://" + reg.host + "/test/multi:v1",
			platform: "linux/s390x", wantErr: ErrNoPlatform},
		{name: "unknown tag", source: "docker://" + reg.host + "/test/img:nope",
			wantErr: ErrNotFound},
		{name: "unknown repository", source: "docker://" + reg.host + "/test/none:v1",
			wantErr: ErrNotFound},
		{name: "malformed", source: "docker://" + reg.host + "/Test/UPPER:v1",
			wantErr: ErrBadReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := remoteOptions()
			opts.Platform = tt.platform
			got, err := Open(context.Background(), tt.source, opts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Open(%q) error = %v, want %v", tt.source, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer got.Close()
			checkImage(t, got, tt.img, tt.digest)
		})
	}
}

// TestOpenRemoteLayer reads a layer from the registry through the
// verifying readers.
func TestOpenRemoteLayer(t *testing.T) {
	reg := startRegistry(t)
	img, _ := randomImage(t, 1)
	reg.push(t, "test/img:v1", img)
	got, err := Open(context.Background(), "docker://"+reg.host+"/test/img:v1", remoteOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	want, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	wantBytes, err := io.ReadAll(want)
	if err != nil {
		t.Fatal(err)
	}

	l := got.Layers[0]
	rc, err := l.Compressed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	u, _, err := Uncompressed(rc, l.DiffID)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	b, err := io.ReadAll(u)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, wantBytes) {
		t.Errorf("layer content differs from what was pushed")
	}
}

// TestOpenRemoteStoredConfig checks that a config the DocumentStore holds is
// not fetched, and one it lacks is fetched once and stored.
func TestOpenRemoteStoredConfig(t *testing.T) {
	reg := startRegistry(t)
	img, _ := randomImage(t, 2)
	reg.push(t, "test/img:v1", img)
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	source := "docker://" + reg.host + "/test/img:v1"
	configPath := "/blobs/" + cfgName.String()
	reg.requests("") // forget the push

	store := &mapStore{docs: map[v1.Hash][]byte{}}
	opts := remoteOptions()
	opts.Documents = store
	im, err := Open(context.Background(), source, opts)
	if err != nil {
		t.Fatal(err)
	}
	im.Close()
	if got := reg.requests(configPath); len(got) != 1 {
		t.Errorf("with an empty store, config requests = %q, want one GET", got)
	}
	if got, want := store.puts, 1; got != want {
		t.Errorf("%d documents stored, want %d", got, want)
	}

	im, err = Open(context.Background(), source, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if got := reg.requests(configPath); len(got) != 0 {
		t.Errorf("with the config stored, the registry saw %q", got)
	}
	raw, _ := img.RawConfigFile()
	if !bytes.Equal(im.RawConfig, raw) {
		t.Errorf("RawConfig differs from the pushed config")
	}
}

// TestOpenRemoteLimits checks the document size limit and a manifest that
// is not an image through the whole remote stack.
func TestOpenRemoteLimits(t *testing.T) {
	reg := startRegistry(t)
	img, _ := randomImage(t, 1)
	reg.push(t, "test/img:v1", img)
	reg.push(t, "test/other:v1", mutate.MediaType(img, "application/vnd.example.thing+json"))

	tests := []struct {
		name    string
		source  string
		max     int64
		wantErr error
	}{
		{name: "manifest over the limit", source: "test/img:v1", max: 100, wantErr: ErrTooLarge},
		{name: "not an image", source: "test/other:v1", wantErr: ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := remoteOptions()
			opts.MaxDocumentBytes = tt.max
			got, err := Open(context.Background(), "docker://"+reg.host+"/"+tt.source, opts)
			if err == nil {
				got.Close()
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Open error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
