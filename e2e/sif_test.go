package e2e

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// partition is a SIF data partition.
type partition struct {
	Offset int64
	Size   int64
	FS     sif.FSType
	Part   sif.PartType
}

// sifPartitions returns every partition descriptor of the SIF file.
func sifPartitions(t *testing.T, file string) []partition {
	t.Helper()
	f, err := sif.LoadContainerFromPath(file, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		t.Fatalf("load SIF %s: %v", file, err)
	}
	defer f.UnloadContainer()

	ds, err := f.GetDescriptors(sif.WithDataType(sif.DataPartition))
	if err != nil {
		t.Fatalf("list partitions of %s: %v", file, err)
	}
	parts := make([]partition, 0, len(ds))
	for _, d := range ds {
		fs, pt, _, err := d.PartitionMetadata()
		if err != nil {
			t.Fatalf("read partition %d of %s: %v", d.ID(), file, err)
		}
		parts = append(parts, partition{Offset: d.Offset(), Size: d.Size(), FS: fs, Part: pt})
	}
	return parts
}

// onePartition checks that file holds exactly one partition, a squashfs of
// type want, and returns it.
func onePartition(t *testing.T, file string, want sif.PartType) partition {
	t.Helper()
	parts := sifPartitions(t, file)
	if len(parts) != 1 {
		t.Fatalf("%s: %d partitions %+v, want one", file, len(parts), parts)
	}
	p := parts[0]
	if p.Part != want || p.FS != sif.FsSquash {
		t.Fatalf("%s: partition %s/%s, want %s/%s", file, p.Part, p.FS, want, sif.FsSquash)
	}
	checkSquashMagic(t, file, p)
	return p
}

// checkSquashMagic checks that the partition starts with a squashfs
// superblock.
func checkSquashMagic(t *testing.T, file string, p partition) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.ReadAt(magic, p.Offset); err != nil && err != io.EOF {
		t.Fatalf("read %s at %d: %v", file, p.Offset, err)
	}
	if !bytes.Equal(magic, []byte("hsqs")) {
		t.Errorf("%s: partition at %d starts %q, want squashfs magic \"hsqs\"",
			file, p.Offset, magic)
	}
}
