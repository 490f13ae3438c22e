package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// testMTime is the modification time of every entry the tests build.
var testMTime = time.Unix(1700000000, 0)

// tentry describes one tar entry of a test layer. A zero typ is a regular
// file; a zero mode is the usual one for the type.
type tentry struct {
	name         string
	typ          byte
	mode         int64
	uid, gid     int
	content      string
	link         string
	xattrs       map[string]string
	major, minor int64
	pax          map[string]string // other PAX records, written verbatim
}

// Shorthands for the entries most cases need.
func file(name, content string) tentry { return tentry{name: name, content: content} }
func dir(name string) tentry           { return tentry{name: name, typ: tar.TypeDir} }
func symlink(name, target string) tentry {
	return tentry{name: name, typ: tar.TypeSymlink, link: target}
}
func hardlink(name, target string) tentry {
	return tentry{name: name, typ: tar.TypeLink, link: target}
}
func whiteout(name string) tentry {
	d, base := path.Split(name)
	return tentry{name: d + ".wh." + base}
}
func opaqueMarker(dir string) tentry { return tentry{name: path.Join(dir, ".wh..wh..opq")} }

// header turns a tentry into the tar header buildLayer writes.
func (e tentry) header() *tar.Header {
	if e.typ == tar.TypeXGlobalHeader {
		return &tar.Header{Typeflag: e.typ, Name: e.name, PAXRecords: e.pax}
	}
	h := &tar.Header{
		Typeflag: e.typ,
		Name:     e.name,
		Mode:     e.mode,
		Uid:      e.uid,
		Gid:      e.gid,
		Linkname: e.link,
		Devmajor: e.major,
		Devminor: e.minor,
		ModTime:  testMTime,
		Format:   tar.FormatPAX,
	}
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if h.Mode == 0 {
		switch h.Typeflag {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeSymlink:
			h.Mode = 0o777
		default:
			h.Mode = 0o644
		}
	}
	if h.Typeflag == tar.TypeReg {
		h.Size = int64(len(e.content))
	}
	if len(e.xattrs) > 0 || len(e.pax) > 0 {
		h.PAXRecords = map[string]string{}
		for k, v := range e.xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		maps.Copy(h.PAXRecords, e.pax)
	}
	return h
}

// buildLayer writes entries as an uncompressed layer tar.
func buildLayer(t testing.TB, entries ...tentry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := tw.WriteHeader(e.header()); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.content); err != nil && e.content != "" {
			t.Fatalf("write %q: %v", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("close tar: %v", err)
	}
	return buf.Bytes()
}

// fsEntry is a file system object as a test compares it. Type is a tar
// typeflag; hard links are resolved to the regular file they name.
type fsEntry struct {
	Type         byte
	Mode         int64
	UID, GID     int
	Content      string
	Link         string
	Xattrs       map[string]string
	Major, Minor int64
}

func (e fsEntry) String() string {
	s := fmt.Sprintf("%c %04o %d:%d", e.Type, e.Mode, e.UID, e.GID)
	switch e.Type {
	case tar.TypeReg:
		s += fmt.Sprintf(" %q", e.Content)
	case tar.TypeSymlink, tar.TypeLink:
		s += " -> " + e.Link
	case tar.TypeChar, tar.TypeBlock:
		s += fmt.Sprintf(" %d:%d", e.Major, e.Minor)
	}
	if len(e.Xattrs) > 0 {
		keys := slices.Sorted(maps.Keys(e.Xattrs))
		for _, k := range keys {
			s += fmt.Sprintf(" %s=%q", k, e.Xattrs[k])
		}
	}
	return s
}

// Shorthands for expected entries with the usual attributes.
func wantDir() fsEntry { return fsEntry{Type: tar.TypeDir, Mode: 0o755} }
func wantFile(content string) fsEntry {
	return fsEntry{Type: tar.TypeReg, Mode: 0o644, Content: content}
}
func wantLink(target string) fsEntry {
	return fsEntry{Type: tar.TypeSymlink, Mode: 0o777, Link: target}
}

// isWhiteout reports whether e is an overlay whiteout (a 0:0 char device).
func isWhiteout(e fsEntry) bool { return e.Type == tar.TypeChar && e.Major == 0 && e.Minor == 0 }

// emitted is one parsed output tar.
type emitted struct {
	names   []string           // in stream order
	entries map[string]fsEntry // hard links resolved
	links   map[string]string  // hard link name -> target name
}

// readEmitted parses an overlay tar written by Overlay.Write and checks what
// every output must satisfy: clean relative names, each name once, parents
// emitted as directories before their children, hard links to regular
// files emitted before them, and sizes that match the content.
func readEmitted(t testing.TB, data []byte) *emitted {
	t.Helper()
	out := &emitted{entries: map[string]fsEntry{}, links: map[string]string{}}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read emitted tar: %v", err)
		}
		name := h.Name
		if err := checkEmittedName(name); err != nil {
			t.Fatalf("emitted entry: %v", err)
		}
		if _, dup := out.entries[name]; dup {
			t.Fatalf("emitted %q twice", name)
		}
		if parent := path.Dir(name); parent != "." && out.entries[parent].Type != tar.TypeDir {
			t.Fatalf("emitted %q before its parent directory %q", name, parent)
		}
		e := fsEntry{Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid, Link: h.Linkname,
			Major: h.Devmajor, Minor: h.Devminor}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[x] = v
			}
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("read emitted %q: %v", name, err)
			}
			e.Content = string(b)
		case tar.TypeLink:
			target, ok := out.entries[h.Linkname]
			if !ok || target.Type != tar.TypeReg {
				t.Fatalf("emitted hard link %q -> %q: no earlier regular file", name, h.Linkname)
			}
			if _, chained := out.links[h.Linkname]; chained {
				t.Fatalf("emitted hard link %q -> %q: the target is a link itself",
					name, h.Linkname)
			}
			out.links[name] = h.Linkname
			e = target
		case tar.TypeDir, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		default:
			t.Fatalf("emitted %q with type %q", name, h.Typeflag)
		}
		out.names = append(out.names, name)
		out.entries[name] = e
	}
	return out
}

// checkEmittedName returns an error unless name is clean, relative and free
// of ".." components.
func checkEmittedName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name {
		return fmt.Errorf("name %q is not clean and relative", name)
	}
	if slices.Contains(strings.Split(name, "/"), "..") {
		return fmt.Errorf("name %q has a .. component", name)
	}
	return nil
}

// stackResult is what runStack made: one overlay and output per group, and
// the tree with every group applied.
type stackResult struct {
	overlays []*Overlay
	outputs  [][]byte
	tree     *Tree
}

// runStack converts a stack of layers the way the converter does: the first
// base layers make group 0 in FlatMode, every other layer its own group in
// OverlayMode. For each group it scans the layers, plans the group on the
// tree, writes it (files copied up are read from the earlier groups'
// outputs) and applies it. The first error is returned.
func runStack(t testing.TB, base int, layers ...[]byte) (*stackResult, error) {
	t.Helper()
	ctx := context.Background()
	if base < 1 {
		base = 1
	}
	base = min(base, len(layers))
	r := &stackResult{tree: NewTree()}
	lower := func(_ context.Context, group int, p string) (io.ReadCloser, error) {
		if group < 0 || group >= len(r.outputs) {
			return nil, fmt.Errorf("open group %d: no such output", group)
		}
		e, ok := readEmitted(t, r.outputs[group]).entries[p]
		if !ok || e.Type != tar.TypeReg {
			return nil, fmt.Errorf("open %s in group %d: no regular file", p, group)
		}
		return io.NopCloser(strings.NewReader(e.Content)), nil
	}

	for start := 0; start < len(layers); {
		end, mode := start+1, OverlayMode
		if start == 0 {
			end, mode = base, FlatMode
		}
		var planned []Layer
		for i := start; i < end; i++ {
			idx, err := Scan(ctx, bytes.NewReader(layers[i]), DefaultLimits)
			if err != nil {
				return r, fmt.Errorf("scan layer %d: %w", i, err)
			}
			planned = append(planned, Layer{Position: i, Index: idx})
		}
		ov, err := Plan(r.tree, mode, planned...)
		if err != nil {
			return r, err
		}
		streams := layers[start:end]
		open := func(_ context.Context, i int) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(streams[i])), nil
		}
		var buf bytes.Buffer
		if err := ov.Write(ctx, &buf, open, lower); err != nil {
			return r, err
		}
		readEmitted(t, buf.Bytes()) // checks what every output must satisfy
		r.overlays = append(r.overlays, ov)
		r.outputs = append(r.outputs, buf.Bytes())
		r.tree.Apply(ov)
		start = end
	}
	return r, nil
}

// mnode is a node of the merged view mount builds.
type mnode struct {
	e        fsEntry
	children map[string]*mnode
}

// mount stacks the outputs lowest first the way kernel overlayfs presents
// them: a 0:0 character device hides the name below it, a directory over a
// directory merges, anything else hides what is below. With honourOpaque set
// a directory marked trusted.overlay.opaque=y hides every lower child (kernel
// overlay as root); without it the mark is ignored, as Apptainer's
// user-namespace mode does, and only explicit whiteouts hide.
//
// The kernel lists no whiteout in a merged directory, but it does list the
// whiteouts of a directory it does not merge (one no lower layer has, or an
// opaque one), as entries that cannot be opened; mount keeps those as 0:0
// character devices, so that a test sees them.
func mount(t testing.TB, outputs [][]byte, honourOpaque bool) map[string]fsEntry {
	t.Helper()
	merged := &mnode{e: fsEntry{Type: tar.TypeDir}}
	for _, out := range outputs {
		merged = mergeDir(merged, toTree(readEmitted(t, out)), honourOpaque)
	}
	flat := map[string]fsEntry{}
	var walk func(prefix string, n *mnode)
	walk = func(prefix string, n *mnode) {
		for name, c := range n.children {
			p := path.Join(prefix, name)
			flat[p] = c.e
			walk(p, c)
		}
	}
	walk("", merged)
	return flat
}

// toTree turns a parsed output into a tree of mnodes.
func toTree(out *emitted) *mnode {
	root := &mnode{e: fsEntry{Type: tar.TypeDir}}
	nodes := map[string]*mnode{".": root}
	for _, name := range out.names {
		n := &mnode{e: out.entries[name]}
		parent := nodes[path.Dir(name)]
		if parent.children == nil {
			parent.children = map[string]*mnode{}
		}
		parent.children[path.Base(name)] = n
		nodes[name] = n
	}
	return root
}

// mergeDir returns the directory upper shows over lower (nil when no lower
// layer has a directory there). The overlay's own xattrs are hidden.
func mergeDir(lower, upper *mnode, honourOpaque bool) *mnode {
	out := &mnode{e: upper.e, children: map[string]*mnode{}}
	if x := upper.e.Xattrs; len(x) > 0 {
		out.e.Xattrs = map[string]string{}
		for k, v := range x {
			if !strings.HasPrefix(k, "trusted.overlay.") && !strings.HasPrefix(k, "user.overlay.") {
				out.e.Xattrs[k] = v
			}
		}
		if len(out.e.Xattrs) == 0 {
			out.e.Xattrs = nil
		}
	}
	opaque := honourOpaque && upper.e.Xattrs["trusted.overlay.opaque"] == "y"
	merged := lower != nil && !opaque
	if merged {
		for name, c := range lower.children {
			if !isWhiteout(c.e) {
				out.children[name] = c
			}
		}
	}
	for name, c := range upper.children {
		l := out.children[name]
		switch {
		case isWhiteout(c.e) && merged:
			delete(out.children, name)
		case isWhiteout(c.e):
			out.children[name] = c // listed, though it cannot be opened
		case c.e.Type == tar.TypeDir && l != nil && l.e.Type == tar.TypeDir:
			out.children[name] = mergeDir(l, c, honourOpaque)
		case c.e.Type == tar.TypeDir:
			out.children[name] = mergeDir(nil, c, honourOpaque)
		default:
			out.children[name] = c
		}
	}
	return out
}

// treeListing lists what a Tree holds, in the form mount returns but without
// file content (a tree does not hold bytes).
func treeListing(t *Tree) map[string]fsEntry {
	flat := map[string]fsEntry{}
	var walk func(n *node)
	walk = func(n *node) {
		for _, c := range n.children {
			flat[c.path()] = entryOfNode(c)
			walk(c)
		}
	}
	walk(t.root)
	return flat
}

func entryOfNode(n *node) fsEntry {
	e := n.e
	typ := map[Kind]byte{Reg: tar.TypeReg, Dir: tar.TypeDir, Symlink: tar.TypeSymlink,
		Char: tar.TypeChar, Block: tar.TypeBlock, Fifo: tar.TypeFifo}[e.Kind]
	return fsEntry{Type: typ, Mode: e.Mode, UID: e.UID, GID: e.GID, Link: e.Link,
		Xattrs: e.Xattrs, Major: e.Major, Minor: e.Minor}
}

// withoutContent returns m with every file's content blanked.
func withoutContent(m map[string]fsEntry) map[string]fsEntry {
	out := map[string]fsEntry{}
	for k, v := range m {
		v.Content = ""
		out[k] = v
	}
	return out
}

// diffTrees describes how got differs from want, one line per path; it is
// empty when they are equal.
func diffTrees(got, want map[string]fsEntry) string {
	keys := map[string]bool{}
	for k := range got {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		g, gok := got[k]
		w, wok := want[k]
		switch {
		case !wok:
			lines = append(lines, fmt.Sprintf("  %s: got %v, want nothing", k, g))
		case !gok:
			lines = append(lines, fmt.Sprintf("  %s: got nothing, want %v", k, w))
		case g.String() != w.String():
			lines = append(lines, fmt.Sprintf("  %s: got %v, want %v", k, g, w))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
