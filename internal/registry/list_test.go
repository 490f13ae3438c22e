package registry

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func TestListTags(t *testing.T) {
	reg := startRegistry(t)
	img, _ := randomImage(t, 1)
	want := []string{"1.0.0", "1.1.0", "latest"}
	for _, tag := range want {
		reg.push(t, "test/tags:"+tag, img)
	}

	tests := []struct {
		name    string
		repo    string
		want    []string
		wantErr error
	}{
		{name: "tags", repo: reg.host + "/test/tags", want: want},
		{name: "with transport", repo: "docker://" + reg.host + "/test/tags", want: want},
		{name: "unknown repository", repo: reg.host + "/test/none", wantErr: ErrNotFound},
		{name: "malformed", repo: reg.host + "/Test/UPPER", wantErr: ErrBadReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ListTags(context.Background(), tt.repo, remoteOptions())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ListTags(%q) error = %v, want %v", tt.repo, err, tt.wantErr)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("ListTags(%q) = %v, want %v", tt.repo, got, tt.want)
			}
		})
	}
}

func TestHeadDigest(t *testing.T) {
	reg := startRegistry(t)
	img, digest := randomImage(t, 1)
	reg.push(t, "test/img:v1", img)
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	idxDigest, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(reg.host+"/test/multi:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	reg.requests("")

	tests := []struct {
		name    string
		ref     string
		want    v1.Hash
		wantErr error
	}{
		{name: "tag", ref: reg.host + "/test/img:v1", want: digest},
		{name: "with transport", ref: "docker://" + reg.host + "/test/img:v1", want: digest},
		{name: "index", ref: reg.host + "/test/multi:v1", want: idxDigest},
		{name: "by digest", ref: reg.host + "/test/img@" + digest.String(), want: digest},
		{name: "unknown tag", ref: reg.host + "/test/img:nope", wantErr: ErrNotFound},
		{name: "malformed", ref: reg.host + "/test/img:bad tag", wantErr: ErrBadReference},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := HeadDigest(context.Background(), tt.ref, remoteOptions())
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("HeadDigest(%q) error = %v, want %v", tt.ref, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("HeadDigest(%q) = %v, want %v", tt.ref, got, tt.want)
			}
			if gets := reg.requests("GET /v2/test/"); len(gets) != 0 {
				t.Errorf("HeadDigest(%q) made GET requests %v, want HEAD only", tt.ref, gets)
			}
		})
	}
}

// TestHeadDigestFallback checks that a registry refusing HEAD on manifests
// is asked with GET, and that other HEAD failures are not retried with GET.
func TestHeadDigestFallback(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	var refuse atomic.Bool
	next := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if refuse.Load() && r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
			http.Error(w, "no HEAD here", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := srv.Listener.Addr().String()

	img, digest := randomImage(t, 1)
	r, err := name.ParseReference(host+"/test/img:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	seen = nil
	mu.Unlock()
	refuse.Store(true)

	got, err := HeadDigest(context.Background(), host+"/test/img:v1", remoteOptions())
	if err != nil {
		t.Fatalf("HeadDigest: %v", err)
	}
	if got != digest {
		t.Errorf("HeadDigest = %v, want %v", got, digest)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"HEAD /v2/test/img/manifests/v1", "GET /v2/test/img/manifests/v1"}
	var manifests []string
	for _, s := range seen {
		if strings.Contains(s, "/manifests/") {
			manifests = append(manifests, s)
		}
	}
	if !slices.Equal(manifests, want) {
		t.Errorf("manifest requests %v, want %v", manifests, want)
	}
}

func TestHeadRefused(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "method not allowed", err: statusErr(http.StatusMethodNotAllowed), want: true},
		{name: "not implemented", err: statusErr(http.StatusNotImplemented), want: true},
		{name: "missing header", err: errors.New(
			"HEAD http://x/v2/a/manifests/b: response did not include Docker-Content-Digest header"),
			want: true},
		{name: "not found", err: statusErr(http.StatusNotFound)},
		{name: "unauthorized", err: statusErr(http.StatusUnauthorized)},
		{name: "network", err: errors.New("dial tcp: connection refused")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := headRefused(tt.err); got != tt.want {
				t.Errorf("headRefused(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func statusErr(code int) error { return &transport.Error{StatusCode: code} }
