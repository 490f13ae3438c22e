package sifwriter

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// squashfs builds a small squashfs image holding etc/hello with content
// with mksquashfs and returns its bytes; the test is skipped without
// mksquashfs.
func squashfs(t *testing.T, content string) []byte {
	t.Helper()
	mksquashfs, err := exec.LookPath("mksquashfs")
	if err != nil {
		t.Skip("mksquashfs is not installed (squashfs-tools); the SIFs need a real squashfs")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(filepath.Join(src, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "etc", "hello"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.sqfs")
	cmd := exec.Command(mksquashfs, src, out, "-noappend", "-quiet", "-no-progress")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeSIF writes a SIF of kind from sqfs to a new file and returns its path.
func writeSIF(t *testing.T, kind Kind, sqfs []byte, arch string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.sif")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Write(f, kind, bytes.NewReader(sqfs), arch); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWrite(t *testing.T) {
	sqfs := squashfs(t, "hello\n")
	tests := []struct {
		name   string
		kind   Kind
		arch   string
		part   sif.PartType
		script string
	}{
		{name: "base amd64", kind: Base, arch: "amd64", part: sif.PartPrimSys,
			script: LaunchScript},
		{name: "base arm64", kind: Base, arch: "arm64", part: sif.PartPrimSys,
			script: LaunchScript},
		{name: "overlay amd64", kind: Overlay, arch: "amd64", part: sif.PartOverlay},
		{name: "overlay ppc64le", kind: Overlay, arch: "ppc64le", part: sif.PartOverlay},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeSIF(t, tt.kind, sqfs, tt.arch)
			f, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
			if err != nil {
				t.Fatal(err)
			}
			defer f.UnloadContainer()

			if got, want := f.LaunchScript(), tt.script; got != want {
				t.Errorf("launch script %q, want %q", got, want)
			}
			if got, want := f.ID(), "00000000-0000-0000-0000-000000000000"; got != want {
				t.Errorf("ID %s, want %s", got, want)
			}
			if !f.CreatedAt().IsZero() || !f.ModifiedAt().IsZero() {
				t.Errorf("times %v/%v, want zero", f.CreatedAt(), f.ModifiedAt())
			}
			if got, want := f.PrimaryArch(), tt.arch; tt.kind == Base && got != want {
				t.Errorf("primary arch %q, want %q", got, want)
			}

			ds, err := f.GetDescriptors()
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 {
				t.Fatalf("%d descriptors, want 1", len(ds))
			}
			d := ds[0]
			if got, want := d.DataType(), sif.DataPartition; got != want {
				t.Errorf("data type %v, want %v", got, want)
			}
			fsType, part, arch, err := d.PartitionMetadata()
			if err != nil {
				t.Fatal(err)
			}
			if fsType != sif.FsSquash || part != tt.part || arch != tt.arch {
				t.Errorf("partition %v/%v/%s, want %v/%v/%s", fsType, part, arch,
					sif.FsSquash, tt.part, tt.arch)
			}
			if got, want := d.GroupID(), uint32(1); got != want {
				t.Errorf("group %d, want %d", got, want)
			}
			data, err := d.GetData()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, sqfs) {
				t.Errorf("partition holds %d bytes that differ from the %d-byte squashfs",
					len(data), len(sqfs))
			}
		})
	}
}

func TestWriteDeterministic(t *testing.T) {
	sqfs := squashfs(t, "hello\n")
	for _, kind := range []Kind{Base, Overlay} {
		a, err := os.ReadFile(writeSIF(t, kind, sqfs, "amd64"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(writeSIF(t, kind, sqfs, "amd64"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("kind %d: two writes of the same squashfs differ", kind)
		}
	}
}

func TestWriteUnknownArch(t *testing.T) {
	sqfs := squashfs(t, "hello\n")
	f, err := os.Create(filepath.Join(t.TempDir(), "out.sif"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Write(f, Overlay, bytes.NewReader(sqfs), "not-an-arch"); err == nil {
		t.Errorf("Write accepted an unknown architecture")
	}
}

func TestPartition(t *testing.T) {
	sqfs := squashfs(t, "hello\n")
	for _, kind := range []Kind{Base, Overlay} {
		path := writeSIF(t, kind, sqfs, "amd64")
		rc, size, err := Partition(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(sqfs)) || !bytes.Equal(got, sqfs) {
			t.Errorf("kind %d: Partition gave %d bytes (size %d) that differ from the %d-byte "+
				"squashfs", kind, len(got), size, len(sqfs))
		}
	}
}

func TestPartitionErrors(t *testing.T) {
	dir := t.TempDir()
	notSIF := filepath.Join(dir, "not.sif")
	if err := os.WriteFile(notSIF, bytes.Repeat([]byte("x"), 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.sif")
	f, err := sif.CreateContainerAtPath(empty, sif.OptCreateDeterministic())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.UnloadContainer(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
	}{
		{name: "missing", path: filepath.Join(dir, "gone.sif")},
		{name: "not a SIF", path: notSIF},
		{name: "no partition", path: empty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, _, err := Partition(tt.path)
			if err == nil {
				rc.Close()
				t.Errorf("Partition(%s) succeeded", tt.name)
			}
		})
	}
}

// writeStack writes s to a new file and returns its path.
func writeStack(t *testing.T, s Stack) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stack.sif")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteStack(f, s, "amd64"); err != nil {
		t.Fatalf("WriteStack: %v", err)
	}
	return path
}

func TestWriteStack(t *testing.T) {
	images := [][]byte{squashfs(t, "base"), squashfs(t, "one"), squashfs(t, "two")}
	json := map[string][]byte{"z.json": []byte(`{"z":1}`), "a.json": []byte(`{"a":1}`)}
	stack := func(kinds ...Kind) Stack {
		s := Stack{JSON: json}
		for i, k := range kinds {
			s.Parts = append(s.Parts, Part{Kind: k, Squashfs: bytes.NewReader(images[i])})
		}
		return s
	}

	tests := []struct {
		name   string
		kinds  []Kind
		parts  []sif.PartType
		script string
	}{
		{name: "base and overlays", kinds: []Kind{Base, Overlay, Overlay},
			parts:  []sif.PartType{sif.PartPrimSys, sif.PartOverlay, sif.PartOverlay},
			script: LaunchScript},
		{name: "overlays only", kinds: []Kind{Overlay, Overlay},
			parts: []sif.PartType{sif.PartOverlay, sif.PartOverlay}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeStack(t, stack(tt.kinds...))
			f, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
			if err != nil {
				t.Fatal(err)
			}
			defer f.UnloadContainer()
			if got, want := f.LaunchScript(), tt.script; got != want {
				t.Errorf("launch script %q, want %q", got, want)
			}

			ds, err := f.GetDescriptors(sif.WithDataType(sif.DataPartition))
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != len(tt.parts) {
				t.Fatalf("%d partitions, want %d", len(ds), len(tt.parts))
			}
			for i, d := range ds {
				_, part, _, err := d.PartitionMetadata()
				if err != nil {
					t.Fatal(err)
				}
				data, err := d.GetData()
				if err != nil {
					t.Fatal(err)
				}
				if part != tt.parts[i] || d.GroupID() != 1 || !bytes.Equal(data, images[i]) {
					t.Errorf("partition %d: %v in group %d, data equal: %v; want %v in group 1",
						i, part, d.GroupID(), bytes.Equal(data, images[i]), tt.parts[i])
				}
			}

			js, err := f.GetDescriptors(sif.WithDataType(sif.DataGenericJSON))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, d := range js {
				names = append(names, d.Name())
			}
			if got, want := strings.Join(names, " "), "a.json z.json"; got != want {
				t.Errorf("JSON objects %q, want %q", got, want)
			}
			if js[0].ID() < ds[len(ds)-1].ID() {
				t.Errorf("a JSON object comes before a partition")
			}

			for name, want := range json {
				got, err := JSONObject(path, name)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("JSONObject(%s) = %q, %v; want %q", name, got, err, want)
				}
			}
			if got, err := JSONObject(path, "missing.json"); got != nil || err != nil {
				t.Errorf("JSONObject(missing.json) = %q, %v; want nil, nil", got, err)
			}
		})
	}

	t.Run("deterministic", func(t *testing.T) {
		a, err := os.ReadFile(writeStack(t, stack(Base, Overlay, Overlay)))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(writeStack(t, stack(Base, Overlay, Overlay)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("two writes of the same stack differ")
		}
	})

	t.Run("base not first", func(t *testing.T) {
		f, err := os.Create(filepath.Join(t.TempDir(), "bad.sif"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := WriteStack(f, stack(Overlay, Base), "amd64"); err == nil {
			t.Errorf("WriteStack accepted a base above an overlay")
		}
	})

	// Partition reads single-partition SIFs; on a stack it must refuse
	// rather than pick one.
	t.Run("Partition refuses a stack", func(t *testing.T) {
		rc, _, err := Partition(writeStack(t, stack(Base, Overlay)))
		if err == nil {
			rc.Close()
			t.Errorf("Partition of a two-partition stack succeeded")
		}
	})
}

func TestJSONObjectErrors(t *testing.T) {
	if _, err := JSONObject(filepath.Join(t.TempDir(), "gone.sif"), "a.json"); err == nil {
		t.Errorf("JSONObject of a missing file succeeded")
	}
	path := writeSIF(t, Overlay, squashfs(t, "x"), "amd64")
	if got, err := JSONObject(path, "a.json"); got != nil || err != nil {
		t.Errorf("JSONObject on a SIF without JSON objects = %q, %v; want nil, nil", got, err)
	}
	notSIF := filepath.Join(t.TempDir(), "not.sif")
	if err := os.WriteFile(notSIF, []byte("plain text"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := JSONObject(notSIF, "a.json"); err == nil {
		t.Errorf("JSONObject of a file that is not a SIF succeeded")
	}
}
