package mirror

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const goodFile = `
output: out
path: "{registry}/{repo}/{tag}"
platforms: [linux/amd64]
base_layers: 2
compression: zstd
images:
  - registry: 127.0.0.1:5000
    repository: library/python
    tags: ["3.12-slim", 3.10]
    plain_http: true
  - repository: library/debian
    tag_regex: "^bookworm-[0-9]+$"
    platforms: [linux/amd64, linux/arm64/v8]
    path: "deb/{tag}/{platform}"
  - registry: ghcr.io
    repository: org/app
    newest_semver: 3
    path: "apps/{repo}/{tag}"
    max_overlays: 8
`

func TestParseGood(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sync.yaml")
	cfg, err := Parse([]byte(goodFile), file)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if want := filepath.Join(dir, "out"); cfg.Output != want {
		t.Errorf("Output = %q, want %q (relative to the file)", cfg.Output, want)
	}
	if len(cfg.Images) != 3 {
		t.Fatalf("got %d images, want 3", len(cfg.Images))
	}
	py, deb, app := cfg.Images[0], cfg.Images[1], cfg.Images[2]

	if got, want := py.Tags, []string{"3.12-slim", "3.10"}; !slices.Equal(got, want) {
		t.Errorf("python tags = %q, want %q (3.10 kept as written)", got, want)
	}
	if !py.PlainHTTP || deb.PlainHTTP {
		t.Errorf("plain_http: python %v, debian %v; want the override on python only",
			py.PlainHTTP, deb.PlainHTTP)
	}
	if py.Line != 8 {
		t.Errorf("python entry on line %d, want 8", py.Line)
	}
	if deb.Registry != DefaultRegistry {
		t.Errorf("debian registry = %q, want %q", deb.Registry, DefaultRegistry)
	}
	if deb.TagRegex == nil || !deb.TagRegex.MatchString("bookworm-20240101") {
		t.Errorf("debian tag_regex = %v", deb.TagRegex)
	}
	if got, want := deb.Platforms, []string{"linux/amd64", "linux/arm64/v8"}; !slices.Equal(got, want) {
		t.Errorf("debian platforms = %q, want %q", got, want)
	}
	if got := py.Platforms; !slices.Equal(got, []string{"linux/amd64"}) {
		t.Errorf("python platforms = %q, want the top level's", got)
	}
	if app.NewestSemver != 3 || app.Path != "apps/{repo}/{tag}" || app.MaxOverlays != 8 {
		t.Errorf("app = %+v", app)
	}
	for _, im := range cfg.Images {
		if im.BaseLayers != 2 || im.Compression != "zstd" {
			t.Errorf("%s: base_layers %d, compression %q; want the top level's 2, zstd",
				im.Name(), im.BaseLayers, im.Compression)
		}
	}
	if py.MaxOverlays != 24 {
		t.Errorf("python max_overlays = %d, want the default 24", py.MaxOverlays)
	}
}

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte("output: /o\nimages:\n  - repository: a\n    tags: [x]\n"),
		"s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	im := cfg.Images[0]
	if im.Path != DefaultPath || im.BaseLayers != 1 || im.Compression != "gzip" ||
		!slices.Equal(im.Platforms, []string{"linux/" + runtime.GOARCH}) || im.PlainHTTP {
		t.Errorf("defaults: %+v", im)
	}
}

func TestParseErrors(t *testing.T) {
	head := "output: /o\nimages:\n"
	one := head + "  - repository: a\n    tags: [x]\n" // one valid entry
	tests := []struct {
		name string
		yaml string
		want string // a regular expression the error must match
	}{
		{name: "unknown top key", yaml: "output: /o\ncolour: red\nimages: []\n",
			want: `s\.yaml:2: top level: unknown key "colour"`},
		{name: "unknown image key", yaml: one + "    tgas: [y]\n",
			want: `s\.yaml:5: images\[0\]: unknown key "tgas" \(want one of: registry, `},
		{name: "no selector", yaml: head + "  - repository: a\n",
			want: `s\.yaml:3: images\[0\]: no tag selector`},
		{name: "two selectors", yaml: one + "    newest_semver: 2\n",
			want: `images\[0\]: tags and newest_semver: give only one tag selector`},
		{name: "bad regex", yaml: head + "  - repository: a\n    tag_regex: \"^(x\"\n",
			want: `s\.yaml:4: images\[0\]\.tag_regex: error parsing regexp`},
		{name: "no repository", yaml: head + "  - tags: [x]\n", want: `no repository`},
		{name: "no output", yaml: "images:\n  - repository: a\n    tags: [x]\n",
			want: `no output`},
		{name: "no images", yaml: "output: /o\n", want: `no images`},
		{name: "empty images", yaml: "output: /o\nimages: []\n", want: `want a list`},
		{name: "duplicate key", yaml: "output: /o\noutput: /p\nimages: []\n",
			want: `s\.yaml:2: top level: key "output" given twice \(first on line 1\)`},
		{name: "template climbs", yaml: one + "    path: \"../{tag}\"\n",
			want: `path "\.\./\{tag\}": component "\.\."`},
		{name: "template climbs inside", yaml: one + "    path: \"a/../../{tag}\"\n",
			want: `a template may not climb`},
		{name: "absolute template", yaml: one + "    path: /etc/{tag}\n",
			want: `must be relative`},
		{name: "unknown placeholder", yaml: one + "    path: \"{name}/{tag}\"\n",
			want: `unknown placeholder \{name\}`},
		{name: "unclosed brace", yaml: one + "    path: \"{tag\"\n",
			want: `'\{' without '\}'`},
		{name: "no tag in template", yaml: head + "  - repository: a\n    tag_regex: x\n    path: \"{repo}\"\n",
			want: `has no \{tag\}`},
		{name: "no platform in template", yaml: one + "    platforms: [linux/amd64, linux/arm64]\n",
			want: `has no \{platform\}, but 2 platforms`},
		{name: "bad tag", yaml: head + "  - repository: a\n    tags: [\"../x\"]\n",
			want: `s\.yaml:4: images\[0\]\.tags: "\.\./x" is not a valid tag`},
		{name: "repeated tag", yaml: head + "  - repository: a\n    tags: [x, x]\n",
			want: `tag "x" listed twice`},
		{name: "tag in repository", yaml: head + "  - repository: a:1\n    tags: [x]\n",
			want: `repository "a:1": want a path`},
		{name: "bad registry", yaml: head + "  - registry: \"a/b\"\n    repository: a\n    tags: [x]\n",
			want: `registry "a/b"`},
		{name: "bad compression", yaml: "output: /o\ncompression: brotli\nimages: []\n",
			want: `s\.yaml:2: compression "brotli": want one of gzip`},
		{name: "bad bool", yaml: one + "    plain_http: yes\n",
			want: `plain_http: want true or false, not "yes"`},
		{name: "bad count", yaml: head + "  - repository: a\n    newest_semver: 0\n",
			want: `newest_semver: want a whole number of at least 1, not "0"`},
		{name: "bad platform", yaml: "output: /o\nplatforms: [linux]\nimages: []\n",
			want: `platform "linux": want os/arch`},
		{name: "not a mapping", yaml: "- a\n", want: `top level: want a mapping`},
		{name: "two documents", yaml: "output: /o\n---\noutput: /p\n", want: `want one YAML document`},
		{name: "empty file", yaml: "", want: `the file is empty`},
		{name: "yaml syntax", yaml: "output: [\n", want: `s\.yaml: yaml:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "s.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded, want an error matching %q", tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %q does not wrap ErrInvalid", err)
			}
			if !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Errorf("error %q, want it to match %q", err, tt.want)
			}
		})
	}
}

// TestParseReportsEveryError checks that one run names every mistake.
func TestParseReportsEveryError(t *testing.T) {
	y := "output: /o\nimages:\n  - repository: a\n    colour: red\n" +
		"  - repository: b\n    tags: [x]\n    newest_semver: 1\n"
	_, err := Parse([]byte(y), "s.yaml")
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	for _, want := range []string{`s.yaml:4: images[0]: unknown key "colour"`,
		`s.yaml:3: images[0]: no tag selector`, `images[1]: tags and newest_semver`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sync.yaml")
	if err := os.WriteFile(file, []byte(goodFile), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != file || len(cfg.Images) != 3 {
		t.Errorf("Load = %+v", cfg)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) error = %v, want os.ErrNotExist", err)
	}
}
