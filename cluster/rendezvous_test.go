package cluster

import (
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
)

// The values below pin the hash functions: the ambassador and agents of
// other builds must compute the same shard and the same ranking. A change
// here is a protocol change.
func TestShardOfAndWeightAreStable(t *testing.T) {
	for _, tc := range []struct {
		key    string
		shards int
		want   int
	}{
		{"user:42", 16, shardOfGolden["user:42/16"]},
		{"user:43", 16, shardOfGolden["user:43/16"]},
		{"", 7, shardOfGolden["/7"]},
		{"hello", 1000, shardOfGolden["hello/1000"]},
		{"anything", 1, 0},
		{"anything", 0, 0},
	} {
		if got := ShardOf(tc.key, tc.shards); got != tc.want {
			t.Errorf("ShardOf(%q, %d) = %d, want %d", tc.key, tc.shards, got, tc.want)
		}
	}
	if got, want := Weight("cache.s3", "node-01"), weightGolden; got != want {
		t.Errorf("Weight(cache.s3, node-01) = %#x, want %#x", got, want)
	}
	if got := Rank("cache.s3", []string{"a", "b", "c", "d"}); !slices.Equal(got, rankGolden) {
		t.Errorf("Rank(cache.s3, a..d) = %v, want %v", got, rankGolden)
	}
}

// Computed with an independent implementation (Python) of FNV-1a 64,
// MurmurHash3's fmix64 and jump consistent hash.
var (
	shardOfGolden = map[string]int{"user:42/16": 14, "user:43/16": 3, "/7": 1, "hello/1000": 174}
	weightGolden  = uint64(0xc2ecc87c0e01cf0e)
	rankGolden    = []string{"a", "d", "b", "c"}
)

func TestFNVMatchesTheStandardLibrary(t *testing.T) {
	for _, s := range []string{"", "a", "cache.s3", "node-01", "\x00\xff"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := fnv1a(fnvOffset64, s), h.Sum64(); got != want {
			t.Errorf("fnv1a(%q) = %#x, hash/fnv says %#x", s, got, want)
		}
	}
}

func TestShardOfSpreadsKeysEvenly(t *testing.T) {
	const shards, keys = 16, 160000
	count := make([]int, shards)
	for i := range keys {
		k := ShardOf(fmt.Sprintf("key-%d", i), shards)
		if k < 0 || k >= shards {
			t.Fatalf("ShardOf returned %d, outside [0, %d)", k, shards)
		}
		count[k]++
	}
	mean := keys / shards
	for k, c := range count {
		if c < mean*95/100 || c > mean*105/100 {
			t.Errorf("shard %d got %d keys, mean %d: more than 5%% off", k, c, mean)
		}
	}
}

func TestShardOfMovesFewKeysWhenShardsGrow(t *testing.T) {
	const keys = 20000
	moved := 0
	for i := range keys {
		key := fmt.Sprintf("key-%d", i)
		a, b := ShardOf(key, 10), ShardOf(key, 11)
		if a != b {
			if b != 10 {
				t.Fatalf("%s moved from shard %d to %d, not to the new shard 10", key, a, b)
			}
			moved++
		}
	}
	if want := keys / 11; moved < want*9/10 || moved > want*11/10 {
		t.Errorf("%d of %d keys moved to the new shard, want about %d", moved, keys, want)
	}
}

func TestRankKeepsOrderWhenANodeGoes(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	firsts := map[string]int{}
	for i := range 3000 {
		key := fmt.Sprintf("shard-%d", i)
		full := Rank(key, nodes)
		if len(full) != len(nodes) {
			t.Fatalf("Rank returned %d nodes for %d", len(full), len(nodes))
		}
		if !slices.Equal(slices.Sorted(slices.Values(full)), nodes) {
			t.Fatalf("Rank(%s) = %v is not a permutation of %v", key, full, nodes)
		}
		firsts[full[0]]++
		// Without n3 the others keep their relative order: only keys
		// whose owner was n3 change owner.
		without := Rank(key, slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == "n3" }))
		if want := slices.DeleteFunc(slices.Clone(full), func(n string) bool { return n == "n3" }); !slices.Equal(without, want) {
			t.Fatalf("Rank(%s) without n3 = %v, want %v", key, without, want)
		}
	}
	for _, n := range nodes {
		if c := firsts[n]; c < 400 || c > 600 {
			t.Errorf("%s ranks first for %d of 3000 keys, want about 500", n, c)
		}
	}
	if in := []string{"b", "a"}; Rank("k", in) == nil || in[0] != "b" {
		t.Errorf("Rank changed its argument")
	}
}
