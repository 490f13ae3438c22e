package convert

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/oci2layers/oci2layers/internal/cache"
)

// testResult returns a Result with a base, two overlays and a config
// overlay, named the way a conversion names them.
func testResult() *Result {
	base, o1, o2, cfg := hashOf("base"), hashOf("o1"), hashOf("o2"), hashOf("config")
	res := &Result{
		Source:   "oci:/images:demo",
		Platform: "linux/amd64",
		Base:     BaseFile{File: "base.sif", Key: base.String(), ChainID: base.String()},
		Overlays: []OverlayFile{
			{File: "overlays/01-" + short(o1) + ".sif", Key: o1.String(), KeyedBy: "diff_id"},
			{File: "overlays/02-" + short(o2) + ".sif", Key: o2.String(), KeyedBy: "chain_id"},
		},
		ConfigOverlay: ConfigFile{File: "overlays/config-" + short(cfg) + ".sif",
			Key: cfg.String()},
	}
	for _, o := range res.Overlays {
		res.ExecArgs = append(res.ExecArgs, "--overlay", o.File+":ro")
	}
	res.ExecArgs = append(res.ExecArgs, "--overlay", res.ConfigOverlay.File+":ro")
	return res
}

func testCache(t *testing.T) *cache.Cache {
	t.Helper()
	c, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fillCache puts an entry holding its own file name for every file of res.
func fillCache(t *testing.T, c *cache.Cache, res *Result) {
	t.Helper()
	files, err := res.files(c)
	if err != nil {
		t.Fatal(err)
	}
	for file, src := range files {
		if err := os.WriteFile(src, []byte(file), 0o444); err != nil {
			t.Fatal(err)
		}
	}
}

func TestResultFiles(t *testing.T) {
	c := testCache(t)
	res := testResult()
	got, err := res.files(c)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		res.Base.File:          c.Path(cache.Base, hashOf("base")),
		res.Overlays[0].File:   c.Path(cache.Layer, hashOf("o1")),
		res.Overlays[1].File:   c.Path(cache.Layer, hashOf("o2")),
		res.ConfigOverlay.File: c.Path(cache.Config, hashOf("config")),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("files = %v, want %v", got, want)
	}

	flat := &Result{Flat: true, Base: BaseFile{File: "image.sif", Key: hashOf("flat").String()}}
	got, err = flat.files(c)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"image.sif": c.Path(cache.Flat, hashOf("flat"))}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flat files = %v, want %v", got, want)
	}

	bad := testResult()
	bad.Overlays[1].Key = "sha256:not-hex"
	if _, err := bad.files(c); err == nil {
		t.Errorf("files accepted a malformed key")
	}
}

func TestResultUse(t *testing.T) {
	c := testCache(t)
	res := testResult()
	if res.use(c, "src") {
		t.Errorf("use with an empty cache")
	}
	fillCache(t, c, res)
	if !res.use(c, "src") {
		t.Errorf("use = false with every entry present")
	}
	if err := os.Remove(c.Path(cache.Layer, hashOf("o2"))); err != nil {
		t.Fatal(err)
	}
	if res.use(c, "src") {
		t.Errorf("use with an overlay missing")
	}
	bad := testResult()
	bad.Base.Key = "nonsense"
	if bad.use(c, "src") {
		t.Errorf("use with a malformed key")
	}
}

func TestResultMarkReused(t *testing.T) {
	res := testResult()
	res.Overlays[0].Reused = true
	if got, want := res.built(), 3; got != want {
		t.Errorf("built() = %d, want %d", got, want)
	}
	if got, want := res.reused(), 1; got != want {
		t.Errorf("reused() = %d, want %d", got, want)
	}

	res.markReused()
	if !res.Base.Reused || !res.ConfigOverlay.Reused || !res.Overlays[0].Reused ||
		!res.Overlays[1].Reused {
		t.Errorf("markReused left a file unmarked: %+v", res)
	}
	if got, want := res.built(), 0; got != want {
		t.Errorf("built() after markReused = %d, want %d", got, want)
	}
	if got, want := res.reused(), 4; got != want {
		t.Errorf("reused() after markReused = %d, want %d", got, want)
	}
}

// fakeRuntime makes a directory holding dirname and, unless name is empty,
// a runtime called name that prints its arguments one per line.
func fakeRuntime(t *testing.T, name string) string {
	t.Helper()
	dirname, err := exec.LookPath("dirname")
	if err != nil {
		t.Skip("dirname is not installed; the run script needs it")
	}
	bin := t.TempDir()
	if err := os.Symlink(dirname, filepath.Join(bin, "dirname")); err != nil {
		t.Fatal(err)
	}
	if name != "" {
		script := "#!/bin/sh\necho " + name + "\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}

func TestRunScriptSyntax(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh to check the script with")
	}
	res := testResult()
	res.WorkingDir = `/srv/it's "here"`
	for _, r := range []*Result{testResult(), res} {
		cmd := exec.Command("/bin/sh", "-n")
		cmd.Stdin = strings.NewReader(runScript(r))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sh -n: %v: %s", err, out)
		}
	}
}

func TestRunScript(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh to run the script with")
	}
	res := testResult()
	overlays := func(dir string) []string {
		return []string{"--overlay", dir + "/" + res.Overlays[0].File + ":ro",
			"--overlay", dir + "/" + res.Overlays[1].File + ":ro",
			"--overlay", dir + "/" + res.ConfigOverlay.File + ":ro"}
	}
	tests := []struct {
		name       string
		runtime    string // installed fake runtime; empty for none
		workingDir string
		flags      string
		args       []string
		want       func(dir string) []string
		wantCode   int
	}{
		{name: "default action", runtime: "apptainer", args: []string{"a b", "c"},
			want: func(dir string) []string {
				return slices.Concat([]string{"apptainer", "run"}, overlays(dir),
					[]string{dir + "/base.sif", "a b", "c"})
			}},
		{name: "exec", runtime: "apptainer", args: []string{"exec", "echo", "hi"},
			want: func(dir string) []string {
				return slices.Concat([]string{"apptainer", "exec"}, overlays(dir),
					[]string{dir + "/base.sif", "echo", "hi"})
			}},
		{name: "not an action", runtime: "apptainer", args: []string{"inspect-me"},
			want: func(dir string) []string {
				return slices.Concat([]string{"apptainer", "run"}, overlays(dir),
					[]string{dir + "/base.sif", "inspect-me"})
			}},
		{name: "singularity and flags", runtime: "singularity", flags: "--nv --contain",
			args: []string{"shell"},
			want: func(dir string) []string {
				return slices.Concat([]string{"singularity", "shell", "--nv", "--contain"},
					overlays(dir), []string{dir + "/base.sif"})
			}},
		{name: "working dir", runtime: "apptainer", workingDir: `/srv/it's "here" $HOME`,
			args: []string{"test"},
			want: func(dir string) []string {
				return slices.Concat([]string{"apptainer", "test", "--pwd",
					`/srv/it's "here" $HOME`}, overlays(dir), []string{dir + "/base.sif"})
			}},
		{name: "no runtime", wantCode: 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testResult()
			r.WorkingDir = tt.workingDir
			dir := filepath.Join(t.TempDir(), "out dir")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			script := filepath.Join(dir, "run")
			if err := os.WriteFile(script, []byte(runScript(r)), 0o755); err != nil {
				t.Fatal(err)
			}

			cmd := exec.Command(script, tt.args...)
			cmd.Dir = t.TempDir()
			cmd.Env = []string{"PATH=" + fakeRuntime(t, tt.runtime), "HOME=/nonexistent"}
			if tt.flags != "" {
				cmd.Env = append(cmd.Env, "OCI2LAYERS_RUN_FLAGS="+tt.flags)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if got, want := cmd.ProcessState.ExitCode(), tt.wantCode; got != want {
				t.Fatalf("exit code %d (%v), want %d; stderr: %s", got, err, want, stderr.String())
			}
			if tt.want == nil {
				if !strings.Contains(stderr.String(), "neither apptainer nor singularity") {
					t.Errorf("stderr %q does not explain the failure", stderr.String())
				}
				return
			}
			got := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if want := tt.want(dir); !slices.Equal(got, want) {
				t.Errorf("runtime got\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

// writeFiles creates each named file below dir with its name as content.
func writeFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWriteOutput(t *testing.T) {
	c := testCache(t)
	res := testResult()
	fillCache(t, c, res)
	dir := filepath.Join(t.TempDir(), "out")

	// What an earlier conversion and an interrupted run left, and files the
	// user keeps.
	stale := []string{"overlays/01-aaaaaaaaaaaa.sif", "overlays/03-bbbbbbbbbbbb.sif",
		"overlays/config-cccccccccccc.sif", "overlays/.tmp-02-x.sif", ".tmp-image.json"}
	kept := []string{"overlays/notes.txt", "overlays/1-aaaaaaaaaaaa.sif",
		"overlays/01-AAAAAAAAAAAA.sif", "overlays/mine.sif", "keep.txt"}
	writeFiles(t, dir, stale...)
	writeFiles(t, dir, kept...)
	writeFiles(t, dir, res.Overlays[0].File) // replaced by the link

	for round := 1; round <= 2; round++ {
		if err := writeOutput(dir, c, res); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}

	files, err := res.files(c)
	if err != nil {
		t.Fatal(err)
	}
	for file, src := range files {
		if got, want := inode(t, filepath.Join(dir, file)), inode(t, src); got != want {
			t.Errorf("%s: inode %d, want the cache entry's %d (a hard link)", file, got, want)
		}
	}
	for _, name := range stale {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("stale %s survived", name)
		}
	}
	for _, name := range kept {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != name {
			t.Errorf("%s: %q, %v; want it untouched", name, b, err)
		}
	}

	if got, want := fileMode(t, filepath.Join(dir, "image.json")), fs.FileMode(0o644); got != want {
		t.Errorf("image.json mode %v, want %v", got, want)
	}
	if got, want := fileMode(t, filepath.Join(dir, "run")), fs.FileMode(0o755); got != want {
		t.Errorf("run mode %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, res) {
		t.Errorf("image.json reads back as %+v, want %+v", back, *res)
	}
	script, err := os.ReadFile(filepath.Join(dir, "run"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(script), runScript(res); got != want {
		t.Errorf("run differs from runScript")
	}
}

// TestWriteOutputCopies writes to another file system than the cache's,
// where hard links fail and files are copied.
func TestWriteOutputCopies(t *testing.T) {
	c := testCache(t)
	res := testResult()
	fillCache(t, c, res)

	shm, err := os.MkdirTemp("/dev/shm", "oci2layers-convert-")
	if err != nil {
		t.Skipf("no /dev/shm to write to: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	var a, b syscall.Stat_t
	if syscall.Stat(shm, &a) != nil || syscall.Stat(c.Root(), &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is on the cache's file system; cannot force a copy")
	}

	if err := writeOutput(shm, c, res); err != nil {
		t.Fatal(err)
	}
	files, err := res.files(c)
	if err != nil {
		t.Fatal(err)
	}
	for file, src := range files {
		dst := filepath.Join(shm, file)
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the copy differs from the cache entry", file)
		}
		if got, want := fileMode(t, dst), fs.FileMode(0o444); got != want {
			t.Errorf("%s: mode %v, want %v", file, got, want)
		}
	}
	entries, err := os.ReadDir(filepath.Join(shm, "overlays"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if isTemp(e.Name()) {
			t.Errorf("a temporary file was left: %s", e.Name())
		}
	}
}
