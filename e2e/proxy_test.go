package e2e

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// blobPath matches a blob request and captures its digest.
var blobPath = regexp.MustCompile(`^/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// countingProxy is a reverse proxy in front of a registry that counts the
// requests it forwards, by method and path.
type countingProxy struct {
	// Addr is the proxy's host:port.
	Addr string

	mu     sync.Mutex
	counts map[string]int // "METHOD PATH" -> requests
}

// startProxy serves a counting reverse proxy to the registry at target
// (host:port) on a free loopback port until the test ends.
func startProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &countingProxy{Addr: l.Addr().String(), counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.Method+" "+r.URL.Path]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// Reset forgets every request counted so far.
func (p *countingProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
}

// Count returns the number of requests for method and path.
func (p *countingProxy) Count(method, path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[method+" "+path]
}

// BlobGets returns the number of GET requests per blob digest, in any
// repository.
func (p *countingProxy) BlobGets() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	gets := map[string]int{}
	for key, n := range p.counts {
		method, path, _ := strings.Cut(key, " ")
		if m := blobPath.FindStringSubmatch(path); method == http.MethodGet && m != nil {
			gets[m[1]] += n
		}
	}
	return gets
}
