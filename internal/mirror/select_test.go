package mirror

import (
	"slices"
	"testing"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		tag    string
		want   version
		wantOK bool
	}{
		{tag: "1.2.3", want: version{1, 2, 3}, wantOK: true},
		{tag: "v1.2.3", want: version{1, 2, 3}, wantOK: true},
		{tag: "0.0.0", want: version{0, 0, 0}, wantOK: true},
		{tag: "10.20.30", want: version{10, 20, 30}, wantOK: true},
		{tag: "1.2.3-rc1"},
		{tag: "v2.0.0-alpha.1"},
		{tag: "1.2"},
		{tag: "1.2.3.4"},
		{tag: "01.2.3"},
		{tag: "1.02.3"},
		{tag: "1..3"},
		{tag: "latest"},
		{tag: "vv1.2.3"},
		{tag: "V1.2.3"},
		{tag: "1.2.3_build"},
		{tag: "+1.2.3"},
		{tag: "99999999999999999999.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.tag, func(t *testing.T) {
			got, ok := parseRelease(tt.tag)
			if ok != tt.wantOK || got != tt.want {
				t.Errorf("parseRelease(%q) = %v, %v; want %v, %v", tt.tag, got, ok, tt.want,
					tt.wantOK)
			}
		})
	}
}

func TestNewestSemver(t *testing.T) {
	tests := []struct {
		name string
		tags []string
		n    int
		want []string
	}{
		{name: "ordering", tags: []string{"1.0.0", "1.10.0", "1.2.0", "1.9.9", "2.0.0"}, n: 3,
			want: []string{"2.0.0", "1.10.0", "1.9.9"}},
		{name: "pre-releases excluded",
			tags: []string{"1.0.0", "1.1.0", "2.0.0-rc1", "1.2.0", "latest"}, n: 2,
			want: []string{"1.2.0", "1.1.0"}},
		{name: "v prefix", tags: []string{"v1.0.0", "v1.1.0", "1.0.5"}, n: 2,
			want: []string{"v1.1.0", "1.0.5"}},
		{name: "equal versions by name", tags: []string{"v1.0.0", "1.0.0", "0.9.0"}, n: 2,
			want: []string{"1.0.0", "v1.0.0"}},
		{name: "non-semver ignored", tags: []string{"latest", "stable", "3.12", "3.12-slim",
			"2024.01.01"}, n: 3, want: nil},
		{name: "fewer than n", tags: []string{"0.1.0"}, n: 5, want: []string{"0.1.0"}},
		{name: "patch order", tags: []string{"1.0.9", "1.0.10", "1.0.2"}, n: 1,
			want: []string{"1.0.10"}},
		{name: "none", n: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := newestSemver(tt.tags, tt.n); !slices.Equal(got, tt.want) {
				t.Errorf("newestSemver(%q, %d) = %q, want %q", tt.tags, tt.n, got, tt.want)
			}
		})
	}
}
