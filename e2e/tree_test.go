package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// node is what the tests compare of one file system entry.
type node struct {
	Type   string // dir, file, symlink, char, block, fifo or socket
	Mode   uint32 // permission bits plus setuid, setgid and sticky
	UID    int
	GID    int
	Size   int64  // regular files only
	SHA256 string // regular files only
	Target string // symlinks only
	Rdev   string // devices only, "major:minor"
	Xattrs string // user.* extended attributes, sorted "name=value" pairs
}

// tree maps root-relative slash paths ("." for the root) to nodes.
type tree map[string]node

// walkTree returns the tree under root, reading every file's content.
func walkTree(t *testing.T, root string) tree {
	t.Helper()
	tr := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, rerr := filepath.Rel(root, p)
		if rerr != nil {
			return rerr
		}
		rel = filepath.ToSlash(rel)
		if err != nil {
			// Record unreadable directories as differences and walk on.
			tr[rel] = node{Type: "unreadable: " + err.Error()}
			return nil
		}
		n, err := statNode(p)
		if errors.Is(err, fs.ErrNotExist) {
			// overlayfs lists a whiteout left in a directory it does not
			// merge, but looking the name up fails.
			tr[rel] = node{Type: fmt.Sprintf("readdir entry (%v) whose lstat fails", d.Type())}
			return nil
		}
		if err != nil {
			return err
		}
		tr[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return tr
}

// statNode describes the entry at p without following a final symlink.
func statNode(p string) (node, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return node{}, fmt.Errorf("lstat %s: %w", p, err)
	}
	n := node{Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
	var err error
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		n.Type = "dir"
	case syscall.S_IFREG:
		n.Type, n.Size = "file", st.Size
		n.SHA256, err = fileSHA256(p)
	case syscall.S_IFLNK:
		n.Type = "symlink"
		n.Target, err = os.Readlink(p)
	case syscall.S_IFCHR, syscall.S_IFBLK:
		n.Type = "char"
		if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			n.Type = "block"
		}
		n.Rdev = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	case syscall.S_IFIFO:
		n.Type = "fifo"
	case syscall.S_IFSOCK:
		n.Type = "socket"
	}
	if err != nil {
		return node{}, err
	}
	n.Xattrs, err = userXattrs(p)
	return n, err
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// userXattrs returns the user.* extended attributes of p, except overlayfs's
// own user.overlay.*, not following a
// final symlink, in the form formatXattrs gives.
func userXattrs(p string) (string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		return "", ignoreUnsupported(err)
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "", ignoreUnsupported(err)
	}
	x := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if !strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "user.overlay.") {
			continue // overlayfs metadata is no image content
		}
		val := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			return "", fmt.Errorf("get xattr %s of %s: %w", name, p, err)
		}
		x[name] = string(val[:n])
	}
	return formatXattrs(x), nil
}

func ignoreUnsupported(err error) error {
	if err == unix.ENOTSUP {
		return nil
	}
	return err
}

// formatXattrs renders x as sorted name="value" pairs.
func formatXattrs(x map[string]string) string {
	var pairs []string
	for k, v := range x {
		pairs = append(pairs, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, " ")
}
