package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSyncShards runs `sync --shard I/3` for I = 1, 2, 3 on one output
// root: every image is converted by exactly one shard, into its own
// directory, each shard keeps its own state file, and a second round finds
// everything unchanged.
func TestSyncShards(t *testing.T) {
	f := newSyncFixture(t)
	all := []string{"app:1.2.0", "app:1.1.0", "tools:v1", "tools:v2", "base:a", "base:b"}
	for _, rt := range []string{"app:1.0.0", "app:1.1.0", "app:2.0.0-rc1", "app:1.2.0",
		"app:latest", "tools:v1", "tools:v2", "tools:other", "base:a", "base:b"} {
		f.push(t, rt, rt)
	}
	f.writeFile(t, syncImages)

	converted := map[string]int{}
	dirs := map[string]string{}
	for i := 1; i <= 3; i++ {
		shard := fmt.Sprintf("%d/3", i)
		r, rep := f.sync(t, 0, "--shard", shard)
		if !strings.Contains(r.Stdout, "sync: shard "+shard+": ") {
			t.Errorf("shard %s: summary does not name the shard:\n%s", shard, r.Stdout)
		}
		for _, it := range rep.Images {
			src := it.Source[strings.Index(it.Source, "/")+1:]
			if it.Status != "converted" {
				t.Errorf("shard %s: %s %s %s", shard, src, it.Status, it.Error)
			}
			converted[src]++
			if other, ok := dirs[it.Dir]; ok {
				t.Errorf("shard %s: %s wrote %s, as did %s", shard, src, it.Dir, other)
			}
			dirs[it.Dir] = src
		}
		// The registry's port is random, so a shard may get no tag at all;
		// it then has nothing to record.
		state := filepath.Join(f.out, fmt.Sprintf(".oci2layers-sync.%d-of-3.json", i))
		if _, err := os.Stat(state); err != nil && len(rep.Images) > 0 {
			t.Errorf("shard %s: no state file: %v", shard, err)
		}
	}
	var got []string
	for src, n := range converted {
		if n != 1 {
			t.Errorf("%s converted %d times", src, n)
		}
		got = append(got, src)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(all))
	if !slices.Equal(got, want) {
		t.Errorf("shards converted %q, want %q", got, want)
	}
	for _, rt := range all {
		repo, tag, _ := strings.Cut(rt, ":")
		f.checkOutput(t, repo, tag)
	}
	if _, err := os.Stat(filepath.Join(f.out, ".oci2layers-sync.json")); !os.IsNotExist(err) {
		t.Errorf("shards wrote the unsharded state file (%v)", err)
	}

	for i := 1; i <= 3; i++ {
		_, rep := f.sync(t, 0, "--shard", fmt.Sprintf("%d/3", i), "--prune")
		if rep.Converted != 0 || rep.Unchanged != len(rep.Images) || len(rep.Pruned) != 0 {
			t.Errorf("shard %d/3 again: %q, pruned %v", i, rep.statuses(), rep.Pruned)
		}
	}
}
