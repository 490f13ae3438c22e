// Package skeleton produces, as tar entries, the files Apptainer expects
// inside an image, with the content `apptainer build docker://...` gives
// them, for Apptainer's native runtime.
//
// [Base] is the runtime skeleton. It goes into base.sif's primary partition
// on top of the image's bottom layers. It does not depend on the image
// config, so it is the same for every image:
//
//	.singularity.d/actions/{exec,run,shell,start,test}  action scripts
//	.singularity.d/env/{01-base,90-environment,95-apps,99-base,99-runtimevars}.sh
//	.singularity.d/{runscript,startscript,labels.json}
//	.singularity.d/libs/                                bound libraries (--nv)
//	singularity .run .exec .shell .test environment     symlinks to the above
//	dev/ proc/ root/ var/tmp/ tmp/ etc/ sys/ home/      mount points
//	etc/hosts etc/resolv.conf                           empty, bound over
//
// [Config] is the config overlay: the small top overlay that carries the
// image config, so that a change of ENV, ENTRYPOINT, CMD or labels rebuilds
// only it:
//
//	.singularity.d/env/10-docker2singularity.sh         ENV
//	.singularity.d/runscript                            ENTRYPOINT and CMD
//	.singularity.d/labels.json                          labels
//
// Its runscript and labels.json hide Base's.
//
// Apptainer creates the directories and the symlinks of the skeleton only
// where the image lacks the path, and overwrites the files; [Entry.IfMissing]
// carries that distinction to the caller, which knows what the image holds.
//
// The shell text of the action, environment and run scripts follows
// Apptainer's own (BSD 3-Clause licensed), so that an image runs the same as
// one Apptainer built. The scripts name SINGULARITY_* variables, not
// APPTAINER_*, as Apptainer's do: Apptainer sets both inside the container,
// and images must stay runnable by SingularityCE.
//
// Every entry has uid and gid 0, a modification time of the Unix epoch and
// the PAX format, so that the output is byte-for-byte reproducible.
package skeleton

import (
	"archive/tar"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Entry is one file system object to put in an image, in tar terms.
type Entry struct {
	// Header describes the object. Name is relative to the image root, with
	// no leading "/" or "./" and no trailing "/"; Typeflag is tar.TypeDir,
	// tar.TypeReg or tar.TypeSymlink; Uid and Gid are 0; ModTime is the Unix
	// epoch; Format is tar.FormatPAX. For a regular file Size is len(Data).
	Header *tar.Header

	// Data is the content of a regular file, nil for other types.
	Data []byte

	// IfMissing marks an entry to add only when the image lacks the path
	// (whatever its type there). Apptainer adds directories and symlinks
	// that way and overwrites files.
	IfMissing bool
}

// epoch is the modification time of every entry.
var epoch = time.Unix(0, 0)

// Write writes entries to tw in order, headers and contents. It does not
// close tw. Each header is copied, and for a regular file its Size is set to
// len(Data). On error tw holds the entries before the failing one and
// possibly part of it.
func Write(tw *tar.Writer, entries []Entry) error {
	for _, e := range entries {
		if err := writeEntry(tw, e); err != nil {
			return err
		}
	}
	return nil
}

// writeEntry writes one entry to tw.
func writeEntry(tw *tar.Writer, e Entry) error {
	if e.Header == nil {
		return errors.New("write entry: nil header")
	}
	hdr := *e.Header
	switch {
	case hdr.Typeflag == tar.TypeReg:
		hdr.Size = int64(len(e.Data))
	case len(e.Data) > 0:
		return fmt.Errorf("write %s: data on an entry of type %q", hdr.Name, hdr.Typeflag)
	}

	if err := tw.WriteHeader(&hdr); err != nil {
		return fmt.Errorf("write header %s: %w", hdr.Name, err)
	}
	if _, err := tw.Write(e.Data); err != nil {
		return fmt.Errorf("write content %s: %w", hdr.Name, err)
	}
	return nil
}

// header returns the common part of every entry's header.
func header(name string, typ byte, mode int64) *tar.Header {
	return &tar.Header{
		Name:     name,
		Typeflag: typ,
		Mode:     mode,
		ModTime:  epoch,
		Format:   tar.FormatPAX,
	}
}

// dir returns a directory entry.
func dir(name string, mode int64, ifMissing bool) Entry {
	return Entry{Header: header(name, tar.TypeDir, mode), IfMissing: ifMissing}
}

// file returns a regular file entry holding data.
func file(name string, mode int64, data string) Entry {
	hdr := header(name, tar.TypeReg, mode)
	hdr.Size = int64(len(data))
	return Entry{Header: hdr, Data: []byte(data)}
}

// symlink returns a symbolic link entry pointing to target.
func symlink(name, target string, ifMissing bool) Entry {
	hdr := header(name, tar.TypeSymlink, 0o777)
	hdr.Linkname = target
	return Entry{Header: hdr, IfMissing: ifMissing}
}

// sortEntries sorts entries by path, component by component, so that a
// directory comes right before its contents.
func sortEntries(entries []Entry) {
	slices.SortFunc(entries, func(a, b Entry) int {
		return slices.Compare(
			strings.Split(a.Header.Name, "/"),
			strings.Split(b.Header.Name, "/"),
		)
	})
}
