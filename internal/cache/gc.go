package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Errors Remove returns, which callers branch on.
var (
	// ErrBadKey means the argument is no key, key prefix or KIND/KEY.
	ErrBadKey = errors.New("bad cache key")
	// ErrNoEntry means no entry has the key or prefix.
	ErrNoEntry = errors.New("no such cache entry")
	// ErrAmbiguous means a prefix matches entries of more than one key.
	ErrAmbiguous = errors.New("ambiguous key prefix")
	// ErrInUse means a running process uses the entry or holds its lock.
	ErrInUse = errors.New("cache entry in use")
)

// GCReport says what GC removed and why it kept the rest.
type GCReport struct {
	// Removed lists the entries removed (with DryRun, those it would remove).
	Removed []EntryInfo `json:"removed"`
	// Freed totals their sizes.
	Freed int64 `json:"freed"`
	// Referenced, Recent and InUse count the entries kept: named by a live
	// output record, used within the age limit, or listed or locked by a
	// running process.
	Referenced int `json:"referenced"`
	Recent     int `json:"recent"`
	InUse      int `json:"in_use"`
	// StaleOutputs are the outputs whose records were dropped (would be,
	// with DryRun): gone, or holding other entries now.
	StaleOutputs []string `json:"stale_outputs,omitempty"`
	// Leftovers counts the metadata and last-use files without an entry
	// that were removed (would be, with DryRun). Lock files without an
	// entry are removed too, uncounted.
	Leftovers int  `json:"leftovers"`
	DryRun    bool `json:"dry_run"`
}

// GC removes every entry that no live output record names and that was last
// used longer than olderThan ago, except those a running process lists as in
// use or holds the lock of. Each entry is removed under its lock, after the
// using lists, output records and last use are read again, with its
// metadata, last-use and lock files. GC also drops stale output records and
// removes metadata, last-use and lock files left without an entry. With
// dryRun it removes nothing and reports what it would. On error, what was
// removed stays removed.
func (c *Cache) GC(ctx context.Context, olderThan time.Duration, dryRun bool) (*GCReport, error) {
	rep := &GCReport{DryRun: dryRun}
	refs := &refState{c: c}
	if err := refs.load(); err != nil {
		return nil, fmt.Errorf("collect cache garbage: %w", err)
	}
	if err := c.dropStale(refs, rep); err != nil {
		return nil, fmt.Errorf("collect cache garbage: %w", err)
	}

	entries, err := c.scan(ctx, AllKinds...)
	if err != nil {
		return nil, fmt.Errorf("collect cache garbage: %w", err)
	}
	g := &collector{c: c, refs: refs, olderThan: olderThan, dryRun: dryRun, rep: rep}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := g.collect(e); err != nil {
			return nil, fmt.Errorf("collect cache garbage: %w", err)
		}
	}
	if err := g.leftovers(ctx); err != nil {
		return nil, fmt.Errorf("collect cache garbage: %w", err)
	}
	return rep, nil
}

// dropStale drops the records refs found stale.
func (c *Cache) dropStale(refs *refState, rep *GCReport) error {
	for _, r := range refs.stale {
		if rep.DryRun {
			rep.StaleOutputs = append(rep.StaleOutputs, r.path())
			continue
		}
		dropped, err := c.dropRecord(r)
		if err != nil {
			return err
		}
		if dropped {
			rep.StaleOutputs = append(rep.StaleOutputs, r.path())
		}
	}
	return refs.fresh()
}

// refState holds what the output records reference, and reloads it when a
// record is written or removed.
type refState struct {
	c     *Cache
	sig   string
	refs  map[string][]string
	stale []record
}

func (s *refState) load() error {
	sig, err := s.c.recordsSig()
	if err != nil {
		return err
	}
	refs, stale, err := s.c.references()
	if err != nil {
		return err
	}
	s.sig, s.refs, s.stale = sig, refs, stale
	return nil
}

// fresh reloads the references if any record has changed since they were
// read.
func (s *refState) fresh() error {
	sig, err := s.c.recordsSig()
	if err != nil {
		return err
	}
	if sig == s.sig {
		return nil
	}
	return s.load()
}

// recordsSig sums up the output records' names, inodes, sizes and times, so
// that any new, rewritten or removed record changes it.
func (c *Cache) recordsSig() (string, error) {
	list, err := os.ReadDir(c.sub("outputs"))
	if err != nil {
		return "", fmt.Errorf("read output records: %w", err)
	}
	var b strings.Builder
	for _, d := range list {
		fi, err := d.Info()
		if err != nil {
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		fmt.Fprintf(&b, "%s %d %d %d\n", d.Name(), ino, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}

// collector is one GC pass.
type collector struct {
	c         *Cache
	refs      *refState
	olderThan time.Duration
	dryRun    bool
	rep       *GCReport
}

// collect removes e if nothing keeps it. The cheap reasons to keep it are
// checked first; the rest, and those again, under its lock.
func (g *collector) collect(e entry) error {
	if g.refs.refs[e.id()] != nil {
		g.rep.Referenced++
		return nil
	}
	if info := g.c.info(e); time.Since(info.LastUsed) < g.olderThan {
		g.rep.Recent++
		return nil
	}

	l, ok, err := g.c.tryLock(e.kind, e.key())
	if err != nil {
		return err
	}
	if !ok {
		g.rep.InUse++
		return nil
	}
	keep, err := g.keep(e)
	if err != nil || keep {
		l.release()
		return err
	}
	info := g.c.info(e)
	if g.dryRun {
		l.release()
		g.removed(info)
		return nil
	}
	if err := g.c.removeFiles(e.kind, e.hex); err != nil {
		l.release()
		return err
	}
	l.releaseRemoving()
	g.removed(info)
	return nil
}

// keep checks again, under e's lock, whether anything keeps e, counting
// the reason.
func (g *collector) keep(e entry) (bool, error) {
	using, err := g.c.liveUsing()
	if err != nil {
		return false, err
	}
	if using[e.id()] {
		g.rep.InUse++
		return true, nil
	}
	if err := g.refs.fresh(); err != nil {
		return false, err
	}
	if g.refs.refs[e.id()] != nil {
		g.rep.Referenced++
		return true, nil
	}
	if info := g.c.info(e); time.Since(info.LastUsed) < g.olderThan {
		g.rep.Recent++
		return true, nil
	}
	return false, nil
}

func (g *collector) removed(info EntryInfo) {
	g.rep.Removed = append(g.rep.Removed, info)
	g.rep.Freed += info.Size
}

// removeFiles removes an entry, then its metadata and last-use files, so
// that an interruption leaves at most files without an entry. The caller
// holds the entry's lock.
func (c *Cache) removeFiles(k Kind, hex string) error {
	for _, p := range []string{c.entryFile(k, hex), c.metaPath(k, hex), c.usedPath(k, hex)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove cache entry %s %s: %w", k, hex, err)
		}
	}
	return nil
}

// leftovers removes metadata and last-use files without an entry, unless
// a running process lists the entry (it is writing it), and lock files of
// entries and records that do not exist, unless somebody holds them.
func (g *collector) leftovers(ctx context.Context) error {
	for _, k := range AllKinds {
		for _, sub := range []string{"meta", "used"} {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := g.orphans(k, sub); err != nil {
				return err
			}
		}
	}
	return g.orphanLocks()
}

// orphans removes the files of meta/<k>/ or used/<k>/ whose entry is
// missing.
func (g *collector) orphans(k Kind, sub string) error {
	list, err := os.ReadDir(g.c.sub(sub, string(k)))
	if err != nil {
		return fmt.Errorf("list %s/%s: %w", sub, k, err)
	}
	for _, d := range list {
		hex := strings.TrimSuffix(d.Name(), ".json")
		if len(hex) != 64 || !isHex(hex) {
			continue
		}
		e := entry{kind: k, hex: hex}
		if g.c.Has(k, e.key()) {
			continue
		}
		l, ok, err := g.c.tryLock(k, e.key())
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		using, err := g.c.liveUsing()
		if err != nil || using[e.id()] || g.c.Has(k, e.key()) {
			l.release()
			if err != nil {
				return err
			}
			continue
		}
		g.rep.Leftovers++
		if g.dryRun {
			l.release()
			continue
		}
		p := g.c.sub(sub, string(k), d.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.release()
			return fmt.Errorf("remove %s: %w", p, err)
		}
		l.releaseRemoving()
	}
	return nil
}

// orphanLocks removes the lock files of entries and output records that do
// not exist and that nobody holds.
func (g *collector) orphanLocks() error {
	list, err := os.ReadDir(g.c.sub("locks"))
	if err != nil {
		return fmt.Errorf("list locks: %w", err)
	}
	for _, d := range list {
		kind, hex, ok := strings.Cut(d.Name(), "-")
		k := Kind(kind)
		_, isEntry := extensions[k]
		if !ok || len(hex) != 64 || !isHex(hex) || !isEntry && k != outputsKind {
			continue
		}
		e := entry{kind: k, hex: hex}
		exists := func() bool {
			if isEntry {
				return g.c.Has(k, e.key())
			}
			_, err := os.Stat(g.c.recordPath(hex))
			return err == nil
		}
		if exists() {
			continue
		}
		l, ok, err := g.c.tryLock(k, e.key())
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if exists() || g.dryRun {
			l.release()
			continue
		}
		l.releaseRemoving()
	}
	return nil
}

// Remove removes the entries whose key is keyOrPrefix ("sha256:<hex>",
// "<hex>" or a prefix of either, optionally after "KIND/"), with their
// metadata, last-use and lock files, and returns what it removed. A prefix
// must match one key; every kind's entry of that key goes (but only KIND's
// when given). Remove refuses, removing nothing, when a running process
// uses one of them or holds its lock.
func (c *Cache) Remove(ctx context.Context, keyOrPrefix string) ([]EntryInfo, error) {
	kinds, prefix, err := parseKeyArg(keyOrPrefix)
	if err != nil {
		return nil, err
	}
	entries, err := c.scan(ctx, kinds...)
	if err != nil {
		return nil, fmt.Errorf("remove %s: %w", keyOrPrefix, err)
	}
	var match []entry
	var keys []string
	for _, e := range entries {
		if strings.HasPrefix(e.hex, prefix) {
			match = append(match, e)
			if !slices.Contains(keys, e.hex) {
				keys = append(keys, e.hex)
			}
		}
	}
	switch {
	case len(keys) == 0:
		return nil, fmt.Errorf("remove %s: %w", keyOrPrefix, ErrNoEntry)
	case len(keys) > 1:
		return nil, fmt.Errorf("remove %s: %w: it starts %d keys (%s)", keyOrPrefix, ErrAmbiguous,
			len(keys), strings.Join(shortKeys(keys, 4), ", "))
	}
	return c.removeAll(match)
}

// removeAll takes every entry's lock, checks that no running process uses
// any, and removes them all.
func (c *Cache) removeAll(match []entry) ([]EntryInfo, error) {
	var locks []*entryLock
	defer func() {
		for _, l := range locks {
			if l != nil {
				l.release()
			}
		}
	}()
	for _, e := range match {
		l, ok, err := c.tryLock(e.kind, e.key())
		if err != nil {
			return nil, fmt.Errorf("remove %s %s: %w", e.kind, e.key(), err)
		}
		if !ok {
			return nil, fmt.Errorf("remove %s %s: %w: it is locked", e.kind, e.key(), ErrInUse)
		}
		locks = append(locks, l)
	}
	using, err := c.liveUsing()
	if err != nil {
		return nil, err
	}
	for _, e := range match {
		if using[e.id()] {
			return nil, fmt.Errorf("remove %s %s: %w by a running conversion", e.kind, e.key(),
				ErrInUse)
		}
	}
	var out []EntryInfo
	for i, e := range match {
		info := c.info(e)
		if err := c.removeFiles(e.kind, e.hex); err != nil {
			return out, err
		}
		out = append(out, info)
		locks[i].releaseRemoving()
		locks[i] = nil
	}
	return out, nil
}

// parseKeyArg splits [KIND/][sha256:]HEX into the kinds to look at and the
// hex prefix.
func parseKeyArg(arg string) ([]Kind, string, error) {
	kinds := AllKinds
	rest := arg
	if kind, after, ok := strings.Cut(arg, "/"); ok {
		if _, known := extensions[Kind(kind)]; !known {
			return nil, "", fmt.Errorf("%w %q: unknown kind %q", ErrBadKey, arg, kind)
		}
		kinds, rest = []Kind{Kind(kind)}, after
	}
	prefix := strings.ToLower(strings.TrimPrefix(rest, "sha256:"))
	if prefix == "" || len(prefix) > 64 || !isHex(prefix) {
		return nil, "", fmt.Errorf("%w %q: want a sha256 key or a prefix of one", ErrBadKey, arg)
	}
	return kinds, prefix, nil
}

// shortKeys returns up to n keys as 12-digit prefixes, with "..." when
// there are more.
func shortKeys(hexes []string, n int) []string {
	var out []string
	for i, h := range hexes {
		if i == n {
			return append(out, "...")
		}
		out = append(out, h[:12])
	}
	return out
}

// entryFile is the path of an entry of kind k with key hex.
func (c *Cache) entryFile(k Kind, hex string) string {
	return filepath.Join(c.dir(k), hex+extensions[k])
}
