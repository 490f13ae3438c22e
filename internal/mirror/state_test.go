package mirror

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/oci2layers/oci2layers/internal/convert"
)

func TestStateRoundTrip(t *testing.T) {
	root := t.TempDir()
	st, err := loadState(root, StateFile)
	if err != nil {
		t.Fatalf("loadState on an empty root: %v", err)
	}
	if len(st.Outputs) != 0 {
		t.Fatalf("empty root has outputs %v", st.Outputs)
	}
	st.Outputs["h/r/1.0.0"] = &record{Registry: "h", Repository: "r", Tag: "1.0.0",
		Platform: "linux/amd64", Digest: "sha256:aa", ManifestDigest: "sha256:bb",
		BaseLayers: 1, MaxOverlays: 24, Compression: "gzip", Created: true,
		MadeDirs:  []string{"h/r", "h"},
		Converted: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	st.Outputs["kept"] = &record{Registry: "h", Repository: "k", Tag: "t"}
	if err := st.save(root); err != nil {
		t.Fatalf("save: %v", err)
	}
	got, err := loadState(root, StateFile)
	if err != nil {
		t.Fatalf("loadState: %v", err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("round trip:\ngot  %+v\nwant %+v", got.Outputs, st.Outputs)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != StateFile {
		t.Errorf("root holds %v, want only %s", entries, StateFile)
	}
}

func TestLoadStateErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{name: "not json", content: "{"},
		{name: "other version", content: `{"version": 2, "outputs": {}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, StateFile), []byte(tt.content),
				0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := loadState(root, StateFile); err == nil {
				t.Error("loadState succeeded, want an error")
			}
		})
	}
}

func TestLockRoot(t *testing.T) {
	root := t.TempDir()
	unlock, err := lockRoot(root, Shard{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockRoot(root, Shard{}); !errors.Is(err, ErrBusy) {
		t.Errorf("second lockRoot error = %v, want ErrBusy", err)
	}
	unlock()
	again, err := lockRoot(root, Shard{})
	if err != nil {
		t.Fatalf("lockRoot after unlock: %v", err)
	}
	again()
}

// writeFakeOutput lays out what a conversion of manifest writes into dir.
func writeFakeOutput(t *testing.T, dir, manifest string) {
	t.Helper()
	if err := fakeOutput(dir, manifest); err != nil {
		t.Fatal(err)
	}
}

// fakeOutput writes the files of a conversion of manifest into dir, with
// made-up contents.
func fakeOutput(dir, manifest string) error {
	res := convert.Result{ManifestDigest: manifest,
		Base:          convert.BaseFile{File: "base.sif"},
		Overlays:      []convert.OverlayFile{{File: "overlays/01-0123456789ab.sif"}},
		ConfigOverlay: convert.ConfigFile{File: "overlays/config-ba9876543210.sif"}}
	if err := os.MkdirAll(filepath.Join(dir, "overlays"), 0o755); err != nil {
		return err
	}
	for _, f := range []string{"run", res.Base.File, res.Overlays[0].File, res.ConfigOverlay.File} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			return err
		}
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "image.json"), b, 0o644)
}

func TestIntact(t *testing.T) {
	const m = "sha256:1111"
	tests := []struct {
		name   string
		damage func(dir string) error
		want   bool
	}{
		{name: "whole", damage: func(string) error { return nil }, want: true},
		{name: "overlay missing", damage: func(d string) error {
			return os.Remove(filepath.Join(d, "overlays/01-0123456789ab.sif"))
		}},
		{name: "run missing", damage: func(d string) error { return os.Remove(filepath.Join(d, "run")) }},
		{name: "base is a directory", damage: func(d string) error {
			if err := os.Remove(filepath.Join(d, "base.sif")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(d, "base.sif"), 0o755)
		}},
		{name: "other manifest", damage: func(d string) error {
			return os.WriteFile(filepath.Join(d, "image.json"),
				[]byte(`{"manifest_digest":"sha256:2222","base":{"file":"base.sif"}}`), 0o644)
		}},
		{name: "file outside", damage: func(d string) error {
			return os.WriteFile(filepath.Join(d, "image.json"), []byte(`{"manifest_digest":"`+m+
				`","base":{"file":"../x"},"config_overlay":{"file":"run"}}`), 0o644)
		}},
		{name: "image.json unreadable", damage: func(d string) error {
			return os.WriteFile(filepath.Join(d, "image.json"), []byte("{"), 0o644)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			writeFakeOutput(t, dir, m)
			if err := tt.damage(dir); err != nil {
				t.Fatal(err)
			}
			if got := intact(dir, m); got != tt.want {
				t.Errorf("intact = %v, want %v", got, tt.want)
			}
		})
	}
}
