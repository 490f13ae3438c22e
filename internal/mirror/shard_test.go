package mirror

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestParseShard(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Shard
		wantErr bool
	}{
		{name: "first", in: "1/4", want: Shard{Index: 1, Count: 4}},
		{name: "last", in: "4/4", want: Shard{Index: 4, Count: 4}},
		{name: "one of one", in: "1/1", want: Shard{Index: 1, Count: 1}},
		{name: "zero-based", in: "0/4", wantErr: true},
		{name: "past the count", in: "5/4", wantErr: true},
		{name: "not a number", in: "x/4", wantErr: true},
		{name: "no shards", in: "1/0", wantErr: true},
		{name: "negative", in: "-1/4", wantErr: true},
		{name: "no slash", in: "1", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "spaces", in: " 1/4", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseShard(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrBadShard) {
					t.Errorf("ParseShard(%q) = %v, %v; want ErrBadShard", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseShard(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

// syntheticTags are 200 (registry, repository, tag) triples.
func syntheticTags() [][3]string {
	regs := []string{"docker.io", "ghcr.io", "127.0.0.1:5000", "registry.example.org"}
	var out [][3]string
	for i := range 200 {
		out = append(out, [3]string{regs[i%len(regs)], fmt.Sprintf("org/repo%d", i%13),
			fmt.Sprintf("v%d.%d", i/13, i%7)})
	}
	return out
}

// TestShardPartition checks that the N shards of a set are disjoint and
// together are the whole set.
func TestShardPartition(t *testing.T) {
	items := syntheticTags()
	for _, n := range []int{1, 2, 3, 7, 16} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			owners := make([]int, len(items))
			sizes := make([]int, n)
			for i := 1; i <= n; i++ {
				sh := Shard{Index: i, Count: n}
				for k, it := range items {
					if !sh.Contains(it[0], it[1], it[2]) {
						continue
					}
					if owners[k] != 0 {
						t.Fatalf("%v is in shards %d and %d", it, owners[k], i)
					}
					owners[k] = i
					sizes[i-1]++
				}
			}
			if k := slices.Index(owners, 0); k >= 0 {
				t.Fatalf("%v is in no shard", items[k])
			}
			if n > 1 && slices.Contains(sizes, len(items)) {
				t.Errorf("one shard holds everything: sizes %v", sizes)
			}
		})
	}
	if !(Shard{}).Contains("h", "r", "t") {
		t.Error("the unsharded Shard does not contain a tag")
	}
}

// TestShardOfStable pins the shard function: a change of hash, key or
// numbering would move tags between shards of existing deployments.
func TestShardOfStable(t *testing.T) {
	tests := []struct {
		registry, repository, tag string
		count, want               int
	}{
		// fnv64a("docker.io/library/python:3.12-slim") = 0x75b604835a32490a
		{"docker.io", "library/python", "3.12-slim", 3, 1},
		{"docker.io", "library/python", "3.12-slim", 8, 3},
		{"docker.io", "library/python", "3.12-slim", 16, 11},
		// fnv64a("docker.io/library/debian:bookworm-20250101") = 0xa522e0db838eb027
		{"docker.io", "library/debian", "bookworm-20250101", 3, 3},
		{"docker.io", "library/debian", "bookworm-20250101", 8, 8},
		// fnv64a("ghcr.io/org/app:v1.2.3") = 0x632e06e65f90698a
		{"ghcr.io", "org/app", "v1.2.3", 3, 3},
		{"ghcr.io", "org/app", "v1.2.3", 16, 11},
		{"127.0.0.1:5000", "app", "1.0.0", 8, 1},
		{"anything", "at", "all", 1, 1},
	}
	for _, tt := range tests {
		got := ShardOf(tt.registry, tt.repository, tt.tag, tt.count)
		if got != tt.want {
			t.Errorf("ShardOf(%s/%s:%s, %d) = %d, want %d", tt.registry, tt.repository,
				tt.tag, tt.count, got, tt.want)
		}
	}
}

func TestStateAndLockNames(t *testing.T) {
	if got := stateName(Shard{}); got != StateFile {
		t.Errorf("unsharded state file %q, want %q", got, StateFile)
	}
	if got := lockName(Shard{}); got != ".oci2layers-sync.lock" {
		t.Errorf("unsharded lock file %q", got)
	}
	sh := Shard{Index: 2, Count: 8}
	if got := stateName(sh); got != ".oci2layers-sync.2-of-8.json" {
		t.Errorf("shard state file %q", got)
	}
	if got := lockName(sh); got != ".oci2layers-sync.2-of-8.lock" {
		t.Errorf("shard lock file %q", got)
	}
}

// TestLockRootShards checks that shards of one root run side by side, but
// not beside a second run of one shard or an unsharded sync.
func TestLockRootShards(t *testing.T) {
	root := t.TempDir()
	one, err := lockRoot(root, Shard{Index: 1, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	two, err := lockRoot(root, Shard{Index: 2, Count: 2})
	if err != nil {
		t.Fatalf("second shard: %v", err)
	}
	if _, err := lockRoot(root, Shard{Index: 1, Count: 2}); !errors.Is(err, ErrBusy) {
		t.Errorf("same shard again: %v, want ErrBusy", err)
	}
	if _, err := lockRoot(root, Shard{}); !errors.Is(err, ErrBusy) {
		t.Errorf("unsharded beside shards: %v, want ErrBusy", err)
	}
	one()
	two()

	whole, err := lockRoot(root, Shard{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockRoot(root, Shard{Index: 1, Count: 2}); !errors.Is(err, ErrBusy) {
		t.Errorf("shard beside an unsharded sync: %v, want ErrBusy", err)
	}
	whole()
	again, err := lockRoot(root, Shard{Index: 1, Count: 2})
	if err != nil {
		t.Fatalf("shard after unlock: %v", err)
	}
	again()
}

// TestRunShards runs the three shards of a file one after the other: each
// image is converted by exactly one, each shard keeps its own state, and a
// second round finds everything unchanged.
func TestRunShards(t *testing.T) {
	f := newFixture(t)
	pushThreeRepos(t, f)
	cfg := f.config(t, threeRepos)
	whole := runSync(t, cfg, &fakeConvert{}, Options{DryRun: true})

	seen := map[string]int{}
	for i := 1; i <= 3; i++ {
		sh := Shard{Index: i, Count: 3}
		fc := &fakeConvert{}
		rep := runSync(t, cfg, fc, Options{Shard: sh})
		if rep.Shard != sh.String() || !rep.OK() {
			t.Errorf("shard %v: report shard %q, ok %v", sh, rep.Shard, rep.OK())
		}
		for _, it := range rep.Images {
			if it.Status != Converted {
				t.Errorf("shard %v: %s %s", sh, it.Source, it.Status)
			}
			if got := ShardOf(it.Registry, it.Repository, it.Tag, 3); got != i {
				t.Errorf("shard %v converted %s, of shard %d", sh, it.Source, got)
			}
			seen[it.Source]++
		}
		st, err := loadState(f.root, stateName(sh))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Outputs) != len(rep.Images) {
			t.Errorf("shard %v records %d outputs, converted %d", sh, len(st.Outputs),
				len(rep.Images))
		}
	}
	if len(seen) != len(whole.Images) {
		t.Errorf("shards converted %d images, the whole file has %d", len(seen),
			len(whole.Images))
	}
	for _, it := range whole.Images {
		if seen[it.Source] != 1 {
			t.Errorf("%s converted %d times", it.Source, seen[it.Source])
		}
	}
	if _, err := os.Stat(filepath.Join(f.root, StateFile)); !os.IsNotExist(err) {
		t.Errorf("shards wrote the unsharded state file (%v)", err)
	}

	for i := 1; i <= 3; i++ {
		fc := &fakeConvert{}
		rep := runSync(t, cfg, fc, Options{Shard: Shard{Index: i, Count: 3}})
		if len(fc.calls()) != 0 || rep.Unchanged != len(rep.Images) {
			t.Errorf("shard %d again: converted %q, statuses %q", i, fc.calls(),
				statuses(rep))
		}
	}
}

// TestRunShardPrune checks that a shard prunes its own stale outputs and
// leaves those of the other shards, even when they are stale too.
func TestRunShardPrune(t *testing.T) {
	f := newFixture(t)
	tags := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, tag := range tags {
		f.push(t, "base:"+tag)
	}
	cfg := f.config(t, `  - registry: "%s"
    repository: base
    tags: [a, b, c, d, e, f, g, h]
`)
	all := map[string]int{} // dir -> shard
	for i := 1; i <= 3; i++ {
		rep := runSync(t, cfg, &fakeConvert{}, Options{Shard: Shard{Index: i, Count: 3}})
		for _, it := range rep.Images {
			all[it.Dir] = i
		}
	}
	pruner := all[f.dir("base", "a")]
	if !slices.ContainsFunc(slices.Collect(maps.Values(all)), func(i int) bool {
		return i != pruner
	}) {
		t.Skip("the registry's random port put every tag in one shard")
	}

	// Every output goes stale: the file no longer names any image.
	empty := f.config(t, `  - registry: "%s"
    repository: base
    tags: [none]
`)
	rep := runSync(t, empty, &fakeConvert{}, Options{Prune: true,
		Shard: Shard{Index: pruner, Count: 3}})
	var pruned []string
	for _, p := range rep.Pruned {
		if all[p.Dir] != pruner || !p.Removed {
			t.Errorf("pruned %s (shard %d, removed %v: %s)", p.Dir, all[p.Dir], p.Removed,
				p.Note)
		}
		pruned = append(pruned, p.Dir)
	}
	for dir, i := range all {
		_, err := os.Stat(filepath.Join(f.root, dir, "image.json"))
		switch {
		case i == pruner && !os.IsNotExist(err):
			t.Errorf("%s of this shard is still there (%v)", dir, err)
		case i != pruner && err != nil:
			t.Errorf("%s of shard %d: %v, want it kept", dir, i, err)
		}
		if i == pruner && !slices.Contains(pruned, dir) {
			t.Errorf("%s of this shard not pruned", dir)
		}
	}
}

// TestPruneShardOnly checks that prune leaves a record of another shard's
// tag alone, should this shard's state hold one.
func TestPruneShardOnly(t *testing.T) {
	root := t.TempDir()
	sh := Shard{Index: 1, Count: 3}
	st := &state{name: stateName(sh), Version: stateVersion, Outputs: map[string]*record{}}
	var mine, theirs []string
	for i := 0; len(mine) < 2 || len(theirs) < 2; i++ {
		tag := fmt.Sprint("t", i)
		st.Outputs[tag] = &record{Registry: "h", Repository: "r", Tag: tag, Created: true,
			Digest: "sha256:aa"}
		writeFakeOutput(t, filepath.Join(root, tag), "m")
		if sh.Contains("h", "r", tag) {
			mine = append(mine, tag)
		} else {
			theirs = append(theirs, tag)
		}
	}
	s := &syncer{cfg: &Config{Output: root}, state: st,
		opts: Options{Prune: true, Shard: sh, Logger: slog.New(slog.DiscardHandler)}}
	rep := &Report{}
	s.prune(rep, nil, nil)

	var got []string
	for _, p := range rep.Pruned {
		got = append(got, p.Dir)
	}
	slices.Sort(mine)
	if !slices.Equal(got, mine) {
		t.Errorf("pruned %q, want %q", got, mine)
	}
	for _, dir := range theirs {
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			t.Errorf("%s of another shard: %v, want it kept", dir, err)
		}
	}
}
