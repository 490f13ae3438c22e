package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/oci2layers/oci2layers/internal/cache"
	"github.com/oci2layers/oci2layers/internal/convert"
)

// StateFile is the file in the output root where an unsharded sync records
// the output directories it wrote; shard I of N keeps its own record in
// .oci2layers-sync.I-of-N.json.
const StateFile = ".oci2layers-sync.json"

// lockFile is flocked by a running sync, so that two never share a root:
// exclusively by an unsharded sync, shared by each shard, which also holds
// its own shard's lock file (see Shard) exclusively. Shards of one count
// thus run side by side, but never with an unsharded sync or with a second
// run of the same shard.
const lockFile = ".oci2layers-sync.lock"

const stateVersion = 1

// state is what a state file holds.
type state struct {
	// name is the state file's name in the output root.
	name    string
	Version int `json:"version"`
	// Outputs maps each output directory, relative to the root and
	// slash-separated, to what was converted into it.
	Outputs map[string]*record `json:"outputs"`
}

// record describes one output directory.
type record struct {
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	Platform   string `json:"platform"`
	// Digest is the tag's digest as HEAD reports it (an index's, for a
	// multi-platform image); empty until the first conversion finishes.
	Digest string `json:"digest,omitempty"`
	// ManifestDigest is the platform manifest's, as image.json records it.
	ManifestDigest string `json:"manifest_digest,omitempty"`
	BaseLayers     int    `json:"base_layers"`
	MaxOverlays    int    `json:"max_overlays"`
	Compression    string `json:"compression"`
	// Created is set when sync made the directory: only then may prune
	// remove it.
	Created bool `json:"created"`
	// MadeDirs are the directories above it that sync made for it, deepest
	// first; prune removes those that are then empty.
	MadeDirs  []string  `json:"made_dirs,omitempty"`
	Converted time.Time `json:"converted,omitzero"`
}

// sameSource reports whether r was converted from the same tag and
// platform with the same options as want.
func (r *record) sameSource(want *record) bool {
	return r.Registry == want.Registry && r.Repository == want.Repository &&
		r.Tag == want.Tag && r.Platform == want.Platform && r.BaseLayers == want.BaseLayers &&
		r.MaxOverlays == want.MaxOverlays && r.Compression == want.Compression
}

// loadState reads the state file name in root; a missing file is an empty
// state.
func loadState(root, name string) (*state, error) {
	st := &state{name: name, Version: stateVersion, Outputs: map[string]*record{}}
	b, err := os.ReadFile(filepath.Join(root, name))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read sync state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read sync state %s: %w", filepath.Join(root, name), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("read sync state %s: version %d, want %d",
			filepath.Join(root, name), st.Version, stateVersion)
	}
	if st.Outputs == nil {
		st.Outputs = map[string]*record{}
	}
	return st, nil
}

// save writes the state file atomically.
func (st *state) save(root string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	return cache.WriteFile(filepath.Join(root, st.name), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// ErrBusy means another sync is running on the same output root.
var ErrBusy = errors.New("another sync is running on this output root")

// lockRoot takes root's sync locks for sh, failing at once with ErrBusy
// when another process holds them: lockFile exclusively for the whole work,
// else lockFile shared and sh's own lock file exclusively. Call the
// returned function to release them.
func lockRoot(root string, sh Shard) (func(), error) {
	how := syscall.LOCK_EX
	if sh.Sharded() {
		how = syscall.LOCK_SH
	}
	rootLock, err := flockFile(filepath.Join(root, lockFile), how)
	if err != nil {
		return nil, err
	}
	if !sh.Sharded() {
		return func() { rootLock.Close() }, nil
	}
	shardLock, err := flockFile(filepath.Join(root, lockName(sh)), syscall.LOCK_EX)
	if err != nil {
		rootLock.Close()
		return nil, err
	}
	return func() { shardLock.Close(); rootLock.Close() }, nil
}

// flockFile opens or creates p and flocks it (how is LOCK_EX or LOCK_SH)
// without waiting. Closing the file releases the lock.
func flockFile(p string, how int) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", p, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return f, nil
}

// intact reports whether dir holds a whole conversion of the manifest: an
// image.json that names it and every file image.json lists, plus run.
func intact(dir, manifestDigest string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return false
	}
	var res convert.Result
	if json.Unmarshal(b, &res) != nil || res.ManifestDigest != manifestDigest || res.Flat {
		return false
	}
	files := []string{"run", res.Base.File, res.ConfigOverlay.File}
	for _, o := range res.Overlays {
		files = append(files, o.File)
	}
	for _, f := range files {
		if f == "" || !filepath.IsLocal(f) {
			return false
		}
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}
