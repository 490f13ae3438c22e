package skeleton

import (
	"path/filepath"
	"slices"
	"testing"
)

// argvHelper prints each of its arguments followed by a NUL, so that the
// tests see the exact argv the runscript executed, newlines included.
const argvHelper = `#!/bin/sh
printf '%s\000' "$@"
`

// TestRunscript runs the generated runscript, with and without arguments,
// in both of Apptainer's modes, with ENTRYPOINT or CMD pointing at a helper
// that prints its argv, and compares that argv.
func TestRunscript(t *testing.T) {
	const helper = "@" // replaced by the helper's path
	awkward := []string{
		"two words", "it's", `say "hi"`, "$HOME", "${HOME}", "`id`", "$(id)",
		`a\b`, `end\`, "", "-n", "*", "line1\nline2", "tab\t", "a=b", "}{",
	}
	tests := []struct {
		name       string
		entrypoint []string
		cmd        []string
		args       []string
		only       string // "eval" or "no-eval" to run in one mode only
		want       []string
		wantEmpty  bool // nothing runs: no output
	}{
		{
			name:       "ENTRYPOINT and CMD",
			entrypoint: []string{helper, "ep 1"}, cmd: []string{"c1", "c 2"},
			want: []string{"ep 1", "c1", "c 2"},
		},
		{
			name:       "ENTRYPOINT and CMD, arguments replace CMD",
			entrypoint: []string{helper, "ep 1"}, cmd: []string{"c1", "c 2"},
			args: []string{"x", "y z"},
			want: []string{"ep 1", "x", "y z"},
		},
		{
			name:       "ENTRYPOINT only",
			entrypoint: []string{helper, "ep"},
			want:       []string{"ep"},
		},
		{
			name:       "ENTRYPOINT only, with arguments",
			entrypoint: []string{helper},
			args:       []string{"a", "b c"},
			want:       []string{"a", "b c"},
		},
		{
			name: "CMD only",
			cmd:  []string{helper, "c1", "c 2"},
			want: []string{"c1", "c 2"},
		},
		{
			name: "CMD only, arguments replace CMD",
			cmd:  []string{"/nonexistent", "c1"},
			args: []string{helper, "a b"},
			want: []string{"a b"},
		},
		{
			name: "CMD only, arguments starting with a dash",
			cmd:  []string{"/nonexistent"},
			args: []string{helper, "-x"},
			want: []string{"-x"},
		},
		{
			name:      "neither, no arguments",
			wantEmpty: true,
		},
		{
			name: "neither, arguments run as the command",
			args: []string{helper, "a b"},
			want: []string{"a b"},
		},
		{
			name:       "awkward ENTRYPOINT elements stay literal",
			entrypoint: append([]string{helper}, awkward...),
			want:       awkward,
		},
		{
			name: "awkward CMD elements stay literal",
			cmd:  append([]string{helper}, awkward...),
			want: awkward,
		},
		{
			name:       "awkward arguments stay literal with --no-eval",
			entrypoint: []string{helper}, cmd: []string{"default"},
			args: awkward, only: "no-eval",
			want: awkward,
		},
		{
			name:       "arguments with spaces stay whole by default",
			entrypoint: []string{helper}, cmd: []string{"default"},
			args: []string{"a b", " lead", "it's", "x=y", "*"}, only: "eval",
			want: []string{"a b", " lead", "it's", "x=y", "*"},
		},
		{
			name:       "arguments are expanded by default, as in Apptainer",
			entrypoint: []string{helper}, cmd: []string{"default"},
			args: []string{"$HOME", "${HOME}/x", `\$HOME`}, only: "eval",
			want: []string{"/home/test", "/home/test/x", "$HOME"},
		},
	}

	for _, sh := range shells(t) {
		for _, tt := range tests {
			for _, noEvalSet := range []bool{false, true} {
				mode := "eval"
				if noEvalSet {
					mode = "no-eval"
				}
				if tt.only != "" && tt.only != mode {
					continue
				}
				name := filepath.Base(sh) + "/" + tt.name + "/" + mode
				t.Run(name, func(t *testing.T) {
					dir := t.TempDir()
					helperPath := writeScript(t, dir, "argv", argvHelper)
					subst := func(words []string) []string {
						out := slices.Clone(words)
						for i, w := range out {
							if w == helper {
								out[i] = helperPath
							}
						}
						return out
					}
					script := runscript(subst(tt.entrypoint), subst(tt.cmd))
					path := writeScript(t, dir, "runscript", script)

					env := []string{"PATH=/usr/bin:/bin", "HOME=/home/test"}
					if noEvalSet {
						env = append(env, "SINGULARITY_NO_EVAL=1")
					}
					argv := append([]string{sh, path}, subst(tt.args)...)
					out := run(t, dir, env, argv...)

					if tt.wantEmpty {
						if out != "" {
							t.Errorf("got output %q, want none", out)
						}
						return
					}
					if got := splitNUL(out); !slices.Equal(got, tt.want) {
						t.Errorf("got argv %q, want %q", got, tt.want)
					}
				})
			}
		}
	}
}

// TestRunscriptExecutable runs the runscript directly, through its
// "#!/bin/sh" line, as Apptainer's run action does.
func TestRunscriptExecutable(t *testing.T) {
	shells(t)
	dir := t.TempDir()
	helperPath := writeScript(t, dir, "argv", argvHelper)
	path := writeScript(t, dir, "runscript", runscript([]string{helperPath, "ep"}, []string{"c"}))

	env := []string{"PATH=/usr/bin:/bin"}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "no arguments", want: []string{"ep", "c"}},
		{name: "arguments", args: []string{"a b"}, want: []string{"ep", "a b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitNUL(run(t, dir, env, append([]string{path}, tt.args...)...))
			if !slices.Equal(got, tt.want) {
				t.Errorf("got argv %q, want %q", got, tt.want)
			}
		})
	}
}
