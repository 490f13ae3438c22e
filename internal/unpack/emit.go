package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// StreamOpener opens the uncompressed tar stream of the group's i-th layer
// (the i-th Layer given to Plan), verified as it is read.
type StreamOpener func(ctx context.Context, i int) (io.ReadCloser, error)

// LowerOpener opens a regular file that an earlier group's output holds at
// path, for copying it up.
type LowerOpener func(ctx context.Context, group int, path string) (io.ReadCloser, error)

// emitPlan sorts the overlay's nodes into the order Write emits them.
type emitPlan struct {
	dirs, others, links, whiteouts, extra []*node
	// fromStream maps a stream and ordinal to the node that carries its bytes.
	fromStream map[[2]int]*node
	primary    map[*source]*node
}

func (o *Overlay) emitPlan() *emitPlan {
	p := &emitPlan{fromStream: map[[2]int]*node{}, primary: map[*source]*node{}}
	var walk func(n *node)
	walk = func(n *node) {
		for _, c := range n.sortedChildren() {
			switch {
			case c.whiteout:
				p.whiteouts = append(p.whiteouts, c)
			case c.isDir():
				p.dirs = append(p.dirs, c)
				walk(c)
			case c.src != nil:
				p.addFile(o, c)
			default:
				p.others = append(p.others, c)
			}
		}
	}
	walk(o.root)
	return p
}

func (p *emitPlan) addFile(o *Overlay, n *node) {
	if _, ok := p.primary[n.src]; ok {
		p.links = append(p.links, n)
		return
	}
	p.primary[n.src] = n
	if n.src.group == o.group && n.src.ordinal >= 0 {
		p.fromStream[[2]int{n.src.layer, n.src.ordinal}] = n
		return
	}
	p.extra = append(p.extra, n)
}

// Write streams the overlay as a tar that mksquashfs can read: directories
// first, then regular files in the order the layers carry them, then files
// copied from lower groups or given inline, then other objects, hard links
// and whiteouts. Every layer stream is read to its end. On error the tar is
// incomplete and must be discarded.
func (o *Overlay) Write(ctx context.Context, w io.Writer, open StreamOpener,
	lower LowerOpener) error {
	p := o.emitPlan()
	tw := tar.NewWriter(w)

	for _, n := range p.dirs {
		if err := tw.WriteHeader(o.header(n, n.path())); err != nil {
			return fmt.Errorf("write %s: %w", n.path(), err)
		}
	}
	for i := range o.streams {
		if err := o.copyStream(ctx, tw, p, i, open); err != nil {
			return err
		}
	}
	for _, n := range p.extra {
		if err := o.copyExtra(ctx, tw, n, lower); err != nil {
			return err
		}
	}
	for _, list := range [][]*node{p.others, p.links, p.whiteouts} {
		for _, n := range list {
			h := o.header(n, n.path())
			if n.src != nil {
				h = &tar.Header{Typeflag: tar.TypeLink, Name: n.path(),
					Linkname: p.primary[n.src].path(), Format: tar.FormatGNU}
			}
			if err := tw.WriteHeader(h); err != nil {
				return fmt.Errorf("write %s: %w", n.path(), err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish tar: %w", err)
	}
	return nil
}

// copyStream reads the group's i-th layer and copies the bytes of every
// regular file that the overlay keeps.
func (o *Overlay) copyStream(ctx context.Context, tw *tar.Writer, p *emitPlan, i int,
	open StreamOpener) error {
	rc, err := open(ctx, i)
	if err != nil {
		return err
	}
	defer rc.Close()

	tr := tar.NewReader(rc)
	ordinal := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer %d: %w", o.streams[i]+1, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		e, _, err := entryFromHeader(h, Limits{})
		if err != nil {
			return fmt.Errorf("read layer %d entry %q: %w", o.streams[i]+1, h.Name, err)
		}
		if e == nil {
			continue
		}
		n := p.fromStream[[2]int{i, ordinal}]
		ordinal++
		if n == nil {
			continue
		}
		if e.Name != n.e.Name || e.Size != n.src.size {
			return fmt.Errorf("read layer %d: entry %d is %q, the index says %q",
				o.streams[i]+1, ordinal, e.Name, n.e.Name)
		}
		if err := tw.WriteHeader(o.header(n, n.path())); err != nil {
			return fmt.Errorf("write %s: %w", n.path(), err)
		}
		if _, err := io.CopyN(tw, tr, n.src.size); err != nil {
			return fmt.Errorf("copy %s: %w", n.path(), err)
		}
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return fmt.Errorf("read layer %d: %w", o.streams[i]+1, err)
	}
	return nil
}

// copyExtra writes a file whose bytes are inline or in a lower group's output.
func (o *Overlay) copyExtra(ctx context.Context, tw *tar.Writer, n *node,
	lower LowerOpener) error {
	if err := tw.WriteHeader(o.header(n, n.path())); err != nil {
		return fmt.Errorf("write %s: %w", n.path(), err)
	}
	if n.src.ordinal < 0 {
		_, err := tw.Write(n.src.data)
		return err
	}
	if lower == nil {
		return fmt.Errorf("copy up %s: no reader for lower layers", n.path())
	}
	rc, err := lower(ctx, n.src.group, n.src.path)
	if err != nil {
		return fmt.Errorf("copy up %s: %w", n.path(), err)
	}
	defer rc.Close()
	if _, err := io.CopyN(tw, rc, n.src.size); err != nil {
		return fmt.Errorf("copy up %s from %s: %w", n.path(), n.src.path, err)
	}
	return nil
}

// header builds the tar header for a node.
func (o *Overlay) header(n *node, name string) *tar.Header {
	if n.whiteout {
		return &tar.Header{Typeflag: tar.TypeChar, Name: name, ModTime: time.Unix(0, 0),
			Format: tar.FormatPAX}
	}
	e := n.e
	h := &tar.Header{
		Name:    name,
		Mode:    e.Mode,
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: time.Unix(e.MTime, 0),
		Format:  tar.FormatPAX,
	}
	switch e.Kind {
	case Dir:
		h.Typeflag = tar.TypeDir
	case Reg:
		h.Typeflag, h.Size = tar.TypeReg, n.src.size
	case Symlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.Link
	case Char:
		h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, e.Major, e.Minor
	case Block:
		h.Typeflag, h.Devmajor, h.Devminor = tar.TypeBlock, e.Major, e.Minor
	case Fifo:
		h.Typeflag = tar.TypeFifo
	}
	// An opaque directory gets no trusted.overlay.opaque: its explicit
	// whiteouts hide the lower names, and kernel overlayfs, which does not
	// merge an opaque directory, would list them as files that cannot be
	// opened.
	if len(e.Xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if e.Kind == Symlink && len(h.PAXRecords) == 0 {
		// mksquashfs 4.5.1 strips a leading "/" from a PAX linkpath, which
		// Go writes for targets that are long or not ASCII; GNU headers
		// carry them intact.
		// TODO: a symlink with xattrs still needs PAX, and keeps that bug.
		h.Format = tar.FormatGNU
	}
	return h
}
