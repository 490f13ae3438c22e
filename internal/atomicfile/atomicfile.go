// Package atomicfile writes files that appear under their final name only
// when whole: the bytes go to a temporary file beside the target, which is
// synced, closed and renamed into place, and the directory is synced too.
// A crash at any point leaves either the old state or the new file, plus at
// most a temporary file whose name starts with ".tmp-".
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file this package makes.
const TempPrefix = ".tmp-"

// File is a temporary file on its way to a final name.
type File struct {
	*os.File
	final string
	done  bool
}

// Create opens a temporary file in final's directory with the given mode.
// Nothing appears under final until Commit.
func Create(final string, mode os.FileMode) (*File, error) {
	return CreateIn(filepath.Dir(final), final, mode)
}

// CreateIn is Create with the temporary file in dir, which must be on the
// same file system as final.
func CreateIn(dir, final string, mode os.FileMode) (*File, error) {
	f, err := os.CreateTemp(dir, TempPrefix+filepath.Base(final)+"-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", final, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create %s: %w", final, err)
	}
	return &File{File: f, final: final}, nil
}

// Commit syncs the file, renames it to its final name and syncs the
// directory. An existing file at the final name is replaced. On error the
// temporary file is removed and the final name is untouched.
func (f *File) Commit() error {
	if f.done {
		return errors.New("commit: file already committed or aborted")
	}
	f.done = true
	tmp := f.Name()
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sync %s: %w", f.final, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close %s: %w", f.final, err)
	}
	if err := os.Rename(tmp, f.final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s: %w", f.final, err)
	}
	return SyncDir(filepath.Dir(f.final))
}

// Abort closes and removes the temporary file; after Commit it does nothing.
// It is safe to defer.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
}

// SyncDir flushes a directory's entries to disk.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
