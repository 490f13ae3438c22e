package mirror

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"

	"github.com/oci2layers/oci2layers/internal/atomicfile"
)

// prune removes the recorded output directories this run no longer
// produces: their tag disappeared from the registry, no longer matches its
// selector, or their image entry left the file. Directories of a repository
// whose tags could not be listed are kept, and so is every directory sync
// did not create itself (its record is dropped). A sharded run takes only
// recorded directories of tags in its shard: it never removes another
// shard's outputs.
func (s *syncer) prune(rep *Report, targets []*target, unlisted map[string]bool) {
	named := map[string]bool{}
	for _, t := range targets {
		if t.dir != "" && !t.gone {
			named[t.dir] = true
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	dirs := make([]string, 0, len(s.state.Outputs))
	for dir := range s.state.Outputs {
		dirs = append(dirs, dir)
	}
	slices.Sort(dirs)
	for _, dir := range dirs {
		rec := s.state.Outputs[dir]
		if named[dir] || unlisted[rec.Registry+"/"+rec.Repository] ||
			!s.opts.Shard.Contains(rec.Registry, rec.Repository, rec.Tag) {
			continue
		}
		p := Pruned{Dir: dir, Source: rec.Registry + "/" + rec.Repository + ":" + rec.Tag}
		switch {
		case s.opts.DryRun:
			p.Note = "dry run"
		case !rec.Created:
			p.Note = "sync did not create it: left in place"
		default:
			var err error
			if p.Removed, err = removeOutput(s.cfg.Output, dir, rec.MadeDirs); err != nil {
				p.Note = err.Error()
			}
		}
		rep.Pruned = append(rep.Pruned, p)
		if s.opts.DryRun {
			continue
		}
		s.opts.Logger.Info("pruned", "dir", dir, "source", p.Source, "removed", p.Removed,
			"note", p.Note)
		delete(s.state.Outputs, dir)
	}
	if !s.opts.DryRun && len(rep.Pruned) > 0 {
		if err := s.state.save(s.cfg.Output); err != nil {
			s.opts.Logger.Warn("cannot update the sync state", "err", err)
		}
	}
}

// ownOverlay matches the overlay files a conversion writes.
var ownOverlay = regexp.MustCompile(`^(\d\d+-|config-)[0-9a-f]{12}\.sif$`)

// outputFiles are the files a conversion writes at the top of its output
// directory.
var outputFiles = []string{"image.json", "run", "base.sif", "image.sif"}

// removeOutput removes what a conversion wrote into dir (relative to root),
// then dir and the directories made for it, each only if that left it
// empty. Every path is resolved inside root, never through a link that
// leaves it. removed is false, with an error naming what is left, when
// other files kept dir in place.
func removeOutput(root, dir string, madeDirs []string) (removed bool, err error) {
	if !filepath.IsLocal(filepath.FromSlash(dir)) {
		return false, fmt.Errorf("remove output %s: not inside the output root", dir)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return false, fmt.Errorf("remove output %s: %w", dir, err)
	}
	defer r.Close()
	fi, err := r.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		removeEmpty(r, madeDirs)
		return true, nil
	}
	if err != nil || !fi.IsDir() {
		return false, fmt.Errorf("remove output %s: not a directory", dir)
	}

	ovl := path.Join(dir, "overlays")
	names := append(listMatching(r, ovl, ownOverlay), listMatching(r, dir, nil)...)
	for _, name := range outputFiles {
		names = append(names, path.Join(dir, name))
	}
	for _, name := range names {
		if err := r.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("remove output %s: %w", name, err)
		}
	}
	if err := removeDir(r, ovl); err != nil {
		return false, fmt.Errorf("remove output %s: %w", dir, err)
	}
	if err := removeDir(r, dir); err != nil {
		return false, fmt.Errorf("remove output %s: %w", dir, err)
	}
	removeEmpty(r, madeDirs)
	return true, nil
}

// listMatching lists the files in dir whose names match re, and temporary
// files; a missing dir lists nothing.
func listMatching(r *os.Root, dir string, re *regexp.Regexp) []string {
	f, err := r.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	entries, _ := f.ReadDir(-1)
	var out []string
	for _, e := range entries {
		n := e.Name()
		if e.Type().IsRegular() && (strings.HasPrefix(n, atomicfile.TempPrefix) ||
			re != nil && re.MatchString(n)) {
			out = append(out, path.Join(dir, n))
		}
	}
	return out
}

// removeDir removes an empty directory; a missing one is fine, one that is
// not empty an error naming a file it holds.
func removeDir(r *os.Root, dir string) error {
	err := r.Remove(dir)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return err
	}
	f, ferr := r.Open(dir)
	if ferr != nil {
		return err
	}
	defer f.Close()
	left, _ := f.ReadDir(1)
	if len(left) == 0 {
		return err
	}
	return fmt.Errorf("kept %s: it holds %s, which sync did not write", dir, left[0].Name())
}

// removeEmpty removes each directory that is empty, deepest first.
func removeEmpty(r *os.Root, dirs []string) {
	for _, d := range dirs {
		if !filepath.IsLocal(filepath.FromSlash(d)) {
			continue
		}
		if fi, err := r.Lstat(d); err == nil && fi.IsDir() {
			r.Remove(d)
		}
	}
}
