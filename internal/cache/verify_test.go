package cache

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// fixture is a cache with one healthy entry of each kind.
type fixture struct {
	c    *Cache
	keys map[Kind]v1.Hash
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{c: openCache(t, t.TempDir()), keys: map[Kind]v1.Hash{}}
	doc := []byte(`{"architecture":"amd64"}`)
	contents := map[Kind][]byte{
		Layer: []byte("layer sif"), Base: []byte("base sif"), Config: []byte("config sif"),
		Flat: []byte("flat sif"), Index: gzipJSON(t, `{"entries":[]}`), Document: doc,
		Image: []byte(`{"source":"x"}`),
	}
	for k, b := range contents {
		f.keys[k] = key(string(k))
		if k == Document {
			f.keys[k] = digestOf(doc)
		}
		put(t, f.c, k, f.keys[k], b, "docker://img")
	}
	// Another process checks the cache: this one's using list would hide
	// leftovers.
	f.c.Close()
	f.c = openCache(t, f.c.Root())
	return f
}

func (f *fixture) path(k Kind) string { return f.c.Path(k, f.keys[k]) }

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	b := make([]byte, 1)
	if _, err := file.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := file.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// found is what a test expects of one problem.
type found struct {
	class ProblemClass
	path  string
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name string
		// damage harms the cache and returns what Verify must find.
		damage func(t *testing.T, f *fixture) []found
		// gone lists the kinds whose entries repair removes.
		gone []Kind
	}{
		{name: "clean", damage: func(t *testing.T, f *fixture) []found { return nil }},
		{name: "truncated entry", gone: []Kind{Layer},
			damage: func(t *testing.T, f *fixture) []found {
				if err := os.Truncate(f.path(Layer), 3); err != nil {
					t.Fatal(err)
				}
				return []found{{Damaged, f.path(Layer)}}
			}},
		{name: "flipped byte", gone: []Kind{Base},
			damage: func(t *testing.T, f *fixture) []found {
				flipByte(t, f.path(Base), 2)
				return []found{{Damaged, f.path(Base)}}
			}},
		{name: "missing metadata", gone: []Kind{Config},
			damage: func(t *testing.T, f *fixture) []found {
				if err := os.Remove(f.c.metaPath(Config, f.keys[Config].Hex)); err != nil {
					t.Fatal(err)
				}
				return []found{{Unverifiable, f.path(Config)}}
			}},
		{name: "document without metadata is verified by its digest",
			damage: func(t *testing.T, f *fixture) []found {
				if err := os.Remove(f.c.metaPath(Document, f.keys[Document].Hex)); err != nil {
					t.Fatal(err)
				}
				return nil
			}},
		{name: "document not matching its digest", gone: []Kind{Document},
			damage: func(t *testing.T, f *fixture) []found {
				k := f.keys[Document]
				writeFile(t, f.path(Document), []byte(`{"architecture":"arm64"}`))
				m, err := f.c.readMeta(Document, k.Hex)
				if err != nil {
					t.Fatal(err)
				}
				file, err := os.Open(f.path(Document))
				if err != nil {
					t.Fatal(err)
				}
				defer file.Close()
				m.Size, m.SHA256, err = hashFile(file)
				if err != nil {
					t.Fatal(err)
				}
				if err := f.c.writeMeta(*m); err != nil {
					t.Fatal(err)
				}
				return []found{{Damaged, f.path(Document)}}
			}},
		{name: "orphan metadata", gone: []Kind{Flat}, damage: func(t *testing.T, f *fixture) []found {
			if err := os.Remove(f.path(Flat)); err != nil {
				t.Fatal(err)
			}
			return []found{{Leftover, f.c.metaPath(Flat, f.keys[Flat].Hex)},
				{Leftover, f.c.usedPath(Flat, f.keys[Flat].Hex)}}
		}},
		{name: "bad index gzip", gone: []Kind{Index},
			damage: func(t *testing.T, f *fixture) []found {
				k := key("garbage index")
				put(t, f.c, Index, k, []byte("not gzip"), "docker://img")
				f.keys[Index] = k
				return []found{{Damaged, f.path(Index)}}
			}},
		{name: "index with a broken gzip trailer", gone: []Kind{Index},
			damage: func(t *testing.T, f *fixture) []found {
				b := gzipJSON(t, `{"entries":[]}`)
				b[len(b)-5] ^= 0xff // the CRC
				k := key("crc")
				put(t, f.c, Index, k, b, "docker://img")
				f.keys[Index] = k
				return []found{{Damaged, f.path(Index)}}
			}},
		{name: "conversion record not JSON", gone: []Kind{Image},
			damage: func(t *testing.T, f *fixture) []found {
				k := key("bad record")
				put(t, f.c, Image, k, []byte("{"), "docker://img")
				f.keys[Image] = k
				return []found{{Damaged, f.path(Image)}}
			}},
		{name: "unreadable metadata", gone: []Kind{Layer},
			damage: func(t *testing.T, f *fixture) []found {
				writeFile(t, f.c.metaPath(Layer, f.keys[Layer].Hex), []byte("{"))
				return []found{{Damaged, f.path(Layer)}}
			}},
		{name: "temporary files outside tmp", damage: func(t *testing.T, f *fixture) []found {
			a := filepath.Join(f.c.dir(Layer), ".tmp-x.sif-123")
			b := filepath.Join(f.c.Root(), ".tmp-CACHEDIR.TAG-1")
			c := filepath.Join(f.c.sub("outputs"), ".tmp-rec")
			for _, p := range []string{a, b, c} {
				writeFile(t, p, nil)
			}
			return []found{{Leftover, a}, {Leftover, c}, {Leftover, b}}
		}},
		{name: "output record that does not decode",
			damage: func(t *testing.T, f *fixture) []found {
				p := f.c.recordPath(key("out").Hex)
				writeFile(t, p, []byte("nonsense"))
				return []found{{Leftover, p}}
			}},
		{name: "unexpected file is only reported",
			damage: func(t *testing.T, f *fixture) []found {
				p := filepath.Join(f.c.dir(Layer), "notes.txt")
				writeFile(t, p, []byte("mine"))
				return []found{{Unexpected, p}}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			want := tt.damage(t, f)
			wantFail := slices.ContainsFunc(want, func(w found) bool {
				return w.class == Damaged || w.class == Unverifiable
			})

			rep, err := f.c.Verify(t.Context(), false)
			if err != nil {
				t.Fatal(err)
			}
			checkFound(t, rep, want, false)
			if got := rep.Failed(); got != wantFail {
				t.Errorf("Failed() = %v, want %v", got, wantFail)
			}
			for _, w := range want {
				if _, err := os.Stat(w.path); err != nil {
					t.Errorf("Verify without repair removed %s", w.path)
				}
			}

			rep, err = f.c.Verify(t.Context(), true)
			if err != nil {
				t.Fatal(err)
			}
			checkFound(t, rep, want, true)
			if rep.Failed() {
				t.Errorf("Failed() after repair")
			}
			for _, w := range want {
				_, err := os.Stat(w.path)
				if kept := err == nil; kept != (w.class == Unexpected) {
					t.Errorf("after repair %s exists: %v", w.path, kept)
				}
			}
			for k, key := range f.keys {
				if got, want := f.c.Has(k, key), !slices.Contains(tt.gone, k); got != want {
					t.Errorf("after repair Has(%s) = %v, want %v", k, got, want)
				}
			}

			rep, err = f.c.Verify(t.Context(), false)
			if err != nil {
				t.Fatal(err)
			}
			var unexpected []found
			for _, w := range want {
				if w.class == Unexpected {
					unexpected = append(unexpected, w)
				}
			}
			checkFound(t, rep, unexpected, false)
		})
	}
}

// checkFound compares a report's problems with want, in any order.
func checkFound(t *testing.T, rep *VerifyReport, want []found, repair bool) {
	t.Helper()
	var got []found
	for _, p := range rep.Problems {
		got = append(got, found{p.Class, p.Path})
		if removed := repair && p.Class != Unexpected; p.Removed != removed {
			t.Errorf("%s %s: removed %v, want %v", p.Class, p.Path, p.Removed, removed)
		}
		if p.Detail == "" {
			t.Errorf("%s %s: no detail", p.Class, p.Path)
		}
	}
	sortFound := func(f []found) {
		slices.SortFunc(f, func(a, b found) int { return strings.Compare(a.path, b.path) })
	}
	sortFound(got)
	want = slices.Clone(want)
	sortFound(want)
	if !slices.Equal(got, want) {
		t.Errorf("problems %v, want %v\n%+v", got, want, rep.Problems)
	}
}

// TestVerifyCountsEntries checks the totals of a clean report.
func TestVerifyCountsEntries(t *testing.T) {
	f := newFixture(t)
	rep, err := f.c.Verify(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for k := range f.keys {
		fi, err := os.Stat(f.path(k))
		if err != nil {
			t.Fatal(err)
		}
		want += fi.Size()
	}
	if rep.Entries != len(f.keys) || rep.Bytes != want {
		t.Errorf("checked %d entries, %d bytes; want %d, %d", rep.Entries, rep.Bytes,
			len(f.keys), want)
	}
}

// TestVerifySkipsOrphansBeingWritten checks that metadata whose entry a
// running process is writing is no leftover.
func TestVerifySkipsOrphansBeingWritten(t *testing.T) {
	root := t.TempDir()
	writer, checker := openCache(t, root), openCache(t, root)
	k := key("in flight")
	if err := writer.markUsing(Layer, k); err != nil {
		t.Fatal(err)
	}
	if err := writer.writeMeta(Meta{Kind: Layer, Key: k.String()}); err != nil {
		t.Fatal(err)
	}
	rep, err := checker.Verify(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems %+v, want none", rep.Problems)
	}
	if _, err := os.Stat(writer.metaPath(Layer, k.Hex)); err != nil {
		t.Errorf("repair removed the metadata of an entry being written: %v", err)
	}
}
