package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// syncReport is the part of `sync --report` the tests read.
type syncReport struct {
	Output    string `json:"output"`
	DryRun    bool   `json:"dry_run"`
	Converted int    `json:"converted"`
	Unchanged int    `json:"unchanged"`
	Failed    int    `json:"failed"`
	Pending   int    `json:"would_convert"`
	Images    []struct {
		Source         string `json:"source"`
		Tag            string `json:"tag"`
		Dir            string `json:"dir"`
		Status         string `json:"status"`
		Reason         string `json:"reason"`
		Digest         string `json:"digest"`
		ManifestDigest string `json:"manifest_digest"`
		Error          string `json:"error"`
	} `json:"images"`
	Pruned []struct {
		Dir     string `json:"dir"`
		Removed bool   `json:"removed"`
	} `json:"pruned"`
}

// statuses returns "REPO:TAG STATUS" for each image of the report.
func (r syncReport) statuses() []string {
	var out []string
	for _, it := range r.Images {
		out = append(out, it.Source[strings.Index(it.Source, "/")+1:]+" "+it.Status)
	}
	return out
}

// syncSpec is a two-layer image: a bottom layer every sync image shares,
// and a top layer of its own made from top.
func syncSpec(top string) imagegen.Spec {
	return imagegen.Spec{Layers: []imagegen.Layer{
		{Comment: "sync: shared", Entries: []imagegen.Entry{
			imagegen.Dir("etc"), imagegen.File("etc/os-release", "ID=sync\n"),
			imagegen.Dir("usr"), imagegen.RandomFile("usr/data", 256<<10, 7),
		}},
		{Comment: "sync: " + top, Entries: []imagegen.Entry{
			imagegen.Dir("app"), imagegen.File("app/name", top+"\n"),
		}},
	}, Config: imagegen.Config{Cmd: []string{"/bin/sh"}}}
}

// syncFixture is a registry behind a counting proxy, a sync file and the
// images pushed so far.
type syncFixture struct {
	reg    string // the registry's host:port
	px     *countingProxy
	dir    string // holds sync.yaml, the cache and the report
	out    string // the output root
	images map[string]v1.Image
}

func newSyncFixture(t *testing.T) *syncFixture {
	t.Helper()
	requireBinary(t)
	requireMksquashfs(t)
	reg := startRegistry(t)
	dir := t.TempDir()
	return &syncFixture{reg: reg, px: startProxy(t, reg), dir: dir,
		out: filepath.Join(dir, "out"), images: map[string]v1.Image{}}
}

// push uploads the image made from top as repo:tag, straight to the
// registry (the proxy does not count it).
func (f *syncFixture) push(t *testing.T, repoTag, top string) v1.Image {
	t.Helper()
	img := buildImage(t, syncSpec(top))
	if err := imagegen.Push(t.Context(), f.reg+"/"+repoTag, img); err != nil {
		t.Fatal(err)
	}
	f.images[repoTag] = img
	return img
}

// writeFile writes the sync file, its images reached through the proxy;
// %s in images stands for the proxy's address.
func (f *syncFixture) writeFile(t *testing.T, images string) string {
	t.Helper()
	y := "output: out\npath: \"{repo}/{tag}\"\nplain_http: true\nimages:\n" +
		strings.ReplaceAll(images, "%s", f.px.Addr)
	file := filepath.Join(f.dir, "sync.yaml")
	if err := os.WriteFile(file, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// sync runs `oci2layers sync` on the sync file with the fixture's cache and
// returns the run and its report.
func (f *syncFixture) sync(t *testing.T, code int, args ...string) (binRun, syncReport) {
	t.Helper()
	report := filepath.Join(f.dir, "report.json")
	os.Remove(report)
	argv := append([]string{"sync", "-f", filepath.Join(f.dir, "sync.yaml"), "--cache",
		filepath.Join(f.dir, "cache"), "--report", report, "--quiet"}, args...)
	r := runBin(t, binOptions{Timeout: 5 * time.Minute}, argv...)
	var want *regexp.Regexp
	if code == 1 {
		want = regexp.MustCompile(`^oci2layers: sync: \d+ of \d+ images failed$`)
	}
	checkExit(t, r, code, want)
	if t.Failed() {
		t.Fatalf("stdout:\n%s", r.Stdout)
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("read the report: %v", err)
	}
	var rep syncReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("parse the report: %v\n%s", err, data)
	}
	return r, rep
}

// checkOutput checks the output of repo:tag against the image pushed there.
func (f *syncFixture) checkOutput(t *testing.T, repo, tag string) {
	t.Helper()
	img := f.images[repo+":"+tag]
	src := fmt.Sprintf("docker://%s/%s:%s@%s", f.px.Addr, repo, tag, digest(t, img))
	checkContract(t, readResult(t, filepath.Join(f.out, repo, tag)),
		contract{Source: src, Image: img})
}

// manifestGets counts the proxy's GET requests for manifests.
func manifestGets(p *countingProxy) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	gets := map[string]int{}
	for key, n := range p.counts {
		if strings.HasPrefix(key, "GET ") && strings.Contains(key, "/manifests/") {
			gets[key] += n
		}
	}
	return gets
}

// snapshot lists every file below root with its size and modification
// time, to tell whether a run wrote anything.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const syncImages = `  - registry: "%s"
    repository: app
    newest_semver: 2
  - registry: "%s"
    repository: tools
    tag_regex: "^v[0-9]+$"
  - registry: "%s"
    repository: base
    tags: [a, b]
`

// TestSync syncs three repositories selected by version, expression and
// list; syncs again with nothing changed (HEAD requests only); shows a
// change with --dry-run, then syncs it (only the new layers are fetched);
// and prunes a deleted tag.
func TestSync(t *testing.T) {
	f := newSyncFixture(t)
	for _, rt := range []string{"app:1.0.0", "app:1.1.0", "app:2.0.0-rc1", "app:1.2.0",
		"app:latest", "tools:v1", "tools:v2", "tools:other", "base:a", "base:b"} {
		f.push(t, rt, rt)
	}
	f.writeFile(t, syncImages)

	_, rep := f.sync(t, 0, "--jobs", "2")
	want := []string{"app:1.2.0 converted", "app:1.1.0 converted", "tools:v1 converted",
		"tools:v2 converted", "base:a converted", "base:b converted"}
	if got := rep.statuses(); !slices.Equal(got, want) {
		t.Fatalf("first sync: %q, want %q", got, want)
	}
	if rep.Converted != 6 || rep.Output != f.out {
		t.Errorf("first sync: %d converted into %s, want 6 into %s", rep.Converted,
			rep.Output, f.out)
	}
	for _, rt := range []string{"app:1.2.0", "app:1.1.0", "tools:v1", "tools:v2", "base:a",
		"base:b"} {
		repo, tag, _ := strings.Cut(rt, ":")
		f.checkOutput(t, repo, tag)
	}
	// Six images share their bottom layer. Usually it is fetched once, but
	// not always: a conversion that waited for another's download of it
	// takes only its index, and when it then takes the base's build lock
	// first it must fetch the layer again. Logged, not checked.
	shared := layerDigests(t, f.images["base:a"])[0]
	if n := f.px.BlobGets()[shared]; n != 1 {
		t.Logf("first sync fetched the shared layer %d times", n)
	}

	t.Run("unchanged", func(t *testing.T) { f.testUnchanged(t) })
	t.Run("changed", func(t *testing.T) { f.testChanged(t) })
	t.Run("prune", func(t *testing.T) { f.testPrune(t) })
}

// testUnchanged syncs again: every tag is unchanged and only HEAD requests
// reach the registry.
func (f *syncFixture) testUnchanged(t *testing.T) {
	f.px.Reset()
	before := snapshot(t, f.out)
	r, rep := f.sync(t, 0)
	if rep.Unchanged != 6 || rep.Converted != 0 {
		t.Errorf("second sync: %d unchanged, %d converted; want 6, 0\n%s", rep.Unchanged,
			rep.Converted, r.Stdout)
	}
	if gets := f.px.BlobGets(); len(gets) != 0 {
		t.Errorf("second sync fetched blobs %v", gets)
	}
	if gets := manifestGets(f.px); len(gets) != 0 {
		t.Errorf("second sync fetched manifests %v", gets)
	}
	for _, rt := range []string{"app/manifests/1.2.0", "tools/manifests/v1",
		"base/manifests/b"} {
		if n := f.px.Count(http.MethodHead, "/v2/"+rt); n != 1 {
			t.Errorf("HEAD /v2/%s: %d requests, want 1", rt, n)
		}
	}
	after := snapshot(t, f.out)
	delete(before, filepath.Join(f.out, ".oci2layers-sync.lock"))
	delete(after, filepath.Join(f.out, ".oci2layers-sync.lock"))
	if !maps.Equal(before, after) {
		t.Errorf("an unchanged sync rewrote the outputs")
	}
	if !strings.Contains(r.Stdout, "sync: 0 converted, 6 unchanged, 0 failed") {
		t.Errorf("summary:\n%s", r.Stdout)
	}
}

// testChanged pushes a new release and changes one tag's top layer: a dry
// run shows both and writes nothing, then a sync converts exactly those
// two, fetching only their new blobs.
func (f *syncFixture) testChanged(t *testing.T) {
	f.push(t, "app:1.3.0", "app:1.3.0")
	f.push(t, "base:a", "base:a changed")
	newBlobs := map[string]int{}
	for _, rt := range []string{"app:1.3.0", "base:a"} {
		img := f.images[rt]
		newBlobs[layerDigests(t, img)[1]] = 1
		newBlobs[configName(t, img)] = 1
	}

	f.px.Reset()
	before := snapshot(t, f.out)
	r, rep := f.sync(t, 0, "--dry-run")
	want := []string{"app:1.3.0 would-convert", "app:1.2.0 unchanged", "tools:v1 unchanged",
		"tools:v2 unchanged", "base:a would-convert", "base:b unchanged"}
	if got := rep.statuses(); !slices.Equal(got, want) || !rep.DryRun || rep.Pending != 2 {
		t.Errorf("dry run: %q (dry_run %v, would_convert %d), want %q\n%s", got, rep.DryRun,
			rep.Pending, want, r.Stdout)
	}
	if !maps.Equal(before, snapshot(t, f.out)) {
		t.Errorf("the dry run wrote to the output root")
	}
	if gets, mgets := f.px.BlobGets(), manifestGets(f.px); len(gets)+len(mgets) != 0 {
		t.Errorf("the dry run fetched blobs %v, manifests %v", gets, mgets)
	}

	f.px.Reset()
	r, rep = f.sync(t, 0)
	want = []string{"app:1.3.0 converted", "app:1.2.0 unchanged", "tools:v1 unchanged",
		"tools:v2 unchanged", "base:a converted", "base:b unchanged"}
	if got := rep.statuses(); !slices.Equal(got, want) || rep.Converted != 2 ||
		rep.Unchanged != 4 {
		t.Errorf("sync after the change: %q, want %q", got, want)
	}
	if !strings.Contains(r.Stdout, "sync: 2 converted, 4 unchanged, 0 failed") {
		t.Errorf("summary:\n%s", r.Stdout)
	}
	if gets := f.px.BlobGets(); !maps.Equal(gets, newBlobs) {
		t.Errorf("blob GETs %v, want exactly the new top layers and configs %v", gets,
			newBlobs)
	}
	f.checkOutput(t, "app", "1.3.0")
	f.checkOutput(t, "base", "a")
	for _, it := range rep.Images {
		if it.Tag == "a" && it.Reason != "digest changed" {
			t.Errorf("base:a converted because %q, want digest changed", it.Reason)
		}
	}
}

// testPrune deletes tools:v2 from the registry; --prune removes its output
// and that of app:1.1.0, which the newest two releases no longer include,
// and nothing else.
func (f *syncFixture) testPrune(t *testing.T) {
	deleteManifest(t, f.reg, "tools", digest(t, f.images["tools:v2"]))
	mine := filepath.Join(f.out, "tools", "notes.txt")
	if err := os.WriteFile(mine, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	r, rep := f.sync(t, 0, "--prune")
	var pruned []string
	for _, p := range rep.Pruned {
		if !p.Removed {
			t.Errorf("%s listed but not removed", p.Dir)
		}
		pruned = append(pruned, p.Dir)
	}
	if want := []string{"app/1.1.0", "tools/v2"}; !slices.Equal(pruned, want) {
		t.Errorf("pruned %q, want %q\n%s", pruned, want, r.Stdout)
	}
	for _, d := range []string{"app/1.1.0", "tools/v2"} {
		if _, err := os.Lstat(filepath.Join(f.out, d)); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", d, err)
		}
	}
	for _, p := range []string{mine, filepath.Join(f.out, "tools/v1/image.json"),
		filepath.Join(f.out, "app/1.2.0/base.sif")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
}

// deleteManifest deletes a manifest, and so every tag on it, through the
// registry API.
func deleteManifest(t *testing.T, addr, repo, digest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete,
		"http://"+addr+manifestURLPath(repo, digest), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete %s@%s: %s", repo, digest, resp.Status)
	}
}

// TestSyncFailure syncs a good image and one whose top layer climbs out of
// its root: the bad one is reported failed with its reason, the good one
// is converted, and the exit status is 1.
func TestSyncFailure(t *testing.T) {
	f := newSyncFixture(t)
	f.push(t, "good:v1", "good")
	bad, err := mutate.AppendLayers(hostileBase(t), rawLayer(t, rawFile("../x", "out\n")))
	if err != nil {
		t.Fatal(err)
	}
	if err := imagegen.Push(t.Context(), f.reg+"/bad:latest", bad); err != nil {
		t.Fatal(err)
	}
	f.writeFile(t, `  - registry: "%s"
    repository: good
    tags: [v1]
  - registry: "%s"
    repository: bad
    tags: [latest]
`)
	r, rep := f.sync(t, 1)
	want := []string{"good:v1 converted", "bad:latest failed"}
	if got := rep.statuses(); !slices.Equal(got, want) || rep.Failed != 1 {
		t.Fatalf("sync: %q (%d failed), want %q", got, rep.Failed, want)
	}
	if e := rep.Images[1].Error; !strings.Contains(e, "../x") {
		t.Errorf("bad:latest failed with %q, want the entry named", e)
	}
	if !regexp.MustCompile(`(?m)^failed +\S+/bad:latest \S+: .*\.\./x`).MatchString(r.Stdout) {
		t.Errorf("summary does not give the reason:\n%s", r.Stdout)
	}
	f.checkOutput(t, "good", "v1")
	if _, err := os.Lstat(filepath.Join(f.out, "bad")); !os.IsNotExist(err) {
		t.Errorf("the failed image left an output (%v)", err)
	}
	if _, err := os.Lstat(filepath.Join(f.dir, "x")); !os.IsNotExist(err) {
		t.Errorf("the hostile layer wrote outside (%v)", err)
	}
}

// TestSyncTiming measures a sync of 20 tags with nothing changed, and with
// one tag's top layer changed.
func TestSyncTiming(t *testing.T) {
	f := newSyncFixture(t)
	var tags []string
	for i := range 20 {
		tag := fmt.Sprintf("t%02d", i)
		f.push(t, "timing:"+tag, tag)
		tags = append(tags, tag)
	}
	f.writeFile(t, `  - registry: "%s"
    repository: timing
    tags: [`+strings.Join(tags, ", ")+`]
`)
	r, rep := f.sync(t, 0)
	if rep.Converted != 20 {
		t.Fatalf("first sync converted %d, want 20", rep.Converted)
	}
	t.Logf("first sync of 20 tags: %s", r.Elapsed.Round(time.Millisecond))

	r, rep = f.sync(t, 0)
	if rep.Unchanged != 20 {
		t.Errorf("unchanged sync: %d unchanged, want 20", rep.Unchanged)
	}
	t.Logf("sync of 20 unchanged tags: %s", r.Elapsed.Round(time.Millisecond))

	f.push(t, "timing:t07", "t07 changed")
	r, rep = f.sync(t, 0)
	if rep.Converted != 1 || rep.Unchanged != 19 {
		t.Errorf("sync after a change: %d converted, %d unchanged; want 1, 19",
			rep.Converted, rep.Unchanged)
	}
	t.Logf("sync of 20 tags, one top layer changed: %s", r.Elapsed.Round(time.Millisecond))
}
