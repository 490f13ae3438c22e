package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// stackCase is one stack of layers and the merged file system a container
// must see on top of it.
type stackCase struct {
	name string
	// base is the number of bottom layers flattened into group 0 (0 means 1).
	base   int
	layers [][]tentry
	want   map[string]fsEntry
	// wantDependent is LowerDependent for each group; nil skips the check.
	wantDependent []bool
	wantErr       error
	// errText, when set, must be part of the error message.
	errText string
	// check, when set, inspects the outputs further.
	check func(t *testing.T, r *stackResult)
}

// runStackCases runs each case as a subtest: the stack is converted, then
// mounted both honouring and ignoring the opaque xattr; both views, and the
// tree with every group applied, must equal the wanted file system. No
// output may carry an overlay xattr, and the flat base no whiteout.
func runStackCases(t *testing.T, cases []stackCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var layers [][]byte
			for _, l := range tc.layers {
				layers = append(layers, buildLayer(t, l...))
			}
			r, err := runStack(t, tc.base, layers...)
			if tc.wantErr != nil || tc.errText != "" {
				if err == nil {
					t.Fatalf("runStack: got no error, want %v", tc.wantErr)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("runStack: got %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Errorf("runStack: got %q, want it to contain %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("runStack: %v", err)
			}

			for _, honour := range []bool{true, false} {
				got := mount(t, r.outputs, honour)
				if d := diffTrees(got, tc.want); d != "" {
					t.Errorf("merged view (opaque xattr honoured: %v) differs:\n%s", honour, d)
				}
			}
			if d := diffTrees(treeListing(r.tree), withoutContent(tc.want)); d != "" {
				t.Errorf("tree after Apply differs:\n%s", d)
			}
			if tc.wantDependent != nil {
				var got []bool
				for _, ov := range r.overlays {
					got = append(got, ov.LowerDependent)
				}
				if !slices.Equal(got, tc.wantDependent) {
					t.Errorf("LowerDependent: got %v, want %v (reasons %v)", got, tc.wantDependent,
						reasons(r))
				}
			}
			for name, e := range output(t, r, 0).entries {
				if isWhiteout(e) {
					t.Errorf("flat output has the whiteout %q", name)
				}
			}
			for i := range r.outputs {
				for name, e := range output(t, r, i).entries {
					for k := range e.Xattrs {
						if strings.HasPrefix(k, "trusted.overlay.") ||
							strings.HasPrefix(k, "user.overlay.") {
							t.Errorf("group %d output %s has the xattr %s", i, name, k)
						}
					}
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func reasons(r *stackResult) [][]string {
	var out [][]string
	for _, ov := range r.overlays {
		out = append(out, ov.Reasons)
	}
	return out
}

// output returns group i's parsed output.
func output(t *testing.T, r *stackResult, i int) *emitted {
	t.Helper()
	return readEmitted(t, r.outputs[i])
}

// wantEmitted checks that group i's output holds want at each path.
func wantEmitted(t *testing.T, r *stackResult, i int, want map[string]fsEntry) {
	t.Helper()
	out := output(t, r, i)
	for p, w := range want {
		got, ok := out.entries[p]
		if !ok {
			t.Errorf("group %d output: no %s, want %v", i, p, w)
			continue
		}
		if got.String() != w.String() {
			t.Errorf("group %d output %s: got %v, want %v", i, p, got, w)
		}
	}
}

// wantNotEmitted checks that group i's output lacks each path.
func wantNotEmitted(t *testing.T, r *stackResult, i int, paths ...string) {
	t.Helper()
	out := output(t, r, i)
	for _, p := range paths {
		if e, ok := out.entries[p]; ok {
			t.Errorf("group %d output: got %s %v, want nothing", i, p, e)
		}
	}
}

// charWhiteout is a whiteout as an output holds it.
var charWhiteout = fsEntry{Type: tar.TypeChar}

func TestStackWhiteouts(t *testing.T) {
	runStackCases(t, []stackCase{
		{
			name: "whiteout of a file",
			layers: [][]tentry{
				{dir("etc"), file("etc/a", "a"), file("etc/b", "b")},
				{dir("etc"), whiteout("etc/a")},
			},
			want:          map[string]fsEntry{"etc": wantDir(), "etc/b": wantFile("b")},
			wantDependent: []bool{false, false},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"etc/a": charWhiteout})
			},
		},
		{
			name: "whiteout of a directory takes its children",
			layers: [][]tentry{
				{dir("usr"), dir("usr/share"), dir("usr/share/doc"), file("usr/share/doc/x", "x"),
					file("usr/keep", "k")},
				{dir("usr"), whiteout("usr/share")},
			},
			want:          map[string]fsEntry{"usr": wantDir(), "usr/keep": wantFile("k")},
			wantDependent: []bool{false, false},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"usr/share": charWhiteout})
				wantNotEmitted(t, r, 1, "usr/share/doc", "usr/share/doc/x")
			},
		},
		{
			name: "whiteout of a name the lower lacks is harmless",
			layers: [][]tentry{
				{dir("etc"), file("etc/a", "a")},
				{dir("etc"), whiteout("etc/nothere"), whiteout("gone")},
			},
			want:          map[string]fsEntry{"etc": wantDir(), "etc/a": wantFile("a")},
			wantDependent: []bool{false, false},
		},
		{
			name: "whiteout in a directory the lower lacks is left out",
			layers: [][]tentry{
				{dir("etc")},
				{dir("new"), whiteout("new/x"), file("new/y", "y"), whiteout("etc/a/b")},
			},
			// Like Docker, the whiteout's parent is made even so.
			want: map[string]fsEntry{"etc": wantDir(), "etc/a": wantDir(), "new": wantDir(),
				"new/y": wantFile("y")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantNotEmitted(t, r, 1, "new/x", "etc/a/b")
			},
		},
		{
			name: "whiteout in a directory reached through a lower symlink",
			layers: [][]tentry{
				{dir("usr"), dir("usr/lib"), file("usr/lib/a", "a"), file("usr/lib/b", "b"),
					symlink("lib", "usr/lib")},
				{whiteout("lib/a")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/b": wantFile("b"), "lib": wantLink("usr/lib")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"usr/lib/a": charWhiteout})
				wantNotEmitted(t, r, 1, "lib", "lib/a")
			},
		},
		{
			name: "whiteout of a lower symlink removes the link, not its target",
			layers: [][]tentry{
				{dir("usr"), dir("usr/lib"), file("usr/lib/a", "a"), symlink("lib", "usr/lib")},
				{whiteout("lib")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a")},
			wantDependent: []bool{false, false},
		},
		{
			name: "literal 0:0 character device acts as a whiteout",
			layers: [][]tentry{
				{dir("etc"), file("etc/a", "a"), file("etc/b", "b")},
				{dir("etc"), {name: "etc/a", typ: tar.TypeChar, mode: 0o600, uid: 7}},
			},
			want:          map[string]fsEntry{"etc": wantDir(), "etc/b": wantFile("b")},
			wantDependent: []bool{false, false},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"etc/a": charWhiteout})
			},
		},
		{
			name: "whiteout in a later layer of the flat base",
			base: 2,
			layers: [][]tentry{
				{dir("etc"), file("etc/a", "a"), file("etc/b", "b"), dir("d"), file("d/x", "x")},
				{whiteout("etc/a"), whiteout("d")},
			},
			want:          map[string]fsEntry{"etc": wantDir(), "etc/b": wantFile("b")},
			wantDependent: []bool{false},
		},
	})
}

func TestStackOpaque(t *testing.T) {
	lower := []tentry{dir("etc"), file("etc/a", "a"), dir("etc/sub"), file("etc/sub/x", "x"),
		symlink("etc/l", "a"), file("keep", "k")}
	runStackCases(t, []stackCase{
		{
			name: "opaque directory over lower content",
			layers: [][]tentry{
				lower,
				{dir("etc"), opaqueMarker("etc"), file("etc/new", "n")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/new": wantFile("n"),
				"keep": wantFile("k")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{
					"etc":     wantDir(),
					"etc/a":   charWhiteout,
					"etc/sub": charWhiteout,
					"etc/l":   charWhiteout,
					"etc/new": wantFile("n"),
				})
				wantNotEmitted(t, r, 1, "etc/sub/x")
			},
		},
		{
			name: "opaque marker after its same-layer children",
			layers: [][]tentry{
				lower,
				{dir("etc"), file("etc/new", "n"), dir("etc/d2"), file("etc/d2/y", "y"),
					opaqueMarker("etc")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/new": wantFile("n"),
				"etc/d2": wantDir(), "etc/d2/y": wantFile("y"), "keep": wantFile("k")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"etc": wantDir(), "etc/a": charWhiteout})
			},
		},
		{
			name: "opaque marker without a directory entry",
			layers: [][]tentry{
				lower,
				{opaqueMarker("etc"), file("etc/new", "n")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/new": wantFile("n"),
				"keep": wantFile("k")},
			wantDependent: []bool{false, true},
		},
		{
			name: "opaque directory with a same-layer subdirectory the lower also has",
			layers: [][]tentry{
				lower,
				{dir("etc"), opaqueMarker("etc"), dir("etc/sub"), file("etc/sub/y", "y")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/sub": wantDir(),
				"etc/sub/y": wantFile("y"), "keep": wantFile("k")},
			wantDependent: []bool{false, true},
		},
		{
			name: "opaque directory with a same-layer subdirectory, marker last",
			layers: [][]tentry{
				lower,
				{dir("etc"), dir("etc/sub"), file("etc/sub/y", "y"), opaqueMarker("etc")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/sub": wantDir(),
				"etc/sub/y": wantFile("y"), "keep": wantFile("k")},
			wantDependent: []bool{false, true},
		},
		{
			name: "opaque root",
			layers: [][]tentry{
				lower,
				{opaqueMarker(""), file("only", "o")},
			},
			want:          map[string]fsEntry{"only": wantFile("o")},
			wantDependent: []bool{false, true},
		},
		{
			name: "opaque through a lower symlink makes the target opaque",
			layers: [][]tentry{
				{dir("usr"), dir("usr/lib"), file("usr/lib/a", "a"), symlink("lib", "usr/lib")},
				{opaqueMarker("lib"), file("lib/new", "n")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/new": wantFile("n"), "lib": wantLink("usr/lib")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"usr/lib": wantDir(),
					"usr/lib/a": charWhiteout})
				wantNotEmitted(t, r, 1, "lib")
			},
		},
		{
			name: "opaque directory in a later layer of the flat base",
			base: 2,
			layers: [][]tentry{
				lower,
				{dir("etc"), opaqueMarker("etc"), file("etc/new", "n")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/new": wantFile("n"),
				"keep": wantFile("k")},
		},
		{
			name: "opaque marker last in a later layer of the flat base",
			base: 2,
			layers: [][]tentry{
				lower,
				{dir("etc"), dir("etc/sub"), file("etc/sub/y", "y"), opaqueMarker("etc")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/sub": wantDir(),
				"etc/sub/y": wantFile("y"), "keep": wantFile("k")},
		},
		{
			name: "opaque marker last, children under an earlier layer's directory",
			base: 2,
			layers: [][]tentry{
				lower,
				{file("etc/sub/y", "y"), opaqueMarker("etc")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "etc/sub": wantDir(),
				"etc/sub/y": wantFile("y"), "keep": wantFile("k")},
		},
		{
			name: "forged opaque and redirect xattrs are dropped",
			layers: [][]tentry{
				lower,
				{{name: "etc", typ: tar.TypeDir, xattrs: map[string]string{
					"trusted.overlay.opaque":  "y",
					"user.overlay.opaque":     "y",
					"user.overlay.redirect":   "/keep",
					"trusted.overlay.origin":  "x",
					"user.mime_type":          "text/plain",
					"security.capability.bad": "v",
				}}, file("etc/new", "n")},
			},
			want: map[string]fsEntry{"etc": {Type: tar.TypeDir, Mode: 0o755,
				Xattrs: map[string]string{"user.mime_type": "text/plain",
					"security.capability.bad": "v"}},
				"etc/a": wantFile("a"), "etc/sub": wantDir(), "etc/sub/x": wantFile("x"),
				"etc/l": wantLink("a"), "etc/new": wantFile("n"), "keep": wantFile("k")},
			wantDependent: []bool{false, false},
		},
	})
}

func TestStackWhiteoutAndDirectory(t *testing.T) {
	lower := []tentry{dir("d"), file("d/old", "o"), dir("d/sub"), file("d/sub/x", "x")}
	want := map[string]fsEntry{"d": wantDir(), "d/new": wantFile("n")}
	runStackCases(t, []stackCase{
		{
			name:          "whiteout then directory",
			layers:        [][]tentry{lower, {whiteout("d"), dir("d"), file("d/new", "n")}},
			want:          want,
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{"d": wantDir(), "d/old": charWhiteout,
					"d/sub": charWhiteout})
			},
		},
		{
			name:          "directory then whiteout",
			layers:        [][]tentry{lower, {dir("d"), file("d/new", "n"), whiteout("d")}},
			want:          want,
			wantDependent: []bool{false, true},
		},
		{
			name:          "whiteout then an implicit directory",
			layers:        [][]tentry{lower, {whiteout("d"), file("d/new", "n")}},
			want:          want,
			wantDependent: []bool{false, true},
		},
		{
			name: "whiteout then directory then the lower's subdirectory",
			layers: [][]tentry{lower,
				{whiteout("d"), dir("d"), dir("d/sub"), file("d/sub/y", "y")}},
			want: map[string]fsEntry{"d": wantDir(), "d/sub": wantDir(),
				"d/sub/y": wantFile("y")},
			wantDependent: []bool{false, true},
		},
		{
			name:   "whiteout then a file of the same name",
			layers: [][]tentry{lower, {whiteout("d"), file("d", "now a file")}},
			want:   map[string]fsEntry{"d": wantFile("now a file")},
		},
		{
			name: "whiteout and directory in a later layer of the flat base",
			base: 2,
			layers: [][]tentry{lower,
				{dir("d"), file("d/new", "n"), whiteout("d")}},
			want: want,
		},
		{
			name: "flat base: children under an earlier layer's directory, then its whiteout",
			base: 2,
			layers: [][]tentry{lower,
				{file("d/new", "n"), whiteout("d")}},
			want: want,
		},
	})
}

func TestStackSymlinks(t *testing.T) {
	usrLib := []tentry{dir("usr"), dir("usr/lib"), file("usr/lib/a", "a")}
	runStackCases(t, []stackCase{
		{
			name: "symlink within a layer",
			layers: [][]tentry{
				append(usrLib[:3:3], symlink("lib", "usr/lib"), file("lib/x", "x")),
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a"), "usr/lib/x": wantFile("x"), "lib": wantLink("usr/lib")},
			wantDependent: []bool{false},
		},
		{
			name: "merged /usr: an upper path through a lower symlink",
			layers: [][]tentry{
				append(usrLib[:3:3], symlink("lib", "usr/lib")),
				{dir("lib/systemd"), file("lib/systemd/x.service", "s")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a"), "usr/lib/systemd": wantDir(),
				"usr/lib/systemd/x.service": wantFile("s"), "lib": wantLink("usr/lib")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantNotEmitted(t, r, 1, "lib", "lib/systemd")
			},
		},
		{
			name: "upper entry through a symlink of the same layer",
			layers: [][]tentry{
				{dir("etc")},
				{dir("d"), symlink("s", "d"), file("s/x", "x")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "d": wantDir(), "d/x": wantFile("x"),
				"s": wantLink("d")},
			wantDependent: []bool{false, false},
		},
		{
			name: "symlink made in an earlier layer of the flat base",
			base: 2,
			layers: [][]tentry{
				append(usrLib[:3:3], symlink("lib", "usr/lib")),
				{file("lib/x", "x")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a"), "usr/lib/x": wantFile("x"), "lib": wantLink("usr/lib")},
			wantDependent: []bool{false},
		},
		{
			name: "chain of symlinks",
			layers: [][]tentry{
				{dir("real"), symlink("a", "b"), symlink("b", "c/d"), dir("c"),
					symlink("c/d", "../real")},
				{file("a/x", "x")},
			},
			want: map[string]fsEntry{"real": wantDir(), "real/x": wantFile("x"),
				"a": wantLink("b"), "b": wantLink("c/d"), "c": wantDir(),
				"c/d": wantLink("../real")},
			wantDependent: []bool{false, true},
		},
		{
			name: "absolute symlink target is root-relative",
			layers: [][]tentry{
				append(usrLib[:3:3], symlink("lib", "/usr/lib")),
				{file("lib/x", "x")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a"), "usr/lib/x": wantFile("x"),
				"lib": wantLink("/usr/lib")},
			wantDependent: []bool{false, true},
		},
		{
			name: "dot-dot symlink target",
			layers: [][]tentry{
				append(usrLib[:3:3], dir("usr/bin"), symlink("usr/bin/lib", "../lib")),
				{file("usr/bin/lib/x", "x")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a"), "usr/lib/x": wantFile("x"), "usr/bin": wantDir(),
				"usr/bin/lib": wantLink("../lib")},
			wantDependent: []bool{false, true},
		},
		{
			name: "symlink to a missing directory makes it",
			layers: [][]tentry{
				{symlink("s", "made/here"), file("s/x", "x")},
			},
			want: map[string]fsEntry{"s": wantLink("made/here"), "made": wantDir(),
				"made/here": wantDir(), "made/here/x": wantFile("x")},
		},
		{
			name: "directory entry over a lower symlink replaces the symlink",
			layers: [][]tentry{
				append(usrLib[:3:3], symlink("lib", "usr/lib")),
				{dir("lib"), file("lib/x", "x")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("a"), "lib": wantDir(), "lib/x": wantFile("x")},
			wantDependent: []bool{false, false},
		},
		{
			name: "dot-dot after a symlink climbs from its target",
			layers: [][]tentry{
				{dir("x"), dir("x/y"), dir("b"), symlink("b/c", "../x/y"),
					symlink("a", "b/c/../w")},
				{file("a/f", "f")},
			},
			want: map[string]fsEntry{"x": wantDir(), "x/y": wantDir(), "b": wantDir(),
				"b/c": wantLink("../x/y"), "a": wantLink("b/c/../w"), "x/w": wantDir(),
				"x/w/f": wantFile("f")},
			wantDependent: []bool{false, true},
		},
		{
			name: "absolute target after dot-dot",
			layers: [][]tentry{
				{dir("x"), symlink("x/abs", "/y"), symlink("a", "x/../x/abs/../z")},
				{file("a/f", "f")},
			},
			want: map[string]fsEntry{"x": wantDir(), "x/abs": wantLink("/y"),
				"a": wantLink("x/../x/abs/../z"), "z": wantDir(), "z/f": wantFile("f")},
			wantDependent: []bool{false, true},
		},
		{
			name: "path longer than PATH_MAX once resolved",
			layers: [][]tentry{
				{symlink("s", strings.Repeat("d/", 1500)+"d"),
					symlink("s/t", strings.Repeat("e/", 1500)+"e")},
				{file("s/t/x", "x")},
			},
			wantErr: ErrInvalid,
			errText: "path longer than 4096 bytes",
		},
		{
			name:    "symlink loop",
			layers:  [][]tentry{{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")}},
			wantErr: ErrInvalid,
			errText: "too many levels of symbolic links",
		},
		{
			name:    "symlink to itself across layers",
			layers:  [][]tentry{{symlink("self", "./self")}, {file("self/x", "x")}},
			wantErr: ErrInvalid,
			errText: "too many levels of symbolic links",
		},
	})
}

func TestStackHardlinks(t *testing.T) {
	runStackCases(t, []stackCase{
		{
			name:          "hardlink within a layer",
			layers:        [][]tentry{{file("a", "data"), hardlink("b", "a")}},
			want:          map[string]fsEntry{"a": wantFile("data"), "b": wantFile("data")},
			wantDependent: []bool{false},
			check: func(t *testing.T, r *stackResult) {
				out := output(t, r, 0)
				if got, want := out.links["b"], "a"; got != want {
					t.Errorf("b: got a hard link to %q, want %q", got, want)
				}
				if got, want := strings.Count(string(r.outputs[0]), "data"), 1; got != want {
					t.Errorf("content written %d times, want %d", got, want)
				}
			},
		},
		{
			name: "hardlink primary is the first name in path order",
			layers: [][]tentry{{dir("z"), file("z/orig", "data"), hardlink("a", "z/orig"),
				hardlink("m", "z/orig")}},
			want: map[string]fsEntry{"z": wantDir(), "z/orig": wantFile("data"),
				"a": wantFile("data"), "m": wantFile("data")},
			check: func(t *testing.T, r *stackResult) {
				out := output(t, r, 0)
				for _, name := range []string{"m", "z/orig"} {
					if got, want := out.links[name], "a"; got != want {
						t.Errorf("%s: got a hard link to %q, want %q", name, got, want)
					}
				}
			},
		},
		{
			name: "hardlink to a file only a lower layer has is copied up",
			layers: [][]tentry{
				{dir("etc"), {name: "etc/a", content: "data", mode: 0o600, uid: 3, gid: 4}},
				{dir("etc"), hardlink("etc/b", "etc/a")},
			},
			want: map[string]fsEntry{"etc": wantDir(),
				"etc/a": {Type: tar.TypeReg, Mode: 0o600, UID: 3, GID: 4, Content: "data"},
				"etc/b": {Type: tar.TypeReg, Mode: 0o600, UID: 3, GID: 4, Content: "data"}},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{
					"etc/b": {Type: tar.TypeReg, Mode: 0o600, UID: 3, GID: 4, Content: "data"}})
				wantNotEmitted(t, r, 1, "etc/a")
			},
		},
		{
			name: "hardlink to a copied-up file two groups up",
			layers: [][]tentry{
				{file("a", "data")},
				{hardlink("b", "a")},
				{hardlink("c", "b")},
			},
			want: map[string]fsEntry{"a": wantFile("data"), "b": wantFile("data"),
				"c": wantFile("data")},
			wantDependent: []bool{false, true, true},
		},
		{
			name: "hardlink chain within a layer",
			layers: [][]tentry{
				{file("a", "data"), hardlink("b", "a"), hardlink("c", "b"), hardlink("d", "c")},
			},
			want: map[string]fsEntry{"a": wantFile("data"), "b": wantFile("data"),
				"c": wantFile("data"), "d": wantFile("data")},
			check: func(t *testing.T, r *stackResult) {
				out := output(t, r, 0)
				for _, name := range []string{"b", "c", "d"} {
					if got, want := out.links[name], "a"; got != want {
						t.Errorf("%s: got a hard link to %q, want %q", name, got, want)
					}
				}
			},
		},
		{
			name: "hardlink target resolved through a lower symlink",
			layers: [][]tentry{
				{dir("usr"), dir("usr/lib"), symlink("lib", "usr/lib")},
				{dir("usr"), dir("usr/lib"), file("usr/lib/a", "data"), hardlink("b", "lib/a")},
			},
			want: map[string]fsEntry{"usr": wantDir(), "usr/lib": wantDir(),
				"usr/lib/a": wantFile("data"), "b": wantFile("data"), "lib": wantLink("usr/lib")},
			wantDependent: []bool{false, true},
		},
		{
			name: "hardlink to a symlink copies the symlink",
			layers: [][]tentry{
				{dir("d"), symlink("d/s", "target"), hardlink("h", "d/s")},
			},
			want: map[string]fsEntry{"d": wantDir(), "d/s": wantLink("target"),
				"h": wantLink("target")},
		},
		{
			name: "hardlink to itself changes nothing",
			layers: [][]tentry{
				{file("a", "data"), hardlink("a", "a")},
			},
			want: map[string]fsEntry{"a": wantFile("data")},
		},
		{
			name: "file replaced after a hardlink to it keeps the old content in the link",
			layers: [][]tentry{
				{file("a", "old"), hardlink("b", "a"), file("a", "new")},
			},
			want: map[string]fsEntry{"a": wantFile("new"), "b": wantFile("old")},
		},
		{
			name:    "hardlink to a directory",
			layers:  [][]tentry{{dir("d"), hardlink("h", "d")}},
			wantErr: ErrInvalid,
			errText: "hardlink to directory",
		},
		{
			name:    "hardlink target missing",
			layers:  [][]tentry{{hardlink("h", "nothere")}},
			wantErr: ErrInvalid,
			errText: "does not exist",
		},
		{
			name:    "hardlink target deleted by a whiteout",
			layers:  [][]tentry{{file("a", "data")}, {whiteout("a"), hardlink("h", "a")}},
			wantErr: ErrInvalid,
			errText: "does not exist",
		},
		{
			name:    "hardlink target below a file",
			layers:  [][]tentry{{file("a", "data"), hardlink("h", "a/b")}},
			wantErr: ErrInvalid,
			errText: "below a file",
		},
	})
}

func TestStackParents(t *testing.T) {
	runStackCases(t, []stackCase{
		{
			name:   "implicit parents get 0755 root:root when the lower lacks them",
			layers: [][]tentry{{{name: "a/b/c", content: "c", mode: 0o600, uid: 9, gid: 9}}},
			want: map[string]fsEntry{"a": wantDir(), "a/b": wantDir(),
				"a/b/c": {Type: tar.TypeReg, Mode: 0o600, UID: 9, GID: 9, Content: "c"}},
			wantDependent: []bool{false},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 0, map[string]fsEntry{"a": wantDir(), "a/b": wantDir()})
			},
		},
		{
			name: "implicit parents copy the lower directory's attributes",
			layers: [][]tentry{
				{{name: "opt", typ: tar.TypeDir, mode: 0o1750, uid: 5, gid: 6,
					xattrs: map[string]string{"user.k": "v"}}},
				{file("opt/x", "x")},
			},
			want: map[string]fsEntry{
				"opt": {Type: tar.TypeDir, Mode: 0o1750, UID: 5, GID: 6,
					Xattrs: map[string]string{"user.k": "v"}},
				"opt/x": wantFile("x")},
			wantDependent: []bool{false, true},
			check: func(t *testing.T, r *stackResult) {
				wantEmitted(t, r, 1, map[string]fsEntry{
					"opt": {Type: tar.TypeDir, Mode: 0o1750, UID: 5, GID: 6,
						Xattrs: map[string]string{"user.k": "v"}}})
			},
		},
		{
			name: "explicit parents keep the layer independent",
			layers: [][]tentry{
				{{name: "opt", typ: tar.TypeDir, mode: 0o700, uid: 5, gid: 6}},
				{{name: "opt", typ: tar.TypeDir, mode: 0o711, uid: 1, gid: 2}, file("opt/x", "x")},
			},
			want: map[string]fsEntry{
				"opt":   {Type: tar.TypeDir, Mode: 0o711, UID: 1, GID: 2},
				"opt/x": wantFile("x")},
			wantDependent: []bool{false, false},
		},
		{
			name: "implicit parent over a lower file replaces it",
			layers: [][]tentry{
				{file("a", "file")},
				{file("a/b", "b")},
			},
			want:          map[string]fsEntry{"a": wantDir(), "a/b": wantFile("b")},
			wantDependent: []bool{false, false},
		},
		{
			name:    "entry under a file of the same layer",
			layers:  [][]tentry{{file("a", "file"), file("a/b", "b")}},
			wantErr: ErrInvalid,
			errText: "not a directory",
		},
		{
			name:    "entry under a symlink to a file of the same layer",
			layers:  [][]tentry{{file("f", "file"), symlink("s", "f"), file("s/b", "b")}},
			wantErr: ErrInvalid,
			errText: "not a directory",
		},
	})
}

func TestStackDuplicates(t *testing.T) {
	runStackCases(t, []stackCase{
		{
			name:   "file then directory",
			layers: [][]tentry{{file("x", "f"), dir("x"), file("x/y", "y")}},
			want:   map[string]fsEntry{"x": wantDir(), "x/y": wantFile("y")},
		},
		{
			name:   "directory then file",
			layers: [][]tentry{{dir("x"), file("x/y", "y"), file("x", "f")}},
			want:   map[string]fsEntry{"x": wantFile("f")},
		},
		{
			name:   "file then symlink",
			layers: [][]tentry{{file("x", "f"), symlink("x", "t")}},
			want:   map[string]fsEntry{"x": wantLink("t")},
		},
		{
			name:   "file twice",
			layers: [][]tentry{{file("x", "first"), file("x", "second")}},
			want:   map[string]fsEntry{"x": wantFile("second")},
		},
		{
			name: "directory twice keeps children and takes the last attributes",
			layers: [][]tentry{{dir("x"), file("x/y", "y"),
				{name: "x", typ: tar.TypeDir, mode: 0o700}}},
			want: map[string]fsEntry{"x": {Type: tar.TypeDir, Mode: 0o700},
				"x/y": wantFile("y")},
		},
		{
			name: "directory over a lower file, symlink over a lower directory",
			layers: [][]tentry{
				{file("x", "f"), dir("y"), file("y/z", "z")},
				{dir("x"), symlink("y", "x")},
			},
			want:          map[string]fsEntry{"x": wantDir(), "y": wantLink("x")},
			wantDependent: []bool{false, false},
		},
	})
}

func TestStackFlatBase(t *testing.T) {
	runStackCases(t, []stackCase{
		{
			name: "deletions across the base's layers leave no whiteouts",
			base: 3,
			layers: [][]tentry{
				{dir("etc"), file("etc/a", "a"), file("etc/b", "b"), dir("d"), file("d/x", "x"),
					dir("d/sub"), file("d/sub/y", "y"), file("gone", "g")},
				{dir("d"), opaqueMarker("d"), file("d/z", "z"), whiteout("etc/a"),
					whiteout("gone"), whiteout("never")},
				{{name: "etc/b", typ: tar.TypeChar}, file("etc/c", "c")},
				{dir("etc"), whiteout("etc/c"), whiteout("d/z")},
			},
			want: map[string]fsEntry{"etc": wantDir(), "d": wantDir()},
			check: func(t *testing.T, r *stackResult) {
				for name, e := range output(t, r, 0).entries {
					if e.Type == tar.TypeChar || e.Xattrs != nil {
						t.Errorf("base output has %s %v", name, e)
					}
				}
			},
		},
		{
			name: "flat base content kept in stream order",
			base: 2,
			layers: [][]tentry{
				{file("b", "1"), file("a", "1")},
				{file("a", "2"), hardlink("c", "b")},
			},
			want: map[string]fsEntry{"a": wantFile("2"), "b": wantFile("1"),
				"c": wantFile("1")},
		},
	})
}

func TestStackEscapes(t *testing.T) {
	runStackCases(t, []stackCase{
		{
			name:    "dot-dot name",
			layers:  [][]tentry{{file("../x", "x")}},
			wantErr: ErrEscape,
		},
		{
			name:    "name that climbs after a component",
			layers:  [][]tentry{{file("a/../../x", "x")}},
			wantErr: ErrEscape,
		},
		{
			name:    "symlink named ..",
			layers:  [][]tentry{{symlink("..", "/")}},
			wantErr: ErrEscape,
		},
		{
			name:    "hardlink to a name outside",
			layers:  [][]tentry{{hardlink("h", "../outside")}},
			wantErr: ErrEscape,
		},
		{
			name:   "absolute name is confined",
			layers: [][]tentry{{file("/etc/x", "x")}},
			want:   map[string]fsEntry{"etc": wantDir(), "etc/x": wantFile("x")},
		},
		{
			name:   "name that climbs and comes back",
			layers: [][]tentry{{file("a/../b", "b"), file("./c", "c")}},
			want:   map[string]fsEntry{"b": wantFile("b"), "c": wantFile("c")},
		},
		{
			name:   "symlink to the root in the same layer",
			layers: [][]tentry{{symlink("evil", "/"), file("evil/etc/passwd", "p")}},
			want: map[string]fsEntry{"evil": wantLink("/"), "etc": wantDir(),
				"etc/passwd": wantFile("p")},
		},
		{
			name: "symlink to the root in a lower layer",
			layers: [][]tentry{
				{symlink("evil", "/")},
				{file("evil/etc/passwd", "p"), whiteout("evil/evil/etc/shadow")},
			},
			want: map[string]fsEntry{"evil": wantLink("/"), "etc": wantDir(),
				"etc/passwd": wantFile("p")},
			wantDependent: []bool{false, true},
		},
		{
			name:   "symlink that climbs",
			layers: [][]tentry{{symlink("up", "../../.."), file("up/x", "x")}},
			want:   map[string]fsEntry{"up": wantLink("../../.."), "x": wantFile("x")},
		},
		{
			name: "chain of symlinks that climbs",
			layers: [][]tentry{{dir("d"), symlink("d/a", "b"), symlink("d/b", "../.."),
				file("d/a/x", "x")}},
			want: map[string]fsEntry{"d": wantDir(), "d/a": wantLink("b"),
				"d/b": wantLink("../.."), "x": wantFile("x")},
		},
		{
			name: "hardlink through a symlink that climbs",
			layers: [][]tentry{{file("f", "data"), symlink("up", "../.."),
				hardlink("h", "up/f")}},
			want: map[string]fsEntry{"f": wantFile("data"), "up": wantLink("../.."),
				"h": wantFile("data")},
		},
		{
			name:    "whiteout of nothing",
			layers:  [][]tentry{{file(".wh.", "")}},
			wantErr: ErrInvalid,
		},
		{
			name:    "whiteout of ..",
			layers:  [][]tentry{{file("a/.wh..", "")}},
			wantErr: ErrInvalid,
		},
		{
			name:    "whiteout of .. in a directory",
			layers:  [][]tentry{{file("a/.wh...", "")}},
			wantErr: ErrInvalid,
		},
		{
			name:    "entry below a whiteout marker",
			layers:  [][]tentry{{file("x/.wh.../y", "")}},
			wantErr: ErrInvalid,
		},
		{
			name:    "entry below a .wh. directory",
			layers:  [][]tentry{{dir(".wh.foo"), file(".wh.foo/bar", "")}},
			wantErr: ErrInvalid,
		},
		{
			name:    "device number out of range",
			layers:  [][]tentry{{{name: "dev/x", typ: tar.TypeBlock, major: 1 << 12}}},
			wantErr: ErrInvalid,
		},
	})
}

// TestPlanHostileSymlinks plans a small layer whose symlinks expand to
// thousands of components and climb back with thousands of "..": resolving
// a path must stay linear in the components followed.
func TestPlanHostileSymlinks(t *testing.T) {
	entries := []tentry{
		symlink("s1", strings.TrimSuffix(strings.Repeat("d/", 1300), "/")),
		symlink("s2", "s1/"+strings.TrimSuffix(strings.Repeat("../", 1300), "/")),
		symlink("s3", strings.TrimSuffix(strings.Repeat("s2/", 19), "/")),
		file("s1/x", "the directories s1 names now exist"),
	}
	for i := range 30 {
		entries = append(entries, file(fmt.Sprintf("s3/f%d", i), ""))
	}
	idx, err := Scan(context.Background(), bytes.NewReader(buildLayer(t, entries...)),
		DefaultLimits)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	start := time.Now()
	ov, err := Plan(NewTree(), FlatMode, Layer{Index: idx})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	// Quadratic resolution took about 10 s here; linear takes about 0.1 s.
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Plan took %v", elapsed)
	}
	if got, want := ov.Stats().Files, 31; got != want {
		t.Errorf("files: got %d, want %d", got, want)
	}
}
