package unpack

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// Kind is what an index entry makes in the layer.
type Kind byte

// The kinds of entry. Whiteout and Opaque come from the OCI ".wh." markers
// (and from a literal 0:0 character device, which overlay-based runtimes
// treat as a whiteout too); the others are tar's file types.
const (
	Reg      Kind = 'f'
	Dir      Kind = 'd'
	Symlink  Kind = 'l'
	Hardlink Kind = 'h'
	Char     Kind = 'c'
	Block    Kind = 'b'
	Fifo     Kind = 'p'
	Whiteout Kind = 'w'
	Opaque   Kind = 'o'
)

// Entry is one tar entry of a layer, cleaned and checked. Name and Link are
// relative to the layer root, without leading "/" or "./".
type Entry struct {
	Name   string            `json:"n"`
	Kind   Kind              `json:"k"`
	Mode   int64             `json:"m,omitempty"` // permission, setuid, setgid, sticky
	UID    int               `json:"u,omitempty"`
	GID    int               `json:"g,omitempty"`
	Size   int64             `json:"s,omitempty"`
	Link   string            `json:"l,omitempty"` // symlink target (verbatim) or hardlink target
	Major  int64             `json:"ma,omitempty"`
	Minor  int64             `json:"mi,omitempty"`
	MTime  int64             `json:"t,omitempty"` // seconds since the epoch
	Xattrs map[string]string `json:"x,omitempty"`
}

// Index lists a layer's entries in stream order. Entry i is the i-th tar
// header that carries a file (PAX global headers are not counted).
type Index struct {
	Entries []Entry `json:"entries"`
	// Bytes is the sum of regular files' sizes.
	Bytes int64 `json:"bytes"`
	// Dropped counts xattrs removed because a layer may not set them.
	Dropped int `json:"dropped,omitempty"`
}

// Limits bound what one layer may contain, so that a hostile layer fails with
// a clear error instead of filling the disk or memory.
type Limits struct {
	// Bytes bounds the uncompressed stream, trailing data included, and
	// the sum of regular files' sizes (which sparse entries can make larger).
	Bytes int64
	// Entries bounds the number of tar headers.
	Entries int
	// Depth bounds the number of components in a name.
	Depth int
}

// DefaultLimits are generous for real images: 64 GiB, 4 million entries, 256 levels.
var DefaultLimits = Limits{Bytes: 64 << 30, Entries: 4 << 20, Depth: 256}

// Errors callers branch on.
var (
	// ErrEscape means an entry tries to reach outside the layer root.
	ErrEscape = errors.New("entry escapes the layer root")
	// ErrInvalid means an entry is malformed (bad whiteout, bad device, bad type).
	ErrInvalid = errors.New("invalid layer entry")
	// ErrLimit means a layer exceeds one of its Limits.
	ErrLimit = errors.New("layer exceeds a limit")
)

// Limit names, used in ErrLimit messages so users know which flag to raise.
const (
	limitBytes   = "uncompressed bytes (--max-layer-bytes)"
	limitEntries = "entries (--max-layer-entries)"
	limitDepth   = "path depth (--max-path-depth)"
)

// The device numbers squashfs can store (Linux's new_encode_dev).
const (
	maxMajor = 1<<12 - 1
	maxMinor = 1<<20 - 1
)

// Scan reads a layer's tar stream to its very end (trailing data included, so
// a verifying reader underneath runs its check) and returns its index. It
// writes nothing anywhere.
func Scan(ctx context.Context, r io.Reader, lim Limits) (*Index, error) {
	cr := &countingReader{r: r, limit: lim.Bytes}
	tr := tar.NewReader(cr)
	idx := &Index{}
	headers := 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		headers++
		if lim.Entries > 0 && headers > lim.Entries {
			return nil, fmt.Errorf("%w: more than %d %s", ErrLimit, lim.Entries, limitEntries)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}

		e, dropped, err := entryFromHeader(h, lim)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", h.Name, err)
		}
		idx.Dropped += dropped
		if e == nil {
			continue
		}
		if e.Kind == Reg {
			idx.Bytes += e.Size
			if lim.Bytes > 0 && idx.Bytes > lim.Bytes {
				// Sparse entries can declare more than the stream carries.
				return nil, fmt.Errorf("entry %q: %w: files of more than %d %s",
					h.Name, ErrLimit, lim.Bytes, limitBytes)
			}
		}
		idx.Entries = append(idx.Entries, *e)
	}

	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, fmt.Errorf("read past tar end: %w", err)
	}
	return idx, nil
}

// entryFromHeader turns a tar header into an Entry, or nil for an entry that
// carries nothing for the overlay (aufs bookkeeping names, the root itself).
func entryFromHeader(h *tar.Header, lim Limits) (*Entry, int, error) {
	name, err := CleanName(h.Name)
	if err != nil {
		return nil, 0, err
	}
	if name == "" {
		return nil, 0, nil // the root directory: its attributes are fixed
	}
	if lim.Depth > 0 && strings.Count(name, "/")+1 > lim.Depth {
		return nil, 0, fmt.Errorf("%w: more than %d levels of %s", ErrLimit, lim.Depth, limitDepth)
	}
	if skip, err := checkParents(name); skip || err != nil {
		return nil, 0, err
	}

	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if marker, ok := strings.CutPrefix(base, ".wh."); ok {
		return whiteoutEntry(dir, marker)
	}

	e := &Entry{
		Name:  name,
		Mode:  h.Mode & 0o7777,
		UID:   h.Uid,
		GID:   h.Gid,
		MTime: h.ModTime.Unix(),
	}
	if e.UID < 0 || e.GID < 0 || e.MTime < 0 {
		return nil, 0, fmt.Errorf("%w: negative owner or time", ErrInvalid)
	}
	dropped := 0
	e.Xattrs, dropped = xattrsFromHeader(h)

	if err := setKind(e, h); err != nil {
		return nil, 0, err
	}
	return e, dropped, nil
}

func setKind(e *Entry, h *tar.Header) error {
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		e.Kind, e.Size = Reg, h.Size
	case tar.TypeDir:
		e.Kind = Dir
	case tar.TypeSymlink:
		if h.Linkname == "" || len(h.Linkname) > 4095 || strings.ContainsRune(h.Linkname, 0) {
			return fmt.Errorf("%w: symlink target %q", ErrInvalid, h.Linkname)
		}
		e.Kind, e.Link = Symlink, h.Linkname
	case tar.TypeLink:
		target, err := CleanName(h.Linkname)
		if err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		}
		if target == "" {
			return fmt.Errorf("%w: hardlink to the root directory", ErrInvalid)
		}
		e.Kind, e.Link = Hardlink, target
	case tar.TypeChar, tar.TypeBlock:
		return setDevice(e, h)
	case tar.TypeFifo:
		e.Kind = Fifo
	default:
		return fmt.Errorf("%w: unsupported tar type %q", ErrInvalid, h.Typeflag)
	}
	return nil
}

func setDevice(e *Entry, h *tar.Header) error {
	if h.Devmajor < 0 || h.Devminor < 0 || h.Devmajor > maxMajor || h.Devminor > maxMinor {
		return fmt.Errorf("%w: device number %d:%d out of range", ErrInvalid, h.Devmajor, h.Devminor)
	}
	e.Kind, e.Major, e.Minor = Block, h.Devmajor, h.Devminor
	if h.Typeflag == tar.TypeChar {
		e.Kind = Char
		if h.Devmajor == 0 && h.Devminor == 0 {
			// An overlay whiteout in disguise: treat it as the marker it acts as.
			e.Kind, e.Mode, e.UID, e.GID, e.MTime, e.Xattrs = Whiteout, 0, 0, 0, 0, nil
		}
	}
	return nil
}

// whiteoutEntry reads a ".wh." marker in dir. The name it deletes must be one
// plain component; aufs bookkeeping names (".wh..wh.*" other than the opaque
// marker) carry nothing and are skipped, as Docker does.
func whiteoutEntry(dir, marker string) (*Entry, int, error) {
	if marker == ".wh..opq" {
		return &Entry{Name: dir, Kind: Opaque}, 0, nil
	}
	if strings.HasPrefix(marker, ".wh.") {
		return nil, 0, nil
	}
	if marker == "" || marker == "." || marker == ".." {
		return nil, 0, fmt.Errorf("%w: whiteout %q names no file", ErrInvalid, ".wh."+marker)
	}
	return &Entry{Name: path.Join(dir, marker), Kind: Whiteout}, 0, nil
}

// checkParents refuses names whose directories are whiteout markers: nothing
// can live below a marker. Below aufs bookkeeping directories (".wh..wh.*",
// e.g. ".wh..wh.plnk" of images built on aufs) entries are skipped, as Docker
// skips them.
func checkParents(name string) (skip bool, err error) {
	parts := strings.Split(name, "/")
	for _, p := range parts[:len(parts)-1] {
		if strings.HasPrefix(p, ".wh..wh.") {
			return true, nil
		}
		if strings.HasPrefix(p, ".wh.") {
			return false, fmt.Errorf("%w: entry below the whiteout marker %q", ErrInvalid, p)
		}
	}
	return false, nil
}

// CleanName turns a tar name into a path relative to the layer root: leading
// "/" and "./" go, "a/../b" becomes "b". The root itself is "". A name that
// climbs above the root fails with ErrEscape.
func CleanName(name string) (string, error) {
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: NUL in name", ErrInvalid)
	}
	if len(name) > 4096 {
		return "", fmt.Errorf("%w: name longer than 4096 bytes", ErrInvalid)
	}
	rel := strings.TrimLeft(name, "/")
	if rel == "" {
		return "", nil
	}
	c := path.Clean(rel)
	if c == "." {
		return "", nil
	}
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: %q", ErrEscape, name)
	}
	return c, nil
}

// xattrsFromHeader collects the extended attributes squashfs can hold. The
// overlay's own attributes are dropped: a layer must not be able to forge
// opaque directories or redirects. The count of dropped attributes is returned.
func xattrsFromHeader(h *tar.Header) (map[string]string, int) {
	var x map[string]string
	dropped := 0
	keys := make([]string, 0, len(h.PAXRecords))
	for k := range h.PAXRecords {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if !allowedXattr(name) {
			dropped++
			continue
		}
		if x == nil {
			x = map[string]string{}
		}
		x[name] = h.PAXRecords[k]
	}
	return x, dropped
}

func allowedXattr(name string) bool {
	if strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
		return false
	}
	for _, p := range []string{"user.", "trusted.", "security."} {
		if strings.HasPrefix(name, p) && len(name) > len(p) {
			return true
		}
	}
	return false
}

// countingReader fails once more than limit bytes have been read.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.limit > 0 && c.n > c.limit {
		return n, fmt.Errorf("%w: more than %d %s", ErrLimit, c.limit, limitBytes)
	}
	return n, err
}

// storedEntry is how WriteIndex stores an Entry. A JSON string holds only
// UTF-8 (encoding/json replaces other bytes), so a name, link or xattr that
// is not valid UTF-8 goes to Raw instead, whose bytes JSON keeps as base64.
type storedEntry struct {
	entryFields
	Raw []rawString `json:"r,omitempty"`
}

// entryFields is an Entry without its JSON methods.
type entryFields Entry

// rawString is one string of an Entry that is not valid UTF-8.
type rawString struct {
	Field string `json:"f"` // "n" the name, "l" the link, "x" an xattr
	Key   []byte `json:"k,omitempty"`
	Value []byte `json:"v"`
}

// MarshalJSON stores e, keeping the bytes of strings that are not UTF-8.
func (e Entry) MarshalJSON() ([]byte, error) {
	s := storedEntry{entryFields: entryFields(e)}
	if !utf8.ValidString(e.Name) {
		s.Name, s.Raw = "", append(s.Raw, rawString{Field: "n", Value: []byte(e.Name)})
	}
	if !utf8.ValidString(e.Link) {
		s.Link, s.Raw = "", append(s.Raw, rawString{Field: "l", Value: []byte(e.Link)})
	}
	cloned := false
	for _, k := range slices.Sorted(maps.Keys(e.Xattrs)) {
		v := e.Xattrs[k]
		if utf8.ValidString(k) && utf8.ValidString(v) {
			continue
		}
		if !cloned {
			s.Xattrs, cloned = maps.Clone(e.Xattrs), true // e's map is the caller's
		}
		delete(s.Xattrs, k)
		s.Raw = append(s.Raw, rawString{Field: "x", Key: []byte(k), Value: []byte(v)})
	}
	return json.Marshal(s)
}

// UnmarshalJSON loads what MarshalJSON stored.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var s storedEntry
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*e = Entry(s.entryFields)
	for _, r := range s.Raw {
		switch r.Field {
		case "n":
			e.Name = string(r.Value)
		case "l":
			e.Link = string(r.Value)
		case "x":
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[string(r.Key)] = string(r.Value)
		default:
			return fmt.Errorf("decode entry %q: unknown field %q", e.Name, r.Field)
		}
	}
	return nil
}

// WriteIndex stores idx as gzip-compressed JSON.
func WriteIndex(w io.Writer, idx *Index) error {
	zw := gzip.NewWriter(w)
	if err := json.NewEncoder(zw).Encode(idx); err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	return nil
}

// ReadIndex loads what WriteIndex stored.
func ReadIndex(r io.Reader) (*Index, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("decode index: %w", err)
	}
	defer zr.Close()
	var idx Index
	if err := json.NewDecoder(zr).Decode(&idx); err != nil {
		return nil, fmt.Errorf("decode index: %w", err)
	}
	return &idx, nil
}
