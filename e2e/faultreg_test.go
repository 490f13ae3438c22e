package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// faultRegistry is go-containerregistry's in-process registry, served on
// 127.0.0.1, behind a handler that breaks the requests a test chooses and
// records every request.
type faultRegistry struct {
	// Addr is the registry's host:port.
	Addr string

	next http.Handler

	mu     sync.Mutex
	faults []*fault
	auth   string // when set, the Authorization every request must carry
	reqs   []seenRequest
}

// seenRequest is one request the registry received.
type seenRequest struct {
	Method string
	Path   string
	At     time.Time
	Auth   string // Authorization header
	Range  string // Range header
}

// fault breaks requests for one path: the first Times of them (every one
// when Times is negative) are answered by Do instead of the registry.
type fault struct {
	Method string // GET also matches HEAD when empty
	Path   string
	Times  int
	Do     faultFunc

	hits int
}

// faultFunc answers a broken request; next is the clean registry.
type faultFunc func(w http.ResponseWriter, r *http.Request, next http.Handler)

// startFaultRegistry serves a new in-process registry on a free loopback
// port until the test ends.
func startFaultRegistry(t *testing.T) *faultRegistry {
	t.Helper()
	fr := &faultRegistry{next: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	srv := httptest.NewServer(http.HandlerFunc(fr.serve))
	t.Cleanup(srv.Close)
	fr.Addr = srv.Listener.Addr().String()
	return fr
}

func (fr *faultRegistry) serve(w http.ResponseWriter, r *http.Request) {
	fr.mu.Lock()
	fr.reqs = append(fr.reqs, seenRequest{Method: r.Method, Path: r.URL.Path, At: time.Now(),
		Auth: r.Header.Get("Authorization"), Range: r.Header.Get("Range")})
	if fr.auth != "" && r.Header.Get("Authorization") != fr.auth {
		fr.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Basic realm="oci2layers-e2e"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`,
			http.StatusUnauthorized)
		return
	}
	var do faultFunc
	for _, f := range fr.faults {
		if f.matches(r) && (f.Times < 0 || f.hits < f.Times) {
			f.hits++
			do = f.Do
			break
		}
	}
	fr.mu.Unlock()
	if do != nil {
		do(w, r, fr.next)
		return
	}
	fr.next.ServeHTTP(w, r)
}

func (f *fault) matches(r *http.Request) bool {
	if r.URL.Path != f.Path {
		return false
	}
	if f.Method == "" {
		return r.Method == http.MethodGet || r.Method == http.MethodHead
	}
	return r.Method == f.Method
}

// Inject replaces the active faults with fs and forgets the requests seen.
func (fr *faultRegistry) Inject(fs ...*fault) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.faults = fs
	fr.reqs = nil
}

// Clear removes every fault and the authentication requirement.
func (fr *faultRegistry) Clear() {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.faults, fr.auth = nil, ""
}

// RequireAuth makes every request without exactly this Authorization header
// fail with 401 and a Basic challenge.
func (fr *faultRegistry) RequireAuth(authorization string) {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	fr.auth = authorization
}

// Requests returns the requests seen for method and path since the last
// Inject.
func (fr *faultRegistry) Requests(method, path string) []seenRequest {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	var out []seenRequest
	for _, r := range fr.reqs {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

// blobURLPath returns the path of a blob in repo.
func blobURLPath(repo, digest string) string {
	return "/v2/" + repo + "/blobs/" + digest
}

// manifestURLPath returns the path of a manifest in repo.
func manifestURLPath(repo, ref string) string {
	return "/v2/" + repo + "/manifests/" + ref
}

// recordClean runs the clean registry for r and returns its answer.
func recordClean(r *http.Request, next http.Handler) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	return rec
}

// copyHeader copies the headers of rec to w, except Content-Length.
func copyHeader(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, vs := range rec.Header() {
		if k == "Content-Length" {
			continue
		}
		w.Header()[k] = vs
	}
}

// flipByte answers with the blob's bytes, one of them changed.
func flipByte() faultFunc {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := recordClean(r, next)
		body := bytes.Clone(rec.Body.Bytes())
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		copyHeader(w, rec)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	}
}

// cutAfter announces the blob's full length, sends its first n bytes (all
// but one when n is negative) and closes the connection: gracefully, or with
// a TCP reset when reset is set.
func cutAfter(n int, reset bool) faultFunc {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := recordClean(r, next)
		body := rec.Body.Bytes()
		if n < 0 || n >= len(body) {
			n = len(body) - 1
		}
		conn, bufrw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
			return
		}
		defer conn.Close()
		fmt.Fprintf(bufrw, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
		rec.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_ = rec.Header().Write(bufrw)
		_, _ = bufrw.WriteString("\r\n")
		_, _ = bufrw.Write(body[:n])
		_ = bufrw.Flush()
		if tc, ok := conn.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0) // close sends RST
		} else if ok {
			// Let the client read what was sent before the FIN.
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// extraBytes answers with the blob's bytes plus n more. With announce the
// Content-Length counts them; otherwise the body is chunked.
func extraBytes(n int, announce bool) faultFunc {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := recordClean(r, next)
		body := append(bytes.Clone(rec.Body.Bytes()), bytes.Repeat([]byte{'x'}, n)...)
		copyHeader(w, rec)
		if announce {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(rec.Code)
		if !announce {
			_ = http.NewResponseController(w).Flush() // commits to chunked encoding
		}
		_, _ = w.Write(body)
	}
}

// status answers with code and a Retry-After header (when retryAfter is
// not empty).
func status(code int, retryAfter string) faultFunc {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		http.Error(w, http.StatusText(code), code)
	}
}

// redirectTo answers with a 307 to base + the request path.
func redirectTo(base string) faultFunc {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		http.Redirect(w, r, base+r.URL.Path, http.StatusTemporaryRedirect)
	}
}

// serveDocument answers with a document of the given media type: size
// bytes of a JSON object, streamed without holding it in memory. With
// announce the Content-Length gives its size, otherwise it is chunked.
// written receives how many bytes were sent once the handler returns.
func serveDocument(mediaType string, size int64, announce bool, written chan<- int64) faultFunc {
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		w.Header().Set("Content-Type", mediaType)
		if announce {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		head := `{"schemaVersion":2,"mediaType":"` + mediaType + `","annotations":{"pad":"`
		tail := `"}}`
		body := io.MultiReader(bytes.NewReader([]byte(head)),
			io.LimitReader(repeatReader('a'), size-int64(len(head)+len(tail))),
			bytes.NewReader([]byte(tail)))
		n, _ := io.Copy(w, body)
		select {
		case written <- n:
		default:
		}
	}
}

// repeatReader reads the byte c forever.
type repeatReader byte

func (c repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// pushBlob uploads b to repo on the registry at addr.
func pushBlob(t *testing.T, addr, repo string, b []byte) v1.Hash {
	t.Helper()
	r, err := name.NewRepository(addr+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	l := static.NewLayer(b, types.OCILayer)
	if err := remote.WriteLayer(r, l, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push blob: %v", err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// putManifest stores a raw manifest under repo:ref on the registry at addr.
func putManifest(t *testing.T, addr, repo, ref, mediaType string, body []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		"http://"+addr+manifestURLPath(repo, ref), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("put manifest: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("put manifest %s:%s: %s: %s", repo, ref, resp.Status, msg)
	}
}
