package cluster

import (
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/berth-project/berth/api"
)

// Placement of sharded groups: rendezvous hashing under a load bound.
//
// The members of a sharded group are the nodes its allocations may stay
// on: known, not draining, not dead or left past the grace, matching the
// constraints (a suspect node is a member: it keeps its allocations but
// gets nothing new). Every shard ranks the members with Rank(group.sK);
// the first R (the shard's replica count) are its natural owners.
//
// With T allocations in the group and M members:
//
//	bound  = max(⌈T/M⌉, ⌊LoadFactor·T/M⌋)   no node holds more (shardBound)
//	target = ⌈T/M⌉                          the fair share
//
// One pass, per group:
//
//  1. shed: an alive node above the bound gives up its excess, each
//     allocation by the shortest chain of moves that ends under the bound
//     (an augmenting path, see path: usually one move, of the allocation
//     the node ranks worst among those a node under the bound takes);
//     without a chain its worst-ranked allocations are unplaced.
//  2. place: every allocation without a node (new, moved off a bad node,
//     shed, preempted) goes to the highest-ranked member that is alive,
//     under the bound, does not hold another replica of the shard and has
//     room. Failing that: the node it failed on, if that one would take
//     it (a retry); a node at the bound that a chain of moves brings under
//     it (augment); for a shed allocation, the node it came from; a node
//     where preempting lower priorities makes room; and as a last resort
//     the least loaded node above the bound, rather than stay unplaced.
//     With the chains a node goes above the bound only when no placement
//     within it exists.
//  3. take back: an allocation that is Running and Ready on a node outside
//     its shard's first R moves to one of the first R that is alive,
//     holds no replica of the shard, is below the target and holds at
//     least two fewer allocations of the group than the node it comes
//     from. Repeated until nothing moves (each move puts one more
//     allocation on a natural owner, so it ends).
//
// Steps 1 to 3 repeat (at most four rounds) while a round sheds or takes
// back something: a slot may open only after an allocation was tried, or
// a take back may leave a node above the bound; the next round sheds
// again and retries what waits. (Before the chains, placing in shard
// order stranded late replicas above the bound whenever the nodes under
// it all held their shard: 226 of 4140 simulated joins and leaves for 60
// group names, S = 16..256, R = 1..3, N = 3..10; none since.)
//
// Step 3 is what keeps the cluster near the pure rendezvous placement: a
// node that joins takes back the shards it now ranks first for, up to its
// fair share. Both conditions on the load were measured against the
// alternatives (`go test -run ShardMoves -v ./cluster` prints the table):
// capping at the bound instead of the target moved up to LoadFactor times
// the optimum; without the "two fewer" rule, the nodes that gave a shard to
// the newcomer took others back in turn, a cascade that moved up to twice
// the optimum at S = 16. With both, a join or a leave moves at most 1.01×
// the optimum T/(N+1) at S = 256, R = 2, N = 3..10, and max/mean load
// stays within LoadFactor. A joining node may end below its fair share
// (it takes only shards it ranks first for): fewer moves, same bound.
// Only allocations that run well are taken back: one still starting, or
// just moved off a node it failed on, stays where it is for now.
//
// The bound rounds LoadFactor·T/M down rather than up, so that max/mean
// never exceeds LoadFactor (rounding up gave 1.11 at T = 512, M = 10);
// it never drops below ⌈T/M⌉, below which the allocations would not fit.

// ShardBound is the most allocations of a sharded group of total
// allocations that one of members nodes holds under the default
// LoadFactor, when a placement within it exists (see plan_shards.go).
func ShardBound(total, members int) int { return shardBound(total, members, DefaultLoadFactor) }

// shardBound is the most allocations of a group of total allocations one
// of members nodes may hold.
func shardBound(total, members int, loadFactor float64) int {
	if members <= 0 {
		return 0
	}
	fair := (total + members - 1) / members
	b := int(math.Floor(loadFactor*float64(total)/float64(members) + 1e-9))
	return max(fair, b)
}

// shardKey is the rendezvous key of one shard of a group.
func shardKey(group string, shard int) string {
	return group + ".s" + strconv.Itoa(shard)
}

// shardPlacer is the state of placing one sharded group.
type shardPlacer struct {
	p             *pass
	gv            *groupView
	members       []string
	bound, target int
	load          map[string]int
	holder        []map[string]*alloc // per shard: node → replica on it
	ranks         [][]string          // per shard: members in rendezvous order
	rankOf        []map[string]int    // per shard: node → index in ranks
}

func (p *pass) placeSharded(gv *groupView) {
	sp := &shardPlacer{p: p, gv: gv, load: map[string]int{}}
	for _, name := range p.nodeNames {
		n := p.nodes[name]
		if why, _ := n.leaveReason(p.now, p.opts.DeadGrace); why == "" && gv.mismatch[name] == "" {
			sp.members = append(sp.members, name)
		}
	}
	shards := gv.shardCount()
	sp.holder = make([]map[string]*alloc, shards)
	sp.ranks = make([][]string, shards)
	sp.rankOf = make([]map[string]int, shards)
	for k := range shards {
		sp.holder[k] = map[string]*alloc{}
		sp.ranks[k] = Rank(shardKey(gv.name, k), sp.members)
		sp.rankOf[k] = make(map[string]int, len(sp.members))
		for i, n := range sp.ranks[k] {
			sp.rankOf[k][n] = i
		}
	}
	if m := len(sp.members); m > 0 {
		sp.bound = shardBound(len(gv.allocs), m, p.opts.LoadFactor)
		sp.target = (len(gv.allocs) + m - 1) / m
	}
	for _, a := range gv.allocs {
		if a.Node != "" {
			sp.load[a.Node]++
			sp.holder[a.Shard][a.Node] = a
		}
	}
	// Rounds of shed, place, take back (see above); the cap only
	// guarantees that a pass ends.
	tookBack := false
	for round := 0; round < 4; round++ {
		if shed := sp.shed(); round > 0 && !shed && !tookBack {
			break
		}
		for _, a := range gv.allocs {
			if a.Node == "" {
				sp.place(a)
			}
		}
		tookBack = sp.takeBack()
	}
	p.placers[gv.name] = sp
}

func (sp *shardPlacer) setNode(a *alloc, node string) {
	if a.Node != "" {
		sp.load[a.Node]--
		delete(sp.holder[a.Shard], a.Node)
	}
	if node == "" {
		sp.p.setNode(a, "")
		return
	}
	sp.p.place(a, node)
	sp.load[node]++
	sp.holder[a.Shard][node] = a
}

// shed takes the excess off every alive node above the bound, and reports
// whether it took any. Each allocation in excess leaves by the shortest
// path of moves that ends under the bound (see path): usually one move,
// of the allocation the node ranks worst among those that some node under
// the bound takes as it is. When no path exists the node's worst-ranked
// allocations are unplaced, for place to find them a node.
func (sp *shardPlacer) shed() bool {
	shed := false
	for _, name := range sp.members {
		if sp.load[name] <= sp.bound || !sp.p.nodes[name].placeable() {
			continue
		}
		why := "node " + name + " is above the load bound of " + strconv.Itoa(sp.bound)
		for sp.load[name] > sp.bound {
			moves, _, ok := sp.path([]string{name}, nil)
			if !ok {
				break
			}
			sp.apply(moves, why, "an allocation of "+name)
			shed = true
		}
		over := sp.load[name] - sp.bound
		if over <= 0 {
			continue
		}
		var on []*alloc
		for _, a := range sp.gv.allocs {
			if a.Node == name {
				on = append(on, a)
			}
		}
		// Worst ranked first: this node is their least natural owner.
		slices.SortStableFunc(on, func(a, b *alloc) int {
			return cmp.Compare(sp.rankOf[b.Shard][name], sp.rankOf[a.Shard][name])
		})
		for _, a := range on[:over] {
			a.shedFrom = name
			if a.why == "" {
				a.why = why
			}
			sp.setNode(a, "")
			shed = true
		}
	}
	return shed
}

// shardScan is what one look over a shard's ranking finds.
type shardScan struct {
	dest     string      // the highest-ranked node that takes it as it is
	roomless []*nodeView // under the bound, without room
	over     *nodeView   // the least loaded at or above the bound, with room
	avoidOK  bool        // the node it failed on would take it
	rej      rejections  // complete only when dest is ""
}

func (sp *shardPlacer) scan(a *alloc) shardScan {
	p, gv := sp.p, sp.gv
	var sc shardScan
	for _, name := range sp.ranks[a.Shard] {
		n := p.nodes[name]
		if kind, c := gv.check(n); kind != rejectNone {
			sc.rej.add(kind, c)
			continue
		}
		switch {
		case sp.holder[a.Shard][name] != nil:
			sc.rej.add(rejectSpread, "")
		case sp.load[name] >= sp.bound:
			sc.rej.add(rejectBound, "")
			if n.fits(gv.req) && (sc.over == nil || sp.load[name] < sp.load[sc.over.name]) {
				sc.over = n
			}
		case !n.fits(gv.req):
			sc.rej.add(rejectRoom, "")
			sc.roomless = append(sc.roomless, n)
		case name == a.avoid:
			sc.avoidOK = true
		default:
			sc.dest = name
			return sc
		}
	}
	// Nodes that are not members (dead, draining, failing constraints)
	// are not ranked; count them for the reason.
	for _, name := range p.nodeNames {
		if _, ranked := sp.rankOf[a.Shard][name]; !ranked {
			kind, c := gv.check(p.nodes[name])
			if kind == rejectNone {
				kind = rejectNotAlive // dead or left within its grace
			}
			sc.rej.add(kind, c)
		}
	}
	return sc
}

// place finds a node for a, or leaves it pending: the highest-ranked node
// that takes it; else the node it failed on, as a retry; else a node at
// the bound that a chain of moves brings under it (augment); else, for a
// shed allocation, the node it came from; else a node where preemption
// makes room; else the least loaded node above the bound.
func (sp *shardPlacer) place(a *alloc) {
	p, gv := sp.p, sp.gv
	sc := sp.scan(a)
	switch {
	case sc.dest != "":
		sp.setNode(a, sc.dest)
	case sc.avoidOK:
		// Only the node it failed on would take it: a new generation there,
		// so that its agent starts it afresh (at most every FailedRetry;
		// place marks it a retry).
		sp.setNode(a, a.avoid)
	case sp.augment(a):
		// A chain of moves made a slot under the bound.
	case a.shedFrom != "" && sp.holder[a.Shard][a.shedFrom] == nil && p.nodes[a.shedFrom].fits(gv.req):
		sp.setNode(a, a.shedFrom) // nothing better: it stays
	default:
		if n := p.preempt(gv, a, sc.roomless); n != nil {
			sp.setNode(a, n.name)
			return
		}
		if sc.over != nil {
			p.actions = append(p.actions, "place "+a.ID+" on "+sc.over.name+" above the load bound of "+
				strconv.Itoa(sp.bound)+": no node under it can take it")
			sp.setNode(a, sc.over.name)
			return
		}
		p.pend(a)
	}
}

// explain says why no node takes a, on the pass's final placement.
func (sp *shardPlacer) explain(a *alloc) string {
	sc := sp.scan(a)
	return sc.rej.reason(sp.gv.req)
}

// takeBack moves allocations that sit outside their shard's natural owners
// to an owner below the target, until none can move, and reports whether
// any moved.
func (sp *shardPlacer) takeBack() bool {
	p, gv := sp.p, sp.gv
	any := false
	for moved := true; moved; {
		moved = false
		for _, a := range gv.allocs {
			if a.Node == "" || a.placed || a.Status != api.GroupRunning || !a.Ready || !p.nodes[a.Node].placeable() {
				continue // only what runs well, where it runs, is worth moving
			}
			r := min(gv.replicas(a.Shard), len(sp.members))
			if sp.rankOf[a.Shard][a.Node] < r {
				continue
			}
			for _, name := range sp.ranks[a.Shard][:r] {
				n := p.nodes[name]
				if !n.placeable() || sp.holder[a.Shard][name] != nil || sp.load[name] >= sp.target ||
					sp.load[a.Node] <= sp.load[name]+1 || name == a.avoid || !n.fits(gv.req) {
					continue
				}
				if a.why == "" {
					a.why = "node " + name + " ranks shard " + strconv.Itoa(a.Shard) + " higher"
				}
				sp.setNode(a, "")
				sp.setNode(a, name)
				moved, any = true, true
				break
			}
		}
	}
	return any
}

// hop is one node of an augmenting path: mover left the node of hop
// parent for node (the first hop has no mover and parent -1).
type hop struct {
	node   string
	parent int
	mover  *alloc
}

// move is one step of a path to apply.
type move struct {
	a  *alloc
	to string
}

// path finds the shortest chain of moves that frees one slot on one of
// the start nodes: the first move takes an allocation of the group off a
// start node to a node that does not hold its shard, and while that node
// is at the bound, the next move takes one of its allocations on, and so
// on, until a move lands under the bound. Breadth first, so the chain is
// the shortest; on each node, allocations placed in this pass go first
// (nothing runs them yet, moving them costs nothing), then the ones the
// node ranks worst; destinations are tried in each shard's rendezvous
// order. skip never moves. It returns the moves in the order to apply them
// and the start node that got a free slot, or ok false when no chain
// exists.
//
// A chain exists whenever the group's allocations can be placed within the
// bound at all (the augmenting-path argument of bipartite b-matching:
// shards' replicas to nodes, each node taking at most bound allocations
// and one per shard), so with it a node goes above the bound only when no
// placement could avoid it.
func (sp *shardPlacer) path(starts []string, skip *alloc) (moves []move, freed string, ok bool) {
	p, gv := sp.p, sp.gv
	eligible := func(name string) bool {
		n := p.nodes[name]
		kind, _ := gv.check(n)
		return kind == rejectNone && n.placeable()
	}
	queue := make([]hop, 0, len(sp.members))
	seen := map[string]bool{}
	for _, name := range starts {
		queue = append(queue, hop{node: name, parent: -1})
		seen[name] = true
	}
	for i := 0; i < len(queue); i++ {
		from := queue[i].node
		var on []*alloc
		for _, b := range gv.allocs {
			if b.Node == from && b != skip {
				on = append(on, b)
			}
		}
		slices.SortStableFunc(on, func(x, y *alloc) int {
			if x.placed != y.placed {
				if x.placed {
					return -1
				}
				return 1
			}
			return cmp.Compare(sp.rankOf[y.Shard][from], sp.rankOf[x.Shard][from])
		})
		for _, b := range on {
			for _, to := range sp.ranks[b.Shard] {
				if seen[to] || !eligible(to) || sp.holder[b.Shard][to] != nil || to == b.avoid {
					continue
				}
				if sp.load[to] >= sp.bound {
					seen[to] = true
					queue = append(queue, hop{node: to, parent: i, mover: b})
					continue
				}
				if !p.nodes[to].fits(gv.req) {
					continue
				}
				moves = append(moves, move{b, to})
				h := queue[i]
				for ; h.parent >= 0; h = queue[h.parent] {
					moves = append(moves, move{h.mover, h.node})
				}
				return moves, h.node, true
			}
		}
	}
	return nil, "", false
}

// apply makes the moves of a path; why is the reason of the first mover
// to leave a start node, the others make room under the bound for it.
func (sp *shardPlacer) apply(moves []move, why, forWhat string) {
	for i, m := range moves {
		if m.a.why == "" && m.a.orig != nil && m.a.orig.Node != "" && m.a.orig.Node != m.to {
			if i == len(moves)-1 {
				m.a.why = why
			} else {
				m.a.why = "making room under the load bound of " + strconv.Itoa(sp.bound) + " for " + forWhat
			}
		}
		sp.setNode(m.a, "")
		sp.setNode(m.a, m.to)
	}
}

// augment places a on a node at the bound that does not hold its shard
// once a path (see path) freed a slot there, and reports whether it did.
// Greedy placement in shard order strands a replica when every node under
// the bound already holds its shard while a node at the bound does not:
// with S = 16, R = 2 on 3 nodes (bound 11 for a mean of 10.7) that
// happened for some group names, and the replica went above the bound.
func (sp *shardPlacer) augment(a *alloc) bool {
	var starts []string
	for _, name := range sp.ranks[a.Shard] {
		n := sp.p.nodes[name]
		if kind, _ := sp.gv.check(n); kind != rejectNone || !n.placeable() ||
			sp.holder[a.Shard][name] != nil || name == a.avoid || sp.load[name] < sp.bound {
			continue
		}
		starts = append(starts, name)
	}
	if len(starts) == 0 {
		return false
	}
	moves, freed, ok := sp.path(starts, a)
	if !ok {
		return false
	}
	sp.apply(moves, "making room under the load bound of "+strconv.Itoa(sp.bound)+" for "+a.ID, a.ID)
	sp.setNode(a, freed)
	return true
}
