// Command demoimage writes the demo images of package imagegen into one OCI
// image layout, offline and byte for byte the same on every run:
//
//	go run ./tools/demoimage -o DIR
//	oci2layers convert oci:DIR:demo -o OUT
//
// The layout holds the tags "demo" and "demo-v2", which differ only in
// their top layer. -images picks other standard images of imagegen, each
// tagged with its name, such as "cases,variant" to debug a conversion by
// hand. An index.json already in DIR is replaced.
//
// With -busybox PATH, the demo images' bottom layer also gets that static
// busybox as /bin/busybox with sh, cat, ls and echo linked to it, so the
// converted demo runs under Apptainer ("./run exec cat /etc/os-release").
// The bytes then depend on that busybox.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/oci2layers/oci2layers/internal/imagegen"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "demoimage:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demoimage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "OCI layout directory to write (created if missing)")
	names := fs.String("images", imagegen.Demo+","+imagegen.DemoV2,
		"comma-separated standard images to write, each tagged with its name")
	busybox := fs.String("busybox", "", "static busybox to add to the demo images' /bin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("parse arguments: need -o DIR and nothing else")
	}

	tags := strings.Split(*names, ",")
	specs := imagegen.StandardSpecs()
	var shell []imagegen.Entry
	if *busybox != "" {
		b, err := os.ReadFile(*busybox)
		if err != nil {
			return fmt.Errorf("read busybox: %w", err)
		}
		shell = []imagegen.Entry{imagegen.Dir("bin"),
			imagegen.File("bin/busybox", string(b)).WithMode(0o755)}
		for _, applet := range []string{"sh", "cat", "ls", "echo", "env"} {
			shell = append(shell, imagegen.Symlink("bin/"+applet, "busybox"))
		}
	}
	tagged := make([]imagegen.Tagged, 0, len(tags))
	for _, tag := range tags {
		spec, ok := specs[tag]
		if !ok {
			return fmt.Errorf("no standard image %q", tag)
		}
		if len(shell) > 0 && (tag == imagegen.Demo || tag == imagegen.DemoV2) {
			spec.Layers[0].Entries = append(append([]imagegen.Entry(nil),
				spec.Layers[0].Entries...), shell...)
		}
		img, err := imagegen.Build(spec)
		if err != nil {
			return fmt.Errorf("build %s: %w", tag, err)
		}
		tagged = append(tagged, imagegen.Tagged{Tag: tag, Image: img})
	}
	if err := imagegen.WriteLayout(*out, tagged); err != nil {
		return err
	}

	for _, ti := range tagged {
		d, err := ti.Image.Digest()
		if err != nil {
			return fmt.Errorf("digest %s: %w", ti.Tag, err)
		}
		fmt.Fprintf(stdout, "%s:%s\t%s\n", *out, ti.Tag, d)
	}
	return nil
}
