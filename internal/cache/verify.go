package cache

import (
	"compress/gzip"
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

	"github.com/oci2layers/oci2layers/internal/atomicfile"
)

// ProblemClass sorts what Verify finds.
type ProblemClass string

// The classes of problem. Damaged and Unverifiable entries make a report
// fail; Leftover and Unexpected files do not.
const (
	// Damaged is an entry whose bytes differ from its metadata or do not
	// decode, or whose metadata cannot be read.
	Damaged ProblemClass = "damaged"
	// Unverifiable is an entry without metadata (older versions made
	// those) whose content cannot vouch for itself.
	Unverifiable ProblemClass = "unverifiable"
	// Leftover is what an interrupted process leaves: a metadata or
	// last-use file without entry, a temporary file outside tmp/, an
	// output record that does not decode.
	Leftover ProblemClass = "leftover"
	// Unexpected is a file the cache never makes. It is reported and never
	// removed.
	Unexpected ProblemClass = "unexpected"
)

// Problem is one thing Verify found.
type Problem struct {
	Class  ProblemClass `json:"class"`
	Kind   Kind         `json:"kind,omitempty"`
	Key    string       `json:"key,omitempty"`
	Path   string       `json:"path"`
	Detail string       `json:"detail"`
	// Removed is set when Verify removed the file (with repair).
	Removed bool `json:"removed"`
}

// VerifyReport is what Verify found.
type VerifyReport struct {
	// Entries and Bytes count the entries checked.
	Entries  int       `json:"entries"`
	Bytes    int64     `json:"bytes"`
	Problems []Problem `json:"problems"`
}

// Failed reports whether a damaged or unverifiable entry is left in the
// cache.
func (r *VerifyReport) Failed() bool {
	for _, p := range r.Problems {
		if (p.Class == Damaged || p.Class == Unverifiable) && !p.Removed {
			return true
		}
	}
	return false
}

// Verify reads every entry and checks it: its size and sha256 against its
// metadata, an index's gzip and JSON, a conversion record's JSON, a
// document's digest against its key. An entry without metadata is
// unverifiable, unless it is a document. A damaged entry is read again
// under its lock before it is reported, so that an entry being replaced
// meanwhile is not. Verify also reports metadata and last-use files without
// an entry (unless a running process lists the entry: it is writing it),
// temporary files outside tmp/ and output records that do not decode. With
// repair it removes damaged and unverifiable entries (with their metadata,
// last-use and lock files) and the leftovers. On error, what was removed
// stays removed.
func (c *Cache) Verify(ctx context.Context, repair bool) (*VerifyReport, error) {
	v := &verifier{c: c, repair: repair, rep: &VerifyReport{Problems: []Problem{}}}
	entries, err := c.scan(ctx, AllKinds...)
	if err != nil {
		return nil, fmt.Errorf("verify cache: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := v.entry(ctx, e); err != nil {
			return nil, fmt.Errorf("verify cache: %w", err)
		}
	}
	if err := v.files(ctx); err != nil {
		return nil, fmt.Errorf("verify cache: %w", err)
	}
	return v.rep, nil
}

// verifier is one Verify pass.
type verifier struct {
	c      *Cache
	repair bool
	rep    *VerifyReport
}

func (v *verifier) add(p Problem) { v.rep.Problems = append(v.rep.Problems, p) }

// entry checks one entry, confirms damage under its lock and, with repair,
// removes it.
func (v *verifier) entry(ctx context.Context, e entry) error {
	class, detail := v.c.check(e)
	if class == "" {
		v.count(e)
		return nil
	}
	unlock, err := v.c.Lock(ctx, e.kind, e.key())
	if err != nil {
		return err
	}
	defer unlock()
	if class, detail = v.c.check(e); class == "" {
		v.count(e)
		return nil
	}
	v.count(e)
	p := Problem{Class: class, Kind: e.kind, Key: e.key().String(), Path: e.path, Detail: detail}
	if v.repair {
		if err := v.c.removeFiles(e.kind, e.hex); err != nil {
			return err
		}
		p.Removed = true
	}
	v.add(p)
	return nil
}

func (v *verifier) count(e entry) {
	v.rep.Entries++
	v.rep.Bytes += e.size
}

// check reads an entry and returns what is wrong with it: an empty class
// when nothing is, or when the entry has gone meanwhile.
func (c *Cache) check(e entry) (ProblemClass, string) {
	f, err := os.Open(e.path)
	if gone(err) {
		return "", ""
	}
	if err != nil {
		return Damaged, err.Error()
	}
	defer f.Close()
	m, merr := c.readMeta(e.kind, e.hex)
	size, sum, bad := readEntry(e.kind, e.hex, f)

	switch {
	case merr == nil:
		switch {
		case m.Kind != e.kind || m.Key != e.key().String():
			return Damaged, fmt.Sprintf("metadata describes %s %s", m.Kind, m.Key)
		case size != m.Size:
			return Damaged, fmt.Sprintf("size %d, metadata says %d", size, m.Size)
		case sum != m.SHA256:
			return Damaged, fmt.Sprintf("content hashes to %s, metadata says %s", sum, m.SHA256)
		case bad != nil:
			return Damaged, bad.Error()
		}
		return "", ""
	case !errors.Is(merr, os.ErrNotExist):
		return Damaged, fmt.Sprintf("unreadable metadata: %v", merr)
	case bad != nil:
		return Damaged, bad.Error()
	case e.kind == Document:
		return "", "" // checked against its key
	}
	return Unverifiable, "no metadata (an older version made the entry)"
}

// readEntry reads an entry to its end and returns its size and sha256, and
// what is wrong with its content (an index that does not decode, a record
// that is no JSON, a document that does not hash to its key, a read error).
func readEntry(k Kind, keyHex string, r io.Reader) (int64, string, error) {
	h := sha256.New()
	cr := &countReader{r: r}
	tee := io.TeeReader(cr, h)
	var bad error
	switch k {
	case Index:
		bad = checkIndex(tee)
	case Image:
		b, err := io.ReadAll(tee)
		if err == nil && !json.Valid(b) {
			err = errors.New("conversion record is not JSON")
		}
		bad = err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil && bad == nil {
		bad = fmt.Errorf("read: %w", err)
	}
	sum := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if k == Document && bad == nil && sum != "sha256:"+keyHex {
		bad = fmt.Errorf("content hashes to %s", sum)
	}
	return cr.n, sum, bad
}

// checkIndex decodes a gzipped JSON index to its end, where gzip checks its
// CRC.
func checkIndex(r io.Reader) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("decode index: %w", err)
	}
	var v json.RawMessage
	if err := json.NewDecoder(zr).Decode(&v); err != nil {
		return fmt.Errorf("decode index: %w", err)
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return fmt.Errorf("decode index: %w", err)
	}
	return nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// files checks every file that is not an entry, outside tmp/.
func (v *verifier) files(ctx context.Context) error {
	using, err := v.c.liveUsing()
	if err != nil {
		return err
	}
	for _, k := range AllKinds {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := v.dir(v.c.dir(k), func(name string) (ProblemClass, string) {
			if _, ok := entryHex(k, name); ok {
				return "", ""
			}
			return Unexpected, "not a cache entry"
		}); err != nil {
			return err
		}
		for _, sub := range []string{"meta", "used"} {
			if err := v.orphans(k, sub, using); err != nil {
				return err
			}
		}
	}
	if err := v.records(); err != nil {
		return err
	}
	for _, dir := range []string{v.c.root, v.c.sub(), v.c.sub("locks")} {
		if err := v.dir(dir, func(string) (ProblemClass, string) { return "", "" }); err != nil {
			return err
		}
	}
	return nil
}

// dir reports and, with repair, removes the temporary files in dir, and
// reports what judge says of every other regular file.
func (v *verifier) dir(dir string, judge func(name string) (ProblemClass, string)) error {
	list, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, d := range list {
		p := filepath.Join(dir, d.Name())
		if strings.HasPrefix(d.Name(), atomicfile.TempPrefix) {
			v.leftover(p, "temporary file outside tmp/", func() bool { return true })
			continue
		}
		if d.IsDir() {
			continue
		}
		if class, detail := judge(d.Name()); class != "" {
			v.add(Problem{Class: class, Path: p, Detail: detail})
		}
	}
	return nil
}

// leftover reports a leftover file and, with repair, removes it when
// stillLeft says so.
func (v *verifier) leftover(path, detail string, stillLeft func() bool) {
	p := Problem{Class: Leftover, Path: path, Detail: detail}
	if v.repair && stillLeft() {
		err := os.Remove(path)
		p.Removed = err == nil || errors.Is(err, os.ErrNotExist)
	}
	v.add(p)
}

// orphans checks meta/<k>/ or used/<k>/: each file must belong to an entry
// or to one a running process is writing.
func (v *verifier) orphans(k Kind, sub string, using map[string]bool) error {
	what := map[string]string{"meta": "metadata", "used": "last-use file"}[sub]
	return v.dir(v.c.sub(sub, string(k)), func(name string) (ProblemClass, string) {
		hex := name
		if sub == "meta" {
			var ok bool
			if hex, ok = strings.CutSuffix(name, ".json"); !ok {
				return Unexpected, "not a metadata file"
			}
		}
		if len(hex) != 64 || !isHex(hex) {
			return Unexpected, "not a " + what
		}
		e := entry{kind: k, hex: hex}
		if using[e.id()] || v.c.Has(k, e.key()) {
			return "", ""
		}
		path := v.c.sub(sub, string(k), name)
		v.leftover(path, what+" without entry", func() bool { return v.c.orphaned(e) })
		return "", ""
	})
}

// orphaned reports whether e is missing and not being written. It takes
// and releases e's lock to look.
func (c *Cache) orphaned(e entry) bool {
	l, ok, err := c.tryLock(e.kind, e.key())
	if err != nil || !ok {
		return false
	}
	defer l.release()
	using, err := c.liveUsing()
	return err == nil && !using[e.id()] && !c.Has(e.kind, e.key())
}

// records checks that every output record decodes.
func (v *verifier) records() error {
	return v.dir(v.c.sub("outputs"), func(name string) (ProblemClass, string) {
		hex, ok := strings.CutSuffix(name, ".json")
		if !ok || len(hex) != 64 || !isHex(hex) {
			return Unexpected, "not an output record"
		}
		path := v.c.recordPath(hex)
		if _, err := readRecord(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			v.leftover(path, err.Error(), func() bool {
				_, err := readRecord(path)
				return err != nil
			})
		}
		return "", ""
	})
}
