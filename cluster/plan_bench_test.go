package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// BenchmarkSchedule times one pass at the size DESIGN.md plans for: 50
// nodes and 1000 allocations (five replicated groups of 100 replicas with
// spread = "prefer", one sharded group of 250 shards × 2), with priorities
// and capacities in play. Target: well under 100 ms per pass.
//
//	go test -run '^$' -bench Schedule -benchmem ./cluster
func BenchmarkSchedule(b *testing.B) {
	build := func(b *testing.B, settle bool) *simCluster {
		b.Helper()
		sim := newSimCluster()
		must := func(err error) {
			if err != nil {
				b.Fatal(err)
			}
		}
		for i := range 50 {
			must(sim.apply(raftstore.CmdPutNode, raftstore.NodeInfo{
				Name: fmt.Sprintf("node-%02d", i), Status: raftstore.NodeAlive,
				Capacity: api.Resources{CPU: 16000, Memory: 64 << 30},
				Labels:   map[string]string{"zone": fmt.Sprintf("z%d", i%3)},
			}))
		}
		for g := range 5 {
			s := withPriority(gspec(fmt.Sprintf("svc%d", g), api.PlacementSpec{Replicas: 100, Spread: api.SpreadPrefer}, 250), int64(g))
			must(sim.apply(raftstore.CmdPutGroup, raftstore.Group{Name: s.Name, Spec: s}))
		}
		s := gspec("cache", api.PlacementSpec{Shards: 250, ShardReplicas: 2}, 100)
		must(sim.apply(raftstore.CmdPutGroup, raftstore.Group{Name: s.Name, Spec: s}))
		if settle {
			for range 3 {
				d := Schedule(sim.fsm.State(), sim.now, Options{})
				if d.Empty() {
					return sim
				}
				for _, c := range d.Commands {
					must(sim.applyCommand(c))
				}
			}
			b.Fatal("did not settle")
		}
		return sim
	}
	run := func(b *testing.B, st raftstore.State, now time.Time, wantChange bool) {
		b.Helper()
		if d := Schedule(st, now, Options{}); d.Empty() == wantChange {
			b.Fatalf("decision empty = %v, want %v", d.Empty(), !wantChange)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			Schedule(st, now, Options{})
		}
	}
	b.Run("initial", func(b *testing.B) {
		sim := build(b, false)
		run(b, sim.fsm.State(), sim.now, true)
	})
	b.Run("steady", func(b *testing.B) {
		sim := build(b, true)
		run(b, sim.fsm.State(), sim.now, false)
	})
	b.Run("node-dead", func(b *testing.B) {
		sim := build(b, true)
		if err := sim.putNode("node-07", raftstore.NodeDead); err != nil {
			b.Fatal(err)
		}
		run(b, sim.fsm.State(), sim.now, true)
	})
	b.Run("node-join", func(b *testing.B) {
		sim := build(b, true)
		if err := sim.putNode("node-50", raftstore.NodeAlive); err != nil {
			b.Fatal(err)
		}
		run(b, sim.fsm.State(), sim.now, true)
	})
}
