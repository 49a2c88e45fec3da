package cluster

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

func TestAllocationIDKeepsClearOfLocalGroupNames(t *testing.T) {
	for _, tc := range []struct {
		group          string
		shard, replica int
		sharded        bool
		want           string
	}{
		{"web", 0, 0, false, "web.0"},
		{"web", 3, 12, false, "web.12"},
		{"cache", 3, 1, true, "cache.s3.1"},
		{"cache", 0, 0, true, "cache.s0.0"},
	} {
		got := AllocationID(tc.group, tc.shard, tc.replica, tc.sharded)
		if got != tc.want {
			t.Errorf("AllocationID(%q, %d, %d, %v) = %q, want %q", tc.group, tc.shard, tc.replica, tc.sharded, got, tc.want)
		}
		if api.IsDNSLabel(got) {
			t.Errorf("%q is a DNS label: it could clash with a local group", got)
		}
	}
}

func TestReplicatedPlacement(t *testing.T) {
	for _, tc := range []struct {
		name     string
		nodes    int
		pl       api.PlacementSpec
		wantLoad []int  // allocations per node, sorted descending
		pending  int    // unplaced allocations
		reason   string // in their Pending
	}{
		{"spread node puts one per node", 3, api.PlacementSpec{Replicas: 3}, []int{1, 1, 1}, 0, ""},
		{"spread node leaves the rest unplaced", 2, api.PlacementSpec{Replicas: 3}, []int{1, 1}, 1,
			`3 replicas, 2 eligible nodes (spread = "node")`},
		{"spread prefer spreads then doubles up", 2, api.PlacementSpec{Replicas: 5, Spread: api.SpreadPrefer}, []int{3, 2}, 0, ""},
		{"spread prefer stays one per node when it can", 4, api.PlacementSpec{Replicas: 3, Spread: api.SpreadPrefer}, []int{1, 1, 1}, 0, ""},
		{"no nodes at all", 0, api.PlacementSpec{Replicas: 1}, nil, 1, "no nodes in the cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			for i := range tc.nodes {
				w.node(simNodeName(i + 1))
			}
			w.putSpec(gspec("web", tc.pl, 100))
			w.settle()
			var load []int
			for _, n := range w.load("web") {
				load = append(load, n)
			}
			slices.Sort(load)
			slices.Reverse(load)
			if !slices.Equal(load, tc.wantLoad) {
				t.Errorf("load per node = %v, want %v (%s)", load, tc.wantLoad, describePlacement(w.nodes("web")))
			}
			pending := 0
			for id, n := range w.nodes("web") {
				if n != "" {
					continue
				}
				pending++
				if a := w.alloc(id); !strings.Contains(a.Pending, tc.reason) {
					t.Errorf("%s pending %q, want it to say %q", id, a.Pending, tc.reason)
				}
			}
			if pending != tc.pending {
				t.Errorf("%d unplaced, want %d (%s)", pending, tc.pending, describePlacement(w.nodes("web")))
			}
		})
	}
}

func TestSpreadPreferRespreadsWhenNodesJoin(t *testing.T) {
	w := newWorld(t)
	w.node("n1")
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 3, Spread: api.SpreadPrefer}, 100))
	w.settle()
	if got := w.load("web")["n1"]; got != 3 {
		t.Fatalf("one node: n1 holds %d replicas, want 3", got)
	}
	w.node("n2")
	w.node("n3")
	if d := w.step(); !d.Empty() {
		t.Fatalf("replicas that have not started yet were moved: %q", d.Actions)
	}
	w.reportAll("web")
	actions := w.settle()
	for n, c := range w.load("web") {
		if c != 1 {
			t.Errorf("after two nodes joined, %s holds %d replicas, want 1 each (%s)", n, c, describePlacement(w.nodes("web")))
		}
	}
	if !hasAction(actions, "spreading out") {
		t.Errorf("actions do not say why replicas moved: %q", actions)
	}
}

func TestNewGroupIsPlacedAtOnceWithoutBatches(t *testing.T) {
	w := newWorld(t)
	for i := range 5 {
		w.node(simNodeName(i + 1))
	}
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 5, MaxParallel: 1}, 100))
	d := w.step()
	if len(d.Plan.Put) != 5 {
		t.Fatalf("first pass puts %d allocations, want all 5: %q", len(d.Plan.Put), d.Actions)
	}
	for _, a := range d.Plan.Put {
		if a.Node == "" || a.GroupGeneration != 1 || a.Spec == nil || !a.PlacedAt.Equal(w.now) || a.Generation != 0 {
			t.Errorf("put %+v: want placed, at group generation 1 with its spec, PlacedAt now, Generation 0 for the FSM to raise", a)
		}
	}
	if len(d.Commands) != 1 || d.Commands[0].Type != raftstore.CmdApplyPlan || !d.Commands[0].Time.Equal(w.now) {
		t.Errorf("commands %v, want one apply_plan stamped with the pass's time", d.Commands)
	}
	if len(d.Actions) != 5 || d.Index == 0 {
		t.Errorf("index %d, actions %q: want the state's index and one line per allocation", d.Index, d.Actions)
	}
}

func TestSuspectNodeKeepsItsAllocationsButGetsNothingNew(t *testing.T) {
	w := newWorld(t)
	w.node("n1")
	w.node("n2")
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 2}, 100))
	w.putSpec(gspec("cache", api.PlacementSpec{Shards: 4, ShardReplicas: 1}, 100))
	w.settle()
	w.reportAll("web")
	w.reportAll("cache")
	w.settle()
	before := map[string]string{}
	for _, a := range w.fsm.Allocations() {
		before[a.ID] = a.Node
	}
	w.node("n1", withStatus(raftstore.NodeSuspect))
	w.node("n3")
	w.settle()
	for _, a := range w.fsm.Allocations() {
		if before[a.ID] == "n1" && a.Node != "n1" {
			t.Errorf("%s moved off suspect n1 to %q", a.ID, a.Node)
		}
	}
	w.putSpec(gspec("api", api.PlacementSpec{Replicas: 3}, 100))
	w.settle()
	if a := w.alloc("api.2"); a.Node != "" || !strings.Contains(a.Pending, "3 replicas, 2 eligible nodes") {
		t.Errorf("api.2 on %q pending %q: a suspect node must get nothing new", a.Node, a.Pending)
	}
}

func TestConstraints(t *testing.T) {
	w := newWorld(t)
	w.node("n1", withLabels("disk", "ssd", "zone", "a"))
	w.node("n2", withLabels("disk", "hdd", "zone", "a"))
	w.node("n3", withLabels("disk", "ssd", "zone", "b"))
	w.node("n4", withLabels("zone", "b"))
	w.putSpec(gspec("db", api.PlacementSpec{Replicas: 3, Constraints: []string{"disk=ssd"}}, 100))
	w.settle()
	got := w.nodes("db")
	for id, n := range got {
		if n != "" && n != "n1" && n != "n3" {
			t.Errorf("%s on %s, which has no disk=ssd", id, n)
		}
	}
	a := w.alloc("db.2")
	if a.Node != "" || !strings.Contains(a.Pending, `3 replicas, 2 eligible nodes`) {
		t.Errorf("db.2: node %q pending %q; want unplaced: only 2 nodes match", a.Node, a.Pending)
	}

	// n3 loses its label: its replica moves to the only other match? None
	// is free (spread = node), so it becomes unplaced, saying why.
	w.node("n3", withLabels("disk", "hdd", "zone", "b"))
	actions := w.settle()
	if !hasAction(actions, `no longer matches constraint "disk=ssd"`) {
		t.Errorf("actions do not say the constraint failed: %q", actions)
	}
	for id, n := range w.nodes("db") {
		if n == "n3" {
			t.Errorf("%s still on n3, which no longer matches", id)
		}
	}
	// Two more constraint kinds: "key" present, "!key" absent.
	w.putSpec(gspec("edge", api.PlacementSpec{Replicas: 2, Constraints: []string{"!disk"}}, 100))
	w.settle()
	if n := w.alloc("edge.0").Node; n != "n4" {
		t.Errorf("edge.0 on %q, want n4, the only node without a disk label", n)
	}
}

func TestCapacity(t *testing.T) {
	w := newWorld(t)
	w.node("n1", withCapacity(1000, 0)) // memory 0: not limited
	w.node("n2", withCapacity(1000, 0))
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 5, Spread: api.SpreadPrefer}, 400))
	w.settle()
	load := w.load("web")
	if load["n1"] != 2 || load["n2"] != 2 {
		t.Errorf("load %v: want 2 replicas of 400m on each 1000m node", load)
	}
	a := w.alloc("web.4")
	if a.Node != "" || !strings.Contains(a.Pending, "2 too little room (asks cpu 400m)") {
		t.Errorf("web.4: node %q pending %q; want unplaced for room", a.Node, a.Pending)
	}
	// A node with zero capacity fields did not say: unlimited.
	w.node("n3")
	w.settle()
	if n := w.alloc("web.4").Node; n != "n3" {
		t.Errorf("web.4 on %q, want n3 (no capacity reported: not limited)", n)
	}
}

func TestPreemption(t *testing.T) {
	no := false
	for _, tc := range []struct {
		name    string
		victims []api.GroupSpec // placed first, on the only node
		want    map[string]bool // victim group → still placed afterwards
		placed  bool            // the high-priority group gets the node
	}{
		{
			name:    "takes the lowest priority",
			victims: []api.GroupSpec{withPriority(gspec("low", api.PlacementSpec{}, 400), 1), withPriority(gspec("mid", api.PlacementSpec{}, 400), 5)},
			want:    map[string]bool{"low": false, "mid": true},
			placed:  true,
		},
		{
			name:    "takes as few as it can",
			victims: []api.GroupSpec{withPriority(gspec("small", api.PlacementSpec{}, 200), 1), withPriority(gspec("big", api.PlacementSpec{}, 600), 1)},
			want:    map[string]bool{"small": true, "big": false},
			placed:  true,
		},
		{
			name:    "equal priority never preempts",
			victims: []api.GroupSpec{withPriority(gspec("peer", api.PlacementSpec{}, 800), 10)},
			want:    map[string]bool{"peer": true},
			placed:  false,
		},
		{
			name: "preemptible = false is protected",
			victims: []api.GroupSpec{func() api.GroupSpec {
				s := withPriority(gspec("keep", api.PlacementSpec{}, 800), 1)
				s.Preemptible = &no
				return s
			}()},
			want:   map[string]bool{"keep": true},
			placed: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.node("n1", withCapacity(1000, 0))
			for _, v := range tc.victims {
				w.putSpec(v)
				w.settle()
			}
			w.putSpec(withPriority(gspec("urgent", api.PlacementSpec{}, 500), 10))
			actions := w.settle()
			for g, want := range tc.want {
				a := w.alloc(g + ".0")
				if got := a.Node != ""; got != want {
					t.Errorf("%s placed = %v, want %v (pending %q)", g, got, want, a.Pending)
				}
				if !want && !strings.HasPrefix(a.Pending, "preempted by urgent (priority 10); no node fits") {
					t.Errorf("%s pending %q, want it preempted by urgent", g, a.Pending)
				}
			}
			u := w.alloc("urgent.0")
			if got := u.Node == "n1"; got != tc.placed {
				t.Errorf("urgent placed on n1 = %v, want %v (pending %q, actions %q)", got, tc.placed, u.Pending, actions)
			}
			if tc.placed && !hasAction(actions, "preempt ") {
				t.Errorf("actions do not mention the preemption: %q", actions)
			}
		})
	}
}

func TestPreemptedAllocationMovesWhereRoomIs(t *testing.T) {
	w := newWorld(t)
	w.node("n1", withCapacity(1000, 0))
	w.putSpec(withPriority(gspec("batch", api.PlacementSpec{}, 800), 1))
	w.settle()
	w.node("n2", withCapacity(1000, 0), withLabels("gpu", "yes"))
	w.putSpec(withPriority(gspec("urgent", api.PlacementSpec{Constraints: []string{"!gpu"}}, 800), 10))
	w.settle()
	if n := w.alloc("urgent.0").Node; n != "n1" {
		t.Fatalf("urgent on %q, want n1", n)
	}
	if n := w.alloc("batch.0").Node; n != "n2" {
		t.Errorf("batch on %q: the preempted allocation should have gone to n2, where room is", n)
	}
}

func withPriority(s api.GroupSpec, p int64) api.GroupSpec {
	s.Priority = api.Priority{Value: p}
	return s
}

func TestDeadNodeIsReplacedAtOnce(t *testing.T) {
	w := newWorld(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		w.node(n)
	}
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 2}, 100))
	w.settle()
	before := w.nodes("web")
	var victim string
	for _, n := range before {
		victim = n
		break
	}
	w.advance(time.Second)
	w.node(victim, withStatus(raftstore.NodeDead))
	actions := w.settle()
	after := w.nodes("web")
	for id, n := range after {
		if n == "" || n == victim {
			t.Errorf("%s on %q after %s died (%s)", id, n, victim, describePlacement(after))
		}
	}
	if !hasAction(actions, "node "+victim+" is dead") {
		t.Errorf("actions do not say why: %q", actions)
	}
	for id, n := range before {
		if n != victim && after[id] != n {
			t.Errorf("%s moved from %s, which is alive", id, n)
		}
	}
}

func TestDeadNodeGrace(t *testing.T) {
	w := newWorld(t)
	w.opts.DeadGrace = 30 * time.Second
	w.node("n1")
	w.node("n2")
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 1}, 100))
	w.settle()
	home := w.alloc("web.0").Node
	w.advance(time.Second)
	died := w.now
	w.node(home, withStatus(raftstore.NodeDead))
	d := w.step()
	if !d.Empty() {
		t.Fatalf("within the grace the allocation moved: %q", d.Actions)
	}
	if want := died.Add(30 * time.Second); !d.Next.Equal(want) {
		t.Errorf("Next = %v, want the end of the grace %v", d.Next, want)
	}
	w.advance(29 * time.Second)
	if d := w.step(); !d.Empty() {
		t.Fatalf("a second before the grace ends the allocation moved: %q", d.Actions)
	}
	w.advance(time.Second)
	w.settle()
	if n := w.alloc("web.0").Node; n == home || n == "" {
		t.Errorf("after the grace web.0 is on %q, want the other node", n)
	}
}

func TestReturningNodeDoesNotTakeReplacementsBack(t *testing.T) {
	w := newWorld(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		w.node(n)
	}
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 2}, 100))
	w.settle()
	var victim string
	for _, n := range w.nodes("web") {
		victim = n
		break
	}
	w.node(victim, withStatus(raftstore.NodeDead))
	w.settle()
	moved := w.nodes("web")
	gens := map[string]int64{}
	for id := range moved {
		gens[id] = w.alloc(id).Generation
	}
	w.advance(time.Minute)
	w.node(victim, withStatus(raftstore.NodeAlive))
	if d := w.step(); !d.Empty() {
		t.Fatalf("the returning node disturbed the replacements: %q", d.Actions)
	}
	for id, n := range w.nodes("web") {
		if n != moved[id] || w.alloc(id).Generation != gens[id] {
			t.Errorf("%s changed after %s came back", id, victim)
		}
	}
}

func TestDrainMovesEverything(t *testing.T) {
	w := newWorld(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		w.node(n)
	}
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 2, Spread: api.SpreadPrefer}, 100))
	w.putSpec(gspec("cache", api.PlacementSpec{Shards: 4, ShardReplicas: 2}, 100))
	w.settle()
	w.drain("n1", true)
	actions := w.settle()
	for _, a := range w.fsm.Allocations() {
		if a.Node == "n1" || a.Node == "" {
			t.Errorf("%s on %q after n1 drained", a.ID, a.Node)
		}
	}
	if !hasAction(actions, "node n1 is draining") {
		t.Errorf("actions do not say why: %q", actions)
	}
	// Nothing new goes to a drained node either.
	w.putSpec(gspec("more", api.PlacementSpec{Replicas: 3}, 100))
	w.settle()
	a := w.alloc("more.2")
	if a.Node != "" || !strings.Contains(a.Pending, "1 draining") {
		t.Errorf("more.2 on %q pending %q; want unplaced, one node draining", a.Node, a.Pending)
	}
}

func TestScaleUpAndDown(t *testing.T) {
	w := newWorld(t)
	for i := range 5 {
		w.node(simNodeName(i + 1))
	}
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 2}, 100))
	w.settle()
	w.scale("web", 4, nil)
	w.settle()
	if got := len(w.nodes("web")); got != 4 {
		t.Fatalf("after scaling to 4: %d allocations", got)
	}
	kept := w.nodes("web")
	w.scale("web", 1, nil)
	actions := w.settle()
	got := w.nodes("web")
	if len(got) != 1 || got["web.0"] != kept["web.0"] {
		t.Errorf("after scaling to 1: %s, want only web.0, unmoved", describePlacement(got))
	}
	if !hasAction(actions, "delete web.3: scaled down") {
		t.Errorf("actions: %q", actions)
	}
	w.scale("web", 0, nil) // back to the spec's 2
	w.settle()
	if got := len(w.nodes("web")); got != 2 {
		t.Errorf("override cleared: %d allocations, want the spec's 2", got)
	}
}

func TestHotShardOverride(t *testing.T) {
	w := newWorld(t)
	for i := range 5 {
		w.node(simNodeName(i + 1))
	}
	w.putSpec(gspec("cache", api.PlacementSpec{Shards: 4, ShardReplicas: 1}, 100))
	w.settle()
	shard := 2
	w.scale("cache", 4, &shard)
	w.settle()
	perShard := map[int]map[string]bool{}
	for _, a := range w.fsm.Allocations() {
		if perShard[a.Shard] == nil {
			perShard[a.Shard] = map[string]bool{}
		}
		if a.Node == "" {
			t.Errorf("%s unplaced: %s", a.ID, a.Pending)
		}
		if perShard[a.Shard][a.Node] {
			t.Errorf("two replicas of shard %d on %s", a.Shard, a.Node)
		}
		perShard[a.Shard][a.Node] = true
	}
	for k := range 4 {
		want := 1
		if k == shard {
			want = 4
		}
		if got := len(perShard[k]); got != want {
			t.Errorf("shard %d has %d replicas, want %d", k, got, want)
		}
	}
	if _, ok := w.fsm.Allocation("cache.s2.3"); !ok {
		t.Errorf("cache.s2.3 does not exist")
	}
	w.scale("cache", 0, &shard)
	w.settle()
	if _, ok := w.fsm.Allocation("cache.s2.1"); ok {
		t.Errorf("cache.s2.1 still exists after the override was cleared")
	}
}

func TestShardReplicasNeedDistinctNodes(t *testing.T) {
	w := newWorld(t)
	w.node("n1")
	w.node("n2")
	w.putSpec(gspec("cache", api.PlacementSpec{Shards: 2, ShardReplicas: 3}, 100))
	w.settle()
	for k := range 2 {
		a := w.alloc(AllocationID("cache", k, 2, true))
		if a.Node != "" || !strings.Contains(a.Pending, "2 already running a copy") {
			t.Errorf("%s on %q pending %q; want unplaced: both nodes hold the shard", a.ID, a.Node, a.Pending)
		}
	}
	w.node("n3")
	w.settle()
	for k := range 2 {
		if a := w.alloc(AllocationID("cache", k, 2, true)); a.Node != "n3" {
			t.Errorf("%s on %q after n3 joined, want n3", a.ID, a.Node)
		}
	}
}

func TestFailedAllocationMovesAfterRetryDelay(t *testing.T) {
	w := newWorld(t)
	w.node("n1")
	w.node("n2")
	w.putSpec(gspec("web", api.PlacementSpec{Replicas: 1}, 100))
	w.settle()
	home := w.alloc("web.0").Node
	w.advance(time.Second)
	failedAt := w.now
	w.report(api.GroupFailed, false, "web.0")
	d := w.step()
	if !d.Empty() {
		t.Fatalf("re-placed before FailedRetry: %q", d.Actions)
	}
	if want := failedAt.Add(DefaultFailedRetry); !d.Next.Equal(want) {
		t.Errorf("Next = %v, want %v", d.Next, want)
	}
	w.advance(DefaultFailedRetry)
	actions := w.settle()
	a := w.alloc("web.0")
	if a.Node == home || a.Node == "" {
		t.Errorf("web.0 on %q, want the node it did not fail on (actions %q)", a.Node, actions)
	}
	if a.Status != "" {
		t.Errorf("moved allocation keeps status %q", a.Status)
	}

	// With nowhere else to go it is restarted in place, as a new generation.
	w.drain(home, true)
	w.settle()
	gen := w.alloc("web.0").Generation
	w.advance(time.Second)
	w.report(api.GroupFailed, false, "web.0")
	w.advance(DefaultFailedRetry)
	actions = w.settle()
	a = w.alloc("web.0")
	if a.Node == "" || a.Generation <= gen || a.Status != "" {
		t.Errorf("web.0: node %q generation %d (was %d) status %q; want a retry in place (actions %q)", a.Node, a.Generation, gen, a.Status, actions)
	}
}

func TestOrphanAndStrayAllocationsAreDeleted(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	g := gspec("web", api.PlacementSpec{Replicas: 1}, 100)
	st := raftstore.State{
		Index:  7,
		Groups: map[string]raftstore.Group{"web": {Name: "web", Spec: g, Generation: 1}},
		Nodes:  map[string]raftstore.NodeInfo{"n1": {Name: "n1", Status: raftstore.NodeAlive}},
		Allocations: map[string]raftstore.Allocation{
			"web.0":    {ID: "web.0", Group: "web", Node: "n1", GroupGeneration: 1, Spec: &g, Generation: 1},
			"web.s0.0": {ID: "web.s0.0", Group: "web", Node: "n1", GroupGeneration: 1, Spec: &g, Generation: 1},
			"gone.0":   {ID: "gone.0", Group: "gone", Node: "n1", Generation: 1},
		},
	}
	d := Schedule(st, now, Options{})
	if !slices.Equal(d.Plan.Delete, []string{"gone.0", "web.s0.0"}) || len(d.Plan.Put) != 0 {
		t.Errorf("plan %+v, want gone.0 and web.s0.0 deleted and nothing else", d.Plan)
	}
}

func TestScheduleIsDeterministic(t *testing.T) {
	w := newWorld(t)
	for i := range 7 {
		w.node(simNodeName(i+1), withCapacity(4000, 8<<30))
	}
	w.putSpec(withPriority(gspec("web", api.PlacementSpec{Replicas: 5, Spread: api.SpreadPrefer}, 500), 5))
	w.putSpec(gspec("cache", api.PlacementSpec{Shards: 12, ShardReplicas: 2}, 300))
	w.putSpec(withPriority(gspec("batch", api.PlacementSpec{Replicas: 9, Spread: api.SpreadPrefer}, 1500), 1))
	st := w.fsm.State()
	first := Schedule(st, w.now, Options{})
	want, _ := json.Marshal(first)
	for range 20 {
		d := Schedule(w.fsm.State(), w.now, Options{})
		if got, _ := json.Marshal(d); string(got) != string(want) {
			t.Fatalf("two passes over one state differ:\n%s\n%s", want, got)
		}
	}
	if !reflect.DeepEqual(st, w.fsm.State()) {
		t.Errorf("Schedule changed the state it was given")
	}
}

func TestScheduleSettlesAfterEveryChange(t *testing.T) {
	// A long, mixed history; settle fails the test if a pass after a
	// decision proposes anything.
	w := newWorld(t)
	for i := range 6 {
		w.node(simNodeName(i+1), withCapacity(2000, 0))
	}
	w.putSpec(withPriority(gspec("web", api.PlacementSpec{Replicas: 4}, 300), 5))
	w.putSpec(gspec("cache", api.PlacementSpec{Shards: 10, ShardReplicas: 2}, 200))
	w.putSpec(withPriority(gspec("batch", api.PlacementSpec{Replicas: 8, Spread: api.SpreadPrefer}, 600), 1))
	w.settle()
	w.node(simNodeName(2), withStatus(raftstore.NodeDead))
	w.settle()
	w.node(simNodeName(7), withCapacity(2000, 0))
	w.settle()
	w.drain(simNodeName(3), true)
	w.settle()
	w.putSpec(withPriority(gspec("urgent", api.PlacementSpec{Replicas: 3}, 1500), 9))
	w.settle()
	w.node(simNodeName(2), withStatus(raftstore.NodeAlive))
	w.settle()
	w.drain(simNodeName(3), false)
	w.settle()
}
