package e2e

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// testMetadata converts an image whose config has awkward ENV, ENTRYPOINT,
// CMD, WORKDIR and labels, then runs the config overlay's scripts with sh
// and the run wrapper with a stand-in runtime, and checks that every value
// arrives literally.
func testMetadata(t *testing.T, px *countingProxy) {
	img := buildImage(t, metaSpec())
	src := pushImage(t, px, "meta", img)
	out := filepath.Join(t.TempDir(), "out dir")
	r := runBin(t, binOptions{}, convertArgs(src, out, t.TempDir())...)
	checkExit(t, r, 0, nil)
	if r.Code != 0 {
		t.FailNow()
	}
	l := readLayout(t, out)
	if l.WorkingDir != metaWorkDir || l.User != metaUser {
		t.Errorf("image.json: working_dir %q, user %q; want %q, %q", l.WorkingDir, l.User,
			metaWorkDir, metaUser)
	}

	cfgFile := filepath.Join(out, l.ConfigOverlay.File)
	p := onePartition(t, cfgFile, sif.PartOverlay)
	checkOCIConfig(t, "config overlay", readSIF(t, cfgFile).jsonObject(ociConfigName), img)
	root := unsquash(t, copyPartition(t, cfgFile, p.Offset, p.Size))

	t.Run("env", func(t *testing.T) {
		checkEnvScript(t, filepath.Join(root, ".singularity.d/env/10-docker2singularity.sh"))
	})
	t.Run("runscript", func(t *testing.T) {
		checkRunscript(t, filepath.Join(root, ".singularity.d/runscript"))
	})
	t.Run("labels", func(t *testing.T) {
		var got map[string]string
		data := readFile(t, filepath.Join(root, ".singularity.d/labels.json"))
		if err := json.Unmarshal([]byte(data), &got); err != nil {
			t.Fatalf("labels.json: %v\n%s", err, data)
		}
		if !maps.Equal(got, metaLabels) {
			t.Errorf("labels.json holds %q, want %q", got, metaLabels)
		}
	})
	t.Run("run wrapper", func(t *testing.T) { checkRunWrapper(t, out, l) })
}

// checkEnvScript sources the env script with sh in an environment that
// sets PATH and HOSTWINS, and checks every variable.
func checkEnvScript(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", `. "$0" && exec env -0`, script)
	cmd.Env = []string{"PATH=/host/bin:/usr/bin:/bin", "HOSTWINS=from the host", "HOME=/home/h"}
	got := runSh(t, cmd)
	vars := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(got, "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}

	want := map[string]string{"HOSTWINS": "from the host"} // a default the host overrides
	for _, kv := range metaEnv {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := want[k]; !ok && k != "BAD-NAME" {
			want[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := vars[k]; !ok || v != want[k] {
			t.Errorf("after sourcing the env script, %s=%q (set: %v), want %q", k, v, ok, want[k])
		}
	}
	if _, ok := vars["BAD-NAME"]; ok {
		t.Error("the env script exported BAD-NAME, which is no shell name")
	}
	if t.Failed() {
		t.Logf("env script:\n%s", readFile(t, script))
	}
}

// checkRunscript runs the runscript with sh, with and without
// SINGULARITY_NO_EVAL, with and without arguments. ENTRYPOINT is printf
// "%s\n", so the output shows each final argument on its own line.
func checkRunscript(t *testing.T, script string) {
	t.Helper()
	lines := func(args ...string) string {
		var b strings.Builder
		for _, a := range args {
			b.WriteString(a + "\n")
		}
		return b.String()
	}
	tests := []struct {
		name   string
		noEval bool
		args   []string
		want   string
	}{
		{"cmd", false, nil, lines(metaCmd...)},
		{"cmd no-eval", true, nil, lines(metaCmd...)},
		// Apptainer evaluates arguments once, unless --no-eval.
		{"args", false, []string{"x  y", "$HOME", "it's"}, lines("x  y", "/home/h", "it's")},
		{"args no-eval", true, []string{"x  y", "$HOME", "it's"}, lines("x  y", "$HOME", "it's")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("sh", append([]string{script}, tt.args...)...)
			cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/home/h"}
			if tt.noEval {
				cmd.Env = append(cmd.Env, "SINGULARITY_NO_EVAL=1")
			}
			if got := runSh(t, cmd); got != tt.want {
				t.Errorf("runscript %q printed\n%q\nwant\n%q\nrunscript:\n%s", tt.args, got,
					tt.want, readFile(t, script))
			}
		})
	}
}

// runSh runs cmd and returns its stdout, failing t when it fails or writes
// to stderr.
func runSh(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("%s: %v\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return stdout.String()
}

// checkRunWrapper checks OUT/run: sh parses it, it passes WORKDIR with
// --pwd, and run with an "apptainer" that prints its arguments it gives
// the working directory, the overlays and base.sif as single arguments.
func checkRunWrapper(t *testing.T, out string, l layoutJSON) {
	t.Helper()
	wrapper := filepath.Join(out, "run")
	if res, err := exec.Command("sh", "-n", wrapper).CombinedOutput(); err != nil {
		t.Errorf("sh -n run: %v\n%s", err, res)
	}
	if text := readFile(t, wrapper); !strings.Contains(text, "--pwd '/work dir'") {
		t.Errorf("run does not pass --pwd '/work dir':\n%s", text)
	}

	bin := t.TempDir()
	fake := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n"
	if err := os.WriteFile(filepath.Join(bin, "apptainer"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(wrapper, "exec", "cat", "/work dir/file")
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
	got := strings.Split(strings.TrimSuffix(runSh(t, cmd), "\n"), "\n")

	here, err := filepath.EvalSymlinks(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"exec", "--pwd", metaWorkDir}
	for i := 1; i < len(l.ExecArgs); i += 2 {
		want = append(want, "--overlay", here+"/"+l.ExecArgs[i])
	}
	want = append(want, here+"/"+l.Base.File, "cat", "/work dir/file")
	if !slices.Equal(got, want) {
		t.Errorf("run exec cat '/work dir/file' ran\n  %q\nwant\n  %q", got, want)
	}
}
