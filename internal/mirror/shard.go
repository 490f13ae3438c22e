package mirror

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// Shard selects a stable part of a sync's work, so that N runs, possibly on
// N machines, together convert every image exactly once. The zero Shard is
// the whole work: an unsharded sync.
//
// Shards are numbered from 1, as Slurm's --array=1-N and
// $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT give them. A tag belongs to
// shard I of N when
//
//	fnv64a(REGISTRY + "/" + REPOSITORY + ":" + TAG) mod N == I-1
//
// where fnv64a is the 64-bit FNV-1a hash of the bytes (hash/fnv.New64a),
// REGISTRY is the entry's registry as the sync file names it (docker.io
// when it names none) and the result is taken as an unsigned number. The
// platforms of one tag are in the same shard, and a tag stays in its shard
// from run to run as long as N does not change.
type Shard struct {
	// Index is 1..Count; Count is the number of shards, 0 when unsharded.
	Index, Count int
}

// ErrBadShard is wrapped by the error ParseShard returns.
var ErrBadShard = errors.New("want I/N with 1 <= I <= N")

// ParseShard reads "I/N": shard I (1-based) of N.
func ParseShard(s string) (Shard, error) {
	is, ns, ok := strings.Cut(s, "/")
	i, ierr := strconv.Atoi(is)
	n, nerr := strconv.Atoi(ns)
	if !ok || ierr != nil || nerr != nil || n < 1 || i < 1 || i > n {
		return Shard{}, fmt.Errorf("shard %q: %w", s, ErrBadShard)
	}
	return Shard{Index: i, Count: n}, nil
}

// Sharded reports whether sh selects a part of the work.
func (sh Shard) Sharded() bool { return sh.Count > 0 }

// String returns "I/N", or "" for the whole work.
func (sh Shard) String() string {
	if !sh.Sharded() {
		return ""
	}
	return fmt.Sprintf("%d/%d", sh.Index, sh.Count)
}

// Contains reports whether the tag belongs to sh; the whole work contains
// every tag.
func (sh Shard) Contains(registry, repository, tag string) bool {
	return !sh.Sharded() || ShardOf(registry, repository, tag, sh.Count) == sh.Index
}

// ShardOf returns the shard, 1..count, a tag belongs to when the work is cut
// into count shards.
func ShardOf(registry, repository, tag string, count int) int {
	h := fnv.New64a()
	h.Write([]byte(registry + "/" + repository + ":" + tag))
	return int(h.Sum64()%uint64(count)) + 1
}

// stateName returns the name of sh's state file in the output root: the
// unsharded StateFile, or .oci2layers-sync.I-of-N.json. Each shard keeps its
// own record, so that shards sharing a root never rewrite one file.
func stateName(sh Shard) string {
	if !sh.Sharded() {
		return StateFile
	}
	return fmt.Sprintf(".oci2layers-sync.%d-of-%d.json", sh.Index, sh.Count)
}

// lockName returns the name of the lock file that keeps two runs of sh
// off one root.
func lockName(sh Shard) string {
	if !sh.Sharded() {
		return lockFile
	}
	return fmt.Sprintf(".oci2layers-sync.%d-of-%d.lock", sh.Index, sh.Count)
}
