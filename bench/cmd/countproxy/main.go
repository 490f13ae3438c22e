// Command countproxy is a reverse proxy for one registry that counts the
// requests passing through it, so the benchmark can tell how many blobs a
// conversion fetched.
//
// It listens on -listen (port 0 picks a free port), writes the address it
// listens on to -addr-file once it accepts connections, and forwards every
// request to -upstream. Two paths outside the registry API belong to the
// proxy itself:
//
//	GET  /_bench/counts  the counters as JSON
//	POST /_bench/reset   set every counter to zero
//
// It stops on SIGINT or SIGTERM. The benchmark only; no other package uses it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Counts is the JSON document served at /_bench/counts.
type Counts struct {
	Requests      int64    `json:"requests"`
	BlobGets      int64    `json:"blob_gets"`
	BlobHeads     int64    `json:"blob_heads"`
	ManifestGets  int64    `json:"manifest_gets"`
	ManifestHeads int64    `json:"manifest_heads"`
	BlobBytes     int64    `json:"blob_bytes"`
	BlobDigests   []string `json:"blob_digests"`
}

type counter struct {
	mu sync.Mutex
	c  Counts
}

func (c *counter) snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.c
	s.BlobDigests = append([]string{}, c.c.BlobDigests...)
	return s
}

func (c *counter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c = Counts{BlobDigests: []string{}}
}

// record counts one finished request; bytes is the size of the response
// body the client received.
func (c *counter) record(r *http.Request, bytes int64) {
	kind, ref := classify(r.URL.Path)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.c.Requests++
	switch {
	case kind == "blobs" && r.Method == http.MethodGet:
		c.c.BlobGets++
		c.c.BlobBytes += bytes
		c.c.BlobDigests = append(c.c.BlobDigests, ref)
	case kind == "blobs" && r.Method == http.MethodHead:
		c.c.BlobHeads++
	case kind == "manifests" && r.Method == http.MethodGet:
		c.c.ManifestGets++
	case kind == "manifests" && r.Method == http.MethodHead:
		c.c.ManifestHeads++
	}
}

// classify splits a registry API path /v2/NAME/{blobs,manifests}/REF into
// its kind and reference. Uploads and other paths give an empty kind.
func classify(path string) (kind, ref string) {
	if !strings.HasPrefix(path, "/v2/") {
		return "", ""
	}
	parts := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	if len(parts) < 3 {
		return "", ""
	}
	kind = parts[len(parts)-2]
	if kind != "blobs" && kind != "manifests" {
		return "", ""
	}
	return kind, parts[len(parts)-1]
}

// sizeWriter remembers how many body bytes went to the client.
type sizeWriter struct {
	http.ResponseWriter
	n int64
}

func (w *sizeWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *sizeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func newHandler(upstream *url.URL, c *counter) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = r.In.Host
		},
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /_bench/counts", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(c.snapshot()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("POST /_bench/reset", func(w http.ResponseWriter, _ *http.Request) {
		c.reset()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		sw := &sizeWriter{ResponseWriter: w}
		proxy.ServeHTTP(sw, r)
		c.record(r, sw.n)
	})
	return mux
}

// writeAddr writes addr to path through a temporary file and a rename, so
// a reader polling for path never sees it half written.
func writeAddr(path, addr string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".addr-*")
	if err != nil {
		return fmt.Errorf("write address file: %w", err)
	}
	if _, err := io.WriteString(tmp, addr+"\n"); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write address file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write address file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write address file: %w", err)
	}
	return nil
}

func run(ctx context.Context, listen, upstream, addrFile string) error {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("parse upstream %q: want a URL like http://127.0.0.1:5000", upstream)
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	c := &counter{c: Counts{BlobDigests: []string{}}}
	srv := &http.Server{Handler: newHandler(u, c), ReadHeaderTimeout: 10 * time.Second}

	if addrFile != "" {
		if err := writeAddr(addrFile, ln.Addr().String()); err != nil {
			ln.Close()
			return err
		}
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "registry base URL, e.g. http://127.0.0.1:5000")
	addrFile := flag.String("addr-file", "", "file to write the listening address to")
	flag.Parse()
	if *upstream == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: countproxy -upstream URL [-listen ADDR] [-addr-file FILE]")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *upstream, *addrFile); err != nil {
		fmt.Fprintln(os.Stderr, "countproxy:", err)
		os.Exit(1)
	}
}
