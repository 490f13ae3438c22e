package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

// faultSpec is a small three-layer image. The middle layer, which the blob
// faults break, holds 1 MiB of random bytes, so that it can be cut mid-stream.
func faultSpec(arch string) imagegen.Spec {
	return imagegen.Spec{
		Architecture: arch,
		Layers: []imagegen.Layer{
			{Comment: "faults: base", Compression: imagegen.Gzip, Entries: []imagegen.Entry{
				imagegen.Dir("etc"),
				imagegen.File("etc/os-release", "ID=faults\n"),
				imagegen.Dir("usr"),
				imagegen.Dir("usr/bin"),
				imagegen.File("usr/bin/tool", "#!/bin/sh\necho tool\n").WithMode(0o755),
			}},
			{Comment: "faults: data", Compression: imagegen.Gzip, Entries: []imagegen.Entry{
				imagegen.Dir("data"),
				imagegen.RandomFile("data/random.bin", 1<<20, 7),
			}},
			{Comment: "faults: app", Compression: imagegen.Zstd, Entries: []imagegen.Entry{
				imagegen.Dir("app"),
				imagegen.File("app/run.sh", "#!/bin/sh\necho faults\n").WithMode(0o755),
			}},
		},
		Config: imagegen.Config{
			Env:        []string{"PATH=/app:/usr/bin:/bin"},
			Entrypoint: []string{"/app/run.sh"},
		},
	}
}

func buildImage(t *testing.T, s imagegen.Spec) v1.Image {
	t.Helper()
	img, err := imagegen.Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// faultFixture is the registry, the image pushed to it and a clean
// conversion of that image.
type faultFixture struct {
	fr     *faultRegistry
	img    v1.Image
	repo   string
	src    string
	target string // blob path of the middle layer, the one blob faults break
	clean  map[string]string
}

func newFaultFixture(t *testing.T) *faultFixture {
	t.Helper()
	requireBinary(t)
	requireMksquashfs(t)
	f := &faultFixture{fr: startFaultRegistry(t), img: buildImage(t, faultSpec("")),
		repo: "faults/img"}
	ref := f.fr.Addr + "/" + f.repo + ":v1"
	if err := imagegen.Push(t.Context(), ref, f.img); err != nil {
		t.Fatal(err)
	}
	f.src = "docker://" + ref
	f.target = blobURLPath(f.repo, layerDigests(t, f.img)[1])

	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	r := runBin(t, binOptions{}, convertArgs(f.src, out, filepath.Join(dir, "cache"))...)
	checkExit(t, r, 0, nil)
	if t.Failed() {
		t.FailNow()
	}
	checkContract(t, readResult(t, out), contract{Source: f.src, Image: f.img})
	checkEntryModes(t, filepath.Join(dir, "cache"))
	f.clean = sifDigests(t, out)
	return f
}

// checkFailedOnDisk checks what a failed conversion leaves: no run
// directory or temporary file in the cache, only finished entries there, no
// record of a finished conversion, nothing in out, and no entry under any of
// keys.
func checkFailedOnDisk(t *testing.T, cache, out string, keys []string) {
	t.Helper()
	checkNoRunDirs(t, cache)
	checkNoTemps(t, cache)
	checkFinishedEntries(t, cache)
	checkNoOutput(t, out)
	checkNoEntries(t, cache, keys)
	if imgs := cacheEntries(t, cache)["images"]; len(imgs) > 0 {
		t.Errorf("cache: a failed conversion recorded images %q", imgs)
	}
}

// checkNothingCached checks that a conversion that failed before reading
// any layer cached no layer, base, config overlay, index or image.
func checkNothingCached(t *testing.T, cache string) {
	t.Helper()
	for kind, names := range cacheEntries(t, cache) {
		if kind != "documents" && len(names) > 0 {
			t.Errorf("cache: v1/%s holds %q after a failure before any layer was read",
				kind, names)
		}
	}
}

// checkSucceeded checks a successful conversion into out: exit 0, SIFs
// byte-identical to the clean conversion's, and no leftovers.
func (f *faultFixture) checkSucceeded(t *testing.T, r binRun, cache, out string) {
	t.Helper()
	checkExit(t, r, 0, nil)
	if r.Code != 0 {
		return
	}
	compareSIFs(t, sifDigests(t, out), f.clean)
	checkNoRunDirs(t, cache)
	checkNoTemps(t, cache)
	checkNoTemps(t, out)
	checkFinishedEntries(t, cache)
}

// TestFaults breaks the registry's answers in the ways networks and
// registries do and checks the exit code, the error line and what the
// failed conversion leaves on disk; then, with the fault gone, that the same
// command gives a clean conversion's SIFs.
func TestFaults(t *testing.T) {
	f := newFaultFixture(t)
	t.Run("blob", f.testBlobFaults)
	t.Run("retry-after", f.testRetryAfter)
	t.Run("redirect-without-auth", f.testRedirect)
	t.Run("platform", f.testPlatform)
	t.Run("foreign-layer", f.testForeignLayer)
	t.Run("manifest-too-large", f.testLargeManifest)
	t.Run("reference", f.testReferenceErrors)
}

func (f *faultFixture) testBlobFaults(t *testing.T) {
	const persistent = -1
	verify := regexp.MustCompile(`(?i)digest|mismatch|verif|truncat|size|bytes`)
	tests := []struct {
		name  string
		do    faultFunc
		times int
		// wantCodes are the accepted exit codes of the faulty run; nil
		// means the retry must succeed.
		wantCodes []int
		want      *regexp.Regexp
		// verifiedOK accepts success too, when the bytes the digest
		// covers arrived intact: extra bytes past the declared size of a
		// body without Content-Length are never read.
		verifiedOK bool
	}{
		{"flipped-byte", flipByte(), persistent, []int{6}, verify, false},
		{"flipped-byte-once", flipByte(), 1, nil, nil, false},
		{"truncated", cutAfter(-1, false), persistent, []int{6}, verify, false},
		{"truncated-once", cutAfter(-1, false), 1, nil, nil, false},
		{"truncated-half-once", cutAfter(512<<10, false), 1, nil, nil, false},
		{"extra-bytes", extraBytes(1000, true), persistent, []int{6}, verify, false},
		{"extra-bytes-chunked", extraBytes(1000, false), persistent, []int{6}, verify, true},
		{"extra-bytes-once", extraBytes(1000, true), 1, nil, nil, false},
		{"reset-once", cutAfter(300<<10, true), 1, nil, nil, false},
		// The contract names no code for a connection that keeps being
		// reset: unreachable and verification failed both fit.
		{"reset", cutAfter(300<<10, true), persistent, []int{5, 6},
			regexp.MustCompile(`(?i)reset|unreachable|truncat|mismatch`), false},
	}
	digest := strings.TrimPrefix(f.target, blobURLPath(f.repo, ""))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
			args := convertArgs(f.src, out, cache)
			f.fr.Inject(&fault{Method: http.MethodGet, Path: f.target, Times: tt.times, Do: tt.do})
			defer f.fr.Clear()

			r := runBin(t, binOptions{}, args...)
			gets := f.fr.Requests(http.MethodGet, f.target)
			for i, g := range gets {
				if g.Range != "" {
					t.Errorf("GET %d of the layer asked for Range %q: a retry must restart "+
						"from scratch", i+1, g.Range)
				}
			}
			if tt.wantCodes == nil {
				if len(gets) < 2 {
					t.Errorf("the layer was fetched %d times, want a retry", len(gets))
				}
				f.checkSucceeded(t, r, cache, out)
				return
			}
			if r.Code == 0 && tt.verifiedOK {
				f.checkSucceeded(t, r, cache, out)
				return
			}
			if r.Code == 0 {
				t.Errorf("the faulty layer was accepted: exit 0, want %v (GETs of the layer: %d)",
					tt.wantCodes, len(gets))
				compareSIFs(t, sifDigests(t, out), f.clean)
				return
			}

			code := tt.wantCodes[0]
			if slices.Contains(tt.wantCodes, r.Code) {
				code = r.Code
			}
			checkExit(t, r, code, tt.want)
			if len(gets) < 2 {
				t.Errorf("the layer was fetched %d times before giving up, want retries", len(gets))
			}
			if !strings.Contains(r.Stderr, digest[:19]) {
				t.Errorf("the error does not name the layer %s:\n%s", digest, r.Stderr)
			}
			checkFailedOnDisk(t, cache, out, chainKeys(t, f.img, 1))

			f.fr.Clear()
			f.checkSucceeded(t, runBin(t, binOptions{}, args...), cache, out)
		})
	}
}

// testRetryAfter answers the layer's first GET with 429 or 503 and
// "Retry-After: 1": the conversion waits, retries and succeeds.
func (f *faultFixture) testRetryAfter(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			dir := t.TempDir()
			cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
			f.fr.Inject(&fault{Method: http.MethodGet, Path: f.target, Times: 1,
				Do: status(code, "1")})
			defer f.fr.Clear()

			r := runBin(t, binOptions{}, convertArgs(f.src, out, cache)...)
			f.checkSucceeded(t, r, cache, out)
			gets := f.fr.Requests(http.MethodGet, f.target)
			if len(gets) < 2 {
				t.Fatalf("the layer was fetched %d times, want a retry after the %d",
					len(gets), code)
			}
			if wait := gets[1].At.Sub(gets[0].At); wait < 900*time.Millisecond {
				t.Errorf("retried %s after the %d, want at least the 1 s of Retry-After",
					wait.Round(time.Millisecond), code)
			}
		})
	}
}

// testRedirect makes the registry require basic auth and redirect every
// blob GET to another loopback server: the conversion succeeds with the
// credentials from DOCKER_CONFIG and sends them to the registry only.
func (f *faultFixture) testRedirect(t *testing.T) {
	blobs := map[string][]byte{}
	for _, l := range imageLayers(t, f.img) {
		d, _ := l.Digest()
		blobs[d.String()] = readCompressed(t, l)
	}
	cfg, err := f.img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	blobs[configName(t, f.img)] = cfg

	var mu sync.Mutex
	var served int
	var leaked []string
	blobSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served++
		if a := r.Header.Get("Authorization"); a != "" {
			leaked = append(leaked, r.Method+" "+r.URL.Path+": "+a)
		}
		mu.Unlock()
		b, ok := blobs[filepath.Base(r.URL.Path)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	}))
	defer blobSrv.Close()

	var faults []*fault
	for d := range blobs {
		faults = append(faults, &fault{Path: blobURLPath(f.repo, d), Times: -1,
			Do: redirectTo(blobSrv.URL)})
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("e2e-user:e2e-secret"))
	f.fr.Inject(faults...)
	f.fr.RequireAuth(auth)
	defer f.fr.Clear()

	dockerConfig := t.TempDir()
	conf, _ := json.Marshal(map[string]any{"auths": map[string]any{
		f.fr.Addr: map[string]string{"auth": strings.TrimPrefix(auth, "Basic ")},
	}})
	if err := os.WriteFile(filepath.Join(dockerConfig, "config.json"), conf, 0o600); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
	r := runBin(t, binOptions{Env: []string{"DOCKER_CONFIG=" + dockerConfig}},
		convertArgs(f.src, out, cache)...)
	f.checkSucceeded(t, r, cache, out)

	mu.Lock()
	defer mu.Unlock()
	if served < len(layerDigests(t, f.img)) {
		t.Errorf("the blob server answered %d requests, want at least one per layer", served)
	}
	if len(leaked) > 0 {
		t.Errorf("the registry's credentials went to the blob server:\n%s",
			strings.Join(leaked, "\n"))
	}
	if got := f.fr.Requests(http.MethodGet, manifestURLPath(f.repo, "v1")); len(got) == 0 ||
		got[len(got)-1].Auth != auth {
		t.Errorf("the manifest GETs %+v did not carry the credentials", got)
	}
}

// otherArches returns two architectures this machine is not.
func otherArches() []string {
	var out []string
	for _, a := range []string{"arm64", "s390x", "ppc64le"} {
		if a != runtime.GOARCH && len(out) < 2 {
			out = append(out, a)
		}
	}
	return out
}

// testPlatform converts an index with no entry for this machine: the
// conversion fails naming what the index has, and --platform picks one.
func (f *faultFixture) testPlatform(t *testing.T) {
	arches := otherArches()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, a := range arches {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: buildImage(t, faultSpec(a)),
			Descriptor: v1.Descriptor{
				Platform: &v1.Platform{OS: "linux", Architecture: a},
			},
		})
	}
	ref, err := name.ParseReference(f.fr.Addr+"/faults/multi:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push index: %v", err)
	}
	src := "docker://" + ref.String()

	dir := t.TempDir()
	cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
	r := runBin(t, binOptions{}, convertArgs(src, out, cache)...)
	checkExit(t, r, 7, regexp.MustCompile(`linux/`+runtime.GOARCH))
	for _, a := range arches {
		if !strings.Contains(r.Stderr, "linux/"+a) {
			t.Errorf("the error does not name the index's platform linux/%s:\n%s", a, r.Stderr)
		}
	}
	checkFailedOnDisk(t, cache, out, nil)
	checkNothingCached(t, cache)

	want := "linux/" + arches[0]
	r = runBin(t, binOptions{}, convertArgs(src, out, cache, "--platform", want)...)
	checkExit(t, r, 0, nil)
	if r.Code == 0 {
		res := readResult(t, out)
		if res.Meta.Platform != want {
			t.Errorf("image.json platform %q, want %q", res.Meta.Platform, want)
		}
		checkSIFs(t, res)
	}
}

// testForeignLayer converts an image whose top layer is foreign: refused,
// naming the flag that would accept it, before anything is fetched from the
// layer's URL or the registry.
func (f *faultFixture) testForeignLayer(t *testing.T) {
	const repo = "faults/foreign"
	base := imageLayers(t, f.img)[0]
	baseBlob := readCompressed(t, base)
	baseDiff, err := base.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	foreign := rawLayer(t, rawFile("foreign.txt", "from elsewhere\n"))
	foreignBlob := readCompressed(t, foreign)
	foreignDiff, err := foreign.DiffID()
	if err != nil {
		t.Fatal(err)
	}

	cf := &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH,
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{baseDiff, foreignDiff}}}
	cfg, err := json.Marshal(cf)
	if err != nil {
		t.Fatal(err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.DockerManifestSchema2,
		Config: v1.Descriptor{MediaType: types.DockerConfigJSON, Size: int64(len(cfg)),
			Digest: pushBlob(t, f.fr.Addr, repo, cfg)},
		Layers: []v1.Descriptor{
			{MediaType: types.DockerLayer, Size: int64(len(baseBlob)),
				Digest: pushBlob(t, f.fr.Addr, repo, baseBlob)},
			{MediaType: types.DockerForeignLayer, Size: int64(len(foreignBlob)),
				Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(foreignBlob)},
				URLs:   []string{"https://foreign.invalid/layer.tar.gz"}},
		},
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	putManifest(t, f.fr.Addr, repo, "v1", string(types.DockerManifestSchema2), body)

	dir := t.TempDir()
	cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
	f.fr.Inject()
	r := runBin(t, binOptions{}, convertArgs("docker://"+f.fr.Addr+"/"+repo+":v1", out, cache)...)
	checkExit(t, r, 7, regexp.MustCompile(`--allow-foreign-layers`))
	checkFailedOnDisk(t, cache, out, []string{foreignDiff.String()})
	checkNothingCached(t, cache)
	foreignPath := blobURLPath(repo, m.Layers[1].Digest.String())
	if n := len(f.fr.Requests(http.MethodGet, foreignPath)); n > 0 {
		t.Errorf("the refused foreign layer was requested %d times", n)
	}
}

// testLargeManifest serves a manifest over the 8 MiB limit for the image's
// tag, with and without a Content-Length: refused quickly, without reading
// it all; once the registry serves the real manifest again, the same
// command succeeds.
func (f *faultFixture) testLargeManifest(t *testing.T) {
	tests := []struct {
		name     string
		size     int64
		announce bool
	}{
		{"announced", 9 << 20, true},
		{"chunked", 256 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			written := make(chan int64, 8)
			f.fr.Inject(&fault{Path: manifestURLPath(f.repo, "v1"), Times: -1,
				Do: serveDocument(string(types.OCIManifestSchema1), tt.size, tt.announce, written)})
			defer f.fr.Clear()

			dir := t.TempDir()
			cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
			args := convertArgs(f.src, out, cache)
			r := runBin(t, binOptions{Timeout: time.Minute}, args...)
			checkExit(t, r, 7, regexp.MustCompile(`(?i)too large|limit`))
			if r.Elapsed > 15*time.Second {
				t.Errorf("refusing the manifest took %s, want a quick failure", r.Elapsed)
			}
			checkFailedOnDisk(t, cache, out, nil)
			checkNothingCached(t, cache)
			if !tt.announce {
				select {
				case n := <-written:
					if n >= tt.size {
						t.Errorf("the client read the whole %d-byte manifest", n)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("the manifest was still being sent 10 s after the process exited")
				}
			}

			f.fr.Clear()
			f.checkSucceeded(t, runBin(t, binOptions{}, args...), cache, out)
		})
	}
}

// testReferenceErrors covers the errors about where the image is: a tag the
// registry lacks, a registry nobody answers on, a reference that does not
// parse and a registry that refuses anonymous access.
func (f *faultFixture) testReferenceErrors(t *testing.T) {
	closed, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="oci2layers-e2e"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`,
			http.StatusUnauthorized)
	}))
	defer deny.Close()
	denyAddr := deny.Listener.Addr().String()

	tests := []struct {
		name     string
		src      string
		wantCode int
		want     *regexp.Regexp
	}{
		{"unknown-tag", "docker://" + f.fr.Addr + "/" + f.repo + ":nope", 3,
			regexp.MustCompile(`(?i)not found|unknown`)},
		{"unreachable", "docker://" + closed + "/faults/img:v1", 5,
			regexp.MustCompile(regexp.QuoteMeta(closed) + `|(?i)unreachable|refused`)},
		{"malformed", "docker://UPPER/Case::x", 2, nil},
		{"auth-refused", "docker://" + denyAddr + "/faults/img:v1", 4,
			regexp.MustCompile(`(?i)auth|unauthori|denied|401`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cache, out := filepath.Join(dir, "cache"), filepath.Join(dir, "out")
			r := runBin(t, binOptions{Timeout: 90 * time.Second},
				convertArgs(tt.src, out, cache)...)
			checkExit(t, r, tt.wantCode, tt.want)
			if r.Elapsed > time.Minute {
				t.Errorf("failing took %s, want less than a minute", r.Elapsed)
			}
			checkFailedOnDisk(t, cache, out, nil)
			checkNothingCached(t, cache)
		})
	}
}

// checkEntryModes checks that finished SIF entries are read-only (0444).
func checkEntryModes(t *testing.T, cache string) {
	t.Helper()
	for _, kind := range []string{"layers", "bases", "configs"} {
		for _, n := range cacheEntries(t, cache)[kind] {
			fi, err := os.Stat(filepath.Join(cache, "v1", kind, n))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o444 {
				t.Errorf("cache: v1/%s/%s has mode %04o, want 0444", kind, n, fi.Mode().Perm())
			}
		}
	}
}
