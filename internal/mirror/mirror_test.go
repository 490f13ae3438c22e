package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/oci2layers/oci2layers/internal/convert"
)

// fixture is an in-process registry that records requests, and an output
// root.
type fixture struct {
	host string
	root string

	mu   sync.Mutex
	reqs []string // "METHOD path"
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: filepath.Join(t.TempDir(), "out")}
	next := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.host = srv.Listener.Addr().String()
	return f
}

// requests returns and forgets the recorded requests that contain part.
func (f *fixture) requests(part string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.reqs {
		if strings.Contains(r, part) {
			out = append(out, r)
		}
	}
	f.reqs = nil
	return out
}

// push uploads a new random image as repo:tag and returns its digest.
func (f *fixture) push(t *testing.T, repoTag string) v1.Hash {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(f.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (f *fixture) delete(t *testing.T, repoTag string) {
	t.Helper()
	r, err := name.ParseReference(f.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(r); err != nil {
		t.Fatal(err)
	}
}

// config parses a sync file whose images use this registry over plain
// HTTP; %s in images stands for the registry.
func (f *fixture) config(t *testing.T, images string) *Config {
	t.Helper()
	y := fmt.Sprintf("output: %s\nplain_http: true\nimages:\n%s", f.root,
		strings.ReplaceAll(images, "%s", f.host))
	cfg, err := Parse([]byte(y), filepath.Join(f.root, "..", "sync.yaml"))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, y)
	}
	return cfg
}

// dir is the default output directory of repo:tag.
func (f *fixture) dir(repo, tag string) string {
	return strings.ReplaceAll(f.host, ":", "_") + "/" + repo + "/" + tag
}

// fakeConvert stands in for convert.Run: it writes a made-up output for
// the digest the source is pinned to.
type fakeConvert struct {
	delay time.Duration
	fail  string // a conversion whose source contains it fails
	// hook, when set, runs at the start of each conversion with its number.
	hook func(n int)

	mu        sync.Mutex
	sources   []string
	platforms []string
	running   int
	peak      int
}

func (fc *fakeConvert) run(ctx context.Context, opts convert.Options) (*convert.Result, error) {
	fc.mu.Lock()
	fc.sources = append(fc.sources, opts.Source)
	fc.platforms = append(fc.platforms, opts.Registry.Platform)
	n := len(fc.sources)
	fc.running++
	fc.peak = max(fc.peak, fc.running)
	fc.mu.Unlock()
	defer func() {
		fc.mu.Lock()
		fc.running--
		fc.mu.Unlock()
	}()
	if fc.hook != nil {
		fc.hook(n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(fc.delay):
	}
	if fc.fail != "" && strings.Contains(opts.Source, fc.fail) {
		return nil, errors.New("unpack layer 2: escapes the layer root")
	}
	_, digest, ok := strings.Cut(opts.Source, "@")
	if !ok {
		return nil, fmt.Errorf("source %s is not pinned to a digest", opts.Source)
	}
	if err := fakeOutput(opts.OutDir, digest); err != nil {
		return nil, err
	}
	return &convert.Result{ManifestDigest: digest,
		Overlays: []convert.OverlayFile{{Reused: true}}}, nil
}

func (fc *fakeConvert) calls() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Clone(fc.sources)
}

func runSync(t *testing.T, cfg *Config, fc *fakeConvert, opts Options) *Report {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	s := &syncer{cfg: cfg, opts: opts, convert: fc.run}
	rep, err := s.run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return rep
}

// statuses returns "source status [reason]" per item.
func statuses(rep *Report) []string {
	var out []string
	for _, it := range rep.Images {
		s := it.Source[strings.Index(it.Source, "/")+1:] + " " + string(it.Status)
		if it.Reason != "" {
			s += " " + it.Reason
		}
		out = append(out, s)
	}
	return out
}

func checkStatuses(t *testing.T, rep *Report, want ...string) {
	t.Helper()
	if got := statuses(rep); !slices.Equal(got, want) {
		t.Errorf("statuses\n%q\nwant\n%q", got, want)
	}
}

const threeRepos = `  - registry: "%s"
    repository: app
    newest_semver: 2
  - registry: "%s"
    repository: tools
    tag_regex: "^v[0-9]+$"
  - registry: "%s"
    repository: base
    tags: [a]
`

func pushThreeRepos(t *testing.T, f *fixture) map[string]v1.Hash {
	t.Helper()
	digests := map[string]v1.Hash{}
	for _, rt := range []string{"app:1.0.0", "app:1.1.0", "app:2.0.0-rc1", "app:1.2.0",
		"app:latest", "tools:v1", "tools:v2", "tools:other", "base:a"} {
		digests[rt] = f.push(t, rt)
	}
	return digests
}

func TestRunConvertsThenSkips(t *testing.T) {
	f := newFixture(t)
	digests := pushThreeRepos(t, f)
	cfg := f.config(t, threeRepos)
	fc := &fakeConvert{}

	rep := runSync(t, cfg, fc, Options{})
	checkStatuses(t, rep, "app:1.2.0 converted new", "app:1.1.0 converted new",
		"tools:v1 converted new", "tools:v2 converted new", "base:a converted new")
	if rep.Converted != 5 || !rep.OK() {
		t.Errorf("report counts %d converted, ok %v", rep.Converted, rep.OK())
	}
	want := "docker://" + f.host + "/app:1.2.0@" + digests["app:1.2.0"].String()
	if !slices.Contains(fc.calls(), want) {
		t.Errorf("conversions %q, want one of %q (pinned to the HEAD digest)", fc.calls(), want)
	}
	for _, it := range rep.Images {
		if it.Dir != f.dir(it.Repository, it.Tag) || it.Digest == "" ||
			it.ManifestDigest != it.Digest {
			t.Errorf("item %+v", it)
		}
		if !intact(filepath.Join(f.root, it.Dir), it.Digest) {
			t.Errorf("%s: output missing", it.Dir)
		}
	}
	st, err := loadState(f.root, StateFile)
	if err != nil {
		t.Fatal(err)
	}
	rec := st.Outputs[f.dir("base", "a")]
	if rec == nil || rec.Digest != digests["base:a"].String() || !rec.Created ||
		!slices.Equal(rec.MadeDirs, []string{strings.ReplaceAll(f.host, ":", "_") + "/base"}) {
		t.Errorf("state of base:a = %+v", rec)
	}

	// Again: nothing changed, so nothing is converted and no manifest or
	// blob is fetched.
	f.requests("")
	fc = &fakeConvert{}
	rep = runSync(t, cfg, fc, Options{})
	checkStatuses(t, rep, "app:1.2.0 unchanged", "app:1.1.0 unchanged", "tools:v1 unchanged",
		"tools:v2 unchanged", "base:a unchanged")
	if calls := fc.calls(); len(calls) != 0 {
		t.Errorf("unchanged run converted %q", calls)
	}
	if gets := f.requests("GET /v2/" + ""); slices.ContainsFunc(gets, func(s string) bool {
		return strings.Contains(s, "/manifests/") || strings.Contains(s, "/blobs/")
	}) {
		t.Errorf("unchanged run fetched %q", gets)
	}

	// A changed tag, a damaged output and an unchanged rest.
	old := digests["tools:v1"]
	f.push(t, "tools:v1")
	if err := os.Remove(filepath.Join(f.root, f.dir("base", "a"), "run")); err != nil {
		t.Fatal(err)
	}
	rep = runSync(t, cfg, &fakeConvert{}, Options{})
	checkStatuses(t, rep, "app:1.2.0 unchanged", "app:1.1.0 unchanged",
		"tools:v1 converted digest changed", "tools:v2 unchanged",
		"base:a converted output incomplete")
	if it := rep.Images[2]; it.PreviousDigest != old.String() || it.Digest == old.String() {
		t.Errorf("changed item digests %s (previous %s), want previous %s", it.Digest,
			it.PreviousDigest, old)
	}

	// New options convert everything again.
	cfg = f.config(t, strings.ReplaceAll(threeRepos, "    repository: app\n",
		"    repository: app\n    compression: xz\n"))
	rep = runSync(t, cfg, &fakeConvert{}, Options{})
	checkStatuses(t, rep, "app:1.2.0 converted options changed",
		"app:1.1.0 converted options changed", "tools:v1 unchanged", "tools:v2 unchanged",
		"base:a unchanged")
}

func TestRunFailureIsolated(t *testing.T) {
	f := newFixture(t)
	pushThreeRepos(t, f)
	cfg := f.config(t, threeRepos+`  - registry: "%s"
    repository: base
    tags: [missing]
    path: "missing/{tag}"
`)
	fc := &fakeConvert{fail: "/tools:v2@"}
	rep := runSync(t, cfg, fc, Options{Jobs: 3})
	checkStatuses(t, rep, "app:1.2.0 converted new", "app:1.1.0 converted new",
		"tools:v1 converted new", "tools:v2 failed new", "base:a converted new",
		"base:missing failed")
	if rep.Failed != 2 || rep.Converted != 4 || rep.OK() {
		t.Errorf("counts: %d failed, %d converted, ok %v", rep.Failed, rep.Converted, rep.OK())
	}
	if e := rep.Images[3].Error; !strings.Contains(e, "escapes the layer root") {
		t.Errorf("tools:v2 error %q, want the conversion's", e)
	}
	if e := rep.Images[5].Error; !strings.Contains(e, "not found") {
		t.Errorf("base:missing error %q, want not found", e)
	}
	st, err := loadState(f.root, StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if rec := st.Outputs[f.dir("tools", "v2")]; rec != nil {
		t.Errorf("failed conversion recorded: %+v", rec)
	}
	if len(st.Outputs) != 4 {
		t.Errorf("state has %d outputs, want 4", len(st.Outputs))
	}
}

func TestRunDryRun(t *testing.T) {
	f := newFixture(t)
	pushThreeRepos(t, f)
	cfg := f.config(t, threeRepos)
	fc := &fakeConvert{}
	rep := runSync(t, cfg, fc, Options{DryRun: true, Prune: true})
	checkStatuses(t, rep, "app:1.2.0 would-convert new", "app:1.1.0 would-convert new",
		"tools:v1 would-convert new", "tools:v2 would-convert new",
		"base:a would-convert new")
	if rep.Pending != 5 || len(fc.calls()) != 0 {
		t.Errorf("%d pending, conversions %q", rep.Pending, fc.calls())
	}
	if _, err := os.Stat(f.root); !os.IsNotExist(err) {
		t.Errorf("dry run made the output root (%v)", err)
	}

	runSync(t, cfg, &fakeConvert{}, Options{})
	before, err := os.ReadFile(filepath.Join(f.root, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	f.push(t, "tools:v2")
	f.delete(t, "tools:v1")
	f.requests("")
	rep = runSync(t, cfg, fc, Options{DryRun: true, Prune: true})
	checkStatuses(t, rep, "app:1.2.0 unchanged", "app:1.1.0 unchanged",
		"tools:v2 would-convert digest changed", "base:a unchanged")
	if len(rep.Pruned) != 1 || rep.Pruned[0].Dir != f.dir("tools", "v1") || rep.Pruned[0].Removed {
		t.Errorf("dry run pruned %+v, want tools/v1 listed but not removed", rep.Pruned)
	}
	after, err := os.ReadFile(filepath.Join(f.root, StateFile))
	if err != nil || string(after) != string(before) {
		t.Errorf("dry run changed the state file (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, f.dir("tools", "v1"))); err != nil {
		t.Errorf("dry run removed tools/v1: %v", err)
	}
	for _, r := range f.requests("") {
		if strings.HasPrefix(r, "GET") && strings.Contains(r, "/manifests/") {
			t.Errorf("dry run fetched a manifest: %s", r)
		}
	}
}

func TestRunPrune(t *testing.T) {
	f := newFixture(t)
	pushThreeRepos(t, f)
	f.push(t, "gone:x")
	cfg := f.config(t, threeRepos+`  - registry: "%s"
    repository: gone
    tags: [x]
`)
	runSync(t, cfg, &fakeConvert{}, Options{})
	writeFile(t, filepath.Join(f.root, "user/file"))
	writeFile(t, filepath.Join(f.root, f.dir("tools", "v1")+"-notes.txt"))

	f.delete(t, "tools:v2")
	f.delete(t, "gone:x")
	f.push(t, "app:1.3.0")
	rep := runSync(t, cfg, &fakeConvert{}, Options{Prune: true})
	checkStatuses(t, rep, "app:1.3.0 converted new", "app:1.2.0 unchanged",
		"tools:v1 unchanged", "base:a unchanged", "gone:x failed")
	var pruned []string
	for _, p := range rep.Pruned {
		if !p.Removed {
			t.Errorf("%s not removed: %s", p.Dir, p.Note)
		}
		pruned = append(pruned, p.Dir)
	}
	want := []string{f.dir("app", "1.1.0"), f.dir("gone", "x"), f.dir("tools", "v2")}
	if !slices.Equal(pruned, want) {
		t.Errorf("pruned %q, want %q", pruned, want)
	}
	for _, dir := range want {
		if _, err := os.Lstat(filepath.Join(f.root, dir)); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", dir, err)
		}
	}
	reg := strings.ReplaceAll(f.host, ":", "_")
	if _, err := os.Lstat(filepath.Join(f.root, reg, "gone")); !os.IsNotExist(err) {
		t.Errorf("the directory sync made for gone/x is still there (%v)", err)
	}
	for _, p := range []string{"user/file", f.dir("tools", "v1") + "-notes.txt",
		f.dir("tools", "v1") + "/image.json", StateFile} {
		if _, err := os.Stat(filepath.Join(f.root, p)); err != nil {
			t.Errorf("%s: %v, want it kept", p, err)
		}
	}
}

func TestRunJobs(t *testing.T) {
	f := newFixture(t)
	var tags []string
	for i := range 6 {
		tag := fmt.Sprintf("t%d", i)
		f.push(t, "many:"+tag)
		tags = append(tags, tag)
	}
	cfg := f.config(t, `  - registry: "%s"
    repository: many
    tags: [`+strings.Join(tags, ", ")+`]
`)
	fc := &fakeConvert{delay: 50 * time.Millisecond}
	rep := runSync(t, cfg, fc, Options{Jobs: 2})
	if rep.Converted != 6 {
		t.Errorf("converted %d, want 6", rep.Converted)
	}
	if fc.peak != 2 {
		t.Errorf("at most %d conversions ran at once, want 2", fc.peak)
	}
}

func TestRunInterrupted(t *testing.T) {
	f := newFixture(t)
	for _, tag := range []string{"a", "b", "c"} {
		f.push(t, "img:"+tag)
	}
	cfg := f.config(t, `  - registry: "%s"
    repository: img
    tags: [a, b, c]
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fc := &fakeConvert{hook: func(n int) {
		if n == 2 {
			cancel()
		}
	}}
	s := &syncer{cfg: cfg, opts: Options{Jobs: 1, Logger: slog.New(slog.DiscardHandler)},
		convert: fc.run}
	rep, err := s.run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("run error = %v, want context.Canceled", err)
	}
	checkStatuses(t, rep, "img:a converted new", "img:b interrupted new",
		"img:c interrupted new")
	st, err := loadState(f.root, StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Outputs) != 1 || st.Outputs[f.dir("img", "a")] == nil {
		t.Errorf("state after the interruption: %v", st.Outputs)
	}
}

func TestRunOverlap(t *testing.T) {
	f := newFixture(t)
	f.push(t, "one:x")
	f.push(t, "two:x")
	f.push(t, "two:y")
	cfg := f.config(t, `  - registry: "%s"
    repository: one
    tags: [x]
    path: "{tag}"
  - registry: "%s"
    repository: two
    tags: [x, y]
    path: "{tag}"
`)
	rep := runSync(t, cfg, &fakeConvert{}, Options{})
	checkStatuses(t, rep, "one:x failed", "two:x failed", "two:y converted new")
	if e := rep.Images[0].Error; !strings.Contains(e, "output path x is also that of") {
		t.Errorf("error %q", e)
	}
}

func TestRunListFails(t *testing.T) {
	f := newFixture(t)
	f.push(t, "ok:1.0.0")
	cfg := f.config(t, `  - registry: "%s"
    repository: nothere
    newest_semver: 1
  - registry: "%s"
    repository: ok
    newest_semver: 1
`)
	rep := runSync(t, cfg, &fakeConvert{}, Options{Prune: true})
	checkStatuses(t, rep, "nothere failed", "ok:1.0.0 converted new")
	if e := rep.Images[0].Error; !strings.Contains(e, "list tags") {
		t.Errorf("error %q, want the listing's", e)
	}
}

func TestRunBusy(t *testing.T) {
	f := newFixture(t)
	f.push(t, "img:a")
	cfg := f.config(t, "  - registry: \"%s\"\n    repository: img\n    tags: [a]\n")
	if err := os.MkdirAll(f.root, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockRoot(f.root, Shard{})
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	s := &syncer{cfg: cfg, opts: Options{Logger: slog.New(slog.DiscardHandler)},
		convert: (&fakeConvert{}).run}
	if _, err := s.run(context.Background()); !errors.Is(err, ErrBusy) {
		t.Errorf("run error = %v, want ErrBusy", err)
	}
}

// TestRunPlatforms converts one tag for two platforms: one HEAD request,
// two conversions, each asking for its platform.
func TestRunPlatforms(t *testing.T) {
	f := newFixture(t)
	f.push(t, "multi:v1")
	cfg := f.config(t, `  - registry: "%s"
    repository: multi
    tags: [v1]
    platforms: [linux/amd64, linux/arm64/v8]
    path: "{repo}/{tag}/{platform}"
`)
	f.requests("")
	fc := &fakeConvert{}
	rep := runSync(t, cfg, fc, Options{Jobs: 1})
	checkStatuses(t, rep, "multi:v1 converted new", "multi:v1 converted new")
	var dirs []string
	for _, it := range rep.Images {
		dirs = append(dirs, it.Dir)
	}
	if want := []string{"multi/v1/linux-amd64", "multi/v1/linux-arm64-v8"}; !slices.Equal(dirs, want) {
		t.Errorf("dirs %q, want %q", dirs, want)
	}
	if got, want := fc.platforms, []string{"linux/amd64", "linux/arm64/v8"}; !slices.Equal(got, want) {
		t.Errorf("converted platforms %q, want %q", got, want)
	}
	if heads := f.requests("HEAD /v2/multi/manifests/v1"); len(heads) != 1 {
		t.Errorf("HEAD requests %q, want one", heads)
	}
}
