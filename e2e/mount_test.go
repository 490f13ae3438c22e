package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// mountSquashfs loop-mounts, read-only, the squashfs image that fills
// size bytes at offset off of file, and returns the mount point. Cleanup
// unmounts it.
func mountSquashfs(t *testing.T, file string, off, size int64) string {
	t.Helper()
	opts := fmt.Sprintf("ro,loop,offset=%d,sizelimit=%d", off, size)
	return mount(t, "-t", "squashfs", "-o", opts, file)
}

// mountOverlay stacks the read-only directories lowers, top first, with
// overlayfs and returns the mount point. Extra options such as "userxattr"
// go before lowerdir. Cleanup unmounts it.
func mountOverlay(t *testing.T, lowers []string, opts ...string) string {
	t.Helper()
	for _, l := range lowers {
		if strings.ContainsAny(l, ":,") {
			t.Fatalf("mount overlay: lower dir %q has a ':' or ','", l)
		}
	}
	all := append(append([]string{"ro"}, opts...), "lowerdir="+strings.Join(lowers, ":"))
	return mount(t, "-t", "overlay", "-o", strings.Join(all, ","), "overlay")
}

// mount runs mount(8) with args and a new mount point as the last argument.
// The mount point is outside t.TempDir so that a failed unmount never lets a
// recursive removal walk into it.
func mount(t *testing.T, args ...string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "oci2layers-e2e-mnt-")
	if err != nil {
		t.Fatalf("create mount point: %v", err)
	}
	out, err := exec.Command("mount", append(args, dir)...).CombinedOutput()
	if err != nil {
		_ = os.Remove(dir)
		t.Fatalf("mount %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// unmount unmounts dir, lazily if it is busy, and removes the empty mount
// point.
func unmount(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Logf("umount %s: %v: %s; retrying lazily", dir, err, out)
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount -l %s: %v: %s", dir, err, out)
			return
		}
	}
	if err := os.Remove(dir); err != nil {
		t.Errorf("remove mount point: %v", err)
	}
}
