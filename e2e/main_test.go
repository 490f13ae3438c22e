package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The oci2layers binary under test, set up by TestMain.
var (
	binPath string
	// binErr says why there is no binary; tests skip when binMissing and
	// fail otherwise.
	binErr     error
	binMissing bool
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "oci2layers-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: create temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath, binMissing, binErr = buildBinary(dir)
	return m.Run()
}

// buildBinary builds ./cmd/oci2layers into dir, or takes $OCI2LAYERS_BIN.
// missing reports that there is nothing to build yet.
func buildBinary(dir string) (bin string, missing bool, err error) {
	if bin := os.Getenv("OCI2LAYERS_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", false, fmt.Errorf("stat $OCI2LAYERS_BIN: %w", err)
		}
		return bin, false, nil
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return "", false, fmt.Errorf("find module root: %w", err)
	}

	list := exec.Command("go", "list", "-f", "{{.Name}}", "./cmd/oci2layers")
	list.Dir = root
	name, err := list.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return "", true, fmt.Errorf("go list ./cmd/oci2layers: %w", err)
	}
	if strings.TrimSpace(string(name)) != "main" {
		return "", true, errors.New("./cmd/oci2layers is no main package yet")
	}

	bin = filepath.Join(dir, "oci2layers")
	build := exec.Command("go", "build", "-o", bin, "./cmd/oci2layers")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", false, fmt.Errorf("go build ./cmd/oci2layers: %w\n%s", err, out)
	}
	return bin, false, nil
}

// requireBinary skips t when cmd/oci2layers has no code yet and fails it when
// the code does not build.
func requireBinary(t *testing.T) string {
	t.Helper()
	if binErr == nil {
		return binPath
	}
	if binMissing {
		t.Skipf("no oci2layers binary: %v (write cmd/oci2layers or set $OCI2LAYERS_BIN)", binErr)
	}
	t.Fatalf("no oci2layers binary: %v", binErr)
	return ""
}

// requireMksquashfs skips t when mksquashfs, which the converter runs, is
// not installed.
func requireMksquashfs(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		t.Skip("mksquashfs not found: install squashfs-tools")
	}
}

// requireRoot skips t unless it runs as root, saying what needs root.
func requireRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("not root: %s need root; run the tests as root", what)
	}
}
