package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// binRun is one finished run of the oci2layers binary.
type binRun struct {
	Args    []string
	Code    int // exit code; -1 when a signal ended the process
	Stdout  string
	Stderr  string
	Elapsed time.Duration
}

// binOptions says how runBin runs the binary.
type binOptions struct {
	// Bin is the binary to run; empty means the binary under test.
	Bin string
	// Env holds KEY=VALUE pairs that override the environment runBin sets up.
	Env []string
	// Credential, when set, runs the binary as that user and group.
	Credential *syscall.Credential
	// Timeout bounds the run; zero means two minutes.
	Timeout time.Duration
	// Dir is the working directory; empty means the test's.
	Dir string
}

// runBin runs the oci2layers binary with args and returns how it ended. The
// environment is the test's, minus the cache and Docker config variables:
// DOCKER_CONFIG names an empty directory, so that no credentials of the
// machine leak into a test. A run that outlives its timeout is killed and
// fails t.
func runBin(t *testing.T, o binOptions, args ...string) binRun {
	t.Helper()
	bin := o.Bin
	if bin == "" {
		bin = requireBinary(t)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(hermeticEnv(t), o.Env...)
	cmd.Dir = o.Dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if o.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.Credential}
	}
	start := time.Now()
	err := cmd.Run()
	r := binRun{Args: args, Stdout: stdout.String(), Stderr: stderr.String(),
		Elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("oci2layers %s: still running after %s; killed\nstderr:\n%s",
			strings.Join(args, " "), timeout, tail(r.Stderr, 20))
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		t.Fatalf("run oci2layers %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("oci2layers %s: exit %d in %s", strings.Join(args, " "), r.Code,
		r.Elapsed.Round(time.Millisecond))
	return r
}

// hermeticEnv returns the test's environment without variables that would
// point the binary at the machine's cache or credentials, plus DOCKER_CONFIG
// naming an empty directory.
func hermeticEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DOCKER_CONFIG", "OCI2LAYERS_CACHE", "REGISTRY_AUTH_FILE":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "DOCKER_CONFIG="+t.TempDir())
}

// convertArgs is the argument list of a conversion from a loopback registry,
// logging only warnings.
func convertArgs(source, out, cache string, extra ...string) []string {
	return append([]string{"convert", source, "-o", out, "--cache", cache, "--plain-http",
		"--quiet"}, extra...)
}

// errorLine is the shape of the one error line: "oci2layers: WHAT: WHY".
var errorLine = regexp.MustCompile(`^oci2layers: \S.*: \S`)

// checkExit checks r's exit code and its stderr: a failed run ends with
// exactly one error line, which matches want (when want is not nil); every
// other line is a log line. A successful run has no error line.
func checkExit(t *testing.T, r binRun, code int, want *regexp.Regexp) {
	t.Helper()
	if r.Code != code {
		t.Errorf("oci2layers %s: exit %d, want %d\nstderr:\n%s",
			strings.Join(r.Args, " "), r.Code, code, tail(r.Stderr, 20))
	}
	var errs, other []string
	for _, l := range strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "oci2layers: "):
			errs = append(errs, l)
		case !strings.HasPrefix(l, "time="):
			other = append(other, l)
		}
	}
	if len(other) > 0 {
		t.Errorf("stderr has lines that are neither log lines nor the error line:\n%s",
			strings.Join(other, "\n"))
	}
	if code == 0 {
		if len(errs) > 0 {
			t.Errorf("successful run printed error lines:\n%s", strings.Join(errs, "\n"))
		}
		return
	}
	for _, l := range errs {
		t.Logf("stderr: %s", l)
	}
	lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
	switch {
	case len(errs) != 1:
		t.Errorf("stderr has %d error lines, want one:\n%s", len(errs), r.Stderr)
	case lines[len(lines)-1] != errs[0]:
		t.Errorf("the error line is not the last line of stderr:\n%s", r.Stderr)
	case !errorLine.MatchString(errs[0]):
		t.Errorf("error line %q does not match %s", errs[0], errorLine)
	case want != nil && !want.MatchString(errs[0]):
		t.Errorf("error line %q does not match %s", errs[0], want)
	}
}

// entryKinds maps each kind of finished cache entry to its file extension.
var entryKinds = map[string]string{
	"layers": ".sif", "bases": ".sif", "configs": ".sif",
	"indexes": ".json.gz", "documents": "", "images": ".json",
}

// cacheEntries returns the names of the files under CACHE/v1/KIND/sha256 for
// every kind of entry, without checking them.
func cacheEntries(t *testing.T, cache string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for kind := range entryKinds {
		dir := filepath.Join(cache, "v1", kind)
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if p == dir && errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(dir, p)
				out[kind] = append(out[kind], filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatalf("list cache entries: %v", err)
		}
	}
	return out
}

// checkFinishedEntries checks that every file under the cache's entry
// directories is a finished entry: a regular file named
// sha256/<64 hex><extension of its kind>.
func checkFinishedEntries(t *testing.T, cache string) {
	t.Helper()
	for kind, names := range cacheEntries(t, cache) {
		re := regexp.MustCompile(`^sha256/[0-9a-f]{64}` + regexp.QuoteMeta(entryKinds[kind]) + `$`)
		for _, n := range names {
			if !re.MatchString(n) {
				t.Errorf("cache: v1/%s/%s is not a finished entry name", kind, n)
				continue
			}
			fi, err := os.Lstat(filepath.Join(cache, "v1", kind, n))
			if err != nil || !fi.Mode().IsRegular() {
				t.Errorf("cache: v1/%s/%s is not a regular file (%v)", kind, n, err)
			}
		}
	}
}

// checkNoRunDirs checks that CACHE/v1/tmp holds no run-* directory, which
// only a running process may have.
func checkNoRunDirs(t *testing.T, cache string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(cache, "v1", "tmp"))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatalf("list cache tmp: %v", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "run-") {
			t.Errorf("cache: v1/tmp/%s is left behind after the process exited", e.Name())
		}
	}
}

// checkNoTemps checks that nothing under dir has a name starting ".tmp-".
func checkNoTemps(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
}

// checkNoOutput checks that a failed conversion wrote no file into out:
// out may not exist or hold empty directories only.
func checkNoOutput(t *testing.T, out string) {
	t.Helper()
	err := filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == out && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			t.Errorf("failed conversion left output file %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", out, err)
	}
}

// sifDigests returns the sha256 of every SIF file in an output directory,
// by path relative to it.
func sifDigests(t *testing.T, out string) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(out, "overlays", "*.sif"))
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, f := range append(files, filepath.Join(out, "base.sif")) {
		rel, _ := filepath.Rel(out, f)
		sum, err := fileSHA256(f)
		if err != nil {
			t.Fatalf("hash output file: %v", err)
		}
		sums[filepath.ToSlash(rel)] = sum
	}
	return sums
}

// compareSIFs checks that two outputs hold the same SIF files, byte for
// byte.
func compareSIFs(t *testing.T, got, want map[string]string) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	for _, f := range slices.Sorted(maps.Keys(want)) {
		switch g, ok := got[f]; {
		case !ok:
			t.Errorf("SIF %s: missing, the clean conversion has it", f)
		case g != want[f]:
			t.Errorf("SIF %s: sha256 %s, the clean conversion's is %s", f, short(g), short(want[f]))
		}
	}
	for _, f := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[f]; !ok {
			t.Errorf("SIF %s: not in the clean conversion", f)
		}
	}
}

// readResult reads OUT/image.json.
func readResult(t *testing.T, out string) result {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "image.json"))
	if err != nil {
		t.Fatalf("read image.json: %v", err)
	}
	r := result{Out: out}
	if err := json.Unmarshal(data, &r.Meta); err != nil {
		t.Fatalf("parse image.json: %v\n%s", err, data)
	}
	return r
}

// chainKeys returns what a cache entry that holds layer k of img, or any
// layer above it, may be keyed by: the layer's diffID and the chainID of
// every prefix that includes it.
func chainKeys(t *testing.T, img v1.Image, k int) []string {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range cf.RootFS.DiffIDs {
		ids = append(ids, d.String())
	}
	keys := []string{ids[k]}
	for j := k; j < len(ids); j++ {
		keys = append(keys, chainID(ids[:j+1]))
	}
	return keys
}

// checkNoEntries checks that the cache holds no layer or base SIF and no
// index under any of keys ("sha256:<hex>").
func checkNoEntries(t *testing.T, cache string, keys []string) {
	t.Helper()
	for _, k := range keys {
		hex := strings.TrimPrefix(k, "sha256:")
		for _, p := range []string{"layers/sha256/" + hex + ".sif", "bases/sha256/" + hex + ".sif",
			"indexes/sha256/" + hex + ".json.gz"} {
			if _, err := os.Lstat(filepath.Join(cache, "v1", p)); err == nil {
				t.Errorf("cache: v1/%s exists, but its layer was never verified", p)
			}
		}
	}
}

// sha256Hex returns the hex sha256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// copyFile copies src to dst with the given mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
