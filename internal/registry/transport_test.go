package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// statusServer answers each request with the next of statuses (the last
// one repeated), setting Retry-After to retry on every non-200 answer.
func statusServer(t *testing.T, retry func() string, statuses ...int) (*httptest.Server,
	*atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		status := statuses[min(i, len(statuses)-1)]
		if status != http.StatusOK {
			w.Header().Set("Retry-After", retry())
		}
		w.WriteHeader(status)
		io.WriteString(w, "body")
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func politeClient(attempts int, maxWait time.Duration, maxManifest int64) *http.Client {
	return &http.Client{Transport: &politeTransport{next: http.DefaultTransport,
		attempts: attempts, maxWait: maxWait, maxManifest: maxManifest}}
}

func TestPoliteTransportRetries(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		statuses  []int
		retry     func() string
		attempts  int
		wantCalls int32
		want      int // final status
		minWait   time.Duration
		maxWait   time.Duration
	}{
		{name: "429 then 200 waits a second", method: http.MethodGet,
			statuses: []int{429, 200}, retry: func() string { return "1" }, attempts: 5,
			wantCalls: 2, want: 200, minWait: 900 * time.Millisecond, maxWait: 5 * time.Second},
		{name: "503 with a date", method: http.MethodHead,
			statuses: []int{503, 200}, attempts: 5,
			retry: func() string {
				return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
			},
			wantCalls: 2, want: 200, minWait: 900 * time.Millisecond, maxWait: 5 * time.Second},
		{name: "POST is not retried", method: http.MethodPost,
			statuses: []int{429, 200}, retry: func() string { return "0" }, attempts: 5,
			wantCalls: 1, want: 429, maxWait: time.Second},
		{name: "attempts are bounded", method: http.MethodGet,
			statuses: []int{503}, retry: func() string { return "0" }, attempts: 3,
			wantCalls: 3, want: 503, maxWait: time.Second},
		{name: "other errors pass", method: http.MethodGet,
			statuses: []int{500, 200}, retry: func() string { return "0" }, attempts: 5,
			wantCalls: 1, want: 500, maxWait: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, calls := statusServer(t, tt.retry, tt.statuses...)
			req, err := http.NewRequest(tt.method, srv.URL+"/v2/", nil)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			resp, err := politeClient(tt.attempts, 10*time.Second, 0).Do(req)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got, want := resp.StatusCode, tt.want; got != want {
				t.Errorf("status = %d, want %d", got, want)
			}
			if got, want := calls.Load(), tt.wantCalls; got != want {
				t.Errorf("%d requests, want %d", got, want)
			}
			if elapsed < tt.minWait || elapsed > tt.maxWait {
				t.Errorf("took %v, want between %v and %v", elapsed, tt.minWait, tt.maxWait)
			}
		})
	}
}

// TestPoliteTransportCancel checks that a cancelled request stops waiting.
func TestPoliteTransportCancel(t *testing.T) {
	srv, calls := statusServer(t, func() string { return "30" }, 429)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = politeClient(5, time.Minute, 0).Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do error = %v, want %v", err, context.DeadlineExceeded)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("took %v to give up", elapsed)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d requests, want 1", got)
	}
}

func TestPoliteTransportManifestLimit(t *testing.T) {
	const limit = 100
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := limit
		if strings.HasSuffix(r.URL.Path, "/big") {
			n++
		}
		body := strings.Repeat("x", n)
		if r.URL.Query().Has("stream") {
			// No Content-Length: flush a first part, then the rest chunked.
			io.WriteString(w, body[:10])
			w.(http.Flusher).Flush()
			io.WriteString(w, body[10:])
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name    string
		path    string
		wantErr error
	}{
		{name: "announced at the limit", path: "/v2/r/manifests/ok"},
		{name: "announced over the limit", path: "/v2/r/manifests/big", wantErr: ErrTooLarge},
		{name: "streamed at the limit", path: "/v2/r/manifests/ok?stream=1"},
		{name: "streamed over the limit", path: "/v2/r/manifests/big?stream=1",
			wantErr: ErrTooLarge},
		{name: "blobs are not limited", path: "/v2/r/blobs/big"},
		{name: "streamed blobs are not limited", path: "/v2/r/blobs/big?stream=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := politeClient(1, time.Second, limit).Get(srv.URL + tt.path)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("GET %s error = %v, want %v", tt.path, err, tt.wantErr)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	const limit = time.Minute
	date := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(http.TimeFormat) }
	tests := []struct {
		name     string
		header   string
		min, max time.Duration
	}{
		{name: "missing", header: "", min: time.Second, max: time.Second},
		{name: "zero", header: "0", min: 0, max: 0},
		{name: "seconds", header: "5", min: 5 * time.Second, max: 5 * time.Second},
		{name: "spaces", header: " 3 ", min: 3 * time.Second, max: 3 * time.Second},
		{name: "capped", header: "3600", min: limit, max: limit},
		{name: "negative", header: "-1", min: time.Second, max: time.Second},
		{name: "garbage", header: "soon", min: time.Second, max: time.Second},
		{name: "date ahead", header: date(30 * time.Second), min: 28 * time.Second,
			max: 30 * time.Second},
		{name: "date past", header: date(-time.Hour), min: 0, max: 0},
		{name: "date far ahead is capped", header: date(time.Hour), min: limit, max: limit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := retryAfter(tt.header, limit)
			if got < tt.min || got > tt.max {
				t.Errorf("retryAfter(%q) = %v, want between %v and %v", tt.header, got, tt.min,
					tt.max)
			}
		})
	}
}
