package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"gopkg.in/yaml.v3"

	"github.com/oci2layers/oci2layers/internal/convert"
	"github.com/oci2layers/oci2layers/internal/registry"
	"github.com/oci2layers/oci2layers/internal/squash"
)

// DefaultPath is the output path template when the file sets none.
const DefaultPath = "{registry}/{repo}/{tag}"

// DefaultRegistry is the registry of an image entry that names none.
const DefaultRegistry = "docker.io"

// ErrInvalid is wrapped by every error that reports a mistake in a sync
// file.
var ErrInvalid = errors.New("invalid sync file")

// Config is a parsed sync file.
type Config struct {
	// File is the sync file's path, as given.
	File string
	// Output is the absolute root of every output directory.
	Output string
	// Images lists the file's image entries in their order.
	Images []Image
}

// Image is one entry of the file's images list, with the top-level settings
// applied where it does not override them. Exactly one of Tags, TagRegex
// and NewestSemver is set.
type Image struct {
	// Line is where the entry starts in the file.
	Line int
	// Registry is HOST[:PORT].
	Registry string
	// Repository is the path below the registry, e.g. library/python.
	Repository string
	// Tags are converted as listed.
	Tags []string
	// TagRegex selects the registry's tags it matches.
	TagRegex *regexp.Regexp
	// NewestSemver selects the registry's newest release tags: those that
	// read as MAJOR.MINOR.PATCH (with an optional "v"), pre-releases excluded.
	NewestSemver int
	Settings
}

// Name returns HOST/REPOSITORY.
func (im *Image) Name() string { return im.Registry + "/" + im.Repository }

// Settings are what the top level of the file sets and an image entry may
// override.
type Settings struct {
	// Path is the output directory template, relative to Config.Output.
	Path string
	// Platforms are converted for every tag, each os/arch[/variant].
	Platforms []string
	// PlainHTTP talks to the registry over plain HTTP.
	PlainHTTP bool
	// InsecureSkipTLSVerify accepts any TLS certificate.
	InsecureSkipTLSVerify bool
	// AllowForeignLayers fetches foreign layers from the URLs they name.
	AllowForeignLayers bool
	// BaseLayers is how many bottom layers go into base.sif.
	BaseLayers int
	// MaxOverlays bounds the overlay files, the config overlay included.
	MaxOverlays int
	// Compression is the squashfs compressor.
	Compression string
}

func defaultSettings() Settings {
	return Settings{
		Path:        DefaultPath,
		Platforms:   []string{"linux/" + runtime.GOARCH},
		BaseLayers:  1,
		MaxOverlays: convert.DefaultMaxOverlays,
		Compression: "gzip",
	}
}

var (
	topKeys      = []string{"output", "images"}
	imageKeys    = []string{"registry", "repository", "tags", "tag_regex", "newest_semver"}
	settingsKeys = []string{"path", "platforms", "plain_http", "insecure_skip_tls_verify",
		"allow_foreign_layers", "base_layers", "max_overlays", "compression"}
)

// Load reads and checks the sync file at path. A relative output root is
// taken relative to the file's directory. Every mistake found is reported,
// each as FILE:LINE: what is wrong, wrapping ErrInvalid.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sync file: %w", err)
	}
	return Parse(data, path)
}

// Parse checks a sync file's content; path names it in messages and anchors
// a relative output root.
func Parse(data []byte, path string) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: the file is empty", ErrInvalid, path)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, path, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s:%d: want one YAML document", ErrInvalid, path, extra.Line)
	}

	p := &parser{file: path}
	cfg := p.top(doc.Content[0])
	if err := p.err(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(cfg.Output) {
		abs, err := filepath.Abs(filepath.Join(filepath.Dir(path), cfg.Output))
		if err != nil {
			return nil, fmt.Errorf("resolve output %s: %w", cfg.Output, err)
		}
		cfg.Output = abs
	}
	cfg.Output = filepath.Clean(cfg.Output)
	return cfg, nil
}

// parser collects every mistake in the file.
type parser struct {
	file string
	errs []lineError
}

type lineError struct {
	line int
	msg  string
}

func (p *parser) fail(n *yaml.Node, format string, args ...any) {
	p.errs = append(p.errs, lineError{n.Line, fmt.Sprintf(format, args...)})
}

// err returns every mistake in line order, each as FILE:LINE: what.
func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(p.errs, func(a, b lineError) int { return a.line - b.line })
	msgs := make([]string, len(p.errs))
	for i, e := range p.errs {
		msgs[i] = fmt.Sprintf("%s:%d: %s", p.file, e.line, e.msg)
	}
	return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(msgs, "; "))
}

// pairs returns a mapping's keys and values, reporting duplicate keys and
// keys outside known.
func (p *parser) pairs(n *yaml.Node, where string, known []string) ([]*yaml.Node,
	[]*yaml.Node) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n, "%s: want a mapping of keys to values", where)
		return nil, nil
	}
	var keys, values []*yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		switch line, dup := seen[k.Value]; {
		case dup:
			p.fail(k, "%s: key %q given twice (first on line %d)", where, k.Value, line)
			continue
		case !slices.Contains(known, k.Value):
			p.fail(k, "%s: unknown key %q (want one of: %s)", where, k.Value,
				strings.Join(known, ", "))
			continue
		}
		seen[k.Value] = k.Line
		keys, values = append(keys, k), append(values, v)
	}
	return keys, values
}

// deref follows a YAML alias to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func (p *parser) top(n *yaml.Node) *Config {
	cfg := &Config{File: p.file}
	set := defaultSettings()
	var images *yaml.Node
	keys, values := p.pairs(n, "top level", slices.Concat(topKeys, settingsKeys))
	if deref(n).Kind != yaml.MappingNode {
		return cfg
	}
	for i, k := range keys {
		switch k.Value {
		case "output":
			cfg.Output = p.str(values[i], k.Value)
		case "images":
			images = values[i]
		default:
			p.setting(&set, k.Value, values[i])
		}
	}
	if cfg.Output == "" && !p.mentions(keys, "output") {
		p.fail(n, "top level: no output (the root directory of the outputs)")
	}
	if images == nil {
		p.fail(n, "top level: no images")
		return cfg
	}
	if images.Kind != yaml.SequenceNode || len(images.Content) == 0 {
		p.fail(images, "images: want a list of image entries")
		return cfg
	}
	for i, im := range images.Content {
		if img, ok := p.image(deref(im), fmt.Sprintf("images[%d]", i), set); ok {
			cfg.Images = append(cfg.Images, img)
		}
	}
	return cfg
}

func (p *parser) mentions(keys []*yaml.Node, key string) bool {
	return slices.ContainsFunc(keys, func(k *yaml.Node) bool { return k.Value == key })
}

// image reads one image entry on top of the file's settings.
func (p *parser) image(n *yaml.Node, where string, set Settings) (Image, bool) {
	errs := len(p.errs)
	img := Image{Line: n.Line, Registry: DefaultRegistry, Settings: set}
	img.Platforms = slices.Clone(set.Platforms)
	var selectors []string
	pathAt := n // where the template comes from, for messages
	keys, values := p.pairs(n, where, slices.Concat(imageKeys, settingsKeys))
	for i, k := range keys {
		v := values[i]
		switch k.Value {
		case "path":
			pathAt = v
			p.setting(&img.Settings, k.Value, v)
		case "registry":
			img.Registry = p.str(v, where+".registry")
		case "repository":
			img.Repository = p.str(v, where+".repository")
		case "tags":
			img.Tags = p.tags(v, where+".tags")
			selectors = append(selectors, k.Value)
		case "tag_regex":
			img.TagRegex = p.regex(v, where+".tag_regex")
			selectors = append(selectors, k.Value)
		case "newest_semver":
			img.NewestSemver = p.count(v, where+".newest_semver", 1)
			selectors = append(selectors, k.Value)
		default:
			p.setting(&img.Settings, k.Value, v)
		}
	}
	if n.Kind != yaml.MappingNode {
		return img, false
	}
	switch len(selectors) {
	case 0:
		p.fail(n, "%s: no tag selector: give one of tags, tag_regex or newest_semver", where)
	case 1:
	default:
		p.fail(n, "%s: %s: give only one tag selector", where, strings.Join(selectors, " and "))
	}
	p.checkName(n, where, &img)
	p.checkTemplate(pathAt, where, &img)
	return img, len(p.errs) == errs
}

// checkName checks the registry and repository.
func (p *parser) checkName(n *yaml.Node, where string, img *Image) {
	if img.Repository == "" {
		p.fail(n, "%s: no repository", where)
		return
	}
	if strings.ContainsAny(img.Repository, ":@") || strings.HasPrefix(img.Repository, "/") {
		p.fail(n, "%s: repository %q: want a path such as library/python, without tag or digest",
			where, img.Repository)
		return
	}
	if _, err := name.NewRegistry(img.Registry, name.StrictValidation); err != nil ||
		strings.Contains(img.Registry, "/") {
		p.fail(n, "%s: registry %q: want HOST or HOST:PORT", where, img.Registry)
		return
	}
	if _, err := name.NewRepository(img.Name()); err != nil {
		p.fail(n, "%s: repository %q: %v", where, img.Repository, err)
	}
}

// checkTemplate checks the path template as far as it can be checked before
// the tags are known.
func (p *parser) checkTemplate(n *yaml.Node, where string, img *Image) {
	t, err := parseTemplate(img.Path)
	if err != nil {
		p.fail(n, "%s: path %q: %v", where, img.Path, err)
		return
	}
	if !t.uses("tag") && (len(img.Tags) > 1 || img.TagRegex != nil || img.NewestSemver > 1) {
		p.fail(n, "%s: path %q has no {tag}, but more than one tag may be selected", where,
			img.Path)
	}
	if len(img.Platforms) > 1 && !t.uses("platform") && !(t.uses("os") && t.uses("arch")) {
		p.fail(n, "%s: path %q has no {platform}, but %d platforms are converted", where,
			img.Path, len(img.Platforms))
	}
}

// setting reads one of settingsKeys into s.
func (p *parser) setting(s *Settings, key string, v *yaml.Node) {
	switch key {
	case "path":
		s.Path = p.str(v, key)
	case "platforms":
		s.Platforms = p.platforms(v, key)
	case "plain_http":
		s.PlainHTTP = p.boolean(v, key)
	case "insecure_skip_tls_verify":
		s.InsecureSkipTLSVerify = p.boolean(v, key)
	case "allow_foreign_layers":
		s.AllowForeignLayers = p.boolean(v, key)
	case "base_layers":
		s.BaseLayers = p.count(v, key, 1)
	case "max_overlays":
		s.MaxOverlays = p.count(v, key, 2)
	case "compression":
		s.Compression = p.str(v, key)
		if !slices.Contains(squash.Compressions, s.Compression) {
			p.fail(v, "compression %q: want one of %s", s.Compression,
				strings.Join(squash.Compressions, ", "))
		}
	}
}

func (p *parser) str(v *yaml.Node, what string) string {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" || v.Value == "" {
		p.fail(v, "%s: want a non-empty string", what)
		return ""
	}
	return v.Value
}

func (p *parser) boolean(v *yaml.Node, what string) bool {
	var b bool
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || v.Decode(&b) != nil {
		p.fail(v, "%s: want true or false, not %q", what, v.Value)
	}
	return b
}

func (p *parser) count(v *yaml.Node, what string, least int) int {
	n, err := strconv.Atoi(v.Value)
	if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil || n < least {
		p.fail(v, "%s: want a whole number of at least %d, not %q", what, least, v.Value)
		return 0
	}
	return n
}

// list returns a sequence's items, which must be non-empty strings.
func (p *parser) list(v *yaml.Node, what string) []string {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		p.fail(v, "%s: want a non-empty list", what)
		return nil
	}
	var out []string
	for _, item := range v.Content {
		if s := p.str(deref(item), what); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// tagPattern is the OCI distribution spec's tag grammar.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

func (p *parser) tags(v *yaml.Node, what string) []string {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		p.fail(v, "%s: want a non-empty list", what)
		return nil
	}
	var tags []string
	for _, item := range v.Content {
		item = deref(item)
		t := p.str(item, what)
		switch {
		case t == "":
		case !tagPattern.MatchString(t):
			p.fail(item, "%s: %q is not a valid tag", what, t)
		case slices.Contains(tags, t):
			p.fail(item, "%s: tag %q listed twice", what, t)
		default:
			tags = append(tags, t)
		}
	}
	return tags
}

func (p *parser) regex(v *yaml.Node, what string) *regexp.Regexp {
	s := p.str(v, what)
	if s == "" {
		return nil
	}
	re, err := regexp.Compile(s)
	if err != nil {
		p.fail(v, "%s: %v", what, err)
		return nil
	}
	return re
}

func (p *parser) platforms(v *yaml.Node, what string) []string {
	var out []string
	for _, s := range p.list(v, what) {
		pl, err := registry.ParsePlatform(s)
		if err != nil {
			p.fail(v, "%s: %v", what, err)
			continue
		}
		f := registry.FormatPlatform(pl)
		if slices.Contains(out, f) {
			p.fail(v, "%s: %s listed twice", what, f)
			continue
		}
		out = append(out, f)
	}
	return out
}
