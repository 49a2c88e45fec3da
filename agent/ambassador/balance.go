package ambassador

import (
	"cmp"
	"slices"

	"github.com/berth-project/berth/api"
)

// ShardFunc maps a key to its shard in [0, shards): the function the
// scheduler places shards with (cluster.ShardOf), so that the ambassador
// and the placement agree on who owns a key.
type ShardFunc func(key string, shards int) int

// route is what the proxy knows of a new connection when it orders the
// backends of a service.
type route struct {
	// source is the client's IP address, for source-hash.
	source string
	// shard is the key's shard, for balance = "shard"; -1 when the
	// connection carries no key (then any backend will do).
	shard int
}

// candidates returns the ready backends of s in the order the connection
// should try them: the policy's choice first, then the others as
// fallbacks, each once. With balance = "shard" only backends of the key's
// shard are candidates, since another shard does not own the key.
func (s *service) candidates(b api.Balance, r route) []target {
	ready := s.snapshot()
	if len(ready) == 0 {
		return nil
	}
	switch b {
	case api.BalanceLeastConn:
		return leastConn(ready, s.rr.Add(1)-1)
	case api.BalanceSourceHash:
		return bySourceHash(ready, r.source)
	case api.BalanceShard:
		if r.shard >= 0 {
			var own []target
			for _, t := range ready {
				if t.shard == r.shard {
					own = append(own, t)
				}
			}
			ready = own
			if len(ready) == 0 {
				return nil
			}
		}
	}
	return rotate(ready, s.rr.Add(1)-1)
}

// rotate returns ready starting at position n (modulo its length): round
// robin, with the following backends as fallbacks.
func rotate(ready []target, n uint64) []target {
	k := int(n % uint64(len(ready)))
	out := make([]target, 0, len(ready))
	out = append(out, ready[k:]...)
	return append(out, ready[:k]...)
}

// leastConn orders ready by live connections, fewest first; ties keep the
// round-robin order from position n, so idle backends share new
// connections evenly.
func leastConn(ready []target, n uint64) []target {
	out := rotate(ready, n)
	active := make(map[*counters]int64, len(out))
	for _, t := range out {
		active[t.c] = t.c.active.Load() // one read each: a stable order
	}
	slices.SortStableFunc(out, func(a, b target) int { return cmp.Compare(active[a.c], active[b.c]) })
	return out
}

// bySourceHash orders ready by rendezvous weight of (source, backend ID),
// highest first. A source keeps its backend while that backend is ready;
// when it goes, its sources move to their next backend, and no other
// source moves.
func bySourceHash(ready []target, source string) []target {
	type weighted struct {
		t target
		w uint64
	}
	ws := make([]weighted, len(ready))
	for i, t := range ready {
		ws[i] = weighted{t, weight(source, t.id)}
	}
	slices.SortFunc(ws, func(a, b weighted) int {
		return cmp.Or(cmp.Compare(b.w, a.w), cmp.Compare(a.t.id, b.t.id))
	})
	out := make([]target, len(ws))
	for i, w := range ws {
		out[i] = w.t
	}
	return out
}

// weight is the rendezvous weight of id for key: FNV-1a over key, a NUL
// byte and id, finalised with MurmurHash3's fmix64 (the construction of
// the cluster's rendezvous hashing).
func weight(key, id string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	h *= prime // the NUL byte: "ab"+"c" and "a"+"bc" differ
	for i := 0; i < len(id); i++ {
		h = (h ^ uint64(id[i])) * prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// splitter chooses the service of each new connection: split service i
// for percent_i of them, the main service for the rest. It is a counter,
// not a random draw: connection n falls in slot (n × 61) mod 100, and 61
// is prime to 100, so every 100 consecutive connections visit each slot
// once — the shares are exact over every 100 connections and spread
// through them rather than bunched.
type splitter struct {
	main   string
	splits []api.SplitSpec
}

// slotStride is prime to 100 and near 100/φ, which spreads consecutive
// connections over the slots.
const slotStride = 61

// choose returns the service of connection n.
func (s splitter) choose(n uint64) string {
	slot := int(n % 100 * slotStride % 100)
	for _, sp := range s.splits {
		if slot < sp.Percent {
			return sp.Service
		}
		slot -= sp.Percent
	}
	return s.main
}
