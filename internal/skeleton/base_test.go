package skeleton

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os/exec"
	"path"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// checkEntries checks what every list of entries must satisfy: clean
// relative names, no duplicates, parents before children, the fixed header
// fields, and sizes that match the data.
func checkEntries(t *testing.T, entries []Entry) {
	t.Helper()
	seen := map[string]byte{}
	for i, e := range entries {
		h := e.Header
		if h == nil {
			t.Fatalf("entry %d: nil header", i)
		}
		name := h.Name
		if name == "" || path.IsAbs(name) || strings.HasSuffix(name, "/") ||
			path.Clean(name) != name || strings.HasPrefix(name, "..") {
			t.Errorf("entry %d: name %q is not clean and relative", i, name)
		}
		if _, dup := seen[name]; dup {
			t.Errorf("%s: duplicate", name)
		}
		if parent := path.Dir(name); parent != "." && seen[parent] != tar.TypeDir {
			t.Errorf("%s: parent %s is not an earlier directory entry", name, parent)
		}
		seen[name] = h.Typeflag

		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) || h.Format != tar.FormatPAX {
			t.Errorf("%s: uid %d, gid %d, mtime %v, format %v",
				name, h.Uid, h.Gid, h.ModTime, h.Format)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			if h.Size != int64(len(e.Data)) {
				t.Errorf("%s: size %d, data %d bytes", name, h.Size, len(e.Data))
			}
		case tar.TypeDir, tar.TypeSymlink:
			if e.Data != nil {
				t.Errorf("%s: data on a non-regular entry", name)
			}
		default:
			t.Errorf("%s: type %q", name, h.Typeflag)
		}
	}
}

// TestBase checks Base's entries: order, names, types, the IfMissing marks
// and the symlink targets, and that two calls return the same.
func TestBase(t *testing.T) {
	entries := Base()
	checkEntries(t, entries)

	byName := map[string]Entry{}
	for _, e := range entries {
		byName[e.Header.Name] = e
	}
	want := map[byte][]string{
		tar.TypeReg: {
			".singularity.d/actions/exec", ".singularity.d/actions/run",
			".singularity.d/actions/shell", ".singularity.d/actions/start",
			".singularity.d/actions/test", ".singularity.d/env/01-base.sh",
			".singularity.d/env/90-environment.sh", ".singularity.d/env/95-apps.sh",
			".singularity.d/env/99-base.sh", ".singularity.d/env/99-runtimevars.sh",
			".singularity.d/runscript", ".singularity.d/startscript",
			".singularity.d/labels.json", "etc/hosts", "etc/resolv.conf",
		},
		tar.TypeDir: {
			".singularity.d/libs", "dev", "proc", "root", "var/tmp", "tmp", "etc", "sys", "home",
		},
		tar.TypeSymlink: {"singularity", ".run", ".exec", ".test", ".shell", "environment"},
	}
	for typ, names := range want {
		for _, name := range names {
			e, ok := byName[name]
			if !ok {
				t.Errorf("%s: missing", name)
			} else if e.Header.Typeflag != typ {
				t.Errorf("%s: type %q, want %q", name, e.Header.Typeflag, typ)
			}
		}
	}

	for _, e := range entries {
		h := e.Header
		if want := h.Typeflag != tar.TypeReg; e.IfMissing != want {
			t.Errorf("%s: IfMissing %v, want %v", h.Name, e.IfMissing, want)
		}
		if h.Typeflag == tar.TypeSymlink {
			target, ok := byName[h.Linkname]
			if !ok || target.Header.Typeflag != tar.TypeReg {
				t.Errorf("%s -> %s: target is not a file of the skeleton", h.Name, h.Linkname)
			}
		}
	}
	if got := string(byName["etc/hosts"].Data) + string(byName["etc/resolv.conf"].Data); got != "" {
		t.Errorf("etc/hosts and etc/resolv.conf hold %q, want empty", got)
	}
	if got := string(byName[labelsPath].Data); got != "{}" {
		t.Errorf("labels.json: got %q, want {}", got)
	}

	again := Base()
	if !reflect.DeepEqual(entries, again) {
		t.Error("two calls to Base differ")
	}
	again[0].Header.Name = "changed"
	if Base()[0].Header.Name == "changed" {
		t.Error("Base returns shared headers")
	}
}

// TestScriptsParse runs "sh -n" on every script of Base and Config, a
// syntax check with each shell.
func TestScriptsParse(t *testing.T) {
	cfgs := map[string]*v1.ConfigFile{
		"empty": {},
		"full": {Config: v1.Config{
			Env:        []string{"PATH=/x", "A=b c", "B"},
			Entrypoint: []string{"/bin/ep", "it's"},
			Cmd:        []string{`"$x"`},
		}},
		"CMD only":        {Config: v1.Config{Cmd: []string{"c"}}},
		"ENTRYPOINT only": {Config: v1.Config{Entrypoint: []string{"e"}}},
	}
	entries := Base()
	for _, cfg := range cfgs {
		more, err := Config(cfg)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, more...)
	}

	for _, sh := range shells(t) {
		for _, e := range entries {
			if !bytes.HasPrefix(e.Data, []byte("#!/bin/sh\n")) {
				continue
			}
			cmd := exec.Command(sh, "-n")
			cmd.Stdin = bytes.NewReader(e.Data)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v: %s", sh, e.Header.Name, err, out)
			}
		}
	}
}

// TestWrite writes Base and Config entries with Write and reads the tar
// stream back.
func TestWrite(t *testing.T) {
	cfg, err := Config(&v1.ConfigFile{Config: v1.Config{Env: []string{"A=1"}}})
	if err != nil {
		t.Fatal(err)
	}
	entries := append(Base(), cfg...)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := Write(tw, entries); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}

	tr := tar.NewReader(&buf)
	for i := 0; ; i++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if i != len(entries) {
				t.Errorf("read %d entries, want %d", i, len(entries))
			}
			break
		}
		if err != nil {
			t.Fatalf("read entry %d: %v", i, err)
		}
		if i >= len(entries) {
			t.Fatalf("extra entry %s", hdr.Name)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}

		want := entries[i]
		got := Entry{Header: hdr}
		if len(data) > 0 {
			got.Data = data
		}
		w := want.Header
		if hdr.Name != w.Name || hdr.Typeflag != w.Typeflag || hdr.Mode != w.Mode ||
			hdr.Linkname != w.Linkname || hdr.Uid != 0 || hdr.Gid != 0 ||
			!hdr.ModTime.Equal(epoch) || hdr.Size != int64(len(want.Data)) {
			t.Errorf("entry %d: got header %+v, want %+v", i, hdr, w)
		}
		if !bytes.Equal(got.Data, want.Data) {
			t.Errorf("%s: got data %q, want %q", w.Name, got.Data, want.Data)
		}
	}
}

// TestWriteErrors checks the entries Write refuses.
func TestWriteErrors(t *testing.T) {
	tests := []struct {
		name  string
		entry Entry
	}{
		{name: "nil header", entry: Entry{}},
		{
			name:  "data on a directory",
			entry: Entry{Header: dir("d", 0o755, false).Header, Data: []byte("x")},
		},
		{name: "bad name", entry: file(strings.Repeat("x/", 80000), 0o644, "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tw := tar.NewWriter(io.Discard)
			if err := Write(tw, []Entry{tt.entry}); err == nil {
				t.Error("got no error")
			}
		})
	}
}

// TestWriteSetsSize checks that Write sizes a regular file by its data,
// leaving the caller's header alone.
func TestWriteSetsSize(t *testing.T) {
	e := file("f", 0o644, "abc")
	e.Header.Size = 0

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := Write(tw, []Entry{e}); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	hdr, err := tar.NewReader(&buf).Next()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hdr.Size, int64(3); got != want {
		t.Errorf("size: got %d, want %d", got, want)
	}
	if e.Header.Size != 0 {
		t.Error("Write changed the caller's header")
	}
}
