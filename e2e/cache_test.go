package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// cacheEntryJSON is one entry of `cache ls --json`.
type cacheEntryJSON struct {
	Kind     string    `json:"kind"`
	Key      string    `json:"key"`
	Path     string    `json:"path"`
	Size     int64     `json:"size"`
	LastUsed time.Time `json:"last_used"`
	Images   []string  `json:"images"`
	Outputs  []string  `json:"outputs"`
	Meta     bool      `json:"meta"`
	InUse    bool      `json:"in_use"`
}

// cacheUsageJSON is `cache du --json`.
type cacheUsageJSON struct {
	Kinds map[string]struct {
		Entries int   `json:"entries"`
		Bytes   int64 `json:"bytes"`
	} `json:"kinds"`
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
}

// verifyJSON is `cache verify --json`.
type verifyJSON struct {
	Entries  int   `json:"entries"`
	Bytes    int64 `json:"bytes"`
	Problems []struct {
		Class   string `json:"class"`
		Kind    string `json:"kind"`
		Key     string `json:"key"`
		Path    string `json:"path"`
		Detail  string `json:"detail"`
		Removed bool   `json:"removed"`
	} `json:"problems"`
}

// gcJSON is `cache gc --json`.
type gcJSON struct {
	Removed      []cacheEntryJSON `json:"removed"`
	Freed        int64            `json:"freed"`
	StaleOutputs []string         `json:"stale_outputs"`
}

// cacheRun runs `oci2layers cache SUB --cache CACHE ARGS...`.
func cacheRun(t *testing.T, cache, sub string, args ...string) binRun {
	t.Helper()
	return runBin(t, binOptions{}, append([]string{"cache", sub, "--cache", cache}, args...)...)
}

// cacheJSON runs a cache command with --json, checks its exit code and
// decodes its stdout into v.
func cacheJSON(t *testing.T, cache, sub string, code int, v any, args ...string) binRun {
	t.Helper()
	r := cacheRun(t, cache, sub, append(args, "--json")...)
	checkExit(t, r, code, nil)
	if err := json.Unmarshal([]byte(r.Stdout), v); err != nil {
		t.Fatalf("cache %s --json: %v\n%s", sub, err, r.Stdout)
	}
	return r
}

// onDisk returns every finished entry of the cache as "KIND sha256:HEX",
// with its size.
func onDisk(t *testing.T, cache string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for kind, names := range cacheEntries(t, cache) {
		for _, n := range names {
			hex := strings.TrimSuffix(strings.TrimPrefix(n, "sha256/"), entryKinds[kind])
			fi, err := os.Stat(filepath.Join(cache, "v1", kind, n))
			if err != nil {
				t.Fatal(err)
			}
			out[kind+" sha256:"+hex] = fi.Size()
		}
	}
	return out
}

// outputFile is one SIF of an output and the cache entry it links.
type outputFile struct {
	File  string // relative to the output directory
	Entry string // "KIND sha256:HEX"
}

// outputFiles reads OUT/image.json and returns its SIF files.
func outputFiles(t *testing.T, out string) []outputFile {
	t.Helper()
	m := readLayout(t, out)
	files := []outputFile{{m.Base.File, "bases " + m.Base.Key}}
	for _, o := range m.Overlays {
		files = append(files, outputFile{o.File, "layers " + o.Key})
	}
	return append(files, outputFile{m.ConfigOverlay.File, "configs " + m.ConfigOverlay.Key})
}

// entryPath is where a cache holds an entry named "KIND sha256:HEX".
func entryPath(cache, entry string) string {
	kind, key, _ := strings.Cut(entry, " ")
	return filepath.Join(cache, "v1", kind, "sha256",
		strings.TrimPrefix(key, "sha256:")+entryKinds[kind])
}

// checkLinked checks that every SIF of out is a read-only hard link of its
// cache entry.
func checkLinked(t *testing.T, cache, out string) {
	t.Helper()
	for _, f := range outputFiles(t, out) {
		fo, err := os.Stat(filepath.Join(out, f.File))
		if err != nil {
			t.Fatal(err)
		}
		fe, err := os.Stat(entryPath(cache, f.Entry))
		if err != nil {
			t.Errorf("%s: its cache entry %s: %v", f.File, f.Entry, err)
			continue
		}
		if !os.SameFile(fo, fe) {
			t.Errorf("%s is not a hard link of cache entry %s", f.File, f.Entry)
		}
		if fo.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %04o, want 0444", f.File, fo.Mode().Perm())
		}
	}
}

// checkVerifyClean runs cache verify and checks that it finds nothing.
func checkVerifyClean(t *testing.T, cache string) verifyJSON {
	t.Helper()
	return checkVerify(t, cache, true)
}

// checkVerify runs cache verify and checks that it finds no damaged or
// unverifiable entry, nor (when strict) any leftover or unexpected file.
func checkVerify(t *testing.T, cache string, strict bool) verifyJSON {
	t.Helper()
	var v verifyJSON
	cacheJSON(t, cache, "verify", 0, &v)
	for _, p := range v.Problems {
		if strict || p.Class == "damaged" || p.Class == "unverifiable" {
			t.Errorf("cache verify: %s %s %s: %s", p.Class, p.Kind, p.Path, p.Detail)
		} else {
			t.Logf("cache verify: %s %s: %s", p.Class, p.Path, p.Detail)
		}
	}
	return v
}

// TestCacheLifecycle converts two images that share layers into one
// cache and drives every cache command over it: ls, du, verify (and
// repair of a damaged entry, rebuilt by the next conversion), gc after an
// output is deleted, rm.
func TestCacheLifecycle(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	addr := startRegistry(t)
	imgA, imgB := standardImage(t, imagegen.Cases), standardImage(t, imagegen.Variant)
	srcA, srcB := "docker://"+addr+"/cases:v1", "docker://"+addr+"/variant:v1"
	for ref, img := range map[string]v1.Image{srcA: imgA, srcB: imgB} {
		if err := imagegen.Push(t.Context(), strings.TrimPrefix(ref, "docker://"), img); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cache, outA, outB := filepath.Join(dir, "cache"), filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for src, out := range map[string]string{srcA: outA, srcB: outB} {
		checkExit(t, runBin(t, binOptions{}, convertArgs(src, out, cache)...), 0, nil)
	}
	if t.Failed() {
		t.FailNow()
	}
	filesA, filesB := outputFiles(t, outA), outputFiles(t, outB)

	t.Run("permissions", func(t *testing.T) {
		if got := permOf(t, cache); got != 0o700 {
			t.Errorf("cache root mode %04o, want 0700", got)
		}
		checkLinked(t, cache, outA)
		checkLinked(t, cache, outB)
	})
	t.Run("ls", func(t *testing.T) { checkLs(t, cache, srcA, outA, srcB, outB) })
	t.Run("du", func(t *testing.T) {
		var u cacheUsageJSON
		cacheJSON(t, cache, "du", 0, &u)
		var total int64
		perKind := map[string]int64{}
		for e, size := range onDisk(t, cache) {
			kind, _, _ := strings.Cut(e, " ")
			perKind[kind] += size
			total += size
		}
		if u.Bytes != total || u.Entries != len(onDisk(t, cache)) {
			t.Errorf("du: %d entries, %d bytes; the files hold %d, %d", u.Entries, u.Bytes,
				len(onDisk(t, cache)), total)
		}
		for kind, want := range perKind {
			if got := u.Kinds[kind].Bytes; got != want {
				t.Errorf("du %s: %d bytes, the files hold %d", kind, got, want)
			}
		}
		checkExit(t, cacheRun(t, cache, "du"), 0, nil)
	})
	t.Run("verify", func(t *testing.T) {
		v := checkVerifyClean(t, cache)
		if v.Entries != len(onDisk(t, cache)) {
			t.Errorf("verify checked %d entries, the cache has %d", v.Entries,
				len(onDisk(t, cache)))
		}
	})
	t.Run("repair", func(t *testing.T) { testRepair(t, cache, srcB, outB, filesA, filesB) })
	t.Run("gc", func(t *testing.T) { testGCOutput(t, cache, srcA, outA, outB) })
	t.Run("rm", func(t *testing.T) { testRm(t, cache, srcA, outA) })
}

func permOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// checkLs checks that cache ls lists every entry on disk, with the images
// and outputs using each SIF.
func checkLs(t *testing.T, cache, srcA, outA, srcB, outB string) {
	var list []cacheEntryJSON
	cacheJSON(t, cache, "ls", 0, &list)
	listed := map[string]cacheEntryJSON{}
	for _, e := range list {
		listed[e.Kind+" "+e.Key] = e
		if !e.Meta {
			t.Errorf("ls: %s %s has no metadata", e.Kind, e.Key)
		}
		if time.Since(e.LastUsed) > time.Hour {
			t.Errorf("ls: %s %s last used %s", e.Kind, e.Key, e.LastUsed)
		}
	}
	disk := onDisk(t, cache)
	if got, want := slices.Sorted(maps.Keys(listed)), slices.Sorted(maps.Keys(disk)); !slices.Equal(got, want) {
		t.Errorf("ls lists %q, the cache holds %q", got, want)
	}
	users := map[string][]string{} // entry -> sources whose outputs hold it
	outs := map[string][]string{}
	for src, out := range map[string]string{srcA: outA, srcB: outB} {
		for _, f := range outputFiles(t, out) {
			users[f.Entry] = append(users[f.Entry], src)
			outs[f.Entry] = append(outs[f.Entry], out)
		}
	}
	shared := 0
	for entry, srcs := range users {
		e, ok := listed[entry]
		if !ok {
			t.Errorf("ls: no %s", entry)
			continue
		}
		if len(srcs) > 1 {
			shared++
		}
		for _, s := range srcs {
			if !slices.Contains(e.Images, s) {
				t.Errorf("ls: %s lists images %q, %s uses it", entry, e.Images, s)
			}
		}
		if got, want := slices.Sorted(slices.Values(e.Outputs)),
			slices.Sorted(slices.Values(outs[entry])); !slices.Equal(got, want) {
			t.Errorf("ls: %s held by %q, want %q", entry, got, want)
		}
		if disk[entry] != e.Size {
			t.Errorf("ls: %s size %d, the file has %d", entry, e.Size, disk[entry])
		}
	}
	if shared == 0 {
		t.Errorf("the two images share no SIF; the test needs them to")
	}
	r := cacheRun(t, cache, "ls")
	checkExit(t, r, 0, nil)
	if n := strings.Count(r.Stdout, "\n"); n != len(disk)+2 {
		t.Errorf("ls prints %d lines for %d entries:\n%s", n, len(disk), r.Stdout)
	}
}

// testRepair damages a layer only B uses: verify reports it and fails,
// --repair removes it, the next conversion of B rebuilds it.
func testRepair(t *testing.T, cache, srcB, outB string, filesA, filesB []outputFile) {
	var victim string
	for _, f := range filesB {
		if strings.HasPrefix(f.Entry, "layers ") && !slices.ContainsFunc(filesA,
			func(a outputFile) bool { return a.Entry == f.Entry }) {
			victim = f.Entry
		}
	}
	if victim == "" {
		t.Fatal("no layer only the variant uses")
	}
	before := sifDigests(t, outB)
	path := entryPath(cache, victim)
	flipByteOf(t, path, 4096)

	var v verifyJSON
	r := cacheJSON(t, cache, "verify", exitVerifyCode, &v)
	if len(v.Problems) != 1 || v.Problems[0].Class != "damaged" || v.Problems[0].Path != path ||
		v.Problems[0].Removed {
		t.Errorf("verify found %+v, want %s damaged", v.Problems, victim)
	}
	checkExit(t, cacheRun(t, cache, "verify"), exitVerifyCode,
		regexp.MustCompile(`verify cache .*: found 1 damaged or unverifiable entry`))
	t.Logf("verify: %s", r.Stdout)

	cacheJSON(t, cache, "verify", 0, &v, "--repair")
	if len(v.Problems) != 1 || !v.Problems[0].Removed {
		t.Errorf("verify --repair: %+v, want %s removed", v.Problems, victim)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("verify --repair left %s: %v", path, err)
	}
	checkVerifyClean(t, cache)

	checkExit(t, runBin(t, binOptions{}, convertArgs(srcB, outB, cache)...), 0, nil)
	for _, o := range readLayout(t, outB).Overlays {
		if rebuilt := "layers "+o.Key == victim; o.Reused == rebuilt {
			t.Errorf("after repair %s: reused %v", o.File, o.Reused)
		}
	}
	compareSIFs(t, sifDigests(t, outB), before)
	checkLinked(t, cache, outB)
	checkVerifyClean(t, cache)
}

// exitVerifyCode is the exit code of a failed verification.
const exitVerifyCode = 6

func flipByteOf(t *testing.T, path string, off int64) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
}

// testGCOutput deletes output B: gc must leave exactly what a cache that
// only ever converted A holds.
func testGCOutput(t *testing.T, cache, srcA, outA, outB string) {
	onlyA := filepath.Join(t.TempDir(), "cache")
	checkExit(t, runBin(t, binOptions{}, convertArgs(srcA, filepath.Join(t.TempDir(), "a"),
		onlyA)...), 0, nil)
	want := slices.Sorted(maps.Keys(onDisk(t, onlyA)))

	var dry gcJSON
	cacheJSON(t, cache, "gc", 0, &dry, "--older-than", "0s", "--dry-run")
	if len(dry.Removed) != 0 {
		t.Errorf("gc --dry-run with both outputs would remove %d entries", len(dry.Removed))
	}
	var keep gcJSON
	cacheJSON(t, cache, "gc", 0, &keep, "--older-than", "30d")
	if len(keep.Removed) != 0 {
		t.Errorf("gc --older-than 30d removed %d fresh entries", len(keep.Removed))
	}

	if err := os.RemoveAll(outB); err != nil {
		t.Fatal(err)
	}
	before := onDisk(t, cache)
	var rep gcJSON
	cacheJSON(t, cache, "gc", 0, &rep, "--older-than", "0s")
	after := onDisk(t, cache)
	if got := slices.Sorted(maps.Keys(after)); !slices.Equal(got, want) {
		t.Errorf("after gc the cache holds\n%q\nwant what converting A alone leaves\n%q", got,
			want)
	}
	var freed int64
	for _, e := range rep.Removed {
		freed += before[e.Kind+" "+e.Key]
		if _, ok := after[e.Kind+" "+e.Key]; ok {
			t.Errorf("gc reports %s %s removed, it is still there", e.Kind, e.Key)
		}
	}
	if len(rep.Removed) != len(before)-len(after) || rep.Freed != freed {
		t.Errorf("gc reports %d entries (%d bytes) removed; %d went (%d bytes)",
			len(rep.Removed), rep.Freed, len(before)-len(after), freed)
	}
	if len(rep.StaleOutputs) != 1 || rep.StaleOutputs[0] != outB {
		t.Errorf("gc dropped the records of %q, want %s", rep.StaleOutputs, outB)
	}
	checkLinked(t, cache, outA)
	checkVerifyClean(t, cache)
}

// testRm removes A's config overlay by key prefix, checks the refusals,
// and converts A again.
func testRm(t *testing.T, cache, srcA, outA string) {
	var config string
	for _, f := range outputFiles(t, outA) {
		if strings.HasPrefix(f.Entry, "configs ") {
			config = f.Entry
		}
	}
	key := strings.TrimPrefix(config, "configs sha256:")
	r := cacheRun(t, cache, "rm", key[:12])
	checkExit(t, r, 0, nil)
	if !strings.Contains(r.Stdout, "removed configs sha256:"+key) {
		t.Errorf("rm printed %q", r.Stdout)
	}
	if _, err := os.Stat(entryPath(cache, config)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rm left %s: %v", config, err)
	}
	checkExit(t, cacheRun(t, cache, "rm", key[:12]), 3,
		regexp.MustCompile(`no such cache entry`))

	// A digit two keys start with is ambiguous.
	byDigit := map[string]map[string]bool{}
	for e := range onDisk(t, cache) {
		_, k, _ := strings.Cut(e, " sha256:")
		if byDigit[k[:1]] == nil {
			byDigit[k[:1]] = map[string]bool{}
		}
		byDigit[k[:1]][k] = true
	}
	for d, keys := range byDigit {
		if len(keys) > 1 {
			checkExit(t, cacheRun(t, cache, "rm", d), 2, regexp.MustCompile(`ambiguous`))
			break
		}
	}
	checkExit(t, cacheRun(t, cache, "rm", "latest"), 2, regexp.MustCompile(`bad cache key`))

	checkExit(t, runBin(t, binOptions{}, convertArgs(srcA, outA, cache)...), 0, nil)
	if l := readLayout(t, outA); l.ConfigOverlay.Reused {
		t.Errorf("the removed config overlay was not built again")
	}
	checkLinked(t, cache, outA)
	checkVerifyClean(t, cache)
}

// convertJob is one conversion of TestCacheConcurrent.
type convertJob struct {
	name string
	src  string
	img  v1.Image
	args []string // besides convertArgs'
}

// TestCacheConcurrent runs three conversions of overlapping images into
// one cache while `cache gc --older-than 0s` runs in a loop, and kills one
// conversion with SIGKILL at a random moment. Afterwards cache verify must
// be clean and every finished output's SIFs must be its cache entries,
// byte for byte the same as a clean conversion's, and (as root) mount to
// the image's tree. OCI2LAYERS_E2E_SEED repeats the random choices.
func TestCacheConcurrent(t *testing.T) {
	requireBinary(t)
	requireMksquashfs(t)
	addr := startRegistry(t)
	imgA, imgB := standardImage(t, imagegen.Cases), standardImage(t, imagegen.Variant)
	srcA, srcB := "docker://"+addr+"/cases:v1", "docker://"+addr+"/variant:v1"
	for ref, img := range map[string]v1.Image{srcA: imgA, srcB: imgB} {
		if err := imagegen.Push(t.Context(), strings.TrimPrefix(ref, "docker://"), img); err != nil {
			t.Fatal(err)
		}
	}
	jobs := []convertJob{
		{"cases", srcA, imgA, nil},
		{"variant", srcB, imgB, nil},
		{"variant-base-2", srcB, imgB, []string{"--base-layers", "2"}},
	}
	dir := t.TempDir()

	// Clean conversions, one after the other, give the wanted bytes.
	clean := map[string]map[string]string{}
	var span time.Duration
	for _, j := range jobs {
		out := filepath.Join(dir, "clean-"+j.name)
		r := runBin(t, binOptions{}, convertArgs(j.src, out, filepath.Join(dir, "clean-cache"),
			j.args...)...)
		checkExit(t, r, 0, nil)
		clean[j.name] = sifDigests(t, out)
		span += r.Elapsed
	}
	if t.Failed() {
		t.FailNow()
	}

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("OCI2LAYERS_E2E_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("OCI2LAYERS_E2E_SEED: %v", err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	victim := rng.IntN(len(jobs))
	delay := time.Duration(rng.Int64N(int64(span)))
	t.Logf("seed %d (OCI2LAYERS_E2E_SEED=%d repeats it): killing %s after %s; "+
		"the three clean conversions took %s", seed, seed, jobs[victim].name,
		delay.Round(time.Millisecond), span.Round(time.Millisecond))

	cache := filepath.Join(dir, "cache")
	if err := os.Mkdir(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	stopGC := startGCLoop(t, cache)
	finished := runConcurrently(t, dir, cache, jobs, victim, delay)
	stopGC()

	if got := permOf(t, cache); got != 0o700 {
		t.Errorf("cache root made 0755 has mode %04o after use, want 0700", got)
	}
	checkFinishedEntries(t, cache)
	checkNoStrayMksquashfs(t, cache)
	// A kill between writing an entry's metadata and the entry leaves the
	// metadata, which verify reports as a leftover and gc removes.
	v := checkVerify(t, cache, false)
	t.Logf("after the run: verify checked %d entries", v.Entries)
	for _, j := range finished {
		t.Run(j.name, func(t *testing.T) { checkFinishedOutput(t, dir, cache, j, clean[j.name]) })
	}

	// One more pass must keep every finished output's entries, and remove
	// whatever the killed conversion left.
	var rep gcJSON
	cacheJSON(t, cache, "gc", 0, &rep, "--older-than", "0s")
	t.Logf("final gc removed %d entries", len(rep.Removed))
	checkVerify(t, cache, true)
	for _, j := range finished {
		checkLinked(t, cache, filepath.Join(dir, "out-"+j.name))
	}
}

// startGCLoop runs `cache gc --older-than 0s` on cache again and again
// until the returned function is called; every run must succeed.
func startGCLoop(t *testing.T, cache string) func() {
	t.Helper()
	bin := requireBinary(t)
	env := hermeticEnv(t)
	var stop atomic.Bool
	var wg sync.WaitGroup
	runs := 0
	wg.Go(func() {
		for !stop.Load() {
			cmd := exec.Command(bin, "cache", "gc", "--cache", cache, "--older-than", "0s",
				"--json")
			cmd.Env = env
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Errorf("cache gc during the conversions: %v\n%s", err, stderr.String())
				return
			}
			var rep gcJSON
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Errorf("cache gc --json: %v", err)
				return
			}
			runs++
		}
	})
	return func() {
		stop.Store(true)
		wg.Wait()
		t.Logf("cache gc ran %d times during the conversions", runs)
	}
}

// runConcurrently starts every job at once, kills jobs[victim] after delay
// (unless it has finished), and returns the jobs that finished. Every job
// but the victim must succeed.
func runConcurrently(t *testing.T, dir, cache string, jobs []convertJob, victim int,
	delay time.Duration) []convertJob {
	t.Helper()
	bin := requireBinary(t)
	type done struct {
		err    error
		stderr string
	}
	results := make([]chan done, len(jobs))
	cmds := make([]*exec.Cmd, len(jobs))
	for i, j := range jobs {
		cmd := exec.Command(bin, convertArgs(j.src, filepath.Join(dir, "out-"+j.name), cache,
			j.args...)...)
		cmd.Env = hermeticEnv(t)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", j.name, err)
		}
		cmds[i], results[i] = cmd, make(chan done, 1)
		go func() { results[i] <- done{cmd.Wait(), stderr.String()} }()
	}

	killed := false
	select {
	case res := <-results[victim]:
		results[victim] <- res
	case <-time.After(delay):
		if err := cmds[victim].Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s: %v", jobs[victim].name, err)
		}
		killed = true
	}

	var finished []convertJob
	for i, j := range jobs {
		var res done
		select {
		case res = <-results[i]:
		case <-time.After(convertTimeout):
			cmds[i].Process.Kill()
			t.Fatalf("%s still running after %s", j.name, convertTimeout)
		}
		switch {
		case i == victim && killed:
			t.Logf("%s: killed (%v)", j.name, res.err)
			if res.err == nil {
				finished = append(finished, j)
			}
		case res.err != nil:
			t.Errorf("%s: %v\n%s", j.name, res.err, tail(res.stderr, 20))
		default:
			finished = append(finished, j)
		}
	}
	return finished
}

// checkFinishedOutput checks one finished conversion: its SIFs are hard
// links of cache entries that verify accepts, and the clean conversion's
// bytes; as root, the stack mounts to the image's tree.
func checkFinishedOutput(t *testing.T, dir, cache string, j convertJob,
	clean map[string]string) {
	out := filepath.Join(dir, "out-"+j.name)
	checkLinked(t, cache, out)
	compareSIFs(t, sifDigests(t, out), clean)
	for _, f := range outputFiles(t, out) {
		sum, err := fileSHA256(entryPath(cache, f.Entry))
		if err != nil {
			t.Errorf("%s: %v", f.Entry, err)
			continue
		}
		meta, err := os.ReadFile(filepath.Join(cache, "v1", "meta",
			strings.Replace(strings.Replace(f.Entry, " sha256:", "/", 1), " ", "/", 1)+".json"))
		if err != nil {
			t.Errorf("%s: no metadata: %v", f.Entry, err)
			continue
		}
		if !strings.Contains(string(meta), fmt.Sprintf(`"sha256": "sha256:%s"`, sum)) {
			t.Errorf("%s: metadata does not record sha256 %s:\n%s", f.Entry, sum, meta)
		}
	}
	if os.Geteuid() == 0 {
		checkTree(t, readResult(t, out), j.img)
	}
}
