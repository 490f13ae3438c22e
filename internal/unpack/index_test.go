package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sparseLayer returns a layer holding one GNU sparse file (format 1.0) that
// declares size bytes while its stream carries a single block. Go's tar
// writer cannot write sparse files, so the records are written under a
// stand-in prefix of the same length and renamed in the bytes.
func sparseLayer(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: 512,
		ModTime: testMTime, Format: tar.FormatPAX, PAXRecords: map[string]string{
			"XXX.sparse.major":    "1",
			"XXX.sparse.minor":    "0",
			"XXX.sparse.realsize": strconv.FormatInt(size, 10),
		}}
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	sparseMap := make([]byte, 512) // no data fragments: the file is one hole
	copy(sparseMap, "0\n")
	if _, err := tw.Write(sparseMap); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(buf.Bytes(), []byte("XXX.sparse."), []byte("GNU.sparse."))
}

func TestScan(t *testing.T) {
	mt := testMTime.Unix()
	tests := []struct {
		name        string
		entries     []tentry
		want        []Entry
		wantDropped int
		wantErr     error
	}{
		{
			name: "every kind",
			entries: []tentry{
				dir("d"),
				{name: "d/f", content: "hello", mode: 0o4755, uid: 1, gid: 2},
				symlink("d/s", "../elsewhere"),
				hardlink("d/h", "/d/f"),
				{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
				{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, major: 8},
				{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
			},
			want: []Entry{
				{Name: "d", Kind: Dir, Mode: 0o755, MTime: mt},
				{Name: "d/f", Kind: Reg, Mode: 0o4755, UID: 1, GID: 2, Size: 5, MTime: mt},
				{Name: "d/s", Kind: Symlink, Mode: 0o777, Link: "../elsewhere", MTime: mt},
				{Name: "d/h", Kind: Hardlink, Mode: 0o644, Link: "d/f", MTime: mt},
				{Name: "dev/null", Kind: Char, Mode: 0o666, Major: 1, Minor: 3, MTime: mt},
				{Name: "dev/sda", Kind: Block, Mode: 0o660, Major: 8, MTime: mt},
				{Name: "run/fifo", Kind: Fifo, Mode: 0o600, MTime: mt},
			},
		},
		{
			name: "names are cleaned and the root is skipped",
			entries: []tentry{dir("./"), dir("/"), dir("."), file("/abs/x", ""),
				dir("./rel/y/"), file("a//b/../c", ""), file("a/./d", "")},
			want: []Entry{
				{Name: "abs/x", Kind: Reg, Mode: 0o644, MTime: mt},
				{Name: "rel/y", Kind: Dir, Mode: 0o755, MTime: mt},
				{Name: "a/c", Kind: Reg, Mode: 0o644, MTime: mt},
				{Name: "a/d", Kind: Reg, Mode: 0o644, MTime: mt},
			},
		},
		{
			name: "whiteout markers",
			entries: []tentry{whiteout("x"), whiteout("d/y"), opaqueMarker("d"),
				opaqueMarker(""), file(".wh..wh.aufs", ""), dir("d/.wh..wh.plnk"),
				file("d/.wh..wh.plnk/1234.5678", "aufs link"), whiteout("d/.hidden")},
			want: []Entry{
				{Name: "x", Kind: Whiteout},
				{Name: "d/y", Kind: Whiteout},
				{Name: "d", Kind: Opaque},
				{Name: "", Kind: Opaque},
				{Name: "d/.hidden", Kind: Whiteout},
			},
		},
		{
			name: "a 0:0 character device is a whiteout",
			entries: []tentry{{name: "d/x", typ: tar.TypeChar, mode: 0o600, uid: 5, gid: 5,
				xattrs: map[string]string{"user.a": "b"}}},
			want: []Entry{{Name: "d/x", Kind: Whiteout}},
		},
		{
			name: "a 0:0 block device is a device",
			entries: []tentry{
				{name: "d/x", typ: tar.TypeBlock, mode: 0o600},
			},
			want: []Entry{{Name: "d/x", Kind: Block, Mode: 0o600, MTime: mt}},
		},
		{
			name: "overlay xattrs and unknown namespaces are dropped",
			entries: []tentry{{name: "d", typ: tar.TypeDir, xattrs: map[string]string{
				"user.a":                  "1",
				"security.selinux":        "system_u:object_r:etc_t:s0",
				"trusted.x":               "2",
				"trusted.overlay.opaque":  "y",
				"user.overlay.redirect":   "/elsewhere",
				"trusted.overlay.origin":  "o",
				"system.posix_acl_access": "acl",
				"user.":                   "empty name",
			}}},
			want: []Entry{{Name: "d", Kind: Dir, Mode: 0o755, MTime: mt,
				Xattrs: map[string]string{"user.a": "1",
					"security.selinux": "system_u:object_r:etc_t:s0", "trusted.x": "2"}}},
			wantDropped: 5,
		},
		{
			name: "PAX global headers are skipped",
			entries: []tentry{{name: "global", typ: tar.TypeXGlobalHeader,
				pax: map[string]string{"comment": "hi"}}, file("f", "x")},
			want: []Entry{{Name: "f", Kind: Reg, Mode: 0o644, Size: 1, MTime: mt}},
		},
		{
			name:    "name that climbs",
			entries: []tentry{file("../x", "")},
			wantErr: ErrEscape,
		},
		{
			name:    "name that climbs after a component",
			entries: []tentry{file("a/../../x", "")},
			wantErr: ErrEscape,
		},
		{
			name:    "name ..",
			entries: []tentry{symlink("..", "x")},
			wantErr: ErrEscape,
		},
		{
			name:    "hardlink that climbs",
			entries: []tentry{hardlink("h", "../outside")},
			wantErr: ErrEscape,
		},
		{
			name:    "hardlink to the root",
			entries: []tentry{hardlink("h", "./")},
			wantErr: ErrInvalid,
		},
		{
			name:    "symlink without a target",
			entries: []tentry{symlink("s", "")},
			wantErr: ErrInvalid,
		},
		{
			name:    "symlink target too long",
			entries: []tentry{symlink("s", strings.Repeat("a", 4096))},
			wantErr: ErrInvalid,
		},
		{
			name:    "whiteout of nothing",
			entries: []tentry{file("d/.wh.", "")},
			wantErr: ErrInvalid,
		},
		{
			name:    "whiteout of .",
			entries: []tentry{file(".wh..", "")},
			wantErr: ErrInvalid,
		},
		{
			name:    "whiteout of ..",
			entries: []tentry{file("d/.wh...", "")},
			wantErr: ErrInvalid,
		},
		{
			name:    "entry below a whiteout",
			entries: []tentry{file("x/.wh.../y", "")},
			wantErr: ErrInvalid,
		},
		{
			name:    "entry below a .wh. directory",
			entries: []tentry{file(".wh.foo/bar", "")},
			wantErr: ErrInvalid,
		},
		{
			name:    "major number out of range",
			entries: []tentry{{name: "dev/x", typ: tar.TypeChar, major: 1 << 12}},
			wantErr: ErrInvalid,
		},
		{
			name:    "minor number out of range",
			entries: []tentry{{name: "dev/x", typ: tar.TypeBlock, major: 1, minor: 1 << 20}},
			wantErr: ErrInvalid,
		},
		{
			name:    "unsupported type",
			entries: []tentry{{name: "vol", typ: 'V'}},
			wantErr: ErrInvalid,
		},
		{
			name:    "name longer than 4096 bytes",
			entries: []tentry{file(strings.Repeat("a/", 2048)+"bc", "")},
			wantErr: ErrInvalid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Scan(context.Background(), bytes.NewReader(buildLayer(t, tc.entries...)),
				Limits{})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Scan: got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if !reflect.DeepEqual(got.Entries, tc.want) {
				t.Errorf("entries:\ngot  %+v\nwant %+v", got.Entries, tc.want)
			}
			if got, want := got.Dropped, tc.wantDropped; got != want {
				t.Errorf("Dropped: got %d, want %d", got, want)
			}
		})
	}
}

func TestScanOwnerAndTime(t *testing.T) {
	tests := []struct {
		name    string
		h       *tar.Header
		wantErr error
	}{
		{
			name: "large owner",
			h: &tar.Header{Typeflag: tar.TypeReg, Name: "f", Uid: 1 << 30, Gid: 1 << 30,
				ModTime: testMTime, Format: tar.FormatPAX},
		},
		{
			name: "negative owner",
			h: &tar.Header{Typeflag: tar.TypeReg, Name: "f", Uid: -1,
				ModTime: testMTime, Format: tar.FormatGNU},
			wantErr: ErrInvalid,
		},
		{
			name: "time before the epoch",
			h: &tar.Header{Typeflag: tar.TypeReg, Name: "f", ModTime: time.Unix(-5, 0),
				Format: tar.FormatPAX},
			wantErr: ErrInvalid,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(tc.h); err != nil {
				t.Fatal(err)
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			idx, err := Scan(context.Background(), &buf, DefaultLimits)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Scan: got %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			e := idx.Entries[0]
			if e.UID != tc.h.Uid || e.GID != tc.h.Gid || e.MTime != tc.h.ModTime.Unix() {
				t.Errorf("got %d:%d at %d, want %d:%d at %d", e.UID, e.GID, e.MTime,
					tc.h.Uid, tc.h.Gid, tc.h.ModTime.Unix())
			}
		})
	}
}

func TestScanLimits(t *testing.T) {
	five := buildLayer(t, dir("a"), dir("a/b"), dir("a/b/c"), file("a/b/c/d", "0123456789"),
		file("e", strings.Repeat("x", 4096)))
	tests := []struct {
		name     string
		layer    []byte
		lim      Limits
		wantErr  error
		wantText string
	}{
		{
			name:  "within every limit",
			layer: five,
			lim:   Limits{Bytes: int64(len(five)), Entries: 5, Depth: 4},
		},
		{
			name:     "too many entries",
			layer:    five,
			lim:      Limits{Entries: 4},
			wantErr:  ErrLimit,
			wantText: "more than 4 entries (--max-layer-entries)",
		},
		{
			name: "PAX global headers count as entries",
			layer: buildLayer(t, tentry{name: "g", typ: tar.TypeXGlobalHeader,
				pax: map[string]string{"comment": "x"}}, file("f", "")),
			lim:      Limits{Entries: 1},
			wantErr:  ErrLimit,
			wantText: "--max-layer-entries",
		},
		{
			name:    "too many bytes",
			layer:   five,
			lim:     Limits{Bytes: int64(len(five)) - 1},
			wantErr: ErrLimit,
			wantText: "more than " + strconv.Itoa(len(five)-1) +
				" uncompressed bytes (--max-layer-bytes)",
		},
		{
			name:     "too many bytes in the file data",
			layer:    five,
			lim:      Limits{Bytes: 4096},
			wantErr:  ErrLimit,
			wantText: "--max-layer-bytes",
		},
		{
			name:     "trailing data counts",
			layer:    append(append([]byte(nil), five...), make([]byte, 10000)...),
			lim:      Limits{Bytes: int64(len(five)) + 9999},
			wantErr:  ErrLimit,
			wantText: "--max-layer-bytes",
		},
		{
			name:     "sparse file larger than the limit",
			layer:    sparseLayer(t, "bomb", 1<<40),
			lim:      Limits{Bytes: 1 << 20},
			wantErr:  ErrLimit,
			wantText: "--max-layer-bytes",
		},
		{
			name:     "too deep",
			layer:    five,
			lim:      Limits{Depth: 3},
			wantErr:  ErrLimit,
			wantText: "more than 3 levels of path depth (--max-path-depth)",
		},
		{
			name:     "whiteout too deep",
			layer:    buildLayer(t, whiteout("a/b/c")),
			lim:      Limits{Depth: 2},
			wantErr:  ErrLimit,
			wantText: "--max-path-depth",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Scan(context.Background(), bytes.NewReader(tc.layer), tc.lim)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Scan: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Scan: got %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("Scan: got %q, want it to name %q", err, tc.wantText)
			}
		})
	}
}

// TestScanSparse checks that a sparse file within the limits is indexed at
// its full size, which is what Write copies.
func TestScanSparse(t *testing.T) {
	idx, err := Scan(context.Background(), bytes.NewReader(sparseLayer(t, "s", 3000)),
		DefaultLimits)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if got, want := idx.Bytes, int64(3000); got != want {
		t.Errorf("Bytes: got %d, want %d", got, want)
	}
}

func TestScanReadsToTheEnd(t *testing.T) {
	layer := buildLayer(t, file("f", "x"))
	big := buildLayer(t, file("f", strings.Repeat("x", 512)), file("g", "y"))
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{name: "nothing after the tar", data: layer},
		{name: "zeros after the tar", data: append(append([]byte(nil), layer...),
			make([]byte, 8192)...)},
		{name: "garbage after the tar", data: append(append([]byte(nil), layer...),
			bytes.Repeat([]byte("garbage"), 1000)...)},
		{name: "truncated in a file", data: big[:600], wantErr: io.ErrUnexpectedEOF},
		{name: "truncated in a header", data: big[:1024+100], wantErr: io.ErrUnexpectedEOF},
		// Go's tar reader takes a stream cut at a block boundary for its end; the
		// verifying reader underneath is what catches such a truncation.
		{name: "no end marker", data: big[:1024]},
		{name: "empty stream", data: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.data)
			_, err := Scan(context.Background(), r, DefaultLimits)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Scan: got %v, want %v", err, tc.wantErr)
			}
			if err == nil && r.Len() != 0 {
				t.Errorf("Scan left %d bytes unread", r.Len())
			}
		})
	}
}

func TestScanCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Scan(ctx, bytes.NewReader(buildLayer(t, file("f", "x"))), DefaultLimits)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Scan: got %v, want %v", err, context.Canceled)
	}
}

func TestCleanName(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{name: "plain", in: "a/b", want: "a/b"},
		{name: "absolute", in: "/etc/passwd", want: "etc/passwd"},
		{name: "many slashes", in: "//a//b//", want: "a/b"},
		{name: "dot prefix", in: "./a", want: "a"},
		{name: "root", in: "/", want: ""},
		{name: "dot", in: ".", want: ""},
		{name: "empty", in: "", want: ""},
		{name: "climbs and returns", in: "a/../b", want: "b"},
		{name: "absolute name that climbs", in: "/../x", wantErr: ErrEscape},
		{name: "dot-dot", in: "..", wantErr: ErrEscape},
		{name: "dot-dot prefix", in: "../x", wantErr: ErrEscape},
		{name: "climbs past the root", in: "a/../../x", wantErr: ErrEscape},
		{name: "dot then dot-dot", in: "./../x", wantErr: ErrEscape},
		{name: "dots in a name", in: "a/..b/c..", want: "a/..b/c.."},
		{name: "NUL", in: "a\x00b", wantErr: ErrInvalid},
		{name: "too long", in: strings.Repeat("x", 4097), wantErr: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CleanName(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("CleanName(%q): got error %v, want %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("CleanName(%q): got %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestIndexRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		entries []tentry
	}{
		{name: "empty layer"},
		{
			name: "every kind",
			entries: []tentry{
				dir("d"), {name: "d/f", content: "hello", mode: 0o4755, uid: 1, gid: 2},
				symlink("d/s", "/abs"), hardlink("d/h", "d/f"),
				{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
				{name: "dev/sda", typ: tar.TypeBlock, major: 8, minor: 1},
				{name: "fifo", typ: tar.TypeFifo},
				whiteout("gone"), opaqueMarker("d"),
				{name: "x", typ: tar.TypeDir, xattrs: map[string]string{"user.a": "\x00\x01",
					"trusted.overlay.opaque": "y"}},
			},
		},
		{
			name: "strings that are not UTF-8",
			entries: []tentry{
				dir("caf\xe9"), file("caf\xe9/men\xfc", "x"), symlink("l", "caf\xe9/men\xfc"),
				hardlink("caf\xe9/h\xff", "caf\xe9/men\xfc"), whiteout("\xfe"),
				{name: "bin/ping", content: "elf", xattrs: map[string]string{
					"security.capability": "\x01\x00\x00\x02\x80\x20\x00\x00\xff\xfe",
					"user.\xe9":           "\xe9", "user.ok": "ok", "user.k\xe9": "fine"}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idx, err := Scan(context.Background(), bytes.NewReader(buildLayer(t, tc.entries...)),
				DefaultLimits)
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			var buf bytes.Buffer
			if err := WriteIndex(&buf, idx); err != nil {
				t.Fatalf("WriteIndex: %v", err)
			}
			got, err := ReadIndex(&buf)
			if err != nil {
				t.Fatalf("ReadIndex: %v", err)
			}
			if !reflect.DeepEqual(got, idx) {
				t.Errorf("round trip:\ngot  %+v\nwant %+v", got, idx)
			}
		})
	}
}

func TestReadIndexErrors(t *testing.T) {
	var notJSON bytes.Buffer
	if err := WriteIndex(&notJSON, &Index{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{name: "not gzip", data: []byte("{}")},
		{name: "truncated", data: notJSON.Bytes()[:notJSON.Len()/2]},
		{name: "empty", data: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ReadIndex(bytes.NewReader(tc.data)); err == nil {
				t.Errorf("ReadIndex: got no error")
			}
		})
	}
}

// TestIndexStoredForm checks the stored JSON: UTF-8 strings are stored as
// they were before non-UTF-8 support, so indexes already in a cache still
// load, and other strings go to the raw list.
func TestIndexStoredForm(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		want    *Index
		wantErr bool
		// same says that WriteIndex stores want exactly as json.
		same bool
	}{
		{
			name: "plain entries",
			json: `{"entries":[{"n":"a","k":102,"m":420,"s":1,"t":5,"x":{"user.a":"1"}},` +
				`{"n":"b","k":119}],"bytes":1}`,
			want: &Index{Entries: []Entry{
				{Name: "a", Kind: Reg, Mode: 0o644, Size: 1, MTime: 5,
					Xattrs: map[string]string{"user.a": "1"}},
				{Name: "b", Kind: Whiteout}}, Bytes: 1},
			same: true,
		},
		{
			name: "raw strings",
			json: `{"entries":[{"n":"","k":108,"l":"","r":[{"f":"n","v":"/w=="},` +
				`{"f":"l","v":"/g=="},{"f":"x","k":"dXNlci7p","v":"6Q=="}]}]}`,
			want: &Index{Entries: []Entry{{Name: "\xff", Kind: Symlink, Link: "\xfe",
				Xattrs: map[string]string{"user.\xe9": "\xe9"}}}},
		},
		{
			name:    "unknown raw field",
			json:    `{"entries":[{"n":"a","k":102,"r":[{"f":"q","v":""}]}]}`,
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			if _, err := io.WriteString(zw, tc.json); err != nil {
				t.Fatal(err)
			}
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := ReadIndex(&buf)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ReadIndex: got no error")
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadIndex: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ReadIndex:\ngot  %+v\nwant %+v", got, tc.want)
			}

			// Stored again, the index reads back the same.
			var again bytes.Buffer
			if err := WriteIndex(&again, got); err != nil {
				t.Fatalf("WriteIndex: %v", err)
			}
			if tc.same {
				zr, err := gzip.NewReader(bytes.NewReader(again.Bytes()))
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := strings.TrimSpace(string(b)), tc.json; got != want {
					t.Errorf("stored form:\ngot  %s\nwant %s", got, want)
				}
			}
			back, err := ReadIndex(&again)
			if err != nil {
				t.Fatalf("ReadIndex: %v", err)
			}
			if !reflect.DeepEqual(back, tc.want) {
				t.Errorf("round trip:\ngot  %+v\nwant %+v", back, tc.want)
			}
		})
	}
}
