package cluster

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// nodeView is what a pass knows of one node, kept up to date as the pass
// moves allocations.
type nodeView struct {
	name string
	info raftstore.NodeInfo
	// known: the node is in the state's Nodes (not only named by an
	// allocation).
	known bool
	// used is the sum of the requests of the allocations on it, count
	// their number; allocs are they.
	used   api.Resources
	count  int
	allocs map[string]*alloc
}

func (p *pass) addNode(name string, info raftstore.NodeInfo, known bool) {
	p.nodes[name] = &nodeView{name: name, info: info, known: known, allocs: map[string]*alloc{}}
}

func (n *nodeView) add(a *alloc) {
	n.used = n.used.Add(a.req)
	n.count++
	n.allocs[a.ID] = a
}

func (n *nodeView) remove(a *alloc) {
	n.used = n.used.Sub(a.req)
	n.count--
	delete(n.allocs, a.ID)
}

// placeable reports whether new allocations may go to n: alive and not
// draining. A suspect node keeps what it runs but gets nothing new.
func (n *nodeView) placeable() bool {
	return n.known && n.info.Status == raftstore.NodeAlive && !n.info.Drain
}

// leaveReason says why the allocations on n must go elsewhere, or "" when
// they may stay; until is when a dead or left node's grace ends (zero when
// none is running).
func (n *nodeView) leaveReason(now time.Time, grace time.Duration) (why string, until time.Time) {
	switch {
	case !n.known:
		return "node " + n.name + " is not a member any more", time.Time{}
	case n.info.Drain:
		return "node " + n.name + " is draining", time.Time{}
	case n.info.Status == raftstore.NodeDead || n.info.Status == raftstore.NodeLeft:
		if end := n.info.UpdatedAt.Add(grace); grace > 0 && now.Before(end) {
			return "", end
		}
		verb := "is dead"
		if n.info.Status == raftstore.NodeLeft {
			verb = "has left"
		}
		return "node " + n.name + " " + verb, time.Time{}
	}
	return "", time.Time{}
}

// mustLeave is leaveReason for validate: it also asks for a pass when a
// grace ends.
func (n *nodeView) mustLeave(p *pass) string {
	why, until := n.leaveReason(p.now, p.opts.DeadGrace)
	if !until.IsZero() {
		p.wake(until)
	}
	return why
}

// fits reports whether req fits in n's free room. A capacity of 0 in one
// resource means the node did not say (its agent reports its allocatable;
// 0 only comes from a node that could not measure it): that resource is
// not limited. Local admission on the node has the last word either way.
func (n *nodeView) fits(req api.Resources) bool {
	return fitsIn(n.info.Capacity, n.used, req)
}

func fitsIn(capacity, used, req api.Resources) bool {
	return (capacity.CPU == 0 || used.CPU+req.CPU <= capacity.CPU) &&
		(capacity.Memory == 0 || used.Memory+req.Memory <= capacity.Memory) &&
		(capacity.Pids == 0 || used.Pids+req.Pids <= capacity.Pids)
}

// Why a node does not take an allocation, in the order of the checks.
const (
	rejectNone       = iota
	rejectNotAlive   // dead, left, suspect or unknown
	rejectDraining   // drain set
	rejectConstraint // fails a constraint
	rejectSpread     // holds another copy (spread = "node", or the same shard)
	rejectBound      // at the sharded group's load bound
	rejectRoom       // too little free capacity
	rejectKinds
)

// noRoomMarker is in every reason that blames capacity; preemptedPrefix
// starts the reason of a preempted allocation. pend keeps the latter while
// the former holds.
const (
	noRoomMarker    = "too little room"
	preemptedPrefix = "preempted by "
)

// rejections counts, per kind, the nodes that refused an allocation, and
// remembers an example constraint.
type rejections struct {
	n          [rejectKinds]int
	constraint string
}

func (r *rejections) add(kind int, constraint string) {
	r.n[kind]++
	if kind == rejectConstraint && r.constraint == "" {
		r.constraint = constraint
	}
}

// reason renders why no node took an allocation asking req.
func (r *rejections) reason(req api.Resources) string {
	total := 0
	for _, c := range r.n {
		total += c
	}
	if total == 0 {
		return "no nodes in the cluster"
	}
	return fmt.Sprintf("no node fits (%d %s: %s)", total, plural(total, "node"), r.partsFor(req))
}

// parts lists the counted refusals, "1 draining, 2 where it failed", for
// an allocation whose request is not the reason.
func (r *rejections) parts() string { return r.partsFor(api.Resources{}) }

func (r *rejections) partsFor(req api.Resources) string {
	var parts []string
	add := func(kind int, what string) {
		if c := r.n[kind]; c > 0 {
			parts = append(parts, strconv.Itoa(c)+" "+what)
		}
	}
	add(rejectNotAlive, "not alive")
	add(rejectDraining, "draining")
	if r.n[rejectConstraint] > 0 {
		add(rejectConstraint, fmt.Sprintf("failing constraints (e.g. %q)", r.constraint))
	}
	add(rejectSpread, "already running a copy")
	add(rejectBound, "at the load bound")
	if r.n[rejectRoom] > 0 {
		add(rejectRoom, noRoomMarker+" (asks "+formatRequest(req)+")")
	}
	return strings.Join(parts, ", ")
}

// formatRequest names the non-zero resources of req.
func formatRequest(req api.Resources) string {
	var parts []string
	if req.CPU > 0 {
		parts = append(parts, "cpu "+req.CPU.String())
	}
	if req.Memory > 0 {
		parts = append(parts, "memory "+req.Memory.String())
	}
	if req.Pids > 0 {
		parts = append(parts, "pids "+strconv.FormatInt(req.Pids, 10))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// check is the placement test common to replicated and sharded groups:
// may a (of gv) go to n, leaving aside spread, bound and room, which the
// callers check in their own order.
func (gv *groupView) check(n *nodeView) (int, string) {
	switch {
	case !n.known || n.info.Status != raftstore.NodeAlive:
		return rejectNotAlive, ""
	case n.info.Drain:
		return rejectDraining, ""
	case gv.mismatch[n.name] != "":
		return rejectConstraint, gv.mismatch[n.name]
	}
	return rejectNone, ""
}
