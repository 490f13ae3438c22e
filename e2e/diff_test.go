package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// skeletonPaths are the paths the Apptainer skeleton adds when the image
// lacks them; everything under .singularity.d is skeleton too.
var skeletonPaths = map[string]bool{
	"singularity": true, ".run": true, ".exec": true, ".test": true, ".shell": true,
	"environment": true, "dev": true, "proc": true, "root": true, "var": true,
	"var/tmp": true, "tmp": true, "etc": true, "sys": true, "home": true,
	"etc/hosts": true, "etc/resolv.conf": true,
}

func isSkeleton(p string) bool {
	return skeletonPaths[p] || p == ".singularity.d" || strings.HasPrefix(p, ".singularity.d/")
}

// maxDiffs is how many differences a failed comparison prints.
const maxDiffs = 30

// compareTrees fails t with a readable list of differences between the
// merged tree got and the reference want. Skeleton paths that want lacks are
// ignored; directory sizes and times are never compared.
func compareTrees(t *testing.T, got, want tree) {
	t.Helper()
	diffs := diffTrees(got, want)
	if len(diffs) == 0 {
		return
	}
	shown := diffs
	if len(shown) > maxDiffs {
		shown = shown[:maxDiffs]
	}
	t.Errorf("tree differs from the reference in %d paths (got: on disk, want: from "+
		"mutate.Extract):\n  %s", len(diffs), strings.Join(shown, "\n  "))
}

func diffTrees(got, want tree) []string {
	paths := map[string]bool{}
	for p := range got {
		paths[p] = true
	}
	for p := range want {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)

	var diffs []string
	for _, p := range sorted {
		g, inGot := got[p]
		w, inWant := want[p]
		switch {
		case !inGot:
			diffs = append(diffs, fmt.Sprintf("%s: missing, want %s", p, w))
		case !inWant && isSkeleton(p):
		case !inWant:
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %s", p, g))
		default:
			for _, d := range nodeDiff(g, w) {
				diffs = append(diffs, p+": "+d)
			}
		}
	}
	return diffs
}

// nodeDiff lists the fields in which got and want differ.
func nodeDiff(got, want node) []string {
	var d []string
	add := func(field string, g, w any) {
		if g != w {
			d = append(d, fmt.Sprintf("%s got %v, want %v", field, g, w))
		}
	}
	add("type", got.Type, want.Type)
	if got.Type != "symlink" || want.Type != "symlink" { // Linux shows 0777
		add("mode", fmt.Sprintf("%04o", got.Mode), fmt.Sprintf("%04o", want.Mode))
	}
	add("owner", fmt.Sprintf("%d:%d", got.UID, got.GID), fmt.Sprintf("%d:%d", want.UID, want.GID))
	if got.Type == want.Type {
		add("size", got.Size, want.Size)
		add("sha256", short(got.SHA256), short(want.SHA256))
		add("target", got.Target, want.Target)
		add("rdev", got.Rdev, want.Rdev)
	}
	add("xattrs", got.Xattrs, want.Xattrs)
	return d
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// String renders n in one line for diffs.
func (n node) String() string {
	switch n.Type {
	case "dir", "file", "symlink", "char", "block", "fifo", "socket":
	default:
		return n.Type // a walk error
	}
	s := fmt.Sprintf("%s %04o %d:%d", n.Type, n.Mode, n.UID, n.GID)
	switch {
	case n.Type == "file":
		s += fmt.Sprintf(" size %d sha256 %s", n.Size, short(n.SHA256))
	case n.Type == "symlink":
		s += " -> " + n.Target
	case n.Rdev != "":
		s += " " + n.Rdev
	}
	if n.Xattrs != "" {
		s += " xattrs " + n.Xattrs
	}
	return s
}
