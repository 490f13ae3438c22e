// Package cache owns oci2layers' on-disk cache: every converted layer,
// base and config overlay, stored once under its key and shared by every
// image, tag and run that needs it.
//
// Layout below the cache root (created 0700; Open narrows a wider one):
//
//	CACHEDIR.TAG                 marks the directory for backup tools
//	v1/                          format version; a new layout gets a new name
//	  layers/sha256/<hex>.sif    one layer as an overlay SIF; key: diffID or chainID
//	  bases/sha256/<hex>.sif     base SIF; key: derived from the base layers' chainID
//	  configs/sha256/<hex>.sif   metadata overlay SIF; key: config digest
//	  flats/sha256/<hex>.sif     single-partition SIF of a whole image
//	  indexes/sha256/<hex>.json.gz  a layer's entry list; key: diffID
//	  documents/sha256/<hex>     image configs, verified by digest
//	  images/sha256/<hex>.json   what a conversion produced, to redo it without work
//	  meta/<kind>/<hex>.json     an entry's metadata: size, sha256, origin (Meta)
//	  used/<kind>/<hex>          mtime: the entry's last use; lines: images that used it
//	  outputs/<hex>.json         an output directory or file and the keys it
//	                             holds (OutputRecord); hex: sha256 of its path
//	  locks/<kind>-<hex>         flocked by the process building or removing that entry
//	  tmp/run-<pid>-<random>/    one running process's work in progress, with a
//	                             "lock" file it holds flocked while it runs and a
//	                             "using" file listing the entries it uses
//
// An entry exists only when it is whole: it is written in the process's own
// directory under tmp/, synced, hashed, described by its metadata file
// (itself written atomically first) and renamed into place. So an entry never
// exists without metadata; a process killed at any point leaves at most its
// tmp/run-* directory and a metadata file without entry, which Verify
// reports as a leftover and GC removes. The next Open removes every tmp/run-*
// directory whose lock nobody holds. Open holds a flock on tmp/ itself while
// it sweeps and makes its own directory, so that it never removes one another
// Open has made but not yet locked. Entries are never modified afterwards.
// When two processes build the same entry, both renames succeed and the bytes
// are the same, so either result is correct.
//
// An entry is removed (by GC, Remove or Verify with repair) only under its
// build lock, and only when no live process lists it in its "using" file.
// A process adds an entry to that list before it looks for the entry (Use)
// or writes it (Put), so an entry a running conversion has found or built
// stays until the process ends. Conversions also record each output they
// write (RecordOutput), and GC keeps what a live output holds. Processes
// that share the cache over a network file system rely on it to honour
// flock and O_APPEND as a local one does (NFSv4 with locking does); where it
// does not, GC may remove an entry another machine is about to link.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/oci2layers/oci2layers/internal/atomicfile"
)

// Kind is a class of cache entry.
type Kind string

// The kinds of entry.
const (
	Layer    Kind = "layers"
	Base     Kind = "bases"
	Config   Kind = "configs"
	Flat     Kind = "flats"
	Index    Kind = "indexes"
	Document Kind = "documents"
	Image    Kind = "images"
)

// AllKinds lists every kind of entry, in the order listings show them.
var AllKinds = []Kind{Base, Layer, Config, Flat, Index, Document, Image}

var extensions = map[Kind]string{
	Layer: ".sif", Base: ".sif", Config: ".sif", Flat: ".sif",
	Index: ".json.gz", Document: "", Image: ".json",
}

const version = "v1"

const cacheDirTag = "Signature: 8a477f597d28d172789f06886806bc55\n" +
	"# This file marks a cache directory created by oci2layers.\n" +
	"# For information about cache directory tags see https://bford.info/cachedir/\n"

// Cache is an opened cache directory.
type Cache struct {
	root string
	work string   // this process's directory under tmp/
	lock *os.File // flocked while the process runs

	mu     sync.Mutex
	using  *os.File        // work/using, opened on first use
	listed map[string]bool // lines already in using
}

// DefaultDir picks the cache directory: $OCI2LAYERS_CACHE, else
// $XDG_CACHE_HOME/oci2layers, else ~/.cache/oci2layers.
func DefaultDir() (string, error) {
	if d := os.Getenv("OCI2LAYERS_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "oci2layers"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory: %w", err)
	}
	return filepath.Join(home, ".cache", "oci2layers"), nil
}

// Open creates the cache directory if needed and returns it.
func Open(dir string) (*Cache, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	if err := tighten(abs); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	c := &Cache{root: abs, listed: map[string]bool{}}
	dirs := []string{c.sub("locks"), c.sub("outputs")}
	for k := range extensions {
		dirs = append(dirs, c.dir(k), c.sub("meta", string(k)), c.sub("used", string(k)))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", dir, err)
		}
	}
	tmpLock, err := c.lockTmp()
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	defer tmpLock.Close()
	if err := c.sweep(); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	if err := c.makeWork(); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	tag := filepath.Join(abs, "CACHEDIR.TAG")
	if _, err := os.Stat(tag); errors.Is(err, os.ErrNotExist) {
		if err := c.writeFile(tag, 0o644, func(w io.Writer) error {
			_, err := io.WriteString(w, cacheDirTag)
			return err
		}); err != nil {
			c.Close()
			return nil, fmt.Errorf("open cache %s: %w", dir, err)
		}
	}
	return c, nil
}

// tighten takes group and other permissions off the cache root, so that no
// other user reaches the entries, nor the setuid files inside them.
func tighten(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		if err := os.Chmod(dir, perm&^0o077); err != nil {
			return fmt.Errorf("restrict permissions: %w", err)
		}
	}
	return nil
}

// sub returns a path below the cache's version directory.
func (c *Cache) sub(elem ...string) string {
	return filepath.Join(append([]string{c.root, version}, elem...)...)
}

// Root returns the cache's absolute directory.
func (c *Cache) Root() string { return c.root }

// TempDir is where this process's work in progress goes: on the same file
// system as the entries, so that finished work can be renamed into place.
func (c *Cache) TempDir() string { return c.work }

// OpenPeer opens a file whose name matches pattern in the work directory of
// any run, this one or another process's, for reading. Such a file may be
// removed at any moment by its owner; once open it stays readable. found is
// false when none could be opened.
func (c *Cache) OpenPeer(pattern string) (f *os.File, found bool) {
	matches, _ := filepath.Glob(filepath.Join(c.tmpRoot(), "run-*", pattern))
	for _, m := range matches {
		if f, err := os.Open(m); err == nil {
			return f, true
		}
	}
	return nil, false
}

// Close removes the process's work directory and releases its lock.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.using != nil {
		c.using.Close()
		c.using = nil
	}
	c.mu.Unlock()
	err := os.RemoveAll(c.work)
	if c.lock != nil {
		c.lock.Close()
	}
	return err
}

func (c *Cache) tmpRoot() string { return filepath.Join(c.root, version, "tmp") }

// lockTmp takes the lock on tmp/ that serialises sweeping and making work
// directories; closing the file releases it.
func (c *Cache) lockTmp() (*os.File, error) {
	if err := os.MkdirAll(c.tmpRoot(), 0o700); err != nil {
		return nil, err
	}
	d, err := os.Open(c.tmpRoot())
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("lock %s: %w", c.tmpRoot(), err)
	}
	return d, nil
}

// makeWork creates this process's work directory and locks it.
func (c *Cache) makeWork() error {
	if err := os.MkdirAll(c.tmpRoot(), 0o700); err != nil {
		return err
	}
	work, err := os.MkdirTemp(c.tmpRoot(), fmt.Sprintf("run-%d-", os.Getpid()))
	if err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(work, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		os.RemoveAll(work)
		return err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		os.RemoveAll(work)
		return fmt.Errorf("lock %s: %w", work, err)
	}
	c.work, c.lock = work, lock
	return nil
}

// sweep removes the work directories of processes that are gone: those whose
// lock can be taken.
func (c *Cache) sweep() error {
	entries, err := os.ReadDir(c.tmpRoot())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(c.tmpRoot(), e.Name())
		if !strings.HasPrefix(e.Name(), "run-") || !e.IsDir() {
			os.RemoveAll(p)
			continue
		}
		if abandoned(p) {
			os.RemoveAll(p)
		}
	}
	return nil
}

// abandoned reports whether no process holds the work directory's lock.
func abandoned(dir string) bool {
	lock, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false
	}
	return true
}

func (c *Cache) dir(k Kind) string { return filepath.Join(c.root, version, string(k), "sha256") }

// Path returns where the entry of kind k and key lives (whether or not it exists).
func (c *Cache) Path(k Kind, key v1.Hash) string {
	return filepath.Join(c.root, version, string(k), key.Algorithm, key.Hex+extensions[k])
}

// Has reports whether the entry exists.
func (c *Cache) Has(k Kind, key v1.Hash) bool {
	_, err := os.Stat(c.Path(k, key))
	return err == nil
}

// Open opens an entry for reading; a missing entry gives an error wrapping
// os.ErrNotExist.
func (c *Cache) Open(k Kind, key v1.Hash) (*os.File, error) {
	f, err := os.Open(c.Path(k, key))
	if err != nil {
		return nil, fmt.Errorf("open cache entry %s %s: %w", k, key, err)
	}
	return f, nil
}

// lockPoll is how often Lock retries a lock another process holds.
const lockPoll = 100 * time.Millisecond

// Lock takes the build lock of an entry, waiting while another process (or
// another goroutine) holds it, until ctx ends. Whoever holds it is building
// or removing the entry; a waiter should check Has once it gets the lock.
// The lock is a flock on locks/<kind>-<hex>, so it dies with its process.
// Call the returned function to release it.
func (c *Cache) Lock(ctx context.Context, k Kind, key v1.Hash) (func(), error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("lock cache entry %s: %w", k, err)
	}
	for {
		l, ok, err := c.tryLock(k, key)
		if err != nil {
			return nil, err
		}
		if ok {
			return l.release, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

// entryLock is a held build lock.
type entryLock struct {
	f    *os.File
	path string
}

func (l *entryLock) release() { l.f.Close() }

// releaseRemoving deletes the lock file, then releases it. Lock takers
// check that the file they locked is still the one at the path, so
// removing it under the lock is safe.
func (l *entryLock) releaseRemoving() {
	os.Remove(l.path)
	l.f.Close()
}

// tryLock takes an entry's build lock if nobody holds it; ok is false when
// somebody does.
func (c *Cache) tryLock(k Kind, key v1.Hash) (l *entryLock, ok bool, err error) {
	path := c.sub("locks", string(k)+"-"+key.Hex)
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("lock cache entry %s %s: %w", k, key, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, false, nil
		}
		if err != nil {
			f.Close()
			return nil, false, fmt.Errorf("lock cache entry %s %s: %w", k, key, err)
		}
		// A remover may have unlinked the file between our open and our
		// flock: a lock on an unlinked file guards nothing, so lock anew.
		if held, err := f.Stat(); err == nil {
			if now, err := os.Stat(path); err == nil && os.SameFile(held, now) {
				return &entryLock{f: f, path: path}, true, nil
			}
		}
		f.Close()
	}
}

// checkKey refuses keys that are not a sha256 digest, so no key can name a
// path outside its directory.
func checkKey(key v1.Hash) error {
	if key.Algorithm != "sha256" || len(key.Hex) != 64 || !isHex(key.Hex) {
		return fmt.Errorf("bad key %q", key)
	}
	return nil
}

func isHex(s string) bool {
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// Put writes an entry with fill, atomically, with metadata that names no
// origin; see PutWithOrigin.
func (c *Cache) Put(k Kind, key v1.Hash, fill func(w *os.File) error) error {
	return c.PutWithOrigin(k, key, Origin{}, fill)
}

// PutWithOrigin writes an entry with fill, atomically: fill writes a
// temporary file in the process's work directory, which is then read back
// to hash it (SIFs are written with seeks, so hashing while writing is not
// possible); the metadata file is written and renamed into place, then the
// entry. The entry joins the process's using list first, so GC leaves it
// until the process ends, and its last use is now. On error no entry
// appears; a metadata file may (Verify reports it as a leftover, GC removes
// it). A document must hash to its key.
//
// Callers hold the entry's lock (Lock) while they check Has and Put, except
// for documents, whose bytes their key fixes: two unlocked writers of
// different bytes could leave one's metadata beside the other's entry.
func (c *Cache) PutWithOrigin(k Kind, key v1.Hash, o Origin, fill func(w *os.File) error) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("write cache entry %s: %w", k, err)
	}
	if err := c.markUsing(k, key); err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	f, err := atomicfile.CreateIn(c.work, c.Path(k, key), 0o644)
	if err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	defer f.Abort()
	if err := fill(f.File); err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}

	size, sum, err := hashFile(f.File)
	if err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	if k == Document && sum != key.String() {
		return fmt.Errorf("write cache entry %s %s: content hashes to %s", k, key, sum)
	}
	m := Meta{Kind: k, Key: key.String(), Size: size, SHA256: sum,
		Created: time.Now().UTC(), Format: MetaFormat, Origin: o}
	if err := c.writeMeta(m); err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	c.touchUsed(k, key, o.Images...)
	return nil
}

// writeFile writes path atomically with fill, through the work directory,
// so that a process killed meanwhile leaves nothing outside tmp/.
func (c *Cache) writeFile(path string, mode os.FileMode, fill func(w io.Writer) error) error {
	return writeIn(c.work, path, mode, fill)
}

// WriteFile writes path atomically with fill.
func WriteFile(path string, mode os.FileMode, fill func(w io.Writer) error) error {
	return writeIn(filepath.Dir(path), path, mode, fill)
}

// writeIn writes path with fill through a temporary file in dir, which must
// be on the same file system.
func writeIn(dir, path string, mode os.FileMode, fill func(w io.Writer) error) error {
	f, err := atomicfile.CreateIn(dir, path, mode)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := fill(f.File); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}
