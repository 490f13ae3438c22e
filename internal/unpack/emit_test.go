package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
)

// mixedStack is a stack that exercises every part of Write: symlinks,
// hard links, copy-ups, devices, whiteouts, opaque directories and parents
// taken from the lower layer.
func mixedStack(t testing.TB) [][]byte {
	t.Helper()
	return [][]byte{
		buildLayer(t, dir("usr"), dir("usr/lib"), file("usr/lib/a", "a"),
			symlink("lib", "usr/lib"), dir("etc"), file("etc/passwd", "root"),
			file("etc/shadow", "secret"), hardlink("etc/shadow-", "etc/shadow"),
			dir("var"), dir("var/cache"), file("var/cache/x", "x"),
			tentry{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3},
			tentry{name: "run/p", typ: tar.TypeFifo}, symlink("evil", "/"),
			symlink("up", "../..")),
		buildLayer(t, file("lib/b", "b"), whiteout("etc/passwd"), opaqueMarker("var/cache"),
			file("var/cache/y", "y"), hardlink("etc/copy", "etc/shadow"),
			file("evil/etc/motd", "hi"), file("up/z", "z"),
			tentry{name: "opt/x", content: "x", xattrs: map[string]string{"user.b": "2",
				"user.a": "1"}}),
		buildLayer(t, dir("etc"), file("etc/z", "last"), hardlink("etc/zz", "etc/z"),
			hardlink("etc/copy2", "etc/copy"), whiteout("lib/a")),
	}
}

func TestWriteDeterministic(t *testing.T) {
	first, err := runStack(t, 1, mixedStack(t)...)
	if err != nil {
		t.Fatalf("runStack: %v", err)
	}
	second, err := runStack(t, 1, mixedStack(t)...)
	if err != nil {
		t.Fatalf("runStack: %v", err)
	}
	for i := range first.outputs {
		if !bytes.Equal(first.outputs[i], second.outputs[i]) {
			t.Errorf("group %d: two runs wrote different bytes", i)
		}
	}

	// Writing the same overlay again gives the same bytes too.
	layers := mixedStack(t)
	ov := first.overlays[1]
	open := func(_ context.Context, i int) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layers[1+i])), nil
	}
	lower := func(_ context.Context, group int, p string) (io.ReadCloser, error) {
		e := readEmitted(t, first.outputs[group]).entries[p]
		return io.NopCloser(strings.NewReader(e.Content)), nil
	}
	var again bytes.Buffer
	if err := ov.Write(context.Background(), &again, open, lower); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if !bytes.Equal(again.Bytes(), first.outputs[1]) {
		t.Errorf("writing an overlay twice gave different bytes")
	}
}

func TestWriteNames(t *testing.T) {
	r, err := runStack(t, 1, mixedStack(t)...)
	if err != nil {
		t.Fatalf("runStack: %v", err)
	}
	for i, out := range r.outputs {
		tr := tar.NewReader(bytes.NewReader(out))
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("group %d: %v", i, err)
			}
			if err := checkEmittedName(h.Name); err != nil {
				t.Errorf("group %d: %v", i, err)
			}
			if h.Typeflag == tar.TypeLink {
				if err := checkEmittedName(h.Linkname); err != nil {
					t.Errorf("group %d: hard link target: %v", i, err)
				}
			}
		}
	}
	want := map[string]fsEntry{
		"usr": wantDir(), "usr/lib": wantDir(), "usr/lib/b": wantFile("b"),
		"lib": wantLink("usr/lib"), "etc": wantDir(), "etc/shadow": wantFile("secret"),
		"etc/shadow-": wantFile("secret"), "etc/copy": wantFile("secret"),
		"etc/copy2": wantFile("secret"), "etc/motd": wantFile("hi"),
		"etc/z": wantFile("last"), "etc/zz": wantFile("last"), "var": wantDir(),
		"var/cache": wantDir(), "var/cache/y": wantFile("y"), "z": wantFile("z"),
		"opt": wantDir(), "opt/x": {Type: tar.TypeReg, Mode: 0o644, Content: "x",
			Xattrs: map[string]string{"user.a": "1", "user.b": "2"}},
		"dev": wantDir(), "dev/null": {Type: tar.TypeChar, Mode: 0o644, Major: 1, Minor: 3},
		"run": wantDir(), "run/p": {Type: tar.TypeFifo, Mode: 0o644},
		"evil": wantLink("/"), "up": wantLink("../.."),
	}
	for _, honour := range []bool{true, false} {
		if d := diffTrees(mount(t, r.outputs, honour), want); d != "" {
			t.Errorf("merged view (opaque xattr honoured: %v) differs:\n%s", honour, d)
		}
	}
}

// TestWriteOrder checks the order Write promises: directories, regular
// files in stream order, files copied up, other objects, hard links and
// whiteouts.
func TestWriteOrder(t *testing.T) {
	r, err := runStack(t, 1,
		buildLayer(t, file("lower", "l")),
		buildLayer(t, file("b", "1"), symlink("s", "b"), file("a", "2"), dir("d"),
			hardlink("c", "b"), whiteout("gone"), hardlink("up", "lower"),
			tentry{name: "p", typ: tar.TypeFifo}, dir("0")))
	if err != nil {
		t.Fatalf("runStack: %v", err)
	}
	got := output(t, r, 1).names
	want := []string{"0", "d", "b", "a", "up", "p", "s", "c", "gone"}
	if !slices.Equal(got, want) {
		t.Errorf("order: got %q, want %q", got, want)
	}
}

func TestWriteStreamErrors(t *testing.T) {
	layer := buildLayer(t, file("a", "aaa"), file("b", "bbb"))
	tests := []struct {
		name     string
		stream   []byte
		openErr  error
		wantErr  error
		wantText string
	}{
		{
			name:   "the stream the index was made from",
			stream: layer,
		},
		{
			name:   "trailing data after the tar",
			stream: append(append([]byte(nil), layer...), bytes.Repeat([]byte{7}, 5000)...),
		},
		{
			name:     "another stream",
			stream:   buildLayer(t, file("a", "aaa"), file("c", "bbb")),
			wantText: `the index says "b"`,
		},
		{
			name:     "same names, other sizes",
			stream:   buildLayer(t, file("a", "aaa"), file("b", "bbbb")),
			wantText: `the index says "b"`,
		},
		{
			name:    "truncated stream",
			stream:  layer[:514],
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "stream that cannot be opened",
			openErr: errors.New("gone"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idx, err := Scan(context.Background(), bytes.NewReader(layer), DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			ov, err := Plan(NewTree(), OverlayMode, Layer{Index: idx})
			if err != nil {
				t.Fatal(err)
			}
			r := bytes.NewReader(tc.stream)
			open := func(context.Context, int) (io.ReadCloser, error) {
				if tc.openErr != nil {
					return nil, tc.openErr
				}
				return io.NopCloser(r), nil
			}
			err = ov.Write(context.Background(), io.Discard, open, nil)
			switch {
			case tc.openErr != nil:
				if !errors.Is(err, tc.openErr) {
					t.Errorf("Write: got %v, want %v", err, tc.openErr)
				}
			case tc.wantErr != nil || tc.wantText != "":
				if err == nil {
					t.Fatalf("Write: got no error")
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("Write: got %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantText) {
					t.Errorf("Write: got %q, want it to contain %q", err, tc.wantText)
				}
			default:
				if err != nil {
					t.Fatalf("Write: %v", err)
				}
				if r.Len() != 0 {
					t.Errorf("Write left %d bytes of the stream unread", r.Len())
				}
			}
		})
	}
}

func TestWriteCopyUpErrors(t *testing.T) {
	lowerLayer := buildLayer(t, file("a", "data"))
	upperLayer := buildLayer(t, hardlink("b", "a"))
	tests := []struct {
		name  string
		lower LowerOpener
		want  string
	}{
		{
			name: "no lower opener",
			want: "no reader for lower layers",
		},
		{
			name: "lower opener fails",
			lower: func(context.Context, int, string) (io.ReadCloser, error) {
				return nil, errors.New("missing output")
			},
			want: "copy up b: missing output",
		},
		{
			name: "lower file too short",
			lower: func(context.Context, int, string) (io.ReadCloser, error) {
				return io.NopCloser(strings.NewReader("da")), nil
			},
			want: "copy up b from a",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tree := NewTree()
			for i, layer := range [][]byte{lowerLayer, upperLayer} {
				idx, err := Scan(context.Background(), bytes.NewReader(layer), DefaultLimits)
				if err != nil {
					t.Fatal(err)
				}
				ov, err := Plan(tree, OverlayMode, Layer{Position: i, Index: idx})
				if err != nil {
					t.Fatal(err)
				}
				tree.Apply(ov)
				if i == 0 {
					continue
				}
				open := func(context.Context, int) (io.ReadCloser, error) {
					return io.NopCloser(bytes.NewReader(layer)), nil
				}
				err = ov.Write(context.Background(), io.Discard, open, tc.lower)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Write: got %v, want an error containing %q", err, tc.want)
				}
			}
		})
	}
}

// TestWriteFromStoredIndex plans from an index that went through WriteIndex
// and ReadIndex, as a later run does with the cache, and checks that the
// output is the same as from the index Scan made.
func TestWriteFromStoredIndex(t *testing.T) {
	layer := buildLayer(t, dir("caf\xe9"), file("caf\xe9/men\xfc", "x"),
		symlink("l\xff", "caf\xe9"), hardlink("h", "caf\xe9/men\xfc"),
		tentry{name: "ping", content: "elf", xattrs: map[string]string{
			"security.capability": "\x01\x00\x00\x02\x80\x20\x00\x00\xff\xfe"}})
	write := func(idx *Index) []byte {
		t.Helper()
		ov, err := Plan(NewTree(), FlatMode, Layer{Index: idx})
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		var buf bytes.Buffer
		open := func(context.Context, int) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(layer)), nil
		}
		if err := ov.Write(context.Background(), &buf, open, nil); err != nil {
			t.Fatalf("Write: %v", err)
		}
		return buf.Bytes()
	}

	idx, err := Scan(context.Background(), bytes.NewReader(layer), DefaultLimits)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	var stored bytes.Buffer
	if err := WriteIndex(&stored, idx); err != nil {
		t.Fatalf("WriteIndex: %v", err)
	}
	loaded, err := ReadIndex(&stored)
	if err != nil {
		t.Fatalf("ReadIndex: %v", err)
	}
	if got, want := write(loaded), write(idx); !bytes.Equal(got, want) {
		t.Errorf("output from the stored index differs from the scanned one")
	}
}

func TestAddInline(t *testing.T) {
	tests := []struct {
		name      string
		layer     []tentry
		entry     Entry
		data      string
		ifMissing bool
		want      map[string]fsEntry
	}{
		{
			name:  "new file and parents",
			entry: Entry{Name: ".singularity.d/env/01-base.sh", Kind: Reg, Mode: 0o755},
			data:  "#!/bin/sh\n",
			want: map[string]fsEntry{".singularity.d": wantDir(),
				".singularity.d/env": wantDir(),
				".singularity.d/env/01-base.sh": {Type: tar.TypeReg, Mode: 0o755,
					Content: "#!/bin/sh\n"}},
		},
		{
			name:      "existing file kept with ifMissing",
			layer:     []tentry{dir("etc"), file("etc/hosts", "image")},
			entry:     Entry{Name: "etc/hosts", Kind: Reg, Mode: 0o644},
			data:      "",
			ifMissing: true,
			want:      map[string]fsEntry{"etc": wantDir(), "etc/hosts": wantFile("image")},
		},
		{
			name:  "existing file replaced without ifMissing",
			layer: []tentry{dir("etc"), file("etc/hosts", "image")},
			entry: Entry{Name: "etc/hosts", Kind: Reg, Mode: 0o644},
			data:  "skeleton",
			want:  map[string]fsEntry{"etc": wantDir(), "etc/hosts": wantFile("skeleton")},
		},
		{
			name:  "through a symlink of the image",
			layer: []tentry{dir("real"), symlink("etc", "real")},
			entry: Entry{Name: "etc/hosts", Kind: Reg, Mode: 0o644},
			want: map[string]fsEntry{"real": wantDir(), "etc": wantLink("real"),
				"real/hosts": wantFile("")},
		},
		{
			name:  "below a file of the image is skipped",
			layer: []tentry{file("etc", "not a directory")},
			entry: Entry{Name: "etc/hosts", Kind: Reg, Mode: 0o644},
			want:  map[string]fsEntry{"etc": wantFile("not a directory")},
		},
		{
			name: "symlink",
			entry: Entry{Name: "singularity", Kind: Symlink, Mode: 0o777,
				Link: ".singularity.d/runscript"},
			want: map[string]fsEntry{"singularity": wantLink(".singularity.d/runscript")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			layer := buildLayer(t, tc.layer...)
			idx, err := Scan(context.Background(), bytes.NewReader(layer), DefaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			ov, err := Plan(NewTree(), FlatMode, Layer{Index: idx})
			if err != nil {
				t.Fatal(err)
			}
			e := tc.entry
			ov.AddInline(&e, []byte(tc.data), tc.ifMissing)
			var buf bytes.Buffer
			open := func(context.Context, int) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(layer)), nil
			}
			if err := ov.Write(context.Background(), &buf, open, nil); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if d := diffTrees(mount(t, [][]byte{buf.Bytes()}, true), tc.want); d != "" {
				t.Errorf("output differs:\n%s", d)
			}
		})
	}
}

func TestStats(t *testing.T) {
	r, err := runStack(t, 1, mixedStack(t)...)
	if err != nil {
		t.Fatalf("runStack: %v", err)
	}
	tests := []struct {
		group int
		want  Stats
	}{
		{group: 0, want: Stats{Dirs: 7, Files: 4, Links: 1, Other: 5}},
		{group: 1, want: Stats{Dirs: 6, Files: 6, Whiteouts: 2}},
		{group: 2, want: Stats{Dirs: 3, Files: 2, Links: 1, Whiteouts: 1}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("group ", tc.group), func(t *testing.T) {
			if got := r.overlays[tc.group].Stats(); got != tc.want {
				t.Errorf("Stats: got %+v, want %+v", got, tc.want)
			}
			if got, want := r.overlays[tc.group].MaxMTime(), testMTime.Unix(); got != want {
				t.Errorf("MaxMTime: got %d, want %d", got, want)
			}
		})
	}
}

// TestAddInlineOverLinkedFile replaces a file that is hard linked to another
// name, as the skeleton does with an image's /etc/hosts: the other name
// keeps the image's bytes, and a later layer linking to it copies those up.
func TestAddInlineOverLinkedFile(t *testing.T) {
	ctx := context.Background()
	layers := [][]byte{
		buildLayer(t, dir("etc"), file("etc/hosts", "image"),
			hardlink("etc/hosts.orig", "etc/hosts")),
		buildLayer(t, hardlink("x", "etc/hosts.orig")),
	}
	tree := NewTree()
	var outputs [][]byte
	for i, layer := range layers {
		idx, err := Scan(ctx, bytes.NewReader(layer), DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		mode := OverlayMode
		if i == 0 {
			mode = FlatMode
		}
		ov, err := Plan(tree, mode, Layer{Position: i, Index: idx})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			ov.AddInline(&Entry{Name: "etc/hosts", Kind: Reg, Mode: 0o644}, []byte("skel"), false)
		}
		open := func(context.Context, int) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(layer)), nil
		}
		lower := func(_ context.Context, group int, p string) (io.ReadCloser, error) {
			e := readEmitted(t, outputs[group]).entries[p]
			return io.NopCloser(strings.NewReader(e.Content)), nil
		}
		var buf bytes.Buffer
		if err := ov.Write(ctx, &buf, open, lower); err != nil {
			t.Fatalf("group %d: Write: %v", i, err)
		}
		outputs = append(outputs, buf.Bytes())
		tree.Apply(ov)
	}
	want := map[string]fsEntry{"etc": wantDir(), "etc/hosts": wantFile("skel"),
		"etc/hosts.orig": wantFile("image"), "x": wantFile("image")}
	if d := diffTrees(mount(t, outputs, true), want); d != "" {
		t.Errorf("merged view differs:\n%s", d)
	}
}
