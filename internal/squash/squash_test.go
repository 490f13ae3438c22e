package squash

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary build one squashfs and exit instead of
// running tests; a test re-executes itself this way as another user.
const helperEnv = "OCI2LAYERS_SQUASH_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

// helperMain builds the tar on stdin into $OCI2LAYERS_SQUASH_OUT with
// $OCI2LAYERS_SQUASH_EPOCH. Mode "cancel-then-build" first tries a build
// with a cancelled context, which must fail with context.Canceled. Warnings
// go to stderr.
func helperMain(mode string) int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	epoch, err := strconv.ParseInt(os.Getenv("OCI2LAYERS_SQUASH_EPOCH"), 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tool, err := Find(context.Background(), logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	out := os.Getenv("OCI2LAYERS_SQUASH_OUT")
	if mode == "cancel-then-build" {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := tool.FromTar(ctx, strings.NewReader(""), out+".cancelled", Options{Epoch: epoch})
		if !errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "cancelled build: %v, want %v\n", err, context.Canceled)
			return 1
		}
	}
	if err := tool.FromTar(context.Background(), os.Stdin, out, Options{Epoch: epoch}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// findTool returns the mksquashfs Tool; the test is skipped without it.
func findTool(t *testing.T) *Tool {
	t.Helper()
	tool, err := Find(context.Background(), nil)
	if errors.Is(err, ErrMissing) {
		t.Skip("mksquashfs is not installed (squashfs-tools)")
	}
	if err != nil {
		t.Fatal(err)
	}
	return tool
}

const (
	entryTime = 1600000000 // every tar entry's mtime
	epoch     = 1700000000 // 2023-11-14 22:13:20 UTC
)

// testTar returns a tar with the entry types and attributes an image layer
// carries.
func testTar(t *testing.T) []byte {
	t.Helper()
	mtime := time.Unix(entryTime, 0)
	entries := []struct {
		h    tar.Header
		body string
	}{
		{h: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1000, Gid: 1000,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": "val"}}, body: "hello"},
		{h: tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o4755}, body: "x"},
		{h: tar.Header{Name: "wh", Typeflag: tar.TypeChar, Mode: 0}},
		{h: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o644, Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "d/f", Mode: 0o777,
			Uid: 1000, Gid: 1000}},
		{h: tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "d/f"}},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.h
		h.ModTime = mtime
		h.Size = int64(len(e.body))
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// build runs FromTar on b into a new file and returns its path and bytes.
func build(t *testing.T, tool *Tool, b []byte, opts Options) (string, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "img.sqfs")
	if err := tool.FromTar(context.Background(), bytes.NewReader(b), out, opts); err != nil {
		t.Fatalf("FromTar: %v", err)
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return out, img
}

// unsquashfs runs unsquashfs with args in UTC and returns its output.
func unsquashfs(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("unsquashfs", args...)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs %q: %v: %s", args, err, out)
	}
	return string(out)
}

// listing maps each path of `unsquashfs -lln` to "MODE UID/GID", with
// " -> TARGET" for symlinks, and returns the root directory's time.
func listing(t *testing.T, img string) (map[string]string, string) {
	t.Helper()
	line := regexp.MustCompile(`^(\S+) (\d+/\d+) +.*? (\d{4}-\d\d-\d\d \d\d:\d\d) ` +
		`squashfs-root(\S*)(.*)$`)
	got := map[string]string{}
	rootTime := ""
	for _, l := range strings.Split(strings.TrimSpace(unsquashfs(t, "-lln", img)), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("unsquashfs listing line %q", l)
		}
		name := strings.TrimPrefix(m[4], "/")
		if name == "" {
			name, rootTime = ".", m[3]
		}
		got[name] = m[1] + " " + m[2] + m[5]
	}
	return got, rootTime
}

func TestFind(t *testing.T) {
	tool := findTool(t)
	m := regexp.MustCompile(`^(\d+)\.(\d+)`).FindStringSubmatch(tool.Version)
	if m == nil {
		t.Fatalf("Version = %q", tool.Version)
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 4 || major == 4 && minor < 5 {
		t.Errorf("Version = %q, want 4.5 or later", tool.Version)
	}
	if !filepath.IsAbs(tool.Path) {
		t.Errorf("Path = %q, want an absolute path", tool.Path)
	}
	if !tool.Supports("gzip") {
		t.Errorf("Supports(gzip) = false")
	}
	if tool.Supports("brotli") {
		t.Errorf("Supports(brotli) = true")
	}
}

func TestFindMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := Find(context.Background(), nil); !errors.Is(err, ErrMissing) {
		t.Errorf("Find without mksquashfs = %v, want %v", err, ErrMissing)
	}
}

func TestFromTarEntries(t *testing.T) {
	tool := findTool(t)
	img, _ := build(t, tool, testTar(t), Options{Epoch: epoch})

	got, _ := listing(t, img)
	want := map[string]string{
		".":    "drwxr-xr-x 0/0",
		"d":    "drwxr-xr-x 1000/1000",
		"d/f":  "-rw-r--r-- 1000/1000",
		"suid": "-rwsr-xr-x 0/0",
		"wh":   "c--------- 0/0",
		"fifo": "prw-r--r-- 1000/1000",
		"link": "lrwxrwxrwx 1000/1000 -> d/f",
		"hl":   "-rw-r--r-- 1000/1000",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %q, want %q", name, got[name], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("listing has %d entries, want %d: %q", len(got), len(want), got)
	}

	// Hard links and xattrs do not show in the listing: extract and look.
	if os.Geteuid() != 0 {
		t.Skip("extracting a device node needs root; hard link and xattr not checked")
	}
	dir := filepath.Join(t.TempDir(), "x")
	unsquashfs(t, "-d", dir, img)
	f, err := os.Stat(filepath.Join(dir, "d", "f"))
	if err != nil {
		t.Fatal(err)
	}
	hl, err := os.Stat(filepath.Join(dir, "hl"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(f, hl) {
		t.Errorf("hl is not a hard link to d/f")
	}
	if !strings.Contains(unsquashfs(t, "-stat", img), "Number of xattr ids 1\n") {
		t.Errorf("the image does not hold one xattr set")
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(dir, "d", "f"), "user.x", buf)
	switch {
	case errors.Is(err, unix.ENOTSUP):
		t.Logf("the temp file system has no user xattrs; user.x not checked")
	case err != nil:
		t.Errorf("user.x on d/f: %v", err)
	case string(buf[:n]) != "val":
		t.Errorf("user.x = %q, want %q", buf[:n], "val")
	}
}

func TestFromTarDeterministic(t *testing.T) {
	tool := findTool(t)
	b := testTar(t)
	_, first := build(t, tool, b, Options{Epoch: epoch})
	tests := []struct {
		name string
		opts Options
		same bool
	}{
		{name: "again", opts: Options{Epoch: epoch}, same: true},
		{name: "one processor", opts: Options{Epoch: epoch, Processors: 1}, same: true},
		{name: "explicit gzip", opts: Options{Epoch: epoch, Compression: "gzip"}, same: true},
		{name: "other epoch", opts: Options{Epoch: epoch + 3600}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, img := build(t, tool, b, tt.opts)
			if got, want := bytes.Equal(img, first), tt.same; got != want {
				t.Errorf("identical to the first build: %v, want %v", got, want)
			}
		})
	}
}

func TestFromTarEpoch(t *testing.T) {
	tool := findTool(t)
	tests := []struct {
		name     string
		epoch    int64
		rootTime string
	}{
		{name: "2023", epoch: epoch, rootTime: "2023-11-14 22:13"},
		{name: "2025", epoch: 1750000000, rootTime: "2025-06-15 15:06"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, _ := build(t, tool, testTar(t), Options{Epoch: tt.epoch})
			entries, rootTime := listing(t, img)
			if got, want := rootTime, tt.rootTime; got != want {
				t.Errorf("root time %q, want %q", got, want)
			}
			if got, want := entries["."], "drwxr-xr-x 0/0"; got != want {
				t.Errorf("root %q, want %q", got, want)
			}
			created := "Creation or last append time " +
				time.Unix(tt.epoch, 0).UTC().Format(time.ANSIC)
			if stat := unsquashfs(t, "-stat", img); !strings.Contains(stat, created) {
				t.Errorf("superblock time: -stat does not say %q:\n%s", created, stat)
			}
		})
	}
}

func TestFromTarCompressions(t *testing.T) {
	tool := findTool(t)
	for _, comp := range Compressions {
		t.Run(comp, func(t *testing.T) {
			if !tool.Supports(comp) {
				t.Skipf("this mksquashfs has no %s compressor", comp)
			}
			img, _ := build(t, tool, testTar(t), Options{Epoch: epoch, Compression: comp})
			stat := unsquashfs(t, "-stat", img)
			if !strings.Contains(stat, "Compression "+comp+"\n") {
				t.Errorf("-stat does not say Compression %s:\n%s", comp, stat)
			}
			level := fmt.Sprintf("compression-level %d\n", GzipLevel)
			if comp == "gzip" && !strings.Contains(stat, level) {
				t.Errorf("-stat does not say %q:\n%s", level, stat)
			}
		})
	}
}

func TestFromTarUnknownCompressor(t *testing.T) {
	tool := findTool(t)
	out := filepath.Join(t.TempDir(), "img.sqfs")
	err := tool.FromTar(context.Background(), bytes.NewReader(testTar(t)), out,
		Options{Compression: "brotli"})
	if err == nil || !strings.Contains(err.Error(), "brotli") {
		t.Errorf("FromTar with brotli = %v, want an error naming it", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output exists after a refused build: %v", err)
	}
}

func TestFromTarBadInput(t *testing.T) {
	tool := findTool(t)
	out := filepath.Join(t.TempDir(), "img.sqfs")
	err := tool.FromTar(context.Background(), strings.NewReader(strings.Repeat("junk", 1000)),
		out, Options{})
	if err == nil || !strings.HasPrefix(err.Error(), "mksquashfs: ") {
		t.Errorf("FromTar of junk = %v, want a mksquashfs error", err)
	}
}

func TestFromTarCancelled(t *testing.T) {
	tool := findTool(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(t.TempDir(), "img.sqfs")
	err := tool.FromTar(ctx, bytes.NewReader(testTar(t)), out, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("FromTar with a cancelled context = %v, want %v", err, context.Canceled)
	}
}

// TestFromTarCancelStalled cancels a build whose input has stopped coming,
// as a stalled download would: FromTar must return anyway.
func TestFromTarCancelStalled(t *testing.T) {
	tool := findTool(t)
	b := testTar(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write(b[:1024]) // part of the tar, then nothing

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tool.FromTar(ctx, pr, filepath.Join(t.TempDir(), "img.sqfs"), Options{})
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("FromTar = %v, want %v", err, context.Canceled)
		}
	case <-time.After(10 * time.Second):
		pw.CloseWithError(errors.New("test gave up"))
		<-done
		t.Errorf("FromTar did not return within 10s of the cancel while its input stalled")
	}
}

// nonRootBuild re-executes the test binary as uid 65534 in helper mode and
// returns the image it built from b.
func nonRootBuild(t *testing.T, mode string, b []byte) []byte {
	t.Helper()
	// t.TempDir's parents are private to root: use a directory the other
	// user can reach, holding a copy of the test binary.
	dir, err := os.MkdirTemp("", "oci2layers-squash-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "squash.test")
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "img.sqfs")
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "OCI2LAYERS_SQUASH_OUT="+out,
		"OCI2LAYERS_SQUASH_EPOCH="+strconv.Itoa(epoch), "HOME="+dir)
	cmd.Stdin = bytes.NewReader(b)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	if err := cmd.Run(); err != nil {
		t.Fatalf("build as uid 65534: %v: %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("build as uid 65534 logged: %s", stderr.String())
	}
	img, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestFromTarNonRoot checks that a user who is not root gets exactly the
// bytes root gets, also after a cancelled build.
func TestFromTarNonRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to compare a root build with a uid 65534 build")
	}
	tool := findTool(t)
	b := testTar(t)
	_, want := build(t, tool, b, Options{Epoch: epoch})
	for _, mode := range []string{"build", "cancel-then-build"} {
		t.Run(mode, func(t *testing.T) {
			if got := nonRootBuild(t, mode, b); !bytes.Equal(got, want) {
				t.Errorf("the uid 65534 build differs from root's")
			}
		})
	}
}
