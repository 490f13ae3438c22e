package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// OutputRecord says that an output holds entries of the cache: an output
// directory whose image.json names the SIF entries it links, or a single
// file (flatten's) that is a link to or copy of a Flat entry. GC keeps
// every entry a live record names, and drops records whose output is gone
// or now holds other entries.
type OutputRecord struct {
	// Dir is the output directory, absolute.
	Dir string `json:"dir,omitempty"`
	// ImageJSON is Dir's image.json, which must name every SIF key of Keys.
	ImageJSON string `json:"image_json,omitempty"`
	// File is the single output file, absolute.
	File string `json:"file,omitempty"`
	// Source is the image converted.
	Source string `json:"source"`
	// Keys lists the entries the output needs, by kind: its files, and the
	// indexes, documents and conversion record that make it again without
	// work.
	Keys map[Kind][]string `json:"keys"`
	// Time is when the output was written.
	Time time.Time `json:"time"`
}

// outputsKind names the locks of output records.
const outputsKind Kind = "outputs"

// sifKinds are the kinds an output's image.json names.
var sifKinds = []Kind{Base, Layer, Config, Flat}

// RecordOutput writes rec as outputs/<sha256 of its path>.json, replacing
// what an earlier conversion into the same place recorded. Dir and File are
// made absolute. On error the earlier record, if any, stays.
func (c *Cache) RecordOutput(ctx context.Context, rec OutputRecord) error {
	path := rec.Dir
	if path == "" {
		path = rec.File
	}
	if path == "" {
		return errors.New("record output: no directory or file")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("record output %s: %w", path, err)
	}
	if rec.Dir != "" {
		rec.Dir, rec.ImageJSON = abs, filepath.Join(abs, "image.json")
	} else {
		rec.File = abs
	}
	name := recordName(abs)
	unlock, err := c.Lock(ctx, outputsKind, name)
	if err != nil {
		return fmt.Errorf("record output %s: %w", abs, err)
	}
	defer unlock()
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("record output %s: %w", abs, err)
	}
	err = c.writeFile(c.recordPath(name.Hex), 0o600, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("record output %s: %w", abs, err)
	}
	return nil
}

func recordName(abs string) v1.Hash {
	sum := sha256.Sum256([]byte(abs))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func (c *Cache) recordPath(hex string) string { return c.sub("outputs", hex+".json") }

// record is an output record and the hex of its file name.
type record struct {
	OutputRecord
	name string
}

// records reads every output record; bad lists the names of the files that
// do not decode.
func (c *Cache) records() (recs []record, bad []string, err error) {
	dir := c.sub("outputs")
	list, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read output records: %w", err)
	}
	for _, e := range list {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || len(name) != 64 || !isHex(name) {
			continue
		}
		r, err := readRecord(filepath.Join(dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			bad = append(bad, e.Name())
			continue
		}
		recs = append(recs, record{OutputRecord: *r, name: name})
	}
	return recs, bad, nil
}

func readRecord(path string) (*OutputRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r OutputRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if r.Dir == "" && r.File == "" {
		return nil, fmt.Errorf("decode %s: names no output", path)
	}
	return &r, nil
}

// path is where the record's output is.
func (r *OutputRecord) path() string {
	if r.Dir != "" {
		return r.Dir
	}
	return r.File
}

// live reports whether the record's output still holds what it names. When
// it cannot tell (a permission error, say) it answers yes, which keeps
// entries rather than losing them.
func (c *Cache) live(r *OutputRecord) bool {
	if r.Dir != "" {
		return liveDir(r)
	}
	fi, err := os.Stat(r.File)
	if gone(err) {
		return false
	}
	if err != nil {
		return true
	}
	for _, key := range r.Keys[Flat] {
		h, err := v1.NewHash(key)
		if err != nil {
			return false
		}
		ei, err := os.Stat(c.Path(Flat, h))
		if err == nil && !os.SameFile(fi, ei) && fi.Size() != ei.Size() {
			return false
		}
	}
	return true
}

// liveDir reports whether the record's image.json still names every SIF
// entry the record does.
func liveDir(r *OutputRecord) bool {
	b, err := os.ReadFile(filepath.Join(r.Dir, "image.json"))
	if gone(err) {
		return false
	}
	if err != nil {
		return true
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		return false
	}
	named := map[string]bool{}
	collectKeys(doc, named)
	for _, k := range sifKinds {
		for _, key := range r.Keys[k] {
			if !named[key] {
				return false
			}
		}
	}
	return true
}

// collectKeys adds every string value of a "key" field anywhere in doc.
func collectKeys(doc any, out map[string]bool) {
	switch v := doc.(type) {
	case map[string]any:
		for name, val := range v {
			if s, ok := val.(string); ok && name == "key" {
				out[s] = true
			}
			collectKeys(val, out)
		}
	case []any:
		for _, val := range v {
			collectKeys(val, out)
		}
	}
}

// gone reports whether err says a path does not exist.
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// references returns the outputs that live records say use each entry, by
// usingLine, and the records that are stale.
func (c *Cache) references() (map[string][]string, []record, error) {
	recs, _, err := c.records()
	if err != nil {
		return nil, nil, err
	}
	refs := map[string][]string{}
	var stale []record
	for _, r := range recs {
		if !c.live(&r.OutputRecord) {
			stale = append(stale, r)
			continue
		}
		for k, keys := range r.Keys {
			for _, key := range keys {
				if hex, ok := strings.CutPrefix(key, "sha256:"); ok {
					refs[usingLine(k, hex)] = append(refs[usingLine(k, hex)], r.path())
				}
			}
		}
	}
	return refs, stale, nil
}

// dropRecord removes a stale record, unless it has been rewritten since and
// is live again; it reports whether it removed it.
func (c *Cache) dropRecord(r record) (bool, error) {
	l, ok, err := c.tryLock(outputsKind, v1.Hash{Algorithm: "sha256", Hex: r.name})
	if err != nil || !ok {
		return false, err
	}
	now, err := readRecord(c.recordPath(r.name))
	if err == nil && c.live(now) {
		l.release()
		return false, nil
	}
	if err := os.Remove(c.recordPath(r.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		l.release()
		return false, fmt.Errorf("drop output record %s: %w", r.path(), err)
	}
	l.releaseRemoving()
	return true, nil
}
