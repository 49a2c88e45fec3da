package ambassador

import (
	"fmt"
	"testing"

	"github.com/berth-project/berth/api"
)

// TestSplitterSharesAreExactAndSpread: every 100 consecutive connections
// give each split its percent exactly, and a 10 % share is not bunched
// (no two of its connections in a row).
func TestSplitterSharesAreExactAndSpread(t *testing.T) {
	s := splitter{main: "cache", splits: []api.SplitSpec{{Service: "v2", Percent: 10}, {Service: "v3", Percent: 25}}}
	for start := uint64(0); start < 300; start += 37 {
		count := map[string]int{}
		for n := start; n < start+100; n++ {
			count[s.choose(n)]++
		}
		if count["v2"] != 10 || count["v3"] != 25 || count["cache"] != 65 {
			t.Fatalf("100 connections from %d: %v; want v2 10, v3 25, cache 65", start, count)
		}
	}
	for n := uint64(0); n < 1000; n++ {
		if s.choose(n) == "v2" && s.choose(n+1) == "v2" {
			t.Fatalf("connections %d and %d both went to the 10%% split", n, n+1)
		}
	}
}

// TestSourceHashMovesOnlyTheRemovedBackendsSources: with 10 backends and
// 2000 sources, removing one backend remaps exactly the sources it had,
// and about a tenth of all sources were on it; adding it back restores
// every source.
func TestSourceHashMovesOnlyTheRemovedBackendsSources(t *testing.T) {
	var all []target
	for i := range 10 {
		all = append(all, target{id: fmt.Sprintf("cache/%d", i)})
	}
	without := append(append([]target(nil), all[:3]...), all[4:]...)
	removed := all[3].id
	moved := 0
	for i := range 2000 {
		src := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		before := bySourceHash(all, src)[0].id
		after := bySourceHash(without, src)[0].id
		if before != removed && after != before {
			t.Fatalf("%s moved from %s to %s when only %s was removed", src, before, after, removed)
		}
		if before == removed {
			moved++
			if after != bySourceHash(all, src)[1].id {
				t.Fatalf("%s moved to %s; want its second choice", src, after)
			}
		}
	}
	if moved < 120 || moved > 280 { // 200 expected
		t.Errorf("%d of 2000 sources were on one of 10 backends; want about 200", moved)
	}
}

// TestLeastConnOrdersByLiveConnections, ties in round-robin order.
func TestLeastConnOrdersByLiveConnections(t *testing.T) {
	mk := func(id string, active int64) target {
		c := new(counters)
		c.active.Store(active)
		return target{id: id, c: c}
	}
	ready := []target{mk("a", 2), mk("b", 0), mk("c", 1), mk("d", 0)}
	ids := func(ts []target) string {
		s := ""
		for _, t := range ts {
			s += t.id
		}
		return s
	}
	if got := ids(leastConn(ready, 0)); got != "bdca" {
		t.Errorf("order from 0: %s; want bdca", got)
	}
	if got := ids(leastConn(ready, 2)); got != "dbca" {
		t.Errorf("order from 2: %s; want dbca (ties rotate)", got)
	}
}

func TestServicePort(t *testing.T) {
	for _, tc := range []struct {
		spec api.AmbassadorSpec
		want int
	}{
		{api.AmbassadorSpec{Listen: "127.0.0.1:6379"}, 6379},
		{api.AmbassadorSpec{Listen: "127.0.0.1:6379", Port: 7000}, 7000},
		{api.AmbassadorSpec{Listen: "[::1]:80"}, 80},
		{api.AmbassadorSpec{Listen: "6379"}, 0},
		{api.AmbassadorSpec{Listen: "127.0.0.1:0"}, 0},
		{api.AmbassadorSpec{Listen: "127.0.0.1:6379", Port: 70000}, 0},
	} {
		got, err := ServicePort(tc.spec)
		if got != tc.want || (tc.want == 0) != (err != nil) {
			t.Errorf("ServicePort(%+v) = %d, %v; want %d", tc.spec, got, err, tc.want)
		}
	}
}
