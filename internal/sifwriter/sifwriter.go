// Package sifwriter assembles SIF files from squashfs images with the sif
// library. Output is deterministic: the same squashfs bytes give the same
// SIF bytes (zero IDs and times).
//
// Two shapes are written:
//
//	base SIF     launch script, one PartPrimSys squashfs partition (group 1)
//	overlay SIF  one PartOverlay squashfs partition (group 1), read-only
//
// Apptainer mounts an overlay SIF given with --overlay FILE:ro; the root of
// its squashfs is the overlay's upper directory.
package sifwriter

import (
	"fmt"
	"io"
	"os"

	"github.com/apptainer/sif/v2/pkg/sif"
)

// LaunchScript starts a base SIF that is executed directly.
const LaunchScript = "#!/usr/bin/env run-singularity\n"

// Kind says what a partition is for.
type Kind int

// The kinds of SIF this package writes.
const (
	Base Kind = iota
	Overlay
)

// Write writes a SIF holding the squashfs image read from sqfs to w, which
// must be empty. arch is a Go architecture name (amd64, arm64, ...). On error
// w holds a partial file the caller must discard.
func Write(w *os.File, kind Kind, sqfs io.Reader, arch string) error {
	part := sif.PartPrimSys
	if kind == Overlay {
		part = sif.PartOverlay
	}
	di, err := sif.NewDescriptorInput(sif.DataPartition, sqfs,
		sif.OptPartitionMetadata(sif.FsSquash, part, arch))
	if err != nil {
		return fmt.Errorf("describe partition: %w", err)
	}

	opts := []sif.CreateOpt{sif.OptCreateDeterministic(), sif.OptCreateWithDescriptors(di),
		sif.OptCreateWithCloseOnUnload(false)}
	if kind == Base {
		opts = append(opts, sif.OptCreateWithLaunchScript(LaunchScript))
	}
	f, err := sif.CreateContainer(w, opts...)
	if err != nil {
		return fmt.Errorf("create sif: %w", err)
	}
	if err := f.UnloadContainer(); err != nil {
		return fmt.Errorf("finish sif: %w", err)
	}
	return nil
}

// Partition opens the squashfs partition of a SIF this package wrote, for
// reading. The caller closes the returned file.
func Partition(path string) (io.ReadCloser, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", path, err)
	}
	img, err := sif.LoadContainer(f, sif.OptLoadWithFlag(os.O_RDONLY),
		sif.OptLoadWithCloseOnUnload(false))
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("load %s: %w", path, err)
	}
	d, err := img.GetDescriptor(sif.WithDataType(sif.DataPartition))
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("find partition in %s: %w", path, err)
	}
	return readCloser{io.NewSectionReader(f, d.Offset(), d.Size()), f}, d.Size(), nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
