package mirror

import (
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/oci2layers/oci2layers/internal/registry"
)

// placeholders are the names a path template may use in braces.
var placeholders = []string{"registry", "repo", "tag", "platform", "os", "arch"}

// template is a parsed path template: literal text and placeholders.
type template struct {
	parts []templatePart
}

type templatePart struct {
	literal     string
	placeholder string // set instead of literal
}

// parseTemplate reads a path template such as "{registry}/{repo}/{tag}".
// It must be relative, use only known placeholders and have no "." or ".."
// component of its own.
func parseTemplate(s string) (*template, error) {
	if s == "" {
		return nil, errors.New("empty")
	}
	if strings.HasPrefix(s, "/") {
		return nil, errors.New("must be relative to the output root")
	}
	t := &template{}
	for rest := s; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if close := strings.IndexByte(rest, '}'); close >= 0 && (open < 0 || close < open) {
			return nil, errors.New("'}' without '{'")
		}
		if open < 0 {
			t.parts = append(t.parts, templatePart{literal: rest})
			break
		}
		if open > 0 {
			t.parts = append(t.parts, templatePart{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, errors.New("'{' without '}'")
		}
		name := rest[open+1 : open+end]
		if !slices.Contains(placeholders, name) {
			return nil, fmt.Errorf("unknown placeholder {%s} (want %s)", name,
				"{"+strings.Join(placeholders, "} {")+"}")
		}
		t.parts = append(t.parts, templatePart{placeholder: name})
		rest = rest[open+end+1:]
	}
	for _, c := range strings.Split(s, "/") {
		if c == "." || c == ".." {
			return nil, fmt.Errorf("component %q: a template may not climb", c)
		}
	}
	return t, nil
}

// uses reports whether the template has the placeholder.
func (t *template) uses(placeholder string) bool {
	return slices.ContainsFunc(t.parts, func(p templatePart) bool {
		return p.placeholder == placeholder
	})
}

// values fill a template's placeholders.
type values struct {
	Registry   string
	Repository string
	Tag        string
	Platform   string // os/arch[/variant]
}

// expand fills the placeholders, each value made safe as a path component
// ({repo} keeps its slashes as directory separators), and returns the
// cleaned, slash-separated path. The result always lies strictly inside the
// output root and never names the state file.
func (t *template) expand(v values) (string, error) {
	pl, err := registry.ParsePlatform(v.Platform)
	if err != nil {
		return "", err
	}
	arch := pl.Architecture
	if pl.Variant != "" {
		arch += "-" + pl.Variant
	}
	subst := map[string]string{
		"registry": sanitize(v.Registry),
		"repo":     sanitizePath(v.Repository),
		"tag":      sanitize(v.Tag),
		"platform": sanitize(pl.OS) + "-" + sanitize(arch),
		"os":       sanitize(pl.OS),
		"arch":     sanitize(arch),
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.placeholder != "" {
			b.WriteString(subst[p.placeholder])
		} else {
			b.WriteString(p.literal)
		}
	}
	return confine(b.String())
}

// confine cleans a path relative to the output root and refuses one that
// is absolute, climbs out, is the root itself or names sync's own files.
func confine(p string) (string, error) {
	c := path.Clean(p)
	if path.IsAbs(p) || !filepath.IsLocal(filepath.FromSlash(c)) || c == "." {
		return "", fmt.Errorf("output path %q is not inside the output root", p)
	}
	first, _, _ := strings.Cut(c, "/")
	if first == StateFile || first == lockFile {
		return "", fmt.Errorf("output path %q would replace sync's %s", p, first)
	}
	return c, nil
}

// sanitize makes s one safe path component: every byte other than an ASCII
// letter, digit, '.', '_' or '-' becomes '_' (so "host:5000" becomes
// "host_5000": a colon would break Apptainer's --overlay FILE:ro), and a
// leading '.' becomes '_', so that no value is hidden, "." or "..".
func sanitize(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-'
		if !ok {
			b[i] = '_'
		}
	}
	if b[0] == '.' {
		b[0] = '_'
	}
	return string(b)
}

// sanitizePath sanitizes each slash-separated component of s.
func sanitizePath(s string) string {
	parts := strings.Split(s, "/")
	for i, p := range parts {
		parts[i] = sanitize(p)
	}
	return strings.Join(parts, "/")
}
