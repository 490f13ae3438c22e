// Package cache owns oci2layers' on-disk cache: every converted layer,
// base and config overlay, stored once under its key and shared by every
// image, tag and run that needs it.
//
// Layout below the cache root (created 0700):
//
//	CACHEDIR.TAG                 marks the directory for backup tools
//	v1/                          format version; a new layout gets a new name
//	  layers/sha256/<hex>.sif    one layer as an overlay SIF; key: diffID or chainID
//	  bases/sha256/<hex>.sif     base SIF; key: derived from the base layers' chainID
//	  configs/sha256/<hex>.sif   metadata overlay SIF; key: config digest
//	  indexes/sha256/<hex>.json.gz  a layer's entry list; key: diffID
//	  documents/sha256/<hex>     image configs, verified by digest
//	  images/sha256/<hex>.json   what a conversion produced, to redo it without work
//	  locks/<kind>-<hex>         flocked by the process building that entry
//	  tmp/run-<pid>-<random>/    one running process's work in progress, with a
//	                             "lock" file it holds flocked while it runs
//
// An entry exists only when it is whole: it is written in the process's own
// directory under tmp/, synced and renamed into place. A process killed at
// any point leaves only its tmp/run-* directory behind; the next Open removes
// every such directory whose lock nobody holds. Open holds a flock on tmp/
// itself while it sweeps and makes its own directory, so that it never
// removes one another Open has made but not yet locked. Entries are never
// modified afterwards. When two processes build the same entry, both renames
// succeed and the bytes are the same, so either result is correct.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
	c := &Cache{root: abs}
	for k := range extensions {
		if err := os.MkdirAll(c.dir(k), 0o700); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(abs, version, "locks"), 0o700); err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
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
		if err := WriteFile(tag, 0o644, func(w io.Writer) error {
			_, err := io.WriteString(w, cacheDirTag)
			return err
		}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Root returns the cache's absolute directory.
func (c *Cache) Root() string { return c.root }

// TempDir is where this process's work in progress goes: on the same file
// system as the entries, so that finished work can be renamed into place.
func (c *Cache) TempDir() string { return c.work }

// Close removes the process's work directory and releases its lock.
func (c *Cache) Close() error {
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
// the entry; a waiter should check Has once it gets the lock. The lock is a
// flock on locks/<kind>-<hex>, so it dies with its process. Call the
// returned function to release it.
func (c *Cache) Lock(ctx context.Context, k Kind, key v1.Hash) (func(), error) {
	if key.Algorithm != "sha256" || len(key.Hex) != 64 || strings.ContainsAny(key.Hex, "/.") {
		return nil, fmt.Errorf("lock cache entry %s: bad key %q", k, key)
	}
	path := filepath.Join(c.root, version, "locks", string(k)+"-"+key.Hex)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock cache entry %s %s: %w", k, key, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock cache entry %s %s: %w", k, key, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

// Put writes an entry with fill, atomically. On error nothing appears.
func (c *Cache) Put(k Kind, key v1.Hash, fill func(w *os.File) error) error {
	if key.Algorithm != "sha256" || len(key.Hex) != 64 || strings.ContainsAny(key.Hex, "/.") {
		return fmt.Errorf("write cache entry %s: bad key %q", k, key)
	}
	f, err := atomicfile.CreateIn(c.work, c.Path(k, key), 0o644)
	if err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	defer f.Abort()
	if err := fill(f.File); err != nil {
		return fmt.Errorf("write cache entry %s %s: %w", k, key, err)
	}
	return f.Commit()
}

// WriteFile writes path atomically with fill.
func WriteFile(path string, mode os.FileMode, fill func(w io.Writer) error) error {
	f, err := atomicfile.Create(path, mode)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := fill(f.File); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}
