package unpack

import (
	"fmt"
	"path"
	"strings"
)

// Mode says what a group's output is for.
type Mode int

const (
	// OverlayMode makes an overlay upper directory: deletions become 0:0
	// whiteouts, opaque directories get a whiteout for every lower name.
	OverlayMode Mode = iota
	// FlatMode makes a standalone root file system (the base): deletions
	// simply leave things out, and no whiteout is written.
	FlatMode
)

// Overlay is the planned content of one group of layers: the directory tree
// an overlay mount needs for them on top of a Tree. It is built from indexes
// alone; Write then streams the layers' bytes into it.
type Overlay struct {
	root  *node
	mode  Mode
	group int
	// streams[i] is the image position of the group's i-th layer.
	streams []int

	// LowerDependent is set when the layers below changed what this group
	// contains: an opaque directory, a path that a lower symlink redirected,
	// a hard link to a lower file, or a parent directory that copies a lower
	// directory's attributes. Such an overlay must be cached by chainID.
	LowerDependent bool
	// Reasons says, for logs, why LowerDependent is set (first few only).
	Reasons []string
}

// Layer is one layer's index with its position in the image.
type Layer struct {
	Position int
	Index    *Index
}

// Plan works out the overlay for layers applied in order on top of t. It
// does not change t; call t.Apply afterwards to move on to the next group.
// The errors are ErrEscape, ErrInvalid and ErrLimit, naming the entry.
func Plan(t *Tree, mode Mode, layers ...Layer) (*Overlay, error) {
	o := &Overlay{root: newRoot(), mode: mode, group: t.Groups}
	w := &walker{upper: o.root, lower: t.root}
	for i, l := range layers {
		o.streams = append(o.streams, l.Position)
		p := &planner{o: o, w: w, layer: l.Position, stream: i}
		for k := range l.Index.Entries {
			e := &l.Index.Entries[k]
			if err := p.apply(e, k); err != nil {
				return nil, fmt.Errorf("layer %d entry %q: %w", l.Position+1, e.Name, err)
			}
		}
	}
	o.finish(t)
	assignPrimaries(o.root)
	return o, nil
}

// planner applies one layer's entries to an Overlay.
type planner struct {
	o      *Overlay
	w      *walker
	layer  int // image position
	stream int // position within the group
}

func (p *planner) lowerDependent(why string) { p.o.lowerDependent(why) }

func (o *Overlay) lowerDependent(why string) {
	o.LowerDependent = true
	if len(o.Reasons) < 5 {
		o.Reasons = append(o.Reasons, why)
	}
}

func (p *planner) apply(e *Entry, ordinal int) error {
	if e.Kind == Opaque {
		d, err := p.parentDir(e.Name)
		if err != nil {
			return err
		}
		p.opaque(d)
		return nil
	}

	dir, base := path.Split(e.Name)
	parent, err := p.parentDir(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return err
	}

	switch e.Kind {
	case Whiteout:
		p.whiteout(parent, base)
		return nil
	case Hardlink:
		return p.hardlink(parent, base, e)
	}

	n := &node{name: base, e: e, layer: p.layer}
	if e.Kind == Reg {
		n.src = &source{group: p.o.group, layer: p.stream, ordinal: ordinal, size: e.Size}
	}
	p.put(parent, n)
	return nil
}

// parentDir resolves a directory path through the merged view and makes
// every missing directory in the upper tree, returning the upper node.
func (p *planner) parentDir(dir string) (*node, error) {
	before := p.w.usedLower
	canon, blocked, err := p.w.resolveDir(splitPath(dir))
	if err != nil {
		return nil, err
	}
	if p.w.usedLower && !before {
		p.lowerDependent("path " + dir + " goes through a lower symlink")
	}
	if blocked != nil && blocked.layer == p.layer && blocked.e.Kind != Whiteout {
		return nil, fmt.Errorf("%w: parent %q is not a directory", ErrInvalid,
			strings.Join(canon, "/"))
	}
	return p.makeDirs(canon), nil
}

// makeDirs makes the upper directories along canon. A directory the lower
// tree has keeps its attributes, as a container runtime would copy them up.
func (p *planner) makeDirs(canon []string) *node {
	u := p.o.root
	lower := view{upper: p.o.root, lower: p.w.lower}
	for i, name := range canon {
		lower = lower.step(name)
		c := u.child(name)
		if c != nil && c.isDir() {
			u = c
			continue
		}
		d := &node{name: name, e: &Entry{Kind: Dir, Mode: 0o755}, layer: p.layer, implicit: true}
		if c != nil && c.whiteout {
			d.opaque = true
			p.lowerDependent("directory " + strings.Join(canon[:i+1], "/") +
				" is deleted and made again")
		}
		if lower.lower != nil && lower.lower.isDir() && !d.opaque {
			d.e = lower.lower.e
			p.lowerDependent("directory " + strings.Join(canon[:i+1], "/") +
				" copies a lower directory")
		}
		u.setChild(d)
		u = d
	}
	return u
}

// put places n below parent; a later entry replaces an earlier one, but a
// directory over a directory only updates the attributes.
func (p *planner) put(parent, n *node) {
	for a := parent; a.parent != nil; a = a.parent {
		a.layer = n.layer // the directories leading to n hold something of its layer
	}
	old := parent.child(n.name)
	if old != nil && old.isDir() && n.e.Kind == Dir {
		old.e, old.implicit, old.layer = n.e, false, n.layer
		return
	}
	parent.setChild(n)
	if old != nil && old.whiteout && n.e.Kind == Dir {
		n.opaque = true // what the whiteout deleted must stay deleted
		p.lowerDependent("directory " + n.path() + " is deleted and made again")
	}
}

// whiteout hides name in dir. An entry of the same layer survives (the OCI
// rule); if it is a directory, what earlier layers put in it must not show
// through.
func (p *planner) whiteout(dir *node, name string) {
	old := dir.child(name)
	if old != nil && !old.whiteout && old.layer == p.layer {
		if old.isDir() {
			dropOlder(old, p.layer)
			old.opaque = true
			p.lowerDependent("directory " + old.path() + " is deleted and made again")
		}
		return
	}
	dir.setChild(&node{name: name, e: whiteoutEntry0, layer: p.layer, whiteout: true})
}

var whiteoutEntry0 = &Entry{Kind: Char}

// opaque hides every lower child of d; children this layer made stay.
func (p *planner) opaque(d *node) {
	dropOlder(d, p.layer)
	d.opaque = true
	p.lowerDependent("directory " + d.path() + " is opaque")
}

// dropOlder removes from d's subtree what the group's earlier layers made,
// keeping what layer made and the directories that lead to it.
func dropOlder(d *node, layer int) {
	for k, c := range d.children {
		switch {
		case c.layer != layer:
			delete(d.children, k)
		case c.isDir():
			dropOlder(c, layer)
		}
	}
}

// hardlink makes name in dir share the target's bytes; a target that only a
// lower layer has is copied up.
func (p *planner) hardlink(dir *node, name string, e *Entry) error {
	tdir, tbase := path.Split(e.Link)
	before := p.w.usedLower
	canon, blocked, err := p.w.resolveDir(splitPath(strings.TrimSuffix(tdir, "/")))
	if err != nil {
		return err
	}
	if p.w.usedLower && !before {
		p.lowerDependent("hardlink target " + e.Link + " goes through a lower symlink")
	}
	if blocked != nil {
		return fmt.Errorf("%w: hardlink target %q is below a file", ErrInvalid, e.Link)
	}
	v := p.w.lookup(append(canon, tbase))
	target := v.node()
	if target == nil {
		return fmt.Errorf("%w: hardlink target %q does not exist", ErrInvalid, e.Link)
	}
	if target.isDir() {
		return fmt.Errorf("%w: hardlink to directory %q", ErrInvalid, e.Link)
	}
	if v.upper == nil {
		p.lowerDependent("hardlink " + e.Name + " copies up a lower file")
	}
	if target == dir.child(name) {
		return nil // a link to itself changes nothing
	}
	p.put(dir, &node{name: name, e: target.e, src: target.src, layer: p.layer})
	return nil
}

// finish adds, in overlay mode, an explicit whiteout for every lower name in
// an opaque directory, which is the one form every overlay implementation
// honours. A directory in an opaque one becomes opaque too when the lower
// has a directory there, or the two would merge. Whiteouts with nothing to
// hide go: all of them in flat mode, and in overlay mode those in a
// directory the lower lacks, which overlayfs would list as files that cannot
// be opened.
func (o *Overlay) finish(t *Tree) {
	var walk func(u, lower *node)
	walk = func(u, lower *node) {
		if lower != nil && !lower.isDir() {
			lower = nil
		}
		if o.mode == FlatMode || lower == nil {
			for k, c := range u.children {
				if !c.whiteout {
					continue
				}
				delete(u.children, k)
				if o.mode == OverlayMode {
					o.lowerDependent("whiteout " + c.path() + " has nothing below to hide")
				}
			}
		}
		if u.opaque && o.mode == OverlayMode && lower != nil {
			for name := range lower.children {
				if u.child(name) == nil {
					u.setChild(&node{name: name, e: whiteoutEntry0, layer: u.layer, whiteout: true})
				}
			}
		}
		for _, c := range u.children {
			if !c.isDir() {
				continue
			}
			l := lower.child(c.name)
			if u.opaque && l != nil && l.isDir() {
				c.opaque = true
			}
			walk(c, l)
		}
	}
	walk(o.root, t.root)
}

// assignPrimaries picks, for every source, the node that carries the bytes in
// the output (the first in path order); the others become hard links to it.
func assignPrimaries(root *node) {
	var walk func(n *node)
	walk = func(n *node) {
		for _, c := range n.sortedChildren() {
			if c.src != nil && c.src.primary == nil {
				c.src.primary = c
				c.src.path = c.path()
			}
			if c.isDir() {
				walk(c)
			}
		}
	}
	walk(root)
}

// AddInline places extra files in the overlay (the Apptainer skeleton). With
// ifMissing set, a path that already exists is left alone.
func (o *Overlay) AddInline(e *Entry, data []byte, ifMissing bool) {
	w := &walker{upper: o.root, lower: nil}
	canon, blocked, err := w.resolveDir(splitPath(path.Dir(e.Name)))
	if err != nil || blocked != nil {
		return // a path the image made unusable; Apptainer copes without it
	}
	parts := append(canon, path.Base(e.Name))
	if ifMissing && w.lookup(parts).exists() {
		return
	}
	p := &planner{o: o, w: w, layer: -1}
	n := &node{name: path.Base(e.Name), e: e, layer: -1}
	if e.Kind == Reg {
		n.src = &source{group: o.group, ordinal: -1, data: data, size: int64(len(data))}
	}
	parent := p.makeDirs(canon)
	old := parent.child(n.name)
	p.put(parent, n)
	if n.src != nil {
		n.src.primary, n.src.path = n, n.path()
	}
	if old != nil && parent.child(n.name) != old {
		// The replaced node may have carried the bytes of files linked to it.
		forgetPrimaries(old)
		assignPrimaries(o.root)
	}
}

// forgetPrimaries clears the sources whose primary is in n's subtree, so
// that assignPrimaries picks another node for them.
func forgetPrimaries(n *node) {
	if n.src != nil && n.src.primary == n {
		n.src.primary, n.src.path = nil, ""
	}
	for _, c := range n.children {
		forgetPrimaries(c)
	}
}

// MaxMTime returns the newest modification time in the overlay (seconds
// since the epoch, at least 0).
func (o *Overlay) MaxMTime() int64 {
	var newest int64
	var walk func(n *node)
	walk = func(n *node) {
		for _, c := range n.children {
			if !c.whiteout && c.e.MTime > newest {
				newest = c.e.MTime
			}
			walk(c)
		}
	}
	walk(o.root)
	return newest
}

// Stats counts what the overlay holds, for logs and tests.
type Stats struct {
	Dirs, Files, Links, Whiteouts, Other int
}

// Stats walks the overlay.
func (o *Overlay) Stats() Stats {
	var s Stats
	seen := map[*source]bool{} // the first node of a source carries its bytes
	var walk func(n *node)
	walk = func(n *node) {
		for _, c := range n.children {
			switch {
			case c.whiteout:
				s.Whiteouts++
			case c.isDir():
				s.Dirs++
				walk(c)
			case c.src != nil && seen[c.src]:
				s.Links++
			case c.src != nil:
				seen[c.src] = true
				s.Files++
			default:
				s.Other++
			}
		}
	}
	walk(o.root)
	return s
}

// Apply merges the overlay into the tree, so that the tree becomes the merged
// view including the overlay's layers. The overlay itself is not changed and
// can still be written.
func (t *Tree) Apply(o *Overlay) {
	mergeInto(t.root, o.root)
	t.Groups++
}

func mergeInto(lower, upper *node) {
	if upper.opaque {
		for name := range lower.children {
			if c := upper.child(name); c == nil || c.whiteout {
				delete(lower.children, name)
			}
		}
	}
	for _, u := range upper.sortedChildren() {
		l := lower.child(u.name)
		switch {
		case u.whiteout:
			delete(lower.children, u.name)
		case u.isDir() && l != nil && l.isDir():
			l.e, l.layer = u.e, u.layer
			mergeInto(l, u)
		default:
			lower.setChild(cloneLower(u))
		}
	}
}

// cloneLower copies an upper subtree for the lower tree, without the
// upper-only marks; its whiteouts have nothing below them to hide.
func cloneLower(u *node) *node {
	n := &node{name: u.name, e: u.e, src: u.src, layer: u.layer}
	for _, c := range u.children {
		if !c.whiteout {
			n.setChild(cloneLower(c))
		}
	}
	return n
}
