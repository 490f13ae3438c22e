package cache

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// put writes an entry holding content, with image as its origin.
func put(t *testing.T, c *Cache, k Kind, key v1.Hash, content []byte, image string) {
	t.Helper()
	o := Origin{Images: []string{image}}
	err := c.PutWithOrigin(k, key, o, func(w *os.File) error {
		_, err := w.Write(content)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// digestOf is the key of a document holding b.
func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// gzipJSON is a well-formed index.
func gzipJSON(t *testing.T, doc string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	io.WriteString(zw, doc)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// age makes an entry look created and last used d ago.
func age(t *testing.T, c *Cache, k Kind, key v1.Hash, d time.Duration) {
	t.Helper()
	then := time.Now().Add(-d)
	m, err := c.readMeta(k, key.Hex)
	if err != nil {
		t.Fatal(err)
	}
	m.Created = then.UTC()
	if err := c.writeMeta(*m); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{c.usedPath(k, key.Hex), c.Path(k, key)} {
		if err := os.Chtimes(p, then, then); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

func TestPutWritesMeta(t *testing.T) {
	tests := []struct {
		name    string
		kind    Kind
		key     v1.Hash
		content string
		origin  Origin
		wantErr string
	}{
		{name: "layer", kind: Layer, key: key("l"), content: "sif bytes",
			origin: Origin{Images: []string{"docker://a"}, DiffIDs: []string{key("d").String()},
				ChainID: key("c").String()}},
		{name: "no origin", kind: Image, key: key("i"), content: "{}"},
		{name: "document", kind: Document, key: digestOf([]byte("doc")), content: "doc",
			origin: Origin{Images: []string{"docker://b"}}},
		{name: "document under another digest", kind: Document, key: key("other"),
			content: "doc", wantErr: "content hashes to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir())
			err := c.PutWithOrigin(tt.kind, tt.key, tt.origin, func(w *os.File) error {
				_, err := io.WriteString(w, tt.content)
				return err
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Put error = %v, want %q", err, tt.wantErr)
				}
				if c.Has(tt.kind, tt.key) {
					t.Errorf("a refused entry exists")
				}
				if _, err := c.readMeta(tt.kind, tt.key.Hex); !os.IsNotExist(err) {
					t.Errorf("a refused entry has metadata: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, err := c.readMeta(tt.kind, tt.key.Hex)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := m.SHA256, digestOf([]byte(tt.content)).String(); got != want {
				t.Errorf("sha256 %s, want %s", got, want)
			}
			if m.Size != int64(len(tt.content)) || m.Kind != tt.kind || m.Key != tt.key.String() ||
				m.Format != MetaFormat || time.Since(m.Created) > time.Minute {
				t.Errorf("metadata %+v", m)
			}
			if !slices.Equal(m.Images, tt.origin.Images) || !slices.Equal(m.DiffIDs,
				tt.origin.DiffIDs) || m.ChainID != tt.origin.ChainID {
				t.Errorf("origin %+v, want %+v", m.Origin, tt.origin)
			}
			used, images := readUsed(c.usedPath(tt.kind, tt.key.Hex))
			if time.Since(used) > time.Minute || !slices.Equal(images, tt.origin.Images) {
				t.Errorf("used file: %v %q, want now and %q", used, images, tt.origin.Images)
			}
		})
	}
}

// TestMetaBeforeEntry checks the order Put writes in: while fill runs
// neither exists; a metadata file without entry is what an interruption
// between the two renames leaves, never an entry without metadata.
func TestMetaBeforeEntry(t *testing.T) {
	c := openCache(t, t.TempDir())
	k := key("x")
	err := c.Put(Layer, k, func(w *os.File) error {
		if _, err := os.Stat(c.metaPath(Layer, k.Hex)); !os.IsNotExist(err) {
			t.Errorf("metadata exists while the entry is filled: %v", err)
		}
		_, err := io.WriteString(w, "x")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	using, err := c.liveUsing()
	if err != nil {
		t.Fatal(err)
	}
	if !using[usingLine(Layer, k.Hex)] {
		t.Errorf("Put did not list the entry as in use: %v", using)
	}
}

func TestUse(t *testing.T) {
	root := t.TempDir()
	c := openCache(t, root)
	present, missing, locked := key("present"), key("missing"), key("locked")
	put(t, c, Layer, present, []byte("p"), "docker://maker")
	put(t, c, Layer, locked, []byte("l"), "docker://maker")
	age(t, c, Layer, present, time.Hour)

	other := openCache(t, root)
	unlock, err := other.Lock(t.Context(), Layer, locked)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	tests := []struct {
		name      string
		key       v1.Hash
		want      bool
		wantTouch bool
	}{
		{"present", present, true, true},
		{"missing", missing, false, false},
		{"locked by another", locked, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := readUsed(c.usedPath(Layer, tt.key.Hex))
			got, err := c.Use(Layer, tt.key, "docker://user")
			if err != nil || got != tt.want {
				t.Fatalf("Use = %v, %v; want %v", got, err, tt.want)
			}
			after, images := readUsed(c.usedPath(Layer, tt.key.Hex))
			if touched := after.After(before); touched != tt.wantTouch {
				t.Errorf("last use %v -> %v; want it moved: %v", before, after, tt.wantTouch)
			}
			if tt.wantTouch && !slices.Equal(images, []string{"docker://maker", "docker://user"}) {
				t.Errorf("used by %q", images)
			}
			using, err := other.liveUsing()
			if err != nil {
				t.Fatal(err)
			}
			if !using[usingLine(Layer, tt.key.Hex)] {
				t.Errorf("another process does not see the entry as in use")
			}
		})
	}
	if _, err := os.Stat(c.usedPath(Layer, missing.Hex)); !os.IsNotExist(err) {
		t.Errorf("Use of a missing entry made a used file: %v", err)
	}
}

// TestLockRemovedFile removes a lock file while its holder has it and
// another waits: the waiter must not end up holding a lock nobody else
// can see.
func TestLockRemovedFile(t *testing.T) {
	c := openCache(t, t.TempDir())
	k := key("k")
	l, ok, err := c.tryLock(Layer, k)
	if err != nil || !ok {
		t.Fatalf("tryLock = %v, %v", ok, err)
	}
	got := make(chan func())
	go func() {
		unlock, err := c.Lock(context.Background(), Layer, k)
		if err != nil {
			t.Error(err)
		}
		got <- unlock
	}()
	time.Sleep(3 * lockPoll / 2)
	l.releaseRemoving()
	unlock := <-got
	if _, ok, err := c.tryLock(Layer, k); ok || err != nil {
		t.Errorf("tryLock while the waiter holds the lock = %v, %v; want false", ok, err)
	}
	unlock()
	l2, ok, err := c.tryLock(Layer, k)
	if !ok || err != nil {
		t.Fatalf("tryLock after release = %v, %v", ok, err)
	}
	l2.release()
}

func TestOpenTightens(t *testing.T) {
	tests := []struct {
		before, want fs.FileMode
	}{
		{0o755, 0o700},
		{0o777, 0o700},
		{0o750, 0o700},
		{0o700, 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.before.String(), func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "cache")
			if err := os.Mkdir(root, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(root, tt.before); err != nil {
				t.Fatal(err)
			}
			openCache(t, root)
			if got := mode(t, root).Perm(); got != tt.want {
				t.Errorf("cache root mode %v, want %v", got, tt.want)
			}
		})
	}
}
