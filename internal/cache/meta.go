package cache

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// MetaFormat names the layout of metadata files this version writes.
const MetaFormat = "oci2layers-cache-v1"

// Meta describes an entry. It is written (atomically) before the entry is
// renamed into place and never changed afterwards, so Verify can check the
// entry against it and List and GC need not read the entry.
type Meta struct {
	Kind Kind   `json:"kind"`
	Key  string `json:"key"`
	// Size and SHA256 ("sha256:<hex>") describe the entry file's bytes.
	Size    int64     `json:"size"`
	SHA256  string    `json:"sha256"`
	Created time.Time `json:"created"`
	// Format is MetaFormat of the version that wrote the entry.
	Format string `json:"format"`
	Origin
}

// Origin says what an entry was made from, for people reading the cache.
type Origin struct {
	// Images are the sources of the conversion that made the entry.
	Images []string `json:"images,omitempty"`
	// DiffIDs are the layers the entry holds, bottom to top.
	DiffIDs []string `json:"diff_ids,omitempty"`
	// ChainID is the chainID of the entry's top layer.
	ChainID string `json:"chain_id,omitempty"`
}

func (c *Cache) metaPath(k Kind, hex string) string {
	return c.sub("meta", string(k), hex+".json")
}

func (c *Cache) usedPath(k Kind, hex string) string { return c.sub("used", string(k), hex) }

// writeMeta writes an entry's metadata file atomically.
func (c *Cache) writeMeta(m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	key, err := v1.NewHash(m.Key)
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	return c.writeFile(c.metaPath(m.Kind, key.Hex), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// readMeta reads an entry's metadata; a missing file gives an error wrapping
// os.ErrNotExist.
func (c *Cache) readMeta(k Kind, hex string) (*Meta, error) {
	b, err := os.ReadFile(c.metaPath(k, hex))
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode metadata %s/%s: %w", k, hex, err)
	}
	return &m, nil
}

// hashFile returns the size and sha256 digest of f's whole content.
func hashFile(f *os.File) (int64, string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("hash %s: %w", f.Name(), err)
	}
	return n, "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// usingLine is how an entry appears in a using file.
func usingLine(k Kind, hex string) string { return string(k) + " " + hex }

// markUsing adds an entry to this process's using list, which GC, Remove
// and Verify read: an entry a live process lists is not removed.
func (c *Cache) markUsing(k Kind, key v1.Hash) error {
	line := usingLine(k, key.Hex)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.listed[line] {
		return nil
	}
	if c.using == nil {
		f, err := os.OpenFile(filepath.Join(c.work, "using"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("record use: %w", err)
		}
		c.using = f
	}
	// One write per line: O_APPEND keeps lines whole for readers.
	if _, err := c.using.WriteString(line + "\n"); err != nil {
		return fmt.Errorf("record use: %w", err)
	}
	c.listed[line] = true
	return nil
}

// Use tells the cache that this process is about to use an entry, and
// reports whether the entry exists. The entry joins the process's using
// list first, so that once Use has seen it, GC and Remove leave it alone
// until the process ends; when it exists, its last use becomes now and
// image (if not empty) joins the images that used it. Use never waits: an
// entry whose lock another process holds, while it builds or removes the
// entry, counts as missing, and the caller takes Lock and checks Has.
func (c *Cache) Use(k Kind, key v1.Hash, image string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, fmt.Errorf("use cache entry %s: %w", k, err)
	}
	if err := c.markUsing(k, key); err != nil {
		return false, fmt.Errorf("use cache entry %s %s: %w", k, key, err)
	}
	l, ok, err := c.tryLock(k, key)
	if err != nil || !ok {
		return false, err
	}
	defer l.release()
	if !c.Has(k, key) {
		return false, nil
	}
	c.touchUsed(k, key, image)
	return true, nil
}

// Touch records a use of an entry the caller holds the lock of and has
// found with Has: as Use, without taking the lock.
func (c *Cache) Touch(k Kind, key v1.Hash, image string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("use cache entry %s: %w", k, err)
	}
	if err := c.markUsing(k, key); err != nil {
		return fmt.Errorf("use cache entry %s %s: %w", k, key, err)
	}
	c.touchUsed(k, key, image)
	return nil
}

// touchUsed sets the entry's last use to now and adds the images not yet
// listed in its used file. It is bookkeeping: failures are ignored, and
// the entry's creation time stands in for a missing used file.
func (c *Cache) touchUsed(k Kind, key v1.Hash, images ...string) {
	p := c.usedPath(k, key.Hex)
	_, known := readUsed(p)
	var add []byte
	for _, im := range images {
		im = strings.ReplaceAll(im, "\n", " ")
		if im != "" && !slices.Contains(known, im) {
			add = append(add, im+"\n"...)
			known = append(known, im)
		}
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	if len(add) > 0 {
		f.Write(add)
	}
	f.Close()
	now := time.Now()
	os.Chtimes(p, now, now)
}

// readUsed returns an entry's last use and the images that used it, from
// its used file; the zero time when there is none.
func readUsed(path string) (time.Time, []string) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return time.Time{}, nil
	}
	var images []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !slices.Contains(images, l) {
			images = append(images, l)
		}
	}
	return fi.ModTime(), images
}

// liveUsing returns the entries that running processes (this one included)
// list in their using files, as usingLine gives them. It holds the lock on
// tmp/ while it looks, so that it never takes the lock of a work directory
// Open has made and is about to lock.
func (c *Cache) liveUsing() (map[string]bool, error) {
	tmpLock, err := c.lockTmp()
	if err != nil {
		return nil, fmt.Errorf("list running conversions: %w", err)
	}
	defer tmpLock.Close()
	dirs, err := os.ReadDir(c.tmpRoot())
	if err != nil {
		return nil, fmt.Errorf("list running conversions: %w", err)
	}
	out := map[string]bool{}
	for _, d := range dirs {
		dir := filepath.Join(c.tmpRoot(), d.Name())
		if !d.IsDir() || !strings.HasPrefix(d.Name(), "run-") || abandoned(dir) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "using"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list running conversions: %w", err)
		}
		// A line without its newline is still being written; its writer
		// has not looked for the entry yet.
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			for _, l := range strings.Split(string(b[:i]), "\n") {
				out[l] = true
			}
		}
	}
	return out, nil
}
