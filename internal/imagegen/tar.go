package imagegen

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"path"
	"time"
)

// epoch is the modification time of every entry and the creation time of
// every image imagegen builds.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// LayerTar returns the uncompressed tar stream of l.
func LayerTar(l Layer) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range l.Entries {
		if err := writeEntry(tw, e, l.DotSlash); err != nil {
			return nil, fmt.Errorf("write entry %s %q: %w", e.Kind, e.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return buf.Bytes(), nil
}

func writeEntry(tw *tar.Writer, e Entry, dotSlash bool) error {
	hdr, err := header(e)
	if err != nil {
		return err
	}
	if dotSlash {
		hdr.Name = "./" + hdr.Name
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if e.Kind != KindFile {
		return nil
	}
	if e.Size > 0 {
		_, err = io.CopyN(tw, randomReader(e.Seed), e.Size)
	} else {
		_, err = io.WriteString(tw, e.Content)
	}
	return err
}

// header returns the tar header of e, without content.
func header(e Entry) (*tar.Header, error) {
	name, err := cleanPath(e.Path)
	if err != nil {
		return nil, err
	}
	hdr := &tar.Header{
		Name:    name,
		Mode:    e.Mode,
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: epoch,
	}
	for k, v := range e.Xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = v
	}

	switch e.Kind {
	case KindDir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
	case KindFile:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.Content))
		if e.Size > 0 {
			hdr.Size = e.Size
		}
	case KindSymlink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Target
	case KindHardlink:
		target, err := cleanPath(e.Target)
		if err != nil {
			return nil, err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeLink, target
	case KindWhiteout:
		hdr.Typeflag = tar.TypeReg
		hdr.Name = path.Join(path.Dir(name), ".wh."+path.Base(name))
	case KindOpaque:
		hdr.Typeflag, hdr.Name = tar.TypeReg, name+"/.wh..wh..opq"
	case KindCharDev:
		hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeChar, e.Major, e.Minor
	case KindFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, fmt.Errorf("build header: unknown kind %d", int(e.Kind))
	}
	return hdr, nil
}

// randomReader returns an endless deterministic pseudo-random stream.
func randomReader(seed uint64) io.Reader {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}
