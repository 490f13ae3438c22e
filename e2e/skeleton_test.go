package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// skeletonLinks are the top-level symlinks Apptainer images carry.
var skeletonLinks = []string{"singularity", ".run", ".exec", ".test", ".shell", "environment"}

// skeletonDirs and skeletonFiles exist in every merged tree, from the image
// or from the skeleton.
var (
	skeletonDirs = []string{
		"dev", "proc", "root", "var/tmp", "tmp", "etc", "sys", "home",
		".singularity.d", ".singularity.d/env", ".singularity.d/actions",
	}
	skeletonFiles = []string{
		"etc/hosts", "etc/resolv.conf", ".singularity.d/runscript",
		".singularity.d/labels.json", ".singularity.d/env/10-docker2singularity.sh",
	}
)

// checkSkeleton checks the Apptainer skeleton in the merged tree got,
// mounted at merged: its links resolve inside the tree, its directories and
// files exist, and the labels, environment and runscript carry the image
// config.
func checkSkeleton(t *testing.T, merged string, got tree, img v1.Image) {
	t.Helper()
	b := &refBuilder{tree: got}
	for _, l := range skeletonLinks {
		if n := got[l]; n.Type != "symlink" {
			t.Errorf("skeleton: /%s is %q, want a symlink", l, n.Type)
		} else if target := b.resolve(l); got[target].Type == "" {
			t.Errorf("skeleton: /%s -> %s resolves to /%s, which does not exist",
				l, n.Target, target)
		}
	}
	for _, d := range skeletonDirs {
		if n := got[b.resolve(d)]; n.Type != "dir" {
			t.Errorf("skeleton: /%s is %q, want a directory", d, n.Type)
		}
	}
	for _, f := range skeletonFiles {
		if n := got[b.resolve(f)]; n.Type != "file" {
			t.Errorf("skeleton: /%s is %q, want a file", f, n.Type)
		}
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	checkLabels(t, merged, cf.Config.Labels)

	env := readSkeleton(t, merged, ".singularity.d/env/10-docker2singularity.sh")
	for _, kv := range cf.Config.Env {
		key, _, _ := strings.Cut(kv, "=")
		if !strings.Contains(env, key) {
			t.Errorf("skeleton: 10-docker2singularity.sh does not mention %s:\n%s", key, env)
		}
	}
	run := readSkeleton(t, merged, ".singularity.d/runscript")
	for _, arg := range cf.Config.Entrypoint {
		if !strings.Contains(run, arg) {
			t.Errorf("skeleton: runscript does not mention entrypoint %q:\n%s", arg, run)
		}
	}
}

func checkLabels(t *testing.T, merged string, want map[string]string) {
	t.Helper()
	var labels map[string]string
	data := readSkeleton(t, merged, ".singularity.d/labels.json")
	if err := json.Unmarshal([]byte(data), &labels); err != nil {
		t.Errorf("skeleton: labels.json: %v\n%s", err, data)
		return
	}
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("skeleton: label %s = %q, want %q", k, labels[k], v)
		}
	}
}

func readSkeleton(t *testing.T, merged, rel string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(merged, rel))
	if err != nil {
		t.Errorf("skeleton: %v", err)
	}
	return string(data)
}
