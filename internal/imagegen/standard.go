package imagegen

import (
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Names of the standard images.
const (
	// Cases is a four-layer image covering the layer semantics a converter
	// must get right: file and directory whiteouts, an opaque directory over
	// lower content, symlinks, hardlinks within a layer and across layers,
	// a merged-/usr write through a lower symlink, non-root owners,
	// setuid/setgid/sticky modes, a 20 MiB file, gzip, zstd and uncompressed
	// layers, empty files, a deep path, files replaced by directories and
	// back, a fifo, a character device and user xattrs.
	Cases = "cases"
	// Variant is Cases with another top layer.
	Variant = "variant"
	// Demo is a small four-layer image with a shell-script app on top.
	Demo = "demo"
	// DemoV2 is Demo with another top layer.
	DemoV2 = "demo-v2"
)

// bigFileSize is the size of the pseudo-random file in the Cases image.
const bigFileSize = 20 << 20

// StandardSpecs returns the specs of the standard images by name.
func StandardSpecs() map[string]Spec {
	return map[string]Spec{
		Cases:   casesSpec(casesTop("v1")),
		Variant: casesSpec(casesTop("v2", File("app/extra", "only in the variant\n"))),
		Demo:    demoSpec("1"),
		DemoV2:  demoSpec("2"),
	}
}

// StandardImages builds the named standard images, or all of them when no
// name is given.
func StandardImages(names ...string) (map[string]v1.Image, error) {
	specs := StandardSpecs()
	if len(names) == 0 {
		for n := range specs {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	imgs := make(map[string]v1.Image, len(names))
	for _, n := range names {
		s, ok := specs[n]
		if !ok {
			return nil, fmt.Errorf("build standard image %q: no such image", n)
		}
		img, err := Build(s)
		if err != nil {
			return nil, fmt.Errorf("build standard image %q: %w", n, err)
		}
		imgs[n] = img
	}
	return imgs, nil
}

func casesSpec(top Layer) Spec {
	return Spec{
		Layers: []Layer{casesBase(), casesUpper(), casesBig(), top},
		Config: Config{
			Env: []string{
				"PATH=/app:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"CASES=1",
				`QUOTED=a "b" 'c' $d \e`,
			},
			Entrypoint: []string{"/app/run.sh"},
			Cmd:        []string{"--flag", "arg with space"},
			Labels: map[string]string{
				"org.opencontainers.image.title": "cases",
				"com.example.quote":              `it's "quoted"`,
			},
			WorkingDir: "/app",
			User:       "1000:1000",
		},
	}
}

// casesBase is the bottom layer: a small root filesystem with a merged-/usr
// symlink and the lower content later layers delete, hide or replace.
func casesBase() Layer {
	entries := []Entry{
		Dir("bin"),
		Dir("etc"),
		Dir("home"),
		Dir("home/user").WithOwner(1000, 1000).WithMode(0o750),
		Dir("tmp").WithMode(0o1777),
		Dir("usr"),
		Dir("usr/bin"),
		Dir("usr/lib"),
		Dir("var"),
		Dir("var/lib"),
		Symlink("lib", "usr/lib"),
		File("etc/os-release", "ID=cases\nVERSION_ID=1\n"),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
			"user:x:1000:1000::/home/user:/bin/sh\n"),
		File("etc/shadow", "root:*:19000:0:99999:7:::\n").WithMode(0),
		File("etc/empty", ""),
		File("etc/xattr", "has a user xattr\n").WithXattr("user.imagegen", "lower"),
		File("usr/lib/libbase.so.1", "base library\n").WithMode(0o755),
		Symlink("usr/lib/libbase.so", "libbase.so.1"),
		File("usr/bin/tool", "#!/bin/sh\necho tool\n").WithMode(0o755),
		File("usr/bin/su-tool", "setuid\n").WithMode(0o4755),
		File("usr/bin/sg-tool", "setgid\n").WithMode(0o2755).WithOwner(0, 50),
		File("home/user/.profile", "export A=1\n").WithOwner(1000, 1000).WithMode(0o600),
		Dir("opq"),
		File("opq/a", "lower a\n"),
		File("opq/b", "lower b\n"),
		Dir("opq/sub"),
		File("opq/sub/c", "lower c\n"),
		Dir("gone"),
		File("gone/x", "x\n"),
		Dir("gone/y"),
		File("gone/y/z", "z\n"),
		File("gonefile", "deleted above\n"),
		File("f2d", "a file that becomes a directory\n"),
		Dir("d2f"),
		File("d2f/child", "child of a directory that becomes a file\n"),
		Dir("shared"),
		File("shared/data.bin", "hardlinked from above\n").WithOwner(1000, 1000).WithMode(0o640),
		Dir("var/lib/misc"),
		FIFO("var/lib/misc/fifo").WithMode(0o600),
		CharDev("var/lib/misc/null", 1, 3),
	}
	entries = append(entries, deepEntries()...)
	return Layer{Comment: "cases: base", Compression: Gzip, Entries: entries}
}

// deepEntries returns a chain of 16 directories whose path is longer than a
// ustar name field, with a file at the bottom.
func deepEntries() []Entry {
	var (
		parts   []string
		entries []Entry
	)
	for i := 1; i <= 16; i++ {
		parts = append(parts, fmt.Sprintf("d%02d-abcdefgh", i))
		entries = append(entries, Dir("deep/"+strings.Join(parts, "/")))
	}
	leaf := "deep/" + strings.Join(parts, "/") + "/leaf.txt"
	return append([]Entry{Dir("deep")}, append(entries, File(leaf, "deep leaf\n"))...)
}

// casesUpper is a zstd layer whose overlay depends on the layers below it:
// it makes a directory opaque, writes through the lower "lib" symlink and
// hardlinks to a file only the base holds.
func casesUpper() Layer {
	return Layer{Comment: "cases: upper", Compression: Zstd, Entries: []Entry{
		Whiteout("gonefile"),
		Whiteout("gone"),
		Dir("opq").WithMode(0o750),
		Opaque("opq"),
		File("opq/new", "upper new\n"),
		Dir("opq/sub"),
		File("opq/sub/d", "upper d\n"),
		Dir("f2d"),
		File("f2d/inner", "now a directory\n"),
		File("d2f", "now a file\n"),
		File("lib/x", "written through the lib symlink\n"),
		File("usr/lib/libz.so.1", "deleted above\n"),
		Hardlink("usr/bin/data-link", "shared/data.bin"),
		File("etc/conf", "conf\n").WithOwner(1000, 1000),
		Hardlink("etc/conf.hard", "etc/conf"),
		Symlink("usr/bin/rel-link", "tool"),
		Symlink("usr/bin/abs-link", "/usr/bin/tool"),
		Symlink("broken", "/nonexistent/target"),
		Dir("srv").WithOwner(1001, 1002).WithMode(0o2770),
		File("srv/owned", "owned\n").WithOwner(1001, 1002).WithMode(0o660),
		File("etc/empty-upper", ""),
	}}
}

// casesBig is an uncompressed layer with "./" names holding the big file; it
// also recreates a directory deleted below and overwrites a lower file.
func casesBig() Layer {
	return Layer{Comment: "cases: big", Compression: Uncompressed, DotSlash: true, Entries: []Entry{
		Dir("opt"),
		RandomFile("opt/big.bin", bigFileSize, 42),
		Whiteout("usr/lib/libz.so.1"),
		Dir("gone"),
		File("gone/reborn", "back again\n"),
		File("etc/os-release", "ID=cases\nVERSION_ID=3\n"),
		Dir("f2d"),
		File("f2d/second", "added later\n"),
	}}
}

// casesTop is the top layer of Cases (version "v1") and Variant.
func casesTop(version string, extra ...Entry) Layer {
	entries := []Entry{
		Dir("app"),
		File("app/version", version+"\n"),
		File("app/run.sh", "#!/bin/sh\necho cases "+version+` "$@"`+"\n").WithMode(0o755),
		File("app/tagged", "xattr in the top layer\n").WithXattr("user.app", version),
		Dir("home/user").WithOwner(1000, 1000).WithMode(0o700),
	}
	entries = append(entries, extra...)
	return Layer{Comment: "cases: top " + version, Compression: Gzip, Entries: entries}
}

func demoSpec(version string) Spec {
	return Spec{
		Layers: []Layer{
			{Comment: "demo: base", Compression: Gzip, Entries: []Entry{
				Dir("etc"),
				File("etc/os-release", "NAME=\"oci2layers demo\"\nID=demo\n"+
					"PRETTY_NAME=\"oci2layers demo image\"\n"),
				File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
				File("etc/group", "root:x:0:\n"),
				Dir("usr"),
				Dir("usr/share"),
				Dir("usr/share/demo"),
				File("usr/share/demo/README", "Built by oci2layers' imagegen.\n"),
			}},
			{Comment: "demo: data", Compression: Zstd, Entries: []Entry{
				File("usr/share/demo/greetings.txt", "Hello\nBonjour\nHallo\nHola\n"),
				Symlink("usr/share/demo/current", "greetings.txt"),
			}},
			{Comment: "demo: library", Compression: Gzip, Entries: []Entry{
				Dir("opt"),
				Dir("opt/demo"),
				File("opt/demo/lib.sh", "greet() {\n\techo \"$GREETING, $1!\"\n}\n"),
			}},
			{Comment: "demo: app " + version, Compression: Gzip, Entries: []Entry{
				Dir("app"),
				File("app/VERSION", version+"\n"),
				File("app/hello.sh", "#!/bin/sh\n. /opt/demo/lib.sh\n"+
					"echo \"demo app version "+version+"\"\n"+
					"greet \"${1:-world}\"\n").WithMode(0o755),
			}},
		},
		Config: Config{
			Env:        []string{"PATH=/app:/usr/bin:/bin", "GREETING=Hello"},
			Entrypoint: []string{"/app/hello.sh"},
			Cmd:        []string{"world"},
			Labels: map[string]string{
				"org.opencontainers.image.title":       "oci2layers-demo",
				"org.opencontainers.image.description": "Demo image for oci2layers",
			},
			WorkingDir: "/app",
		},
	}
}
