package unpack

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// maxSymlinkHops bounds symlink resolution, as the kernel's ELOOP does.
const maxSymlinkHops = 40

// maxPath bounds a path resolved through symlinks, as the kernel's PATH_MAX
// does; CleanName bounds names the same way.
const maxPath = 4096

// source says where a regular file's bytes are. Several nodes share one
// source when they are hard links of each other.
type source struct {
	group   int    // the group (artifact) whose stream or file holds the bytes
	layer   int    // position of the layer within that group's streams
	ordinal int    // entry number in that layer's Index
	data    []byte // inline content (skeleton files); used when ordinal < 0
	size    int64

	// path is where the group's output holds the bytes once written; it is
	// set by assignPrimaries and used to copy the file up from a lower layer.
	path    string
	primary *node
}

// node is one file system object of a tree.
type node struct {
	name     string
	parent   *node
	e        *Entry
	children map[string]*node // directories only
	src      *source          // regular files only
	layer    int              // image position of the layer that made it

	// Upper-only marks.
	whiteout bool // a 0:0 character device hiding the lower name
	opaque   bool // hides every lower child
	implicit bool // made as a parent, not named by the layer
}

func (n *node) isDir() bool { return !n.whiteout && n.e.Kind == Dir }

// path returns the node's path relative to the root ("" for the root).
func (n *node) path() string {
	if n.parent == nil {
		return ""
	}
	var parts []string
	for c := n; c.parent != nil; c = c.parent {
		parts = append(parts, c.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

func (n *node) child(name string) *node {
	if n == nil || n.children == nil {
		return nil
	}
	return n.children[name]
}

func (n *node) setChild(c *node) {
	if n.children == nil {
		n.children = map[string]*node{}
	}
	c.parent = n
	n.children[c.name] = c
}

func (n *node) sortedChildren() []*node {
	out := make([]*node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// rootEntry is the fixed root directory: 0755, owned by 0:0.
var rootEntry = &Entry{Kind: Dir, Mode: 0o755}

func newRoot() *node { return &node{e: rootEntry, layer: -1} }

// Tree is the merged view of the layers below the ones being built: what a
// container would see, with every whiteout applied. It remembers which group
// holds each file's bytes so that a hard link can copy them up.
type Tree struct {
	root *node
	// Groups counts the groups applied so far.
	Groups int
}

// NewTree returns an empty tree.
func NewTree() *Tree { return &Tree{root: newRoot()} }

// view walks the upper tree and the lower tree side by side, as overlayfs
// presents them.
type view struct {
	upper *node // nil when the upper has nothing at this path
	lower *node // nil when hidden or absent
}

func (v view) node() *node {
	if v.upper != nil {
		if v.upper.whiteout {
			return nil
		}
		return v.upper
	}
	return v.lower
}

func (v view) exists() bool { return v.node() != nil }

// step moves from a directory view to its child name.
func (v view) step(name string) view {
	var next view
	if v.upper != nil {
		next.upper = v.upper.child(name)
		if next.upper != nil && (next.upper.whiteout || !next.upper.isDir()) {
			return next // the upper hides whatever is below
		}
		if v.upper.opaque {
			return next
		}
	}
	if v.lower != nil && v.lower.isDir() && (v.upper == nil || v.upper.isDir()) {
		next.lower = v.lower.child(name)
	}
	return next
}

// walker resolves paths in the merged view of an upper tree over a Tree.
type walker struct {
	upper *node
	lower *node
	// usedLower is set when a lower symlink decided where a path lands.
	usedLower bool
}

func (w *walker) rootView() view { return view{upper: w.upper, lower: w.lower} }

// lookup returns the view at a canonical path, without following symlinks.
func (w *walker) lookup(parts []string) view {
	v := w.rootView()
	for _, p := range parts {
		if v.node() == nil {
			return view{}
		}
		v = v.step(p)
	}
	return v
}

// resolveDir turns a directory path into its canonical form by following
// symlinks the way a chrooted process would: absolute targets start at the
// root and ".." at the root stays there. Components that do not exist are
// kept as they are (they will be created). A component that is an existing
// non-directory is returned as blocked. A canonical path longer than
// maxPath fails, as the kernel's ENAMETOOLONG does.
func (w *walker) resolveDir(parts []string) (canon []string, blocked *node, err error) {
	todo := slices.Clone(parts) // a stack: the next component is last
	slices.Reverse(todo)
	views := []view{w.rootView()} // views[i] is the view at canon[:i]
	hops, size := 0, 0
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(canon) > 0 {
				size -= len(canon[len(canon)-1]) + 1
				canon, views = canon[:len(canon)-1], views[:len(views)-1]
			}
			continue
		}

		next := views[len(views)-1].step(p)
		n := next.node()
		if n != nil && n.e.Kind == Symlink {
			hops++
			if hops > maxSymlinkHops {
				return nil, nil, fmt.Errorf("%w: too many levels of symbolic links at %q",
					ErrInvalid, strings.Join(append(canon, p), "/"))
			}
			if next.upper == nil {
				w.usedLower = true
			}
			target := n.e.Link
			if strings.HasPrefix(target, "/") {
				canon, views, size = nil, views[:1], 0
			}
			t := strings.Split(target, "/")
			slices.Reverse(t)
			todo = append(todo, t...)
			continue
		}
		if n != nil && !n.isDir() {
			return append(canon, p), n, nil
		}
		size += len(p) + 1 // size-1 is the length of canon joined
		if size-1 > maxPath {
			return nil, nil, fmt.Errorf("%w: path longer than %d bytes at %q",
				ErrInvalid, maxPath, strings.Join(append(canon, p), "/"))
		}
		canon, views = append(canon, p), append(views, next)
	}
	return canon, nil, nil
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
