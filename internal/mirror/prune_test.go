package mirror

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tree lists every path below root, slash-separated, directories with a
// trailing slash.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeFile(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("user"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRemoveOutput(t *testing.T) {
	tests := []struct {
		name     string
		dir      string
		madeDirs []string
		setup    func(t *testing.T, root string)
		wantGone bool
		want     []string // the tree left
		wantErr  string
	}{
		{name: "output and made parents", dir: "h/r/1", madeDirs: []string{"h/r", "h"},
			wantGone: true, want: []string{"keep"}},
		{name: "parent not made by sync", dir: "h/r/1", madeDirs: []string{"h/r"},
			wantGone: true, want: []string{"h/", "keep"}},
		{name: "shared parent kept", dir: "h/r/1", madeDirs: []string{"h/r", "h"},
			setup: func(t *testing.T, root string) {
				writeFakeOutput(t, filepath.Join(root, "h/r/2"), "m")
			},
			wantGone: true,
			want: []string{"h/", "h/r/", "h/r/2/", "h/r/2/base.sif", "h/r/2/image.json",
				"h/r/2/overlays/", "h/r/2/overlays/01-0123456789ab.sif",
				"h/r/2/overlays/config-ba9876543210.sif", "h/r/2/run", "keep"}},
		{name: "user file kept", dir: "h/r/1", madeDirs: []string{"h/r", "h"},
			setup: func(t *testing.T, root string) {
				writeFile(t, filepath.Join(root, "h/r/1/notes.txt"))
				writeFile(t, filepath.Join(root, "h/r/1/overlays/mine.sif"))
			},
			want: []string{"h/", "h/r/", "h/r/1/", "h/r/1/notes.txt", "h/r/1/overlays/",
				"h/r/1/overlays/mine.sif", "keep"},
			wantErr: "which sync did not write"},
		{name: "temporary files go", dir: "h/r/1",
			setup: func(t *testing.T, root string) {
				writeFile(t, filepath.Join(root, "h/r/1/.tmp-base.sif-123"))
				writeFile(t, filepath.Join(root, "h/r/1/overlays/.tmp-01-x.sif"))
			},
			wantGone: true, want: []string{"h/", "h/r/", "keep"}},
		{name: "already gone", dir: "h/r/1", madeDirs: []string{"h/r", "h"},
			setup: func(t *testing.T, root string) {
				if err := os.RemoveAll(filepath.Join(root, "h/r/1")); err != nil {
					t.Fatal(err)
				}
			},
			wantGone: true, want: []string{"keep"}},
		{name: "outside the root", dir: "../x", wantErr: "not inside",
			want: []string{"h/", "h/r/", "h/r/1/", "h/r/1/base.sif", "h/r/1/image.json",
				"h/r/1/overlays/", "h/r/1/overlays/01-0123456789ab.sif",
				"h/r/1/overlays/config-ba9876543210.sif", "h/r/1/run", "keep"}},
		{name: "symlink out", dir: "link", setup: func(t *testing.T, root string) {
			if err := os.Symlink(filepath.Join(root, "h/r/1"), filepath.Join(root, "link")); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "not a directory",
			want: []string{"h/", "h/r/", "h/r/1/", "h/r/1/base.sif", "h/r/1/image.json",
				"h/r/1/overlays/", "h/r/1/overlays/01-0123456789ab.sif",
				"h/r/1/overlays/config-ba9876543210.sif", "h/r/1/run", "keep", "link"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFakeOutput(t, filepath.Join(root, "h/r/1"), "m")
			writeFile(t, filepath.Join(root, "keep"))
			if tt.setup != nil {
				tt.setup(t, root)
			}
			gone, err := removeOutput(root, tt.dir, tt.madeDirs)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" &&
				(err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("removeOutput error = %v, want %q", err, tt.wantErr)
			}
			if gone != tt.wantGone {
				t.Errorf("removeOutput removed = %v, want %v", gone, tt.wantGone)
			}
			if got := tree(t, root); !slices.Equal(got, tt.want) {
				t.Errorf("left\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

// TestPruneChoosesRecorded checks which recorded directories prune takes:
// only those this run does not produce, never one of a repository whose
// tags could not be listed, and never one sync did not create.
func TestPruneChoosesRecorded(t *testing.T) {
	root := t.TempDir()
	rec := func(repo string, created bool) *record {
		return &record{Registry: "h", Repository: repo, Tag: "t", Created: created,
			Digest: "sha256:aa"}
	}
	st := &state{name: StateFile, Version: stateVersion, Outputs: map[string]*record{
		"current":  rec("a", true),
		"gone-tag": rec("a", true),
		"stale":    rec("a", true),
		"unlisted": rec("u", true),
		"foreign":  rec("a", false),
	}}
	for dir := range st.Outputs {
		writeFakeOutput(t, filepath.Join(root, dir), "m")
	}
	writeFile(t, filepath.Join(root, "mine/file"))
	s := &syncer{cfg: &Config{Output: root}, state: st, opts: Options{Prune: true}}
	s.opts.Logger = slog.New(slog.DiscardHandler)
	targets := []*target{{dir: "current"}, {dir: "gone-tag", gone: true}}
	rep := &Report{}
	s.prune(rep, targets, map[string]bool{"h/u": true})

	var got []string
	for _, p := range rep.Pruned {
		got = append(got, p.Dir)
		if p.Dir == "foreign" && p.Removed {
			t.Error("foreign: removed a directory sync did not create")
		}
	}
	if want := []string{"foreign", "gone-tag", "stale"}; !slices.Equal(got, want) {
		t.Errorf("pruned %q, want %q", got, want)
	}
	for _, dir := range []string{"current", "unlisted", "foreign", "mine"} {
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			t.Errorf("%s: %v, want it kept", dir, err)
		}
	}
	for _, dir := range []string{"gone-tag", "stale"} {
		if _, err := os.Lstat(filepath.Join(root, dir)); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v)", dir, err)
		}
	}
	saved, err := loadState(root, StateFile)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for dir := range saved.Outputs {
		left = append(left, dir)
	}
	slices.Sort(left)
	if want := []string{"current", "unlisted"}; !slices.Equal(left, want) {
		t.Errorf("state keeps %q, want %q", left, want)
	}
}
