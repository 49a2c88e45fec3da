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
// until the replicas are spread as far as the nodes go.

// placeReplicated places gv's unplaced replicas, lowest index first.
func (p *pass) placeReplicated(gv *groupView) {
	holders := map[string]int{}
	for _, a := range gv.allocs {
		if a.Node != "" {
			holders[a.Node]++
		}
	}
	for _, a := range gv.allocs {
		if a.Node != "" {
			continue
		}
		node, reason := p.pickReplica(gv, a, holders)
		if node == "" {
			p.pend(a, reason)
			continue
		}
		p.place(a, node)
		holders[node]++
	}
	if gv.pl.Spread == api.SpreadPrefer {
		p.respread(gv, holders)
	}
}

// pickReplica chooses a's node, preempting or retrying where it fails, or
// says why there is none.
func (p *pass) pickReplica(gv *groupView, a *alloc, holders map[string]int) (string, string) {
	prefer := gv.pl.Spread == api.SpreadPrefer
	var (
		rej      rejections
		best     *nodeView
		roomless []*nodeView
		eligible int
	)
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
	for _, name := range p.nodeNames {
		n := p.nodes[name]
		if kind, c := gv.check(n); kind != rejectNone {
			rej.add(kind, c)
			continue
		}
		eligible++
		switch {
		case !prefer && holders[name] > 0:
			rej.add(rejectSpread, "")
		case name == a.avoid:
			rej.add(rejectAvoid, "")
		case !n.fits(gv.req):
			rej.add(rejectRoom, "")
			roomless = append(roomless, n)
		default:
			if best == nil || better(n, best) {
				best = n
			}
		}
	}
	if best != nil {
		return best.name, ""
	}
	if n := p.preempt(gv, a, roomless); n != nil {
		return n.name, ""
	}
	if a.avoid != "" {
		// Nowhere else to go: a new generation where it failed, so that its
		// agent starts it afresh (at most every FailedRetry).
		n := p.nodes[a.avoid]
		if kind, _ := gv.check(n); kind == rejectNone && (prefer || holders[n.name] == 0) && n.fits(gv.req) {
			a.retry = true
			return n.name, ""
		}
	}
	if want := gv.replicas(0); !prefer && eligible > 0 && eligible < want && rej.n[rejectRoom] == 0 {
		msg := fmt.Sprintf("%d replicas, %d eligible %s (spread = %q)", want, eligible, plural(eligible, "node"), api.SpreadNode)
		rej.n[rejectSpread] = 0
		if others := rej.parts(); others != "" {
			msg += "; other nodes: " + others
		}
		return "", msg
	}
	return "", rej.reason(gv.req)
}

// respread moves replicas of a spread = "prefer" group off nodes that hold
// several while an eligible node holds none: from the most crowded node
// (then by name), its highest replica first.
func (p *pass) respread(gv *groupView, holders map[string]int) {
	for {
		var from string
		for _, name := range p.nodeNames {
			if holders[name] >= 2 && (from == "" || holders[name] > holders[from]) {
				from = name
			}
		}
		if from == "" {
			return
		}
		var a *alloc
		for _, c := range gv.allocs {
			if c.Node == from && (a == nil || c.Replica > a.Replica) {
				a = c
			}
		}
		var to *nodeView
		for _, name := range p.nodeNames {
			n := p.nodes[name]
			if kind, _ := gv.check(n); kind != rejectNone || holders[name] > 0 || !n.fits(gv.req) {
				continue
			}
			if to == nil || n.count < to.count || (n.count == to.count && Weight(a.ID, name) > Weight(a.ID, to.name)) {
				to = n
			}
		}
		if to == nil {
			return
		}
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
