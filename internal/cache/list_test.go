package cache

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestList(t *testing.T) {
	root := t.TempDir()
	maker := openCache(t, root)
	shared, own, old := key("shared"), key("own"), key("old")
	put(t, maker, Base, shared, []byte("shared"), "docker://a")
	put(t, maker, Layer, own, []byte("own"), "docker://a")
	put(t, maker, Index, old, gzipJSON(t, "{}"), "docker://b")
	age(t, maker, Index, old, 24*time.Hour)
	if err := os.Remove(maker.metaPath(Index, old.Hex)); err != nil {
		t.Fatal(err)
	}
	maker.Touch(Base, shared, "docker://b")
	out := filepath.Join(t.TempDir(), "out")
	writeOutput(t, maker, out, own)
	maker.Close()

	c := openCache(t, root)
	other := openCache(t, root)
	other.Use(Layer, own, "docker://c")

	list, err := c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kind    Kind
		key     string
		size    int64
		images  []string
		outputs []string
		meta    bool
		inUse   bool
		oldUse  bool
	}{
		{Base, shared.String(), 6, []string{"docker://a", "docker://b"}, nil, true, false, false},
		{Layer, own.String(), 3, []string{"docker://a", "docker://c"}, []string{out}, true, true,
			false},
		{Index, old.String(), int64(len(gzipJSON(t, "{}"))), []string{"docker://b"}, nil, false,
			false, true},
	}
	if len(list) != len(tests) {
		t.Fatalf("List gave %d entries, want %d: %+v", len(list), len(tests), list)
	}
	for i, tt := range tests {
		got := list[i]
		if got.Kind != tt.kind || got.Key != tt.key || got.Size != tt.size ||
			!slices.Equal(got.Images, tt.images) || !slices.Equal(got.Outputs, tt.outputs) ||
			got.Meta != tt.meta || got.InUse != tt.inUse {
			t.Errorf("entry %d = %+v, want %+v", i, got, tt)
		}
		if recent := time.Since(got.LastUsed) < time.Hour; recent == tt.oldUse {
			t.Errorf("entry %d last used %v", i, got.LastUsed)
		}
	}
}

func TestDiskUsage(t *testing.T) {
	f := newFixture(t)
	extra := key("second layer")
	put(t, f.c, Layer, extra, []byte("a longer second layer"), "i")
	u, err := f.c.DiskUsage(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, k := range AllKinds {
		list, err := os.ReadDir(f.c.dir(k))
		if err != nil {
			t.Fatal(err)
		}
		var bytes int64
		for _, e := range list {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			bytes += fi.Size()
		}
		if got := u.Kinds[k]; got.Bytes != bytes || got.Entries != len(list) {
			t.Errorf("%s: %+v, want %d entries, %d bytes", k, got, len(list), bytes)
		}
		total += bytes
	}
	if u.Bytes != total || u.Entries != len(f.keys)+1 {
		t.Errorf("total %d entries, %d bytes; want %d, %d", u.Entries, u.Bytes, len(f.keys)+1,
			total)
	}
	if u.MetadataBytes == 0 {
		t.Errorf("no metadata bytes counted")
	}
}

func TestOutputLive(t *testing.T) {
	k, other := key("k"), key("other")
	tests := []struct {
		name  string
		setup func(t *testing.T, c *Cache, dir string) OutputRecord
		want  bool
	}{
		{name: "image.json names the keys", want: true,
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				writeFile(t, filepath.Join(dir, "image.json"),
					[]byte(`{"base":{"key":"`+k.String()+`"}}`))
				return OutputRecord{Dir: dir, Keys: map[Kind][]string{Base: {k.String()},
					Index: {other.String()}}}
			}},
		{name: "directory gone",
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				return OutputRecord{Dir: filepath.Join(dir, "gone"),
					Keys: map[Kind][]string{Base: {k.String()}}}
			}},
		{name: "image.json names other keys",
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				writeFile(t, filepath.Join(dir, "image.json"),
					[]byte(`{"base":{"key":"`+other.String()+`"}}`))
				return OutputRecord{Dir: dir, Keys: map[Kind][]string{Base: {k.String()}}}
			}},
		{name: "image.json is no JSON",
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				writeFile(t, filepath.Join(dir, "image.json"), []byte("{"))
				return OutputRecord{Dir: dir, Keys: map[Kind][]string{Base: {k.String()}}}
			}},
		{name: "flat file linked", want: true,
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				put(t, c, Flat, k, []byte("flat"), "i")
				if err := os.Link(c.Path(Flat, k), filepath.Join(dir, "f.sif")); err != nil {
					t.Fatal(err)
				}
				return OutputRecord{File: filepath.Join(dir, "f.sif"),
					Keys: map[Kind][]string{Flat: {k.String()}}}
			}},
		{name: "flat file copied", want: true,
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				put(t, c, Flat, k, []byte("flat"), "i")
				writeFile(t, filepath.Join(dir, "f.sif"), []byte("flat"))
				return OutputRecord{File: filepath.Join(dir, "f.sif"),
					Keys: map[Kind][]string{Flat: {k.String()}}}
			}},
		{name: "flat file replaced",
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				put(t, c, Flat, k, []byte("flat"), "i")
				writeFile(t, filepath.Join(dir, "f.sif"), []byte("another image"))
				return OutputRecord{File: filepath.Join(dir, "f.sif"),
					Keys: map[Kind][]string{Flat: {k.String()}}}
			}},
		{name: "flat file gone",
			setup: func(t *testing.T, c *Cache, dir string) OutputRecord {
				put(t, c, Flat, k, []byte("flat"), "i")
				return OutputRecord{File: filepath.Join(dir, "f.sif"),
					Keys: map[Kind][]string{Flat: {k.String()}}}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir())
			rec := tt.setup(t, c, t.TempDir())
			if err := c.RecordOutput(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			recs, bad, err := c.records()
			if err != nil || len(recs) != 1 || len(bad) != 0 {
				t.Fatalf("records = %+v, %v, %v; want the one written", recs, bad, err)
			}
			if got := c.live(&recs[0].OutputRecord); got != tt.want {
				t.Errorf("live = %v, want %v", got, tt.want)
			}
			refs, stale, err := c.references()
			if err != nil {
				t.Fatal(err)
			}
			if got := len(stale) == 0 && len(refs) > 0; got != tt.want {
				t.Errorf("references %v, stale %d; want live %v", refs, len(stale), tt.want)
			}
		})
	}
}

// TestRecordOutputReplaces checks that a second conversion into the same
// directory replaces the record, and that a relative path is made
// absolute.
func TestRecordOutputReplaces(t *testing.T) {
	c := openCache(t, t.TempDir())
	t.Chdir(t.TempDir())
	for _, k := range []string{"first", "second"} {
		rec := OutputRecord{Dir: "out", Keys: map[Kind][]string{Layer: {key(k).String()}}}
		if err := c.RecordOutput(t.Context(), rec); err != nil {
			t.Fatal(err)
		}
	}
	recs, _, err := c.records()
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if len(recs) != 1 || recs[0].Dir != filepath.Join(wd, "out") ||
		recs[0].ImageJSON != filepath.Join(wd, "out", "image.json") ||
		recs[0].Keys[Layer][0] != key("second").String() {
		t.Errorf("records %+v, want the second one for %s", recs, filepath.Join(wd, "out"))
	}
}
