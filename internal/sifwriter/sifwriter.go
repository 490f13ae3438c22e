// Package sifwriter assembles SIF files from squashfs images with the sif
// library. Output is deterministic: the same squashfs bytes give the same
// SIF bytes (zero IDs and times).
//
// Two shapes are written:
//
//	base SIF     launch script, one PartPrimSys squashfs partition (group 1)
//	overlay SIF  one PartOverlay squashfs partition (group 1), read-only
//	stack SIF    launch script, PartPrimSys, then PartOverlay partitions bottom
//	             to top (all group 1), then generic JSON objects
//
// Apptainer mounts an overlay SIF given with --overlay FILE:ro; the root of
// its squashfs is the overlay's upper directory.
package sifwriter

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"

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
	return WriteStack(w, Stack{Parts: []Part{{Kind: kind, Squashfs: sqfs}}}, arch)
}

// Part is one squashfs partition of a Stack.
type Part struct {
	Kind     Kind
	Squashfs io.Reader
}

// Stack describes a SIF with several partitions: at most one Base first, then
// overlays bottom to top. All share group 1, the primary partition's group,
// so Apptainer mounts every embedded overlay, later ones higher. JSON objects
// (such as Apptainer's "oci-config.json") follow as generic JSON descriptors,
// in name order.
type Stack struct {
	Parts []Part
	JSON  map[string][]byte
}

// WriteStack writes a Stack as a SIF to w, which must be empty; the launch
// script is added when the first part is a Base. On error w holds a partial
// file the caller must discard.
func WriteStack(w *os.File, s Stack, arch string) error {
	var dis []sif.DescriptorInput
	for i, p := range s.Parts {
		part := sif.PartPrimSys
		if p.Kind == Overlay {
			part = sif.PartOverlay
		} else if i > 0 {
			return fmt.Errorf("create sif: the base must be the first partition")
		}
		di, err := sif.NewDescriptorInput(sif.DataPartition, p.Squashfs,
			sif.OptPartitionMetadata(sif.FsSquash, part, arch))
		if err != nil {
			return fmt.Errorf("describe partition %d: %w", i+1, err)
		}
		dis = append(dis, di)
	}
	names := make([]string, 0, len(s.JSON))
	for name := range s.JSON {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		di, err := sif.NewDescriptorInput(sif.DataGenericJSON, bytes.NewReader(s.JSON[name]),
			sif.OptObjectName(name))
		if err != nil {
			return fmt.Errorf("describe %s: %w", name, err)
		}
		dis = append(dis, di)
	}

	opts := []sif.CreateOpt{sif.OptCreateDeterministic(), sif.OptCreateWithDescriptors(dis...),
		sif.OptCreateWithCloseOnUnload(false),
		sif.OptCreateWithDescriptorCapacity(int64(max(48, len(dis)+8)))}
	if len(s.Parts) > 0 && s.Parts[0].Kind == Base {
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

// JSONObject returns the generic JSON object called name in the SIF at path,
// or nil when there is none.
func JSONObject(path, name string) ([]byte, error) {
	img, err := sif.LoadContainerFromPath(path, sif.OptLoadWithFlag(os.O_RDONLY))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	defer img.UnloadContainer()
	ds, err := img.GetDescriptors(sif.WithDataType(sif.DataGenericJSON))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, d := range ds {
		if d.Name() == name {
			b, err := d.GetData()
			if err != nil {
				return nil, fmt.Errorf("read %s from %s: %w", name, path, err)
			}
			return b, nil
		}
	}
	return nil, nil
}
