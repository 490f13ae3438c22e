package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func key(s string) v1.Hash {
	sum := sha256.Sum256([]byte(s))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func openCache(t *testing.T, dir string) *Cache {
	t.Helper()
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func TestOpenCreatesLayout(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "cache")
	c := openCache(t, root)

	if got, want := c.Root(), root; got != want {
		t.Errorf("Root() = %q, want %q", got, want)
	}
	dirs := []string{root, filepath.Join(root, "v1"), filepath.Join(root, "v1", "tmp")}
	for k := range extensions {
		dirs = append(dirs, filepath.Join(root, "v1", string(k), "sha256"))
	}
	for _, d := range dirs {
		if got, want := mode(t, d), fs.ModeDir|0o700; got != want {
			t.Errorf("%s: mode %v, want %v", d, got, want)
		}
	}

	tag := filepath.Join(root, "CACHEDIR.TAG")
	b, err := os.ReadFile(tag)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "Signature: 8a477f597d28d172789f06886806bc55") {
		t.Errorf("CACHEDIR.TAG starts %q", firstLine(string(b)))
	}
	if got, want := mode(t, tag), fs.FileMode(0o644); got != want {
		t.Errorf("CACHEDIR.TAG mode %v, want %v", got, want)
	}

	if got, want := filepath.Dir(c.TempDir()), filepath.Join(root, "v1", "tmp"); got != want {
		t.Errorf("TempDir() is in %q, want %q", got, want)
	}
	if !strings.HasPrefix(filepath.Base(c.TempDir()), "run-") {
		t.Errorf("TempDir() = %q, want a run-* directory", c.TempDir())
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestOpenRelative checks that a relative directory becomes absolute.
func TestOpenRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	c := openCache(t, "rel")
	if !filepath.IsAbs(c.Root()) || filepath.Base(c.Root()) != "rel" {
		t.Errorf("Root() = %q, want an absolute path ending in rel", c.Root())
	}
}

func TestOpenOnFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Open(file); err == nil {
		c.Close()
		t.Errorf("Open on a regular file succeeded")
	}
}

func TestPath(t *testing.T) {
	c := openCache(t, t.TempDir())
	k := key("x")
	tests := []struct {
		kind Kind
		want string
	}{
		{Layer, "layers/sha256/" + k.Hex + ".sif"},
		{Base, "bases/sha256/" + k.Hex + ".sif"},
		{Config, "configs/sha256/" + k.Hex + ".sif"},
		{Flat, "flats/sha256/" + k.Hex + ".sif"},
		{Index, "indexes/sha256/" + k.Hex + ".json.gz"},
		{Document, "documents/sha256/" + k.Hex},
		{Image, "images/sha256/" + k.Hex + ".json"},
	}
	if len(tests) != len(extensions) {
		t.Errorf("the table covers %d kinds, the cache has %d", len(tests), len(extensions))
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			got, want := c.Path(tt.kind, k), filepath.Join(c.Root(), "v1", tt.want)
			if got != want {
				t.Errorf("Path = %q, want %q", got, want)
			}
		})
	}
}

func TestPut(t *testing.T) {
	errFill := errors.New("fill failed")
	tests := []struct {
		name    string
		key     v1.Hash
		fill    func(w *os.File) error
		wantErr error
		badKey  bool
	}{
		{name: "whole", key: key("a"), fill: func(w *os.File) error {
			_, err := io.WriteString(w, "content")
			return err
		}},
		{name: "fill fails after writing", key: key("b"), wantErr: errFill,
			fill: func(w *os.File) error {
				io.WriteString(w, "partial")
				return errFill
			}},
		{name: "other algorithm", key: v1.Hash{Algorithm: "sha512", Hex: key("c").Hex},
			badKey: true},
		{name: "short hex", key: v1.Hash{Algorithm: "sha256", Hex: "abc"}, badKey: true},
		{name: "slash in hex", badKey: true,
			key: v1.Hash{Algorithm: "sha256", Hex: "../../" + key("d").Hex[6:]}},
		{name: "dot in hex", badKey: true,
			key: v1.Hash{Algorithm: "sha256", Hex: key("d").Hex[:60] + ".sif"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir())
			called := false
			fill := func(w *os.File) error {
				called = true
				if _, err := os.Stat(c.Path(Layer, tt.key)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the entry is visible while being filled: %v", err)
				}
				return tt.fill(w)
			}
			err := c.Put(Layer, tt.key, fill)
			if tt.badKey {
				if err == nil || !strings.Contains(err.Error(), "bad key") {
					t.Errorf("Put error = %v, want a bad key", err)
				}
				if called {
					t.Errorf("fill was called for a bad key")
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put error = %v, want %v", err, tt.wantErr)
			}

			whole := err == nil
			if got, want := c.Has(Layer, tt.key), whole; got != want {
				t.Errorf("Has = %v, want %v", got, want)
			}
			names := slices.DeleteFunc(entries(t, c.TempDir()), func(n string) bool {
				return n == "using"
			})
			if !slices.Equal(names, []string{"lock"}) {
				t.Errorf("work dir holds %q, want only the lock and using list", names)
			}
			if names := entries(t, c.dir(Layer)); len(names) != map[bool]int{true: 1}[whole] {
				t.Errorf("layers dir holds %q", names)
			}
			if !whole {
				return
			}
			f, err := c.Open(Layer, tt.key)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, err := io.ReadAll(f)
			if err != nil || string(b) != "content" {
				t.Errorf("entry = %q, %v; want %q", b, err, "content")
			}
			if got, want := mode(t, c.Path(Layer, tt.key)), fs.FileMode(0o644); got != want {
				t.Errorf("entry mode %v, want %v", got, want)
			}
		})
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	list, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range list {
		names = append(names, e.Name())
	}
	return names
}

func TestOpenMissing(t *testing.T) {
	c := openCache(t, t.TempDir())
	if _, err := c.Open(Index, key("none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing entry = %v, want %v", err, os.ErrNotExist)
	}
	if c.Has(Index, key("none")) {
		t.Errorf("Has reports a missing entry")
	}
}

func TestDefaultDir(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr bool
	}{
		{name: "own variable first", want: "/own",
			env: map[string]string{"OCI2LAYERS_CACHE": "/own", "XDG_CACHE_HOME": "/xdg",
				"HOME": "/home/u"}},
		{name: "xdg", want: "/xdg/oci2layers",
			env: map[string]string{"OCI2LAYERS_CACHE": "", "XDG_CACHE_HOME": "/xdg",
				"HOME": "/home/u"}},
		{name: "home", want: "/home/u/.cache/oci2layers",
			env: map[string]string{"OCI2LAYERS_CACHE": "", "XDG_CACHE_HOME": "",
				"HOME": "/home/u"}},
		{name: "nothing", wantErr: true,
			env: map[string]string{"OCI2LAYERS_CACHE": "", "XDG_CACHE_HOME": "", "HOME": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := DefaultDir()
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("DefaultDir error = %v, want an error: %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("DefaultDir = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSweep(t *testing.T) {
	root := t.TempDir()
	live := openCache(t, root)
	tmp := filepath.Join(root, "v1", "tmp")

	dead := filepath.Join(tmp, "run-999999-dead")
	if err := os.MkdirAll(filepath.Join(dead, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dead, "lock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	lockless := filepath.Join(tmp, "run-999998-nolock")
	if err := os.Mkdir(lockless, 0o700); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(tmp, "stray")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	entry := key("kept")
	if err := live.Put(Layer, entry, func(w *os.File) error { return nil }); err != nil {
		t.Fatal(err)
	}

	second := openCache(t, root)

	for _, p := range []string{dead, lockless, stray} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the sweep: %v", filepath.Base(p), err)
		}
	}
	for _, p := range []string{live.TempDir(), second.TempDir()} {
		if _, err := os.Stat(filepath.Join(p, "lock")); err != nil {
			t.Errorf("a live work dir was swept: %v", err)
		}
	}
	if !second.Has(Layer, entry) {
		t.Errorf("a finished entry was swept")
	}

	// Once closed, the first cache's directory is gone and the second's
	// survives a third Open.
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(live.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s: %v", live.TempDir(), err)
	}
	openCache(t, root)
	if _, err := os.Stat(second.TempDir()); err != nil {
		t.Errorf("a live work dir was swept: %v", err)
	}
}

// TestConcurrentOpen opens one cache many times at once, as processes
// starting together do; every cache must keep its work directory.
func TestConcurrentOpen(t *testing.T) {
	root := t.TempDir()
	const n = 32
	caches := make([]*Cache, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { caches[i], errs[i] = Open(root) })
	}
	wg.Wait()
	for i, c := range caches {
		if errs[i] != nil {
			t.Errorf("Open %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { c.Close() })
		if _, err := os.Stat(filepath.Join(c.TempDir(), "lock")); err != nil {
			t.Errorf("Open %d: work dir swept by another Open: %v", i, err)
		}
		err := c.Put(Layer, key(c.TempDir()), func(w *os.File) error { return nil })
		if err != nil {
			t.Errorf("Open %d: Put: %v", i, err)
		}
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	errFill := errors.New("fill failed")
	if err := WriteFile(path, 0o640, func(w io.Writer) error {
		io.WriteString(w, "x")
		return errFill
	}); !errors.Is(err, errFill) {
		t.Errorf("WriteFile error = %v, want %v", err, errFill)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("a failed WriteFile left %q", names)
	}

	if err := WriteFile(path, 0o640, func(w io.Writer) error {
		_, err := io.WriteString(w, "x")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := mode(t, path), fs.FileMode(0o640); got != want {
		t.Errorf("mode %v, want %v", got, want)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("dir holds %q, want only f", names)
	}
}
