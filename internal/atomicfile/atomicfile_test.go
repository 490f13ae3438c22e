package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func write(t *testing.T, f *File, s string) {
	t.Helper()
	if _, err := io.WriteString(f, s); err != nil {
		t.Fatal(err)
	}
}

func TestCommit(t *testing.T) {
	tests := []struct {
		name     string
		existing bool
		mode     fs.FileMode
	}{
		{name: "new file", mode: 0o640},
		{name: "replaces a file", existing: true, mode: 0o600},
		{name: "executable", mode: 0o755},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			final := filepath.Join(dir, "out.sif")
			if tt.existing {
				if err := os.WriteFile(final, []byte("old"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := Create(final, tt.mode)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Abort()
			write(t, f, "new")

			if got, want := filepath.Dir(f.Name()), dir; got != want {
				t.Errorf("temp file in %q, want %q", got, want)
			}
			b, err := os.ReadFile(final)
			if tt.existing && string(b) != "old" ||
				!tt.existing && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("before Commit the final name holds %q, %v", b, err)
			}

			if err := f.Commit(); err != nil {
				t.Fatal(err)
			}
			b, err = os.ReadFile(final)
			if err != nil || string(b) != "new" {
				t.Errorf("after Commit: %q, %v; want %q", b, err, "new")
			}
			fi, err := os.Stat(final)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := fi.Mode(), tt.mode; got != want {
				t.Errorf("mode %v, want %v", got, want)
			}
			if got := names(t, dir); len(got) != 1 {
				t.Errorf("dir holds %q, want only out.sif", got)
			}
		})
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out")
	f, err := Create(final, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "data")
	f.Abort()
	f.Abort() // safe to repeat
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("Abort left %q", got)
	}
	if err := f.Commit(); err == nil {
		t.Errorf("Commit after Abort succeeded")
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("Commit after Abort left %q", got)
	}
}

func TestCommitTwice(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out")
	f, err := Create(final, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "data")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err == nil {
		t.Errorf("second Commit succeeded")
	}
	f.Abort() // does nothing after Commit
	if b, err := os.ReadFile(final); err != nil || string(b) != "data" {
		t.Errorf("after Commit and Abort: %q, %v; want %q", b, err, "data")
	}
}

func TestCreateIn(t *testing.T) {
	top := t.TempDir()
	work := filepath.Join(top, "work")
	out := filepath.Join(top, "out")
	for _, d := range []string{work, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	final := filepath.Join(out, "entry.json")
	f, err := CreateIn(work, final, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if got, want := filepath.Dir(f.Name()), work; got != want {
		t.Errorf("temp file in %q, want %q", got, want)
	}
	if base := filepath.Base(f.Name()); !strings.HasPrefix(base, TempPrefix+"entry.json-") {
		t.Errorf("temp file named %q, want prefix %q", base, TempPrefix+"entry.json-")
	}
	if got := names(t, out); len(got) != 0 {
		t.Errorf("out holds %q before Commit", got)
	}
	write(t, f, "{}")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, work); len(got) != 0 {
		t.Errorf("work holds %q after Commit", got)
	}
	if b, err := os.ReadFile(final); err != nil || string(b) != "{}" {
		t.Errorf("final = %q, %v", b, err)
	}
}

// TestCrash leaves a file uncommitted, as a killed process would: only a
// temporary file remains, under the documented prefix.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	f, err := Create(filepath.Join(dir, "out.sif"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "half")
	f.File.Close()

	got := names(t, dir)
	if len(got) != 1 || !strings.HasPrefix(got[0], TempPrefix) {
		t.Errorf("dir holds %q, want one %s* file", got, TempPrefix)
	}
}

func TestCreateErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		dir   string
		final string
	}{
		{name: "missing dir", dir: filepath.Join(dir, "gone"),
			final: filepath.Join(dir, "gone", "f")},
		{name: "dir is a file", dir: filepath.Join(dir, "file"),
			final: filepath.Join(dir, "f")},
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if f, err := CreateIn(tt.dir, tt.final, 0o644); err == nil {
				f.Abort()
				t.Errorf("CreateIn succeeded")
			}
		})
	}
}

// TestCommitRenameFails checks that a failed rename removes the temporary
// file and leaves the final name alone.
func TestCommitRenameFails(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "missing", "f")
	f, err := CreateIn(dir, final, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, "x")
	if err := f.Commit(); err == nil {
		t.Fatalf("Commit into a missing directory succeeded")
	}
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("a failed Commit left %q", got)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Errorf("SyncDir: %v", err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SyncDir of a missing dir = %v, want %v", err, os.ErrNotExist)
	}
}
