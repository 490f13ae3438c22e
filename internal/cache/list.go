package cache

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// entry is one finished entry found on disk.
type entry struct {
	kind Kind
	hex  string
	path string
	size int64
	mod  time.Time
}

func (e entry) key() v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: e.hex} }

// id names the entry the way using files and references do.
func (e entry) id() string { return usingLine(e.kind, e.hex) }

// entryHex returns the key's hex of an entry file name of kind k; ok is
// false for any other name (temporary files, strays).
func entryHex(k Kind, name string) (hex string, ok bool) {
	hex, ok = strings.CutSuffix(name, extensions[k])
	return hex, ok && len(hex) == 64 && isHex(hex)
}

// scan lists the entries of the given kinds, kind by kind in key order.
func (c *Cache) scan(ctx context.Context, kinds ...Kind) ([]entry, error) {
	var out []entry
	for _, k := range kinds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		list, err := os.ReadDir(c.dir(k))
		if err != nil {
			return nil, fmt.Errorf("list cache entries %s: %w", k, err)
		}
		for _, d := range list {
			hex, ok := entryHex(k, d.Name())
			if !ok || !d.Type().IsRegular() {
				continue
			}
			fi, err := d.Info()
			if gone(err) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("list cache entries %s: %w", k, err)
			}
			out = append(out, entry{kind: k, hex: hex, path: filepath.Join(c.dir(k), d.Name()),
				size: fi.Size(), mod: fi.ModTime()})
		}
	}
	return out, nil
}

// EntryInfo describes an entry, from its metadata, its last-use record and
// the output records; the entry itself is not read.
type EntryInfo struct {
	Kind Kind   `json:"kind"`
	Key  string `json:"key"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Created comes from the metadata, else the file's mtime.
	Created time.Time `json:"created"`
	// LastUsed is the last time a conversion made or reused the entry.
	LastUsed time.Time `json:"last_used"`
	// Images are the sources of the conversions that made or used it.
	Images []string `json:"images,omitempty"`
	// Outputs are the output directories and files that hold it now.
	Outputs []string `json:"outputs,omitempty"`
	DiffIDs []string `json:"diff_ids,omitempty"`
	ChainID string   `json:"chain_id,omitempty"`
	// Meta is false for an entry without (readable) metadata, which an
	// older version made; Verify cannot check it.
	Meta bool `json:"meta"`
	// InUse is set when a running process lists the entry as in use.
	InUse bool `json:"in_use"`
}

// List describes every entry, base, layer, config and flat SIFs first, then
// indexes, documents and conversion records, each kind in key order. It
// reads metadata, last-use and output records and every output's
// image.json, but no entry.
func (c *Cache) List(ctx context.Context) ([]EntryInfo, error) {
	entries, err := c.scan(ctx, AllKinds...)
	if err != nil {
		return nil, err
	}
	refs, _, err := c.references()
	if err != nil {
		return nil, err
	}
	using, err := c.liveUsing()
	if err != nil {
		return nil, err
	}
	out := make([]EntryInfo, 0, len(entries))
	for _, e := range entries {
		info := c.info(e)
		info.Outputs = refs[e.id()]
		info.InUse = using[e.id()]
		out = append(out, info)
	}
	return out, nil
}

// info describes an entry without the outputs and use that only the whole
// cache tells.
func (c *Cache) info(e entry) EntryInfo {
	info := EntryInfo{Kind: e.kind, Key: e.key().String(), Path: e.path, Size: e.size,
		Created: e.mod}
	if m, err := c.readMeta(e.kind, e.hex); err == nil {
		info.Meta, info.Created = true, m.Created
		info.Images, info.DiffIDs, info.ChainID = m.Images, m.DiffIDs, m.ChainID
	}
	used, images := readUsed(c.usedPath(e.kind, e.hex))
	info.LastUsed = info.Created
	if used.After(info.LastUsed) {
		info.LastUsed = used
	}
	for _, im := range images {
		if !slices.Contains(info.Images, im) {
			info.Images = append(info.Images, im)
		}
	}
	return info
}

// KindUsage is what the entries of one kind take.
type KindUsage struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
}

// Usage is what the cache takes on disk, in bytes of file content.
type Usage struct {
	Kinds map[Kind]KindUsage `json:"kinds"`
	// Entries and Bytes total every kind.
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
	// MetadataBytes counts metadata, last-use, output and lock files.
	MetadataBytes int64 `json:"metadata_bytes"`
	// TempBytes counts running (or not yet swept) work under tmp/.
	TempBytes int64 `json:"temp_bytes"`
}

// DiskUsage totals the sizes of the entries per kind, from a stat of each.
func (c *Cache) DiskUsage(ctx context.Context) (*Usage, error) {
	entries, err := c.scan(ctx, AllKinds...)
	if err != nil {
		return nil, err
	}
	u := &Usage{Kinds: map[Kind]KindUsage{}}
	for _, k := range AllKinds {
		u.Kinds[k] = KindUsage{}
	}
	for _, e := range entries {
		ku := u.Kinds[e.kind]
		ku.Entries++
		ku.Bytes += e.size
		u.Kinds[e.kind] = ku
		u.Entries++
		u.Bytes += e.size
	}
	for _, d := range []string{"meta", "used", "outputs", "locks"} {
		u.MetadataBytes += treeSize(c.sub(d))
	}
	u.TempBytes = treeSize(c.tmpRoot())
	return u, nil
}

// treeSize sums the sizes of the regular files under dir, skipping what
// cannot be read or vanishes meanwhile.
func treeSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			n += fi.Size()
		}
		return nil
	})
	return n
}
