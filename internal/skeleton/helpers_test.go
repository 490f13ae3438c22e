package skeleton

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shells returns the shells the generated scripts are run with: /bin/sh,
// and bash when it is installed. Apptainer sources the scripts with the
// image's /bin/sh (often dash or busybox) or its own bash-like interpreter.
func shells(t *testing.T) []string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skipf("no /bin/sh to run the scripts with: %v", err)
	}
	list := []string{"/bin/sh"}
	if bash, err := exec.LookPath("bash"); err == nil {
		list = append(list, bash)
	}
	return list
}

// writeScript writes text to dir/name, executable, and returns the path.
func writeScript(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// run runs argv in dir with exactly env, and returns its stdout; stderr
// must stay empty and the exit status zero.
func run(t *testing.T, dir string, env []string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("run %q: %v, stderr: %s", argv, err, stderr.String())
	}
	return stdout.String()
}

// splitNUL splits NUL-terminated fields.
func splitNUL(s string) []string {
	fields := strings.Split(s, "\x00")
	return fields[:len(fields)-1]
}

// lookPath returns the absolute path of a command the tests need.
func lookPath(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("no %s: %v", name, err)
	}
	return path
}
