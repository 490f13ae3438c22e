package mirror

import (
	"regexp"
	"testing"
)

func TestExpand(t *testing.T) {
	v := values{Registry: "127.0.0.1:5000", Repository: "library/python", Tag: "3.12-slim",
		Platform: "linux/arm64/v8"}
	tests := []struct {
		name    string
		path    string
		v       values
		want    string
		wantErr string
	}{
		{name: "default", path: DefaultPath, v: v, want: "127.0.0.1_5000/library/python/3.12-slim"},
		{name: "platform", path: "{repo}/{tag}/{platform}", v: v,
			want: "library/python/3.12-slim/linux-arm64-v8"},
		{name: "os and arch", path: "{os}/{arch}/{tag}", v: v, want: "linux/arm64-v8/3.12-slim"},
		{name: "no variant", path: "{platform}", v: values{Platform: "linux/amd64"},
			want: "linux-amd64"},
		{name: "literal text", path: "apps/{repo}-{tag}.d", v: v,
			want: "apps/library/python-3.12-slim.d"},
		{name: "slashes cleaned", path: "a//{tag}/", v: v, want: "a/3.12-slim"},
		{name: "hostile tag stays one component", path: "{tag}",
			v: values{Tag: "../../etc", Platform: "linux/amd64"}, want: "_._.._etc"},
		{name: "dot-dot tag", path: "x/{tag}", v: values{Tag: "..", Platform: "linux/amd64"},
			want: "x/_."},
		{name: "hidden tag", path: "{tag}", v: values{Tag: ".hidden", Platform: "linux/amd64"},
			want: "_hidden"},
		{name: "hostile repository", path: "{repo}/{tag}",
			v:    values{Repository: "a/../../b", Tag: "t", Platform: "linux/amd64"},
			want: "a/_./_./b/t"},
		{name: "absolute repository", path: "{repo}",
			v: values{Repository: "/etc", Platform: "linux/amd64"}, want: "_/etc"},
		{name: "odd bytes", path: "{tag}", v: values{Tag: "a b:c\\d\x00", Platform: "linux/amd64"},
			want: "a_b_c_d_"},
		{name: "empty value", path: "x/{tag}", v: values{Platform: "linux/amd64"}, want: "x/_"},
		{name: "state file", path: ".oci2layers-sync.json/{tag}", v: v,
			wantErr: `would replace sync's`},
		{name: "bad platform", path: "{tag}", v: values{Tag: "t", Platform: "linux"},
			wantErr: `want os/arch`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseTemplate(tt.path)
			if err != nil {
				t.Fatalf("parseTemplate(%q): %v", tt.path, err)
			}
			got, err := tmpl.expand(tt.v)
			if tt.wantErr != "" {
				if err == nil || !regexp.MustCompile(tt.wantErr).MatchString(err.Error()) {
					t.Fatalf("expand = %q, %v; want an error matching %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("expand(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
			}
		})
	}
}

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		path    string
		wantErr string
	}{
		{path: "{registry}/{repo}/{tag}"},
		{path: "x"},
		{path: ""},
		{path: "/abs/{tag}", wantErr: "relative"},
		{path: "../{tag}", wantErr: "climb"},
		{path: "a/./{tag}", wantErr: "climb"},
		{path: "a/..", wantErr: "climb"},
		{path: "{tag", wantErr: "without"},
		{path: "tag}", wantErr: "without"},
		{path: "{}", wantErr: "unknown placeholder"},
		{path: "{Tag}", wantErr: "unknown placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			_, err := parseTemplate(tt.path)
			switch {
			case tt.path == "":
				if err == nil {
					t.Error("parseTemplate(\"\") succeeded")
				}
			case tt.wantErr == "" && err != nil:
				t.Errorf("parseTemplate(%q): %v", tt.path, err)
			case tt.wantErr != "" && (err == nil ||
				!regexp.MustCompile(tt.wantErr).MatchString(err.Error())):
				t.Errorf("parseTemplate(%q) error = %v, want %q", tt.path, err, tt.wantErr)
			}
		})
	}
}

func TestConfine(t *testing.T) {
	tests := []struct {
		path string
		want string // empty: refused
	}{
		{path: "a/b", want: "a/b"},
		{path: "a/../b", want: "b"},
		{path: "a/b/..", want: "a"},
		{path: "..", want: ""},
		{path: "../a", want: ""},
		{path: "a/../../b", want: ""},
		{path: "/a", want: ""},
		{path: ".", want: ""},
		{path: "a/..", want: ""},
		{path: "", want: ""},
		{path: ".oci2layers-sync.lock/x", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, err := confine(tt.path)
			if tt.want == "" {
				if err == nil {
					t.Errorf("confine(%q) = %q, want it refused", tt.path, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("confine(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
			}
		})
	}
}
