package e2e

import (
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// nonRootUser returns the user the non-root conversions run as:
// $OCI2LAYERS_E2E_USER when set (a user name CI created), else
// nobody:nogroup (65534:65534), which needs no account.
func nonRootUser(t *testing.T) (*syscall.Credential, string) {
	t.Helper()
	name := os.Getenv("OCI2LAYERS_E2E_USER")
	if name == "" {
		return &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}, "uid 65534"
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("OCI2LAYERS_E2E_USER: %v", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		t.Fatalf("OCI2LAYERS_E2E_USER %s: uid %q: %v", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		t.Fatalf("OCI2LAYERS_E2E_USER %s: gid %q: %v", name, u.Gid, err)
	}
	if uid == 0 {
		t.Fatalf("OCI2LAYERS_E2E_USER %s is root", name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, name
}

// nonRootDir makes a directory the non-root user can reach and write: a
// world-readable directory under os.TempDir() (t.TempDir's parents are
// private to root) holding a copy of the binary and a world-writable work
// directory. Cleanup removes it.
func nonRootDir(t *testing.T) (bin, work string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "oci2layers-e2e-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "oci2layers")
	copyFile(t, requireBinary(t), bin, 0o755)
	work = filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(work, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	return bin, work
}

// TestNonRoot converts "cases" and "demo" as root and as a user that is
// not, each into its own cache, and checks that the SIF files are
// byte-identical and that the non-root output stacks to the image's tree.
// The conversion itself needs no privilege; the test needs root to switch
// users and to mount the result.
func TestNonRoot(t *testing.T) {
	requireRoot(t, "switching to another user and mounting the result")
	requireBinary(t)
	requireMksquashfs(t)
	cred, who := nonRootUser(t)
	bin, work := nonRootDir(t)
	addr := startRegistry(t)

	for _, name := range []string{imagegen.Cases, imagegen.Demo} {
		t.Run(name, func(t *testing.T) {
			img := standardImage(t, name)
			ref := addr + "/" + name + ":v1"
			if err := imagegen.Push(t.Context(), ref, img); err != nil {
				t.Fatal(err)
			}
			src := "docker://" + ref

			rootOut := filepath.Join(t.TempDir(), "out")
			rootCache := filepath.Join(t.TempDir(), "cache")
			r := runBin(t, binOptions{}, convertArgs(src, rootOut, rootCache)...)
			checkExit(t, r, 0, nil)

			userDir := filepath.Join(work, name)
			userOut := filepath.Join(userDir, "out")
			userCache := filepath.Join(userDir, "cache")
			userEnv := []string{"HOME=" + userDir,
				"DOCKER_CONFIG=" + filepath.Join(userDir, "docker")}
			if err := os.Mkdir(userDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(userDir, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
			u := runBin(t, binOptions{Bin: bin, Credential: cred, Env: userEnv},
				convertArgs(src, userOut, userCache)...)
			checkExit(t, u, 0, nil)
			if r.Code != 0 || u.Code != 0 {
				t.FailNow()
			}

			checkOwner(t, userOut, cred.Uid)
			if got, want := sifDigests(t, userOut), sifDigests(t, rootOut); !maps.Equal(got, want) {
				t.Errorf("the SIFs %s made differ from root's (the README's known limitations "+
					"explain a difference when user namespaces are unavailable):", who)
				compareSIFs(t, got, want)
			}
			res := readResult(t, userOut)
			checkContract(t, res, contract{Source: src, Image: img})
			checkNoRunDirs(t, userCache)
			checkTree(t, res, img)
		})
	}
}

// checkOwner checks that the output files belong to uid, as a sign that the
// conversion really ran as that user.
func checkOwner(t *testing.T, out string, uid uint32) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(out, "image.json"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != uid {
		t.Errorf("image.json belongs to uid %d, want %d: the conversion did not run as that user",
			st.Uid, uid)
	}
}
