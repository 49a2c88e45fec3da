package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// TestRandomHistoriesKeepTheInvariants drives the scheduler through
// seeded random histories (nodes joining, dying, coming back, draining;
// groups created, updated, scaled; agents reporting) and checks after every
// event that one pass settles the cluster and that the placement rules
// hold: one replica per node for spread = "node" and per shard, nothing on
// a node it must leave, no node over its capacity, no sharded group above
// its load bound.
func TestRandomHistoriesKeepTheInvariants(t *testing.T) {
	for seed := range randomSeeds() {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			w := newWorld(t)
			nodes := 0
			addNode := func() {
				nodes++
				w.node(fmt.Sprintf("n%02d", nodes), withCapacity(api.MilliCPU(2000+rng.IntN(4)*1000), 0),
					withLabels("zone", fmt.Sprintf("z%d", rng.IntN(3))))
			}
			for range 4 {
				addNode()
			}
			groups := 0
			addGroup := func() {
				groups++
				name := fmt.Sprintf("g%d", groups)
				pl := api.PlacementSpec{MaxParallel: 1 + rng.IntN(2), HealthyDeadline: api.Duration(time.Minute)}
				switch rng.IntN(3) {
				case 0:
					pl.Replicas = 1 + rng.IntN(5)
				case 1:
					pl.Replicas, pl.Spread = 1+rng.IntN(8), api.SpreadPrefer
				default:
					pl.Shards, pl.ShardReplicas = 1+rng.IntN(12), 1+rng.IntN(3)
				}
				if rng.IntN(4) == 0 {
					pl.Constraints = []string{fmt.Sprintf("zone!=z%d", rng.IntN(3))}
				}
				s := withPriority(gspec(name, pl, api.MilliCPU(100*(1+rng.IntN(8)))), int64(rng.IntN(3)))
				w.putSpec(s)
			}
			for range 2 {
				addGroup()
			}
			w.settle()
			for step := range 60 {
				w.advance(time.Duration(1+rng.IntN(30)) * time.Second)
				node := fmt.Sprintf("n%02d", 1+rng.IntN(nodes))
				var what string
				switch rng.IntN(10) {
				case 0:
					addNode()
					what = "node joins"
				case 1:
					w.node(node, withStatus(raftstore.NodeDead))
					what = node + " dies"
				case 2:
					w.node(node, withStatus(raftstore.NodeAlive))
					what = node + " is alive"
				case 3:
					w.drain(node, rng.IntN(2) == 0)
					what = node + " drain flips"
				case 4:
					addGroup()
					what = "group added"
				case 5:
					g := w.group(fmt.Sprintf("g%d", 1+rng.IntN(groups)))
					w.putSpec(withImage(g.Spec, fmt.Sprintf("registry.example/app:%d", step)))
					what = g.Name + " updated"
				case 6:
					g := w.group(fmt.Sprintf("g%d", 1+rng.IntN(groups)))
					if g.Spec.Placement.Sharded() {
						k := rng.IntN(g.Spec.Placement.Shards)
						w.scale(g.Name, rng.IntN(4), &k)
					} else {
						w.scale(g.Name, rng.IntN(7), nil)
					}
					what = g.Name + " scaled"
				case 7:
					w.node(node, withStatus(raftstore.NodeSuspect))
					what = node + " suspect"
				default:
					// Agents report: most allocations become Running and Ready,
					// some fail.
					for _, a := range w.fsm.Allocations() {
						if a.Node == "" {
							continue
						}
						switch rng.IntN(6) {
						case 0:
							w.report(api.GroupFailed, false, a.ID)
						case 1:
						default:
							w.report(api.GroupRunning, true, a.ID)
						}
					}
					what = "reports"
				}
				w.settle()
				checkInvariants(t, w, fmt.Sprintf("step %d (%s)", step, what))
			}
		})
	}
}

func checkInvariants(t *testing.T, w *world, when string) {
	t.Helper()
	st := w.fsm.State()
	used := map[string]api.Resources{}
	type key struct{ group, node string }
	perNode := map[key]int{}
	perShard := map[string]bool{}
	for _, a := range st.Allocations {
		g, ok := st.Groups[a.Group]
		if !ok {
			t.Fatalf("%s: %s belongs to no group", when, a.ID)
		}
		if a.Node == "" {
			if a.Pending == "" {
				t.Errorf("%s: %s is unplaced without a reason", when, a.ID)
			}
			continue
		}
		n, ok := st.Nodes[a.Node]
		if !ok || n.Drain || n.Status == raftstore.NodeDead || n.Status == raftstore.NodeLeft {
			t.Errorf("%s: %s is on %s, which it must leave (%+v)", when, a.ID, a.Node, n)
		}
		if match, c := g.Spec.Placement.MatchConstraints(n.Labels); !match {
			t.Errorf("%s: %s is on %s, which fails %q", when, a.ID, a.Node, c)
		}
		used[a.Node] = used[a.Node].Add(a.Spec.Request())
		perNode[key{a.Group, a.Node}]++
		if g.Spec.Placement.Sharded() {
			k := fmt.Sprintf("%s/%d@%s", a.Group, a.Shard, a.Node)
			if perShard[k] {
				t.Errorf("%s: two replicas of %s shard %d on %s", when, a.Group, a.Shard, a.Node)
			}
			perShard[k] = true
		} else if g.Spec.Placement.Spread != api.SpreadPrefer && perNode[key{a.Group, a.Node}] > 1 {
			t.Errorf("%s: two replicas of %s on %s (spread = node)", when, a.Group, a.Node)
		}
	}
	for name, u := range used {
		if c := st.Nodes[name].Capacity; !fitsIn(c, api.Resources{}, u) {
			t.Errorf("%s: %s holds %v, over its capacity %v", when, name, u, c)
		}
	}
}

// randomSeeds is how many histories to try: 40, or BERTH_SCHED_SEEDS.
func randomSeeds() uint64 {
	if n, err := strconv.ParseUint(os.Getenv("BERTH_SCHED_SEEDS"), 10, 64); err == nil && n > 0 {
		return n
	}
	return 40
}
