package registry

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// politeTransport sits below go-containerregistry's own retries. It waits as
// a registry asks with Retry-After on 429 and 503 before trying a GET or HEAD
// again, and refuses manifests larger than the limit before reading them.
type politeTransport struct {
	next        http.RoundTripper
	attempts    int           // tries in all, for a request that keeps getting 429/503
	maxWait     time.Duration // longest Retry-After honoured; longer waits are cut
	maxManifest int64
}

func (t *politeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := t.next.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		if !t.shouldWait(req, resp, attempt) {
			return t.limit(req, resp)
		}
		wait := retryAfter(resp.Header.Get("Retry-After"), t.maxWait)
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		timer := time.NewTimer(wait)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
	}
}

func (t *politeTransport) shouldWait(req *http.Request, resp *http.Response, attempt int) bool {
	if resp.StatusCode != http.StatusTooManyRequests &&
		resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return attempt < t.attempts
}

// limit refuses a manifest whose announced size is over the limit and cuts
// one that grows past it while being read.
func (t *politeTransport) limit(req *http.Request, resp *http.Response) (*http.Response, error) {
	if t.maxManifest <= 0 || !strings.Contains(req.URL.Path, "/manifests/") {
		return resp, nil
	}
	if resp.ContentLength > t.maxManifest {
		resp.Body.Close()
		return nil, fmt.Errorf("get %s: %w: %d bytes, the limit is %d", req.URL.Path,
			ErrTooLarge, resp.ContentLength, t.maxManifest)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: t.maxManifest}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	left int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.ReadCloser.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, fmt.Errorf("%w: manifest over the limit", ErrTooLarge)
	}
	return n, err
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), defaulting
// to one second and capped at limit.
func retryAfter(v string, limit time.Duration) time.Duration {
	wait := time.Second
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		wait = time.Duration(s) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		wait = time.Until(at)
	}
	return min(max(wait, 0), limit)
}
