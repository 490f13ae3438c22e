package mirror

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/oci2layers/oci2layers/internal/registry"
)

// selectTags returns the tags an image entry names: its list as given, or
// the registry's tags its regular expression matches (sorted), or its
// newest release tags (newest first). Tags the registry lists that are not
// valid tag names are ignored with a warning.
func selectTags(ctx context.Context, img *Image, ropts registry.Options,
	logger *slog.Logger) ([]string, error) {
	if img.TagRegex == nil && img.NewestSemver == 0 {
		return img.Tags, nil
	}
	all, err := registry.ListTags(ctx, img.Name(), ropts)
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, t := range all {
		if !tagPattern.MatchString(t) {
			logger.Warn("ignoring a tag that is not a valid tag name", "repository", img.Name(),
				"tag", t)
			continue
		}
		tags = append(tags, t)
	}

	var out []string
	if img.TagRegex != nil {
		for _, t := range tags {
			if img.TagRegex.MatchString(t) {
				out = append(out, t)
			}
		}
		slices.Sort(out)
	} else {
		out = newestSemver(tags, img.NewestSemver)
	}
	if len(out) == 0 {
		logger.Warn("no tag matches", "repository", img.Name(), "tags", len(tags))
	}
	return out, nil
}

// version is a release version MAJOR.MINOR.PATCH.
type version [3]uint64

// parseRelease reads a tag as a semantic version release: MAJOR.MINOR.PATCH
// with an optional leading "v", numbers without leading zeros. A
// pre-release ("1.2.0-rc1") or anything else is not a release.
func parseRelease(tag string) (version, bool) {
	var v version
	parts := strings.Split(strings.TrimPrefix(tag, "v"), ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		if p == "" || len(p) > 1 && p[0] == '0' || strings.Trim(p, "0123456789") != "" {
			return version{}, false
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return version{}, false
		}
		v[i] = n
	}
	return v, true
}

// newestSemver returns the n tags with the highest release versions, newest
// first. Tags of equal versions ("1.2.0" and "v1.2.0") are ordered by name
// and each counts as one of the n.
func newestSemver(tags []string, n int) []string {
	type release struct {
		tag string
		v   version
	}
	var rs []release
	for _, t := range tags {
		if v, ok := parseRelease(t); ok {
			rs = append(rs, release{t, v})
		}
	}
	slices.SortFunc(rs, func(a, b release) int {
		for i := range a.v {
			if c := cmp.Compare(b.v[i], a.v[i]); c != 0 {
				return c
			}
		}
		return strings.Compare(a.tag, b.tag)
	})
	var out []string
	for _, r := range rs[:min(n, len(rs))] {
		out = append(out, r.tag)
	}
	return out
}
