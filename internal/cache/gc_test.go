package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// writeOutput makes an output directory whose image.json names layer keys,
// and records it.
func writeOutput(t *testing.T, c *Cache, dir string, keys ...v1.Hash) {
	t.Helper()
	var overlays []map[string]string
	var names []string
	for _, k := range keys {
		overlays = append(overlays, map[string]string{"key": k.String()})
		names = append(names, k.String())
	}
	b, err := json.Marshal(map[string]any{"overlays": overlays})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "image.json"), b)
	rec := OutputRecord{Dir: dir, Source: "docker://out", Keys: map[Kind][]string{Layer: names}}
	if err := c.RecordOutput(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

func TestGC(t *testing.T) {
	const old = 48 * time.Hour
	tests := []struct {
		name      string
		olderThan time.Duration
		dryRun    bool
		// setup makes the case's entries in c; other is another live
		// process on the same cache.
		setup       func(t *testing.T, c, other *Cache) (gone, kept []v1.Hash)
		wantInUse   int
		wantStale   int
		wantRemoved int
	}{
		{name: "old unreferenced entry goes", olderThan: time.Hour, wantRemoved: 1,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("old"), []byte("o"), "i")
				age(t, c, Layer, key("old"), old)
				return []v1.Hash{key("old")}, nil
			}},
		{name: "recently used entry stays", olderThan: time.Hour,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("new"), []byte("n"), "i")
				put(t, c, Layer, key("reused"), []byte("r"), "i")
				age(t, c, Layer, key("reused"), old)
				c.Touch(Layer, key("reused"), "j")
				return nil, []v1.Hash{key("new"), key("reused")}
			}},
		{name: "zero age takes recent entries", olderThan: 0, wantRemoved: 1,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("new"), []byte("n"), "i")
				return []v1.Hash{key("new")}, nil
			}},
		{name: "referenced entry stays", olderThan: 0,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				for _, k := range []string{"shared", "only-a", "only-b"} {
					put(t, c, Layer, key(k), []byte(k), "i")
					age(t, c, Layer, key(k), old)
				}
				dir := t.TempDir()
				writeOutput(t, c, filepath.Join(dir, "a"), key("shared"), key("only-a"))
				writeOutput(t, c, filepath.Join(dir, "b"), key("shared"), key("only-b"))
				return nil, []v1.Hash{key("shared"), key("only-a"), key("only-b")}
			}},
		{name: "deleted output frees what only it held", olderThan: 0, wantRemoved: 1,
			wantStale: 1,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				for _, k := range []string{"shared", "only-a", "only-b"} {
					put(t, c, Layer, key(k), []byte(k), "i")
				}
				dir := t.TempDir()
				writeOutput(t, c, filepath.Join(dir, "a"), key("shared"), key("only-a"))
				writeOutput(t, c, filepath.Join(dir, "b"), key("shared"), key("only-b"))
				if err := os.RemoveAll(filepath.Join(dir, "b")); err != nil {
					t.Fatal(err)
				}
				return []v1.Hash{key("only-b")}, []v1.Hash{key("shared"), key("only-a")}
			}},
		{name: "output converted again holds only its new entries", olderThan: 0,
			wantRemoved: 2, wantStale: 1,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("before"), []byte("b"), "i")
				put(t, c, Layer, key("after"), []byte("a"), "i")
				dir := filepath.Join(t.TempDir(), "out")
				writeOutput(t, c, dir, key("before"))
				// Another cache converted into dir: the record is stale.
				writeFile(t, filepath.Join(dir, "image.json"),
					[]byte(`{"base":{"key":"`+key("after").String()+`"}}`))
				return []v1.Hash{key("before"), key("after")}, nil
			}},
		{name: "entry a running conversion uses stays", olderThan: 0, wantInUse: 2,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("used"), []byte("u"), "i")
				if ok, err := other.Use(Layer, key("used"), "j"); !ok || err != nil {
					t.Fatalf("Use = %v, %v", ok, err)
				}
				// Being written: listed before its metadata appears.
				if err := other.markUsing(Layer, key("coming")); err != nil {
					t.Fatal(err)
				}
				if err := other.writeMeta(Meta{Kind: Layer, Key: key("coming").String()}); err != nil {
					t.Fatal(err)
				}
				put(t, other, Layer, key("built"), []byte("b"), "j")
				return nil, []v1.Hash{key("used"), key("built")}
			}},
		{name: "locked entry stays", olderThan: 0, wantInUse: 1,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("locked"), []byte("l"), "i")
				unlock, err := other.Lock(t.Context(), Layer, key("locked"))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(unlock)
				return nil, []v1.Hash{key("locked")}
			}},
		{name: "dry run removes nothing", olderThan: 0, dryRun: true, wantRemoved: 1,
			wantStale: 1,
			setup: func(t *testing.T, c, other *Cache) ([]v1.Hash, []v1.Hash) {
				put(t, c, Layer, key("x"), []byte("x"), "i")
				dir := filepath.Join(t.TempDir(), "gone")
				writeOutput(t, c, dir, key("x"))
				os.RemoveAll(dir)
				return nil, []v1.Hash{key("x")}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			maker := openCache(t, root)
			other := openCache(t, root)
			gone, kept := tt.setup(t, maker, other)
			maker.Close() // its run is over
			c := openCache(t, root)

			records, _, err := c.records()
			if err != nil {
				t.Fatal(err)
			}
			rep, err := c.GC(t.Context(), tt.olderThan, tt.dryRun)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Removed) != tt.wantRemoved || rep.InUse != tt.wantInUse ||
				len(rep.StaleOutputs) != tt.wantStale {
				t.Errorf("removed %d, in use %d, stale %d; want %d, %d, %d\n%+v",
					len(rep.Removed), rep.InUse, len(rep.StaleOutputs), tt.wantRemoved,
					tt.wantInUse, tt.wantStale, rep)
			}
			for _, k := range gone {
				checkGone(t, c, Layer, k)
			}
			for _, k := range kept {
				if !c.Has(Layer, k) {
					t.Errorf("GC removed %s", k.Hex[:12])
				}
				if _, err := c.readMeta(Layer, k.Hex); err != nil {
					t.Errorf("GC removed the metadata of %s: %v", k.Hex[:12], err)
				}
			}
			after, _, err := c.records()
			if err != nil {
				t.Fatal(err)
			}
			wantRecords := len(records) - len(rep.StaleOutputs)
			if tt.dryRun {
				wantRecords = len(records)
			}
			if len(after) != wantRecords {
				t.Errorf("%d output records left, want %d", len(after), wantRecords)
			}
		})
	}
}

// checkGone checks that an entry and every file about it are gone.
func checkGone(t *testing.T, c *Cache, k Kind, key v1.Hash) {
	t.Helper()
	for _, p := range []string{c.Path(k, key), c.metaPath(k, key.Hex), c.usedPath(k, key.Hex),
		c.sub("locks", string(k)+"-"+key.Hex)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", p, err)
		}
	}
}

// TestGCLeftovers checks that GC removes metadata, last-use and lock files
// without an entry.
func TestGCLeftovers(t *testing.T) {
	root := t.TempDir()
	maker := openCache(t, root)
	k := key("orphan")
	put(t, maker, Layer, k, []byte("x"), "i")
	unlock, err := maker.Lock(t.Context(), Index, key("never built"))
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := os.Remove(maker.Path(Layer, k)); err != nil {
		t.Fatal(err)
	}
	maker.Close()

	c := openCache(t, root)
	rep, err := c.GC(t.Context(), time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Leftovers != 2 {
		t.Errorf("removed %d leftovers, want 2 (metadata and last-use file)", rep.Leftovers)
	}
	checkGone(t, c, Layer, k)
	checkGone(t, c, Index, key("never built"))
}

// TestGCRaceUse runs GC passes with no age limit against a process that
// keeps using, building and checking entries: an entry Use has found, or
// Put has written, must stay while the process runs.
func TestGCRaceUse(t *testing.T) {
	root := t.TempDir()
	user := openCache(t, root)
	gc := openCache(t, root)
	var stop atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop.Store(true)
	wg.Go(func() {
		for !stop.Load() {
			if _, err := gc.GC(t.Context(), 0, false); err != nil {
				t.Error(err)
				return
			}
		}
	})
	// Entries made by a process that has ended, for GC to take.
	maker := openCache(t, root)
	for i := range 20 {
		k := key(fmt.Sprint("old ", i))
		put(t, maker, Layer, k, []byte("o"), "i")
	}
	maker.Close()
	var held []v1.Hash
	for i := range 200 {
		k := key(fmt.Sprint(i % 40))
		ok, err := user.Use(Layer, k, "u")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			unlock, err := user.Lock(t.Context(), Layer, k)
			if err != nil {
				t.Fatal(err)
			}
			if !user.Has(Layer, k) {
				put(t, user, Layer, k, []byte(k.Hex), "u")
			}
			unlock()
		}
		held = append(held, k)
		for _, h := range held {
			if !user.Has(Layer, h) {
				t.Fatalf("GC removed %s, which a live process uses", h.Hex[:12])
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if _, err := gc.GC(t.Context(), 0, false); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, user.dir(Layer)); len(got) != 40 {
		t.Errorf("%d layers left, want the 40 in use", len(got))
	}
}

func TestRemove(t *testing.T) {
	// Two keys that share their first hex digit, for an ambiguous prefix.
	var a, b v1.Hash
	seen := map[byte]v1.Hash{}
	for i := 0; a.Hex == ""; i++ {
		k := key(fmt.Sprint("k", i))
		if prev, ok := seen[k.Hex[0]]; ok {
			a, b = prev, k
		}
		seen[k.Hex[0]] = k
	}
	tests := []struct {
		name    string
		arg     string
		inUse   bool // another process uses a
		locked  bool // another process holds a's lock
		wantErr error
		gone    []Kind // of a
	}{
		{name: "full key", arg: a.String(), gone: []Kind{Layer, Index}},
		{name: "hex", arg: a.Hex, gone: []Kind{Layer, Index}},
		{name: "prefix", arg: a.Hex[:8], gone: []Kind{Layer, Index}},
		{name: "digest prefix", arg: "sha256:" + a.Hex[:8], gone: []Kind{Layer, Index}},
		{name: "kind and prefix", arg: "indexes/" + a.Hex[:8], gone: []Kind{Index}},
		{name: "upper case", arg: "sha256:" + strings.ToUpper(a.Hex[:8]),
			gone: []Kind{Layer, Index}},
		{name: "ambiguous prefix", arg: a.Hex[:1], wantErr: ErrAmbiguous},
		{name: "no entry", arg: key("absent").Hex, wantErr: ErrNoEntry},
		{name: "no entry of that kind", arg: "bases/" + a.Hex, wantErr: ErrNoEntry},
		{name: "unknown kind", arg: "blobs/" + a.Hex, wantErr: ErrBadKey},
		{name: "not hex", arg: "latest", wantErr: ErrBadKey},
		{name: "empty", arg: "sha256:", wantErr: ErrBadKey},
		{name: "in use", arg: a.Hex, inUse: true, wantErr: ErrInUse},
		{name: "locked", arg: a.Hex, locked: true, wantErr: ErrInUse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			maker := openCache(t, root)
			put(t, maker, Layer, a, []byte("a"), "i")
			put(t, maker, Index, a, gzipJSON(t, "{}"), "i")
			put(t, maker, Layer, b, []byte("b"), "i")
			maker.Close()
			c := openCache(t, root)
			other := openCache(t, root)
			if tt.inUse {
				other.Use(Index, a, "j")
			}
			if tt.locked {
				unlock, err := other.Lock(t.Context(), Layer, a)
				if err != nil {
					t.Fatal(err)
				}
				defer unlock()
			}

			removed, err := c.Remove(t.Context(), tt.arg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Remove(%q) error = %v, want %v", tt.arg, err, tt.wantErr)
			}
			if len(removed) != len(tt.gone) {
				t.Errorf("removed %+v, want %v", removed, tt.gone)
			}
			for _, k := range []Kind{Layer, Index} {
				if slices.Contains(tt.gone, k) {
					checkGone(t, c, k, a)
				} else if !c.Has(k, a) {
					t.Errorf("Remove took %s %s", k, a.Hex[:12])
				}
			}
			if !c.Has(Layer, b) {
				t.Errorf("Remove took the other key")
			}
		})
	}
}
