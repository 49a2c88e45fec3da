package cluster

import (
	"fmt"
	"strconv"

	"github.com/berth-project/berth/api"
)

// Placement of replicated groups.
//
// A replica that needs a node goes to the eligible node (alive, not
// draining, matching the constraints, with room for the group's request)
// that holds the fewest replicas of the group (spread = "prefer"; with
// spread = "node" only nodes holding none qualify), then the fewest
// allocations of any group, then the highest rendezvous Weight of the
// allocation ID on the node, then the name. The load term spreads groups
// over the cluster; the rendezvous term, rather than the name, breaks the
// remaining ties so that equal nodes do not all fill up in name order, and
// it is stable: the same replica prefers the same node in every pass.
//
// Replicas that run stay where they are while their node is valid: a
// replacement placed while a node was dead is not moved back when the node
// returns (the returning node's agent stops the allocations it no longer
// owns, by generation). The only exception is spread = "prefer": a node
// holding several replicas gives one to an eligible node that holds none,
// until the replicas are spread as far as the nodes go (only replicas that
// are Running and Ready move: nothing that still starts).

// placeReplicated places gv's unplaced replicas, lowest index first.
func (p *pass) placeReplicated(gv *groupView) {
	holders := p.holders(gv)
	for _, a := range gv.allocs {
		if a.Node != "" {
			continue
		}
		node := p.pickReplica(gv, a, holders)
		if node == "" {
			p.pend(a)
			continue
		}
		p.place(a, node)
		holders[node]++
	}
	if gv.pl.Spread == api.SpreadPrefer {
		p.respread(gv, holders)
	}
}

// holders counts gv's placed replicas per node.
func (p *pass) holders(gv *groupView) map[string]int {
	holders := map[string]int{}
	for _, a := range gv.allocs {
		if a.Node != "" {
			holders[a.Node]++
		}
	}
	return holders
}

// replicaScan is what one look over the nodes finds for a replica.
type replicaScan struct {
	best     *nodeView   // the best node that takes it as it is
	roomless []*nodeView // nodes that pass everything but room
	avoidOK  bool        // the node it failed on would take it
	eligible int         // nodes alive, not draining, matching the constraints
	rej      rejections
}

func (p *pass) scanReplica(gv *groupView, a *alloc, holders map[string]int) replicaScan {
	prefer := gv.pl.Spread == api.SpreadPrefer
	better := func(n, b *nodeView) bool {
		if prefer && holders[n.name] != holders[b.name] {
			return holders[n.name] < holders[b.name]
		}
		if n.count != b.count {
			return n.count < b.count
		}
		wn, wb := Weight(a.ID, n.name), Weight(a.ID, b.name)
		if wn != wb {
			return wn > wb
		}
		return n.name < b.name
	}
	var sc replicaScan
	for _, name := range p.nodeNames {
		n := p.nodes[name]
		if kind, c := gv.check(n); kind != rejectNone {
			sc.rej.add(kind, c)
			continue
		}
		sc.eligible++
		switch {
		case !prefer && holders[name] > 0:
			sc.rej.add(rejectSpread, "")
		case !n.fits(gv.req):
			sc.rej.add(rejectRoom, "")
			sc.roomless = append(sc.roomless, n)
		case name == a.avoid:
			sc.avoidOK = true
		default:
			if sc.best == nil || better(n, sc.best) {
				sc.best = n
			}
		}
	}
	return sc
}

// pickReplica chooses a's node, or "" when there is none: the best node
// that takes it; else the node it failed on, as a retry; else a node where
// preemption makes room.
func (p *pass) pickReplica(gv *groupView, a *alloc, holders map[string]int) string {
	sc := p.scanReplica(gv, a, holders)
	switch {
	case sc.best != nil:
		return sc.best.name
	case sc.avoidOK:
		// Nowhere else to go: a new generation where it failed, so that its
		// agent starts it afresh (at most every FailedRetry; place marks
		// it a retry).
		return a.avoid
	}
	if n := p.preempt(gv, a, sc.roomless); n != nil {
		return n.name
	}
	return ""
}

// explainReplica says why no node takes a, on the pass's final placement.
func (p *pass) explainReplica(gv *groupView, a *alloc, holders map[string]int) string {
	sc := p.scanReplica(gv, a, holders)
	want := gv.replicas(0)
	if gv.pl.Spread != api.SpreadPrefer && sc.eligible > 0 && sc.eligible < want && sc.rej.n[rejectRoom] == 0 {
		msg := fmt.Sprintf("%d replicas, %d eligible %s (spread = %q)", want, sc.eligible, plural(sc.eligible, "node"), api.SpreadNode)
		sc.rej.n[rejectSpread] = 0
		if others := sc.rej.parts(); others != "" {
			msg += "; other nodes: " + others
		}
		return msg
	}
	return sc.rej.reason(gv.req)
}

// respread moves replicas of a spread = "prefer" group off nodes that hold
// several while an eligible node holds none: from the most crowded node
// (then by name), its highest replica first. Only replicas that run well
// where the state has them move (Running and Ready, not placed in this
// pass): one that was just placed, or still starts, stays put.
func (p *pass) respread(gv *groupView, holders map[string]int) {
	for {
		var a *alloc
		for _, c := range gv.allocs {
			if c.Node == "" || holders[c.Node] < 2 || c.placed || c.Status != api.GroupRunning || !c.Ready {
				continue
			}
			if a == nil || holders[c.Node] > holders[a.Node] ||
				(holders[c.Node] == holders[a.Node] && (c.Node < a.Node || (c.Node == a.Node && c.Replica > a.Replica))) {
				a = c
			}
		}
		if a == nil {
			return
		}
		var to *nodeView
		for _, name := range p.nodeNames {
			n := p.nodes[name]
			if kind, _ := gv.check(n); kind != rejectNone || holders[name] > 0 || name == a.avoid || !n.fits(gv.req) {
				continue
			}
			if to == nil || n.count < to.count || (n.count == to.count && Weight(a.ID, name) > Weight(a.ID, to.name)) {
				to = n
			}
		}
		if to == nil {
			return
		}
		from := a.Node
		p.unplace(a, "spreading out: node "+from+" runs "+strconv.Itoa(holders[from])+" replicas")
		p.place(a, to.name)
		holders[from]--
		holders[to.name]++
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
