package cluster

import (
	"cmp"
	"slices"
)

// Rendezvous (highest-random-weight) hashing and the shard function.
//
// The scheduler ranks the nodes for every shard of a sharded group with
// Rank and places the shard's replicas on the highest-ranked nodes it can
// (under a load bound: see plan_shards.go). The ambassador maps a request
// key to its shard with ShardOf and routes to the allocations of that
// shard. Both functions are pure and stable: the same inputs give the same
// answer in every process, on every architecture and in every build, so
// agents of different versions agree. Changing them is a breaking change
// of the cluster protocol.

// FNV-1a, 64 bits (the constants of hash/fnv), written out so that no
// allocation is needed per hash.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// mix64 is the finaliser of MurmurHash3 (fmix64): it spreads every input
// bit over every output bit, which FNV alone does poorly for inputs that
// differ only in their last bytes (node names n1, n2, …).
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// Weight is the rendezvous weight of node for key: FNV-1a over key, a NUL
// byte and node, finalised with MurmurHash3's fmix64. Rank orders nodes by
// it.
func Weight(key, node string) uint64 {
	h := fnv1a(fnvOffset64, key)
	h *= fnvPrime64 // FNV-1a of a NUL byte: "ab"+"c" and "a"+"bc" differ
	return mix64(fnv1a(h, node))
}

// Rank returns nodes in rendezvous order for key: highest Weight first,
// ties (never seen in practice) broken by name. The first R nodes are
// key's natural owners; when one of them goes away only the keys it owned
// move, each to its next node in the order, which is why a node joining
// or leaving N nodes moves about 1/(N+1) of the keys. nodes is not
// changed; duplicates are kept.
func Rank(key string, nodes []string) []string {
	type weighted struct {
		node string
		w    uint64
	}
	ws := make([]weighted, len(nodes))
	for i, n := range nodes {
		ws[i] = weighted{n, Weight(key, n)}
	}
	slices.SortFunc(ws, func(a, b weighted) int {
		return cmp.Or(cmp.Compare(b.w, a.w), cmp.Compare(a.node, b.node))
	})
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.node
	}
	return out
}

// ShardOf returns the shard, in [0, shards), that owns key: Lamping and
// Veach's jump consistent hash of the key's FNV-1a/fmix64 hash. Jump hash
// is stable and, should a group's shard count grow from S to S+1, moves
// only 1/(S+1) of the keys. shards below 2 give 0.
func ShardOf(key string, shards int) int {
	if shards < 2 {
		return 0
	}
	return jumpHash(mix64(fnv1a(fnvOffset64, key)), shards)
}

// jumpHash is "A Fast, Minimal Memory, Consistent Hash Algorithm"
// (Lamping, Veach 2014). Its float arithmetic is one IEEE 754 division and
// one multiplication per step, exact to the bit on every platform Go
// supports (no fused multiply-add applies).
func jumpHash(key uint64, buckets int) int {
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}
