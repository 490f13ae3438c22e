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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("parse arguments: need -o DIR and nothing else")
	}

	tags := strings.Split(*names, ",")
	imgs, err := imagegen.StandardImages(tags...)
	if err != nil {
		return err
	}
	tagged := make([]imagegen.Tagged, 0, len(tags))
	for _, tag := range tags {
		tagged = append(tagged, imagegen.Tagged{Tag: tag, Image: imgs[tag]})
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
