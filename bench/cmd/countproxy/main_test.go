package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		wantKind string
		wantRef  string
	}{
		{name: "blob", path: "/v2/bench/blobs/sha256:abc", wantKind: "blobs", wantRef: "sha256:abc"},
		{name: "nested repo", path: "/v2/a/b/c/blobs/sha256:abc", wantKind: "blobs", wantRef: "sha256:abc"},
		{name: "manifest", path: "/v2/bench/manifests/v1", wantKind: "manifests", wantRef: "v1"},
		{name: "upload", path: "/v2/bench/blobs/uploads/", wantKind: "", wantRef: ""},
		{name: "base", path: "/v2/", wantKind: "", wantRef: ""},
		{name: "not registry", path: "/_bench/counts", wantKind: "", wantRef: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, ref := classify(tt.path)
			if kind != tt.wantKind || ref != tt.wantRef {
				t.Errorf("classify(%q) = %q, %q; want %q, %q", tt.path, kind, ref, tt.wantKind, tt.wantRef)
			}
		})
	}
}

func TestProxyCounts(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "0123456789")
	}))
	defer upstream.Close()
	u, err := url.Parse(upstream.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(newHandler(u, &counter{c: Counts{BlobDigests: []string{}}}))
	defer proxy.Close()

	do := func(method, path string) string {
		t.Helper()
		req, err := http.NewRequest(method, proxy.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}

	do(http.MethodGet, "/v2/bench/manifests/v1")
	do(http.MethodGet, "/v2/bench/blobs/sha256:aaa")
	do(http.MethodHead, "/v2/bench/blobs/sha256:bbb")
	var got Counts
	if err := json.NewDecoder(strings.NewReader(do(http.MethodGet, "/_bench/counts"))).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := Counts{Requests: 3, BlobGets: 1, BlobHeads: 1, ManifestGets: 1, BlobBytes: 10,
		BlobDigests: []string{"sha256:aaa"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("counts = %+v, want %+v", got, want)
	}

	do(http.MethodPost, "/_bench/reset")
	got = Counts{}
	if err := json.NewDecoder(strings.NewReader(do(http.MethodGet, "/_bench/counts"))).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.Requests != 0 || len(got.BlobDigests) != 0 {
		t.Errorf("after reset counts = %+v, want zero", got)
	}
}
