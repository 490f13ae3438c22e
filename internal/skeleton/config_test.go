package skeleton

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestEnvScript sources 10-docker2singularity.sh in sh (and bash) with a
// controlled environment and compares the exported variables with the
// literal ENV values.
func TestEnvScript(t *testing.T) {
	const hostPath = "/usr/bin:/bin"
	tests := []struct {
		name   string
		env    []string          // the image's ENV
		host   []string          // set before the script is sourced
		want   map[string]string // after sourcing
		absent []string          // not set after sourcing
	}{
		{
			name: "spaces",
			env:  []string{"A=a b  c ", "B= lead"},
			want: map[string]string{"A": "a b  c ", "B": " lead"},
		},
		{
			name: "quotes",
			env:  []string{`A=say "hi"`, "B=it's", `C='"'`, `D="`, "E='"},
			want: map[string]string{"A": `say "hi"`, "B": "it's", "C": `'"'`, "D": `"`, "E": "'"},
		},
		{
			name: "dollar and command substitution",
			env:  []string{"A=$HOME", "B=${HOME}x", "C=`touch pwned1`", "D=$(touch pwned2)", "E=$"},
			host: []string{"HOME=/home/host"},
			want: map[string]string{
				"A": "$HOME", "B": "${HOME}x", "C": "`touch pwned1`", "D": "$(touch pwned2)",
				"E": "$",
			},
		},
		{
			name: "backslashes",
			env:  []string{`A=a\b`, `B=a\\b`, `C=end\`, `D=\"`, `E=\$HOME`, "F=\\`x\\`", `G=\n`},
			want: map[string]string{
				"A": `a\b`, "B": `a\\b`, "C": `end\`, "D": `\"`, "E": `\$HOME`, "F": "\\`x\\`",
				"G": `\n`,
			},
		},
		{
			name: "equals and braces",
			env:  []string{"A=a=b=c", "B==", "C=}", "D={}", "E=${", "F=a}b"},
			want: map[string]string{
				"A": "a=b=c", "B": "=", "C": "}", "D": "{}", "E": "${", "F": "a}b",
			},
		},
		{
			name: "empty, control and non-ASCII",
			env:  []string{"A=", "B=line1\nline2", "C=tab\there", "D=grüß €", "E=*"},
			want: map[string]string{
				"A": "", "B": "line1\nline2", "C": "tab\there", "D": "grüß €", "E": "*",
			},
		},
		{
			name:   "no value",
			env:    []string{"A", "B"},
			host:   []string{"B=host"},
			want:   map[string]string{"A": "", "B": "host"},
			absent: nil,
		},
		{
			name: "host value wins over the image default",
			env:  []string{"A=image", "B=image", "C=image"},
			host: []string{"A=host", "B="},
			want: map[string]string{"A": "host", "B": "image", "C": "image"},
		},
		{
			name: "PATH is set outright",
			env:  []string{`PATH=/opt/x y/bin:$PATH:/usr/bin`},
			want: map[string]string{"PATH": `/opt/x y/bin:$PATH:/usr/bin`},
		},
		{
			name:   "invalid names are left out",
			env:    []string{"bad-name=1", "1A=2", "=3", "a.b=4", "OK_1=5"},
			want:   map[string]string{"OK_1": "5"},
			absent: []string{"bad-name", "1A", "a.b"},
		},
	}

	envPath := lookPath(t, "env")
	for _, sh := range shells(t) {
		for _, tt := range tests {
			t.Run(filepath.Base(sh)+"/"+tt.name, func(t *testing.T) {
				dir := t.TempDir()
				writeScript(t, dir, "10-docker2singularity.sh", envScript(tt.env))
				host := append([]string{"PATH=" + hostPath}, tt.host...)

				out := run(t, dir, host, sh, "-c", ". ./10-docker2singularity.sh && "+envPath+" -0")

				got := map[string]string{}
				for _, kv := range splitNUL(out) {
					name, value, _ := strings.Cut(kv, "=")
					got[name] = value
				}
				for name, want := range tt.want {
					value, ok := got[name]
					if !ok {
						t.Errorf("%s: not set, want %q", name, want)
					} else if value != want {
						t.Errorf("%s: got %q, want %q", name, value, want)
					}
				}
				for _, name := range tt.absent {
					if value, ok := got[name]; ok {
						t.Errorf("%s: got %q, want unset", name, value)
					}
				}
				if _, ok := tt.want["PATH"]; !ok && got["PATH"] != hostPath {
					t.Errorf("PATH: got %q, want %q", got["PATH"], hostPath)
				}
				for _, name := range []string{"pwned1", "pwned2"} {
					if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
						t.Errorf("sourcing the script ran a command that created %s", name)
					}
				}
			})
		}
	}
}

// TestEnvScriptText checks the exact lines, which follow Apptainer's form.
func TestEnvScriptText(t *testing.T) {
	got := envScript([]string{"PATH=/bin:/x", "LANG=C.UTF-8", "EMPTY=", "NOVAL", `Q=a"$`})
	want := `#!/bin/sh
export PATH="/bin:/x"
export LANG="${LANG:-"C.UTF-8"}"
export EMPTY="${EMPTY:-""}"
export NOVAL="${NOVAL:-}"
export Q="${Q:-"a\"\$"}"
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestLabelsJSON checks labels.json: "{}" without labels, else sorted keys
// and tab indents, and that it decodes back to the labels.
func TestLabelsJSON(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{name: "nil", labels: nil, want: "{}"},
		{name: "empty", labels: map[string]string{}, want: "{}"},
		{
			name:   "sorted",
			labels: map[string]string{"z": "1", "a.b": `q"<&>`, "m": ""},
			want: "{\n\t\"a.b\": \"q\\\"\\u003c\\u0026\\u003e\",\n" +
				"\t\"m\": \"\",\n\t\"z\": \"1\"\n}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := labelsJSON(tt.labels)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			var back map[string]string
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatalf("decode %q: %v", got, err)
			}
			if len(back) != len(tt.labels) {
				t.Errorf("decoded %d labels, want %d", len(back), len(tt.labels))
			}
			for k, v := range tt.labels {
				if back[k] != v {
					t.Errorf("label %s: got %q, want %q", k, back[k], v)
				}
			}
		})
	}
}

// TestConfig checks the entries Config returns for a whole image config.
func TestConfig(t *testing.T) {
	cfg := &v1.ConfigFile{Config: v1.Config{
		Env:        []string{"PATH=/usr/bin", "A=1"},
		Entrypoint: []string{"/bin/ep"},
		Cmd:        []string{"x"},
		Labels:     map[string]string{"k": "v"},
		WorkingDir: "/ignored",
		User:       "ignored",
	}}
	entries, err := Config(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, entries)

	type summary struct {
		name string
		typ  byte
		mode int64
		data string
	}
	want := []summary{
		{".singularity.d", 'D', 0o755, ""},
		{".singularity.d/env", 'D', 0o755, ""},
		{".singularity.d/env/10-docker2singularity.sh", 'F', 0o755, envScript(cfg.Config.Env)},
		{".singularity.d/labels.json", 'F', 0o644, "{\n\t\"k\": \"v\"\n}"},
		{".singularity.d/runscript", 'F', 0o755, runscript([]string{"/bin/ep"}, []string{"x"})},
	}
	if len(entries) != len(want) {
		t.Fatalf("got %d entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		typ := byte('F')
		if e.Header.Typeflag == '5' {
			typ = 'D'
		}
		got := summary{e.Header.Name, typ, e.Header.Mode, string(e.Data)}
		if got != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got, want[i])
		}
		if e.IfMissing {
			t.Errorf("%s: IfMissing set in the config overlay", e.Header.Name)
		}
	}
	if strings.Contains(string(entries[2].Data)+string(entries[4].Data), "ignored") {
		t.Error("WORKDIR or USER leaked into the scripts")
	}
}

// TestConfigNil checks that a nil config is an error.
func TestConfigNil(t *testing.T) {
	if _, err := Config(nil); err == nil {
		t.Error("got no error for a nil config")
	}
}
