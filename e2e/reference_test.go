package e2e

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// extracted is one entry of mutate.Extract's flattened tar.
type extracted struct {
	hdr    *tar.Header
	size   int64
	sha256 string
}

// referenceTree returns the merged file system of img as Docker would
// unpack it, built from mutate.Extract.
//
// mutate.Extract applies whiteouts and opaque markers by literal path, top
// layer first, so it lists an upper layer's "lib/x" beside a lower layer's
// symlink "lib -> usr/lib". The reference fixes that: it inserts the
// entries bottom layer first and resolves each entry's parent directory
// through the symlinks already inserted, chroot-style. Hard links become
// copies of their target. Whiteouts under a lower symlink stay unresolved,
// as in mutate.Extract.
func referenceTree(t *testing.T, img v1.Image) tree {
	t.Helper()
	entries, err := readExtract(img)
	if err != nil {
		t.Fatalf("extract reference: %v", err)
	}

	b := &refBuilder{
		tree:    tree{".": {Type: "dir", Mode: 0o755}},
		pending: map[string]string{},
	}
	// Extract writes the top layer first; walk back to insert bottom first.
	for i := len(entries) - 1; i >= 0; i-- {
		b.insert(entries[i])
	}
	for link, target := range b.pending {
		n, ok := b.tree[target]
		if !ok {
			t.Fatalf("reference: hard link %s: no target %s", link, target)
		}
		b.tree[link] = n
	}
	return b.tree
}

func readExtract(img v1.Image) ([]extracted, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	var out []extracted
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read flattened tar: %w", err)
		}
		h := sha256.New()
		n, err := io.Copy(h, tr)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", hdr.Name, err)
		}
		out = append(out, extracted{hdr: hdr, size: n, sha256: hex.EncodeToString(h.Sum(nil))})
	}
}

// refBuilder applies flattened entries bottom first.
type refBuilder struct {
	tree tree
	// pending maps hard links to targets not inserted yet (a target later
	// in the same layer), resolved once every entry is in.
	pending map[string]string
}

func (b *refBuilder) insert(e extracted) {
	name := path.Clean(e.hdr.Name)
	if name == "." || name == "/" {
		return // the contract fixes the root's mode and owner
	}
	key := path.Join(b.resolve(path.Dir(name)), path.Base(name))

	delete(b.pending, key)
	if e.hdr.Typeflag != tar.TypeDir {
		b.removeBelow(key)
	}

	if e.hdr.Typeflag == tar.TypeLink {
		target := path.Clean(strings.TrimPrefix(e.hdr.Linkname, "/"))
		target = path.Join(b.resolve(path.Dir(target)), path.Base(target))
		if n, ok := b.tree[target]; ok {
			b.tree[key] = n
		} else {
			b.pending[key] = target
		}
		return
	}
	b.tree[key] = headerNode(e)
}

// removeBelow deletes everything under dir, which a non-directory replaces.
func (b *refBuilder) removeBelow(dir string) {
	prefix := dir + "/"
	for p := range b.tree {
		if strings.HasPrefix(p, prefix) {
			delete(b.tree, p)
		}
	}
	for p := range b.pending {
		if strings.HasPrefix(p, prefix) {
			delete(b.pending, p)
		}
	}
}

// resolve returns the path p names once every symlink along it, including
// the last component, is followed inside the tree: absolute targets start at
// the root and ".." at the root stays there.
func (b *refBuilder) resolve(p string) string {
	var done []string
	todo := splitPath(p)
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := path.Join(append(done, c)...)
		n, ok := b.tree[cur]
		if !ok || n.Type != "symlink" || hops >= 40 {
			done = append(done, c)
			continue
		}
		hops++
		if path.IsAbs(n.Target) {
			done = nil
		}
		todo = append(splitPath(n.Target), todo...)
	}
	if len(done) == 0 {
		return "."
	}
	return path.Join(done...)
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

// headerNode describes a flattened tar entry.
func headerNode(e extracted) node {
	h := e.hdr
	n := node{Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid}
	switch h.Typeflag {
	case tar.TypeDir:
		n.Type = "dir"
	case tar.TypeReg:
		n.Type, n.Size, n.SHA256 = "file", e.size, e.sha256
	case tar.TypeSymlink:
		n.Type, n.Target = "symlink", h.Linkname
	case tar.TypeChar, tar.TypeBlock:
		n.Type = "char"
		if h.Typeflag == tar.TypeBlock {
			n.Type = "block"
		}
		n.Rdev = fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
	case tar.TypeFifo:
		n.Type = "fifo"
	default:
		n.Type = fmt.Sprintf("tar type %q", h.Typeflag)
	}
	x := map[string]string{}
	for k, v := range h.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if ok && strings.HasPrefix(name, "user.") {
			x[name] = v
		}
	}
	n.Xattrs = formatXattrs(x)
	return n
}
