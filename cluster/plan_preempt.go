package cluster

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/berth-project/berth/api"
)

// Cluster-level preemption. When an allocation of priority P finds nodes
// that pass every check but room, the scheduler looks on each of them for
// allocations of strictly lower priority whose spec is preemptible
// (preemptible unset or true) and whose removal makes room, chosen as the
// agent's admission chooses its victims (agent/admission.go): lowest
// priority first, then youngest (latest PlacedAt), then by ID, taken until
// the request fits, then every victim that is not needed after all is
// spared again, highest priority first. Of the nodes where room can be
// made, the one with the fewest victims wins, then the one whose highest
// victim priority is lowest, then the earlier node in the caller's order.
//
// The victims lose their node (Pending "preempted by <group> (priority
// P)"): their agent stops them gracefully when they disappear from its
// node, and the preemptor's agent admits the preemptor once the room is
// free (its local admission waits for it). The victims' groups, of lower
// priority, are placed later in the same pass and may find room on
// another node. Equal priority never preempts.

// preempt makes room for a (of gv) on one of nodes and returns that node,
// or nil when no node can be freed.
func (p *pass) preempt(gv *groupView, a *alloc, nodes []*nodeView) *nodeView {
	var (
		best    *nodeView
		victims []*alloc
	)
	for _, n := range nodes {
		v := p.victims(n, gv.prio, gv.req)
		if v == nil {
			continue
		}
		if best == nil || len(v) < len(victims) ||
			(len(v) == len(victims) && maxPriority(v) < maxPriority(victims)) {
			best, victims = n, v
		}
	}
	if best == nil {
		return nil
	}
	for _, v := range victims {
		p.actions = append(p.actions, fmt.Sprintf("preempt %s (priority %d) on %s for %s (priority %d)",
			v.ID, v.group.prio, best.name, a.ID, gv.prio))
		p.unplace(v, fmt.Sprintf("preempted by %s (priority %d)", gv.name, gv.prio))
		v.preempted = true
		v.Pending = fmt.Sprintf("%s%s (priority %d)", preemptedPrefix, gv.name, gv.prio)
	}
	return best
}

// victims returns the allocations on n whose removal makes room for req,
// in the order to stop them, or nil when that is impossible.
func (p *pass) victims(n *nodeView, prio int64, req api.Resources) []*alloc {
	var cands []*alloc
	for _, id := range slices.Sorted(maps.Keys(n.allocs)) {
		v := n.allocs[id]
		if v.group == nil || v.group.prio >= prio || !v.preemptible() {
			continue
		}
		cands = append(cands, v)
	}
	slices.SortFunc(cands, evictionOrder)
	capacity, used := n.info.Capacity, n.used
	k := 0
	for k < len(cands) && !fitsIn(capacity, used, req) {
		used = used.Sub(cands[k].req)
		k++
	}
	if !fitsIn(capacity, used, req) {
		return nil
	}
	// Spare whoever is not needed, the most valuable (taken last) first.
	var victims []*alloc
	spared := make([]bool, k)
	for i := k - 1; i >= 0; i-- {
		if with := used.Add(cands[i].req); fitsIn(capacity, with, req) {
			used, spared[i] = with, true
		}
	}
	for i, v := range cands[:k] {
		if !spared[i] {
			victims = append(victims, v)
		}
	}
	return victims
}

// preemptible reports whether a higher priority may take a's node: its
// spec's preemptible flag (unset means yes).
func (a *alloc) preemptible() bool {
	spec := a.Spec
	if spec == nil {
		spec = &a.group.g.Spec
	}
	return spec.IsPreemptible()
}

func maxPriority(v []*alloc) int64 {
	m := v[0].group.prio
	for _, a := range v[1:] {
		m = max(m, a.group.prio)
	}
	return m
}

// evictionOrder orders preemption candidates as admission does: lowest
// priority first, then youngest, then by ID.
func evictionOrder(a, b *alloc) int {
	return cmp.Or(cmp.Compare(a.group.prio, b.group.prio), b.PlacedAt.Compare(a.PlacedAt), cmp.Compare(a.ID, b.ID))
}
