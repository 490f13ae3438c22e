// Package imagegen builds OCI images in code from declarative layer specs, so
// tests and demos need no committed blobs.
//
// A Spec lists layers bottom to top; each Layer lists tar entries in the order
// they are written. Builds are deterministic: the same Spec gives the same
// layer, config and manifest digests on every run with the same Go toolchain
// and compressor versions.
package imagegen

import (
	"fmt"
	"path"
	"strings"
)

// Kind is the type of a layer entry.
type Kind int

// Entry kinds. KindWhiteout and KindOpaque become the OCI marker files
// ".wh.NAME" and ".wh..wh..opq"; every other kind is one tar entry of the
// matching type.
const (
	KindDir Kind = iota + 1
	KindFile
	KindSymlink
	KindHardlink
	KindWhiteout
	KindOpaque
	KindCharDev
	KindFIFO
)

// String returns the kind's lower-case name.
func (k Kind) String() string {
	switch k {
	case KindDir:
		return "dir"
	case KindFile:
		return "file"
	case KindSymlink:
		return "symlink"
	case KindHardlink:
		return "hardlink"
	case KindWhiteout:
		return "whiteout"
	case KindOpaque:
		return "opaque"
	case KindCharDev:
		return "chardev"
	case KindFIFO:
		return "fifo"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Entry is one entry of a layer.
//
// Path is slash-separated and relative to the layer root. For KindWhiteout it
// is the path the layer deletes; for KindOpaque it is the directory whose
// lower content the layer hides. Mode is taken literally (permission bits
// plus setuid 04000, setgid 02000 and sticky 01000): the constructors set the
// usual defaults, so a struct literal must set it.
type Entry struct {
	Kind Kind
	Path string
	Mode int64
	UID  int
	GID  int

	// Content is a KindFile's content when Size is zero.
	Content string
	// Size, when positive, makes a KindFile hold Size pseudo-random bytes
	// drawn from Seed instead of Content.
	Size int64
	Seed uint64

	// Target is a symlink's target (kept verbatim) or a hardlink's target
	// path relative to the image root.
	Target string

	// Major and Minor are a KindCharDev's device numbers.
	Major int64
	Minor int64

	// Xattrs are written as PAX "SCHILY.xattr." records.
	Xattrs map[string]string
}

// Dir returns a directory entry, mode 0755, owned by root.
func Dir(p string) Entry { return Entry{Kind: KindDir, Path: p, Mode: 0o755} }

// File returns a regular file entry with the given content, mode 0644.
func File(p, content string) Entry {
	return Entry{Kind: KindFile, Path: p, Mode: 0o644, Content: content}
}

// RandomFile returns a regular file of size pseudo-random bytes drawn from
// seed, mode 0644.
func RandomFile(p string, size int64, seed uint64) Entry {
	return Entry{Kind: KindFile, Path: p, Mode: 0o644, Size: size, Seed: seed}
}

// Symlink returns a symbolic link p -> target, mode 0777.
func Symlink(p, target string) Entry {
	return Entry{Kind: KindSymlink, Path: p, Mode: 0o777, Target: target}
}

// Hardlink returns a hard link p to target, a path relative to the image
// root that this or a lower layer holds.
func Hardlink(p, target string) Entry {
	return Entry{Kind: KindHardlink, Path: p, Mode: 0o644, Target: target}
}

// Whiteout returns the marker that deletes p from the lower layers.
func Whiteout(p string) Entry { return Entry{Kind: KindWhiteout, Path: p} }

// Opaque returns the marker that hides the lower layers' content of dir.
func Opaque(dir string) Entry { return Entry{Kind: KindOpaque, Path: dir} }

// CharDev returns a character device entry, mode 0666.
func CharDev(p string, major, minor int64) Entry {
	return Entry{Kind: KindCharDev, Path: p, Mode: 0o666, Major: major, Minor: minor}
}

// FIFO returns a named pipe entry, mode 0644.
func FIFO(p string) Entry { return Entry{Kind: KindFIFO, Path: p, Mode: 0o644} }

// WithMode returns a copy of e with the given mode.
func (e Entry) WithMode(mode int64) Entry {
	e.Mode = mode
	return e
}

// WithOwner returns a copy of e owned by uid:gid.
func (e Entry) WithOwner(uid, gid int) Entry {
	e.UID, e.GID = uid, gid
	return e
}

// WithXattr returns a copy of e with the extended attribute key=value added.
func (e Entry) WithXattr(key, value string) Entry {
	x := make(map[string]string, len(e.Xattrs)+1)
	for k, v := range e.Xattrs {
		x[k] = v
	}
	x[key] = value
	e.Xattrs = x
	return e
}

// Compression is how a layer blob is compressed.
type Compression string

// Layer compressions. The zero value means Gzip.
const (
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
	Uncompressed Compression = "none"
)

// Layer is one image layer.
type Layer struct {
	// Comment becomes the layer's history "created_by".
	Comment     string
	Compression Compression
	// DotSlash prefixes every tar name with "./", as some image builders do.
	DotSlash bool
	Entries  []Entry
}

// Config is the part of the image config a Spec controls.
type Config struct {
	Env        []string
	Entrypoint []string
	Cmd        []string
	Labels     map[string]string
	WorkingDir string
	User       string
}

// Spec describes a whole image: layers bottom to top plus config.
type Spec struct {
	Layers []Layer
	Config Config
	// OS and Architecture default to "linux" and the architecture this
	// program runs on, so a converter that checks the platform accepts the
	// image on the host.
	OS           string
	Architecture string
}

// cleanPath checks that p names something inside the layer root and returns
// it cleaned, without a leading or trailing slash.
func cleanPath(p string) (string, error) {
	c := path.Clean(p)
	if p == "" || path.IsAbs(p) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("check path %q: not inside the layer root", p)
	}
	return c, nil
}
