package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
)

// fuzzLimits keep one input small enough to run thousands of times a second.
var fuzzLimits = Limits{Bytes: 1 << 20, Entries: 1000, Depth: 64}

// fuzzLower is the lower layer FuzzLayer plans over: symlinks that redirect
// (merged /usr), point at the root or climb, and files to link to.
func fuzzLower(t testing.TB) []byte {
	t.Helper()
	return buildLayer(t, dir("usr"), dir("usr/lib"), file("usr/lib/a", "a"),
		symlink("lib", "usr/lib"), symlink("evil", "/"), symlink("up", "../.."),
		dir("etc"), file("etc/passwd", "root"), hardlink("etc/passwd-", "etc/passwd"),
		dir("d"), dir("d/sub"), file("d/sub/x", "x"), symlink("loop", "loop"))
}

func FuzzLayer(f *testing.F) {
	for _, seed := range [][]tentry{
		{file("a", "data"), hardlink("b", "a"), symlink("s", "a")},
		{symlink("evil", "/"), file("evil/etc/passwd", "p"), symlink("up", "../../.."),
			file("up/x", "x")},
		{file("lib/x", "x"), whiteout("etc/passwd"), opaqueMarker("d"), file("d/new", "n")},
		{whiteout("d"), dir("d"), dir("d/sub"), hardlink("h", "etc/passwd"),
			hardlink("lib/h", "usr/lib/a")},
		{dir("x"), file("x/y", "y"), file("x", "f"), symlink("x", "t"),
			tentry{name: "dev/c", typ: tar.TypeChar, major: 1, minor: 3},
			tentry{name: "w", typ: tar.TypeChar}},
		{tentry{name: "d", typ: tar.TypeDir, xattrs: map[string]string{
			"trusted.overlay.opaque": "y", "user.a": "\xff"}}, file("/abs/../b", "b")},
		{symlink("s", "d/sub/deeper/still"), symlink("t", "s/../../../../../up/evil/lib"),
			file("t/x", "x"), hardlink("h", "t/x"), whiteout("s/gone"), opaqueMarker("t")},
	} {
		f.Add(buildLayer(f, seed...))
	}
	for _, l := range mixedStack(f) {
		f.Add(l)
	}
	f.Add(sparseLayer(f, "s", 1000))

	ctx := context.Background()
	lowerLayer := fuzzLower(f)
	lowerIdx, err := Scan(ctx, bytes.NewReader(lowerLayer), fuzzLimits)
	if err != nil {
		f.Fatal(err)
	}
	lowerTree := func(t *testing.T) *Tree {
		tree := NewTree()
		ov, err := Plan(tree, FlatMode, Layer{Index: lowerIdx})
		if err != nil {
			t.Fatal(err)
		}
		tree.Apply(ov)
		return tree
	}
	var lowerOut bytes.Buffer
	{
		ov, err := Plan(NewTree(), FlatMode, Layer{Index: lowerIdx})
		if err != nil {
			f.Fatal(err)
		}
		open := func(context.Context, int) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(lowerLayer)), nil
		}
		if err := ov.Write(ctx, &lowerOut, open, nil); err != nil {
			f.Fatal(err)
		}
	}
	lowerFiles := readEmitted(f, lowerOut.Bytes()).entries

	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := Scan(ctx, bytes.NewReader(data), fuzzLimits)
		if err != nil {
			checkFuzzError(t, "Scan", err)
			return
		}
		open := func(context.Context, int) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}
		lower := func(_ context.Context, group int, p string) (io.ReadCloser, error) {
			e, ok := lowerFiles[p]
			if group != 0 || !ok || e.Type != tar.TypeReg {
				t.Fatalf("copy up %s from group %d: not a file of the lower output", p, group)
			}
			return io.NopCloser(strings.NewReader(e.Content)), nil
		}
		for _, tc := range []struct {
			name  string
			tree  *Tree
			mode  Mode
			below [][]byte // the outputs the overlay is mounted on
		}{
			{"flat", NewTree(), FlatMode, nil},
			{"overlay on nothing", NewTree(), OverlayMode, nil},
			{"overlay on symlinks", lowerTree(t), OverlayMode, [][]byte{lowerOut.Bytes()}},
		} {
			ov, err := Plan(tc.tree, tc.mode, Layer{Position: 1, Index: idx})
			if err != nil {
				checkFuzzError(t, tc.name+": Plan", err)
				continue
			}
			var out bytes.Buffer
			if err := ov.Write(ctx, &out, open, lower); err != nil {
				checkFuzzError(t, tc.name+": Write", err)
				continue
			}
			checkFuzzOutput(t, tc.name, out.Bytes(), tc.mode)

			var again bytes.Buffer
			if err := ov.Write(ctx, &again, open, lower); err != nil {
				t.Fatalf("%s: Write again: %v", tc.name, err)
			}
			if !bytes.Equal(out.Bytes(), again.Bytes()) {
				t.Fatalf("%s: Write is not deterministic", tc.name)
			}

			// The tree with the overlay applied is what overlayfs shows,
			// whether or not it honours the opaque xattr.
			tc.tree.Apply(ov)
			want := treeListing(tc.tree)
			for _, honour := range []bool{true, false} {
				got := withoutContent(mount(t, append(tc.below, out.Bytes()), honour))
				if d := diffTrees(got, want); d != "" {
					t.Fatalf("%s: mounted (opaque xattr honoured: %v) differs from the tree:\n%s",
						tc.name, honour, d)
				}
			}
		}
	})
}

// checkFuzzError fails unless err is one the package documents or comes
// from reading the tar stream.
func checkFuzzError(t *testing.T, what string, err error) {
	t.Helper()
	for _, known := range []error{ErrEscape, ErrInvalid, ErrLimit, io.ErrUnexpectedEOF,
		tar.ErrHeader, tar.ErrFieldTooLong, tar.ErrInsecurePath} {
		if errors.Is(err, known) {
			return
		}
	}
	if strings.Contains(err.Error(), "archive/tar: ") {
		return // the reader's unexported errors, such as a bad sparse map
	}
	t.Fatalf("%s: unexpected error %v", what, err)
}

// checkFuzzOutput checks an output tar: every name clean and relative,
// written once, below a directory written before it; hard links naming a
// regular file written before; no whiteout in flat mode.
func checkFuzzOutput(t *testing.T, what string, out []byte, mode Mode) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(out))
	seen := map[string]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: read output: %v", what, err)
		}
		fail := func(format string, args ...any) {
			t.Fatalf("%s: output entry %q: %s", what, h.Name, fmt.Sprintf(format, args...))
		}
		if err := checkEmittedName(h.Name); err != nil {
			fail("%v", err)
		}
		if _, dup := seen[h.Name]; dup {
			fail("written twice")
		}
		if parent := path.Dir(h.Name); parent != "." && seen[parent] != tar.TypeDir {
			fail("parent not written before as a directory")
		}
		switch h.Typeflag {
		case tar.TypeLink:
			if seen[h.Linkname] != tar.TypeReg {
				fail("hard link to %q, not a regular file written before", h.Linkname)
			}
		case tar.TypeChar:
			if mode == FlatMode && h.Devmajor == 0 && h.Devminor == 0 {
				fail("whiteout in flat mode")
			}
		}
		seen[h.Name] = h.Typeflag
	}
}
