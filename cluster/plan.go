package cluster

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// The scheduler's planning: a pure function from the replicated state and
// a clock reading to the commands that move the cluster towards what its
// groups ask. Schedule does no I/O and reads no clock; the same state,
// time and options give the same Decision, byte for byte, on any machine.
//
// One pass runs in four phases over a working copy of the allocations:
//
//  1. validate (plan_validate.go): delete allocations whose group is gone or that a
//     scale-down dropped, create the missing ones unplaced, and unplace
//     the ones that must leave their node: node gone, dead or left for
//     longer than Options.DeadGrace, draining, no longer matching the
//     group's constraints, Failed there (at most every FailedRetry), or a
//     second copy where only one is allowed (spread = "node", or two
//     replicas of one shard).
//  2. place (plan_replicas.go, plan_shards.go, plan_preempt.go): groups in
//     priority order, highest first, then by name; each group places its
//     unplaced allocations, preempting strictly lower priorities when a
//     node has everything but the room.
//  3. roll out (plan_rollout.go): move allocations to their group's
//     generation, in batches of max_parallel, judging healthy_deadline,
//     reverting a failed update and marking finished rollouts.
//  4. decide (plan_decide.go): compare the working copy with the state and turn
//     every difference into one raftstore.Plan, followed by the rollout
//     commands.
//
// Groups are placed one after the other, so a later group can free room
// (moving off a dead node, spreading out, shedding) that an earlier one
// could have used; phase 2 therefore sweeps over the groups again while a
// sweep changes something (at most three sweeps). The Pending reason of
// what stays unplaced is written after the last sweep, on the final
// placement.
//
// A pass over the state its own Decision produced decides nothing (except
// after a revert, whose new group generation the next pass rolls out): the
// scheduler converges in one pass instead of rewriting allocations
// forever. TestRandomHistoriesKeepTheInvariants holds it to that over
// seeded random histories (BERTH_SCHED_SEEDS=1000 for more of them).
//
// What a pass does not remember: the node an allocation failed on is
// avoided only in the pass that moves it. A shard or a spread = "prefer"
// replica that was moved off a node it failed on may later be moved back
// there by rebalancing (take back, respread) once it runs well elsewhere;
// if it fails there again it moves again, at most every FailedRetry plus
// the time it takes to become Ready.

// Defaults of Options.
const (
	DefaultLoadFactor  = 1.10
	DefaultFailedRetry = 10 * time.Second
)

// Options tune Schedule and Scheduler. The zero value is the default for
// every field.
type Options struct {
	// DeadGrace is how long after a node became dead or left (its
	// NodeInfo.UpdatedAt) its allocations stay before they are placed
	// elsewhere. 0 moves them at once.
	DeadGrace time.Duration
	// Priority resolves a group's priority; nil means spec.Priority.Value
	// (the agent passes its resolver of priority classes).
	Priority func(*api.GroupSpec) int64
	// LoadFactor bounds how many allocations of one sharded group a node
	// may hold: LoadFactor × the group's mean per node (see shardBound).
	// Below 1 means DefaultLoadFactor.
	LoadFactor float64
	// FailedRetry is the shortest time between two re-placements of an
	// allocation that keeps failing; 0 means DefaultFailedRetry.
	FailedRetry time.Duration

	// Coalesce, LeaderPoll and RetryBackoff tune Scheduler.Run only; see
	// there for their defaults.
	Coalesce     time.Duration
	LeaderPoll   time.Duration
	RetryBackoff time.Duration
}

func (o Options) withDefaults() Options {
	if o.Priority == nil {
		o.Priority = func(s *api.GroupSpec) int64 { return s.Priority.Value }
	}
	if o.LoadFactor < 1 || math.IsNaN(o.LoadFactor) || math.IsInf(o.LoadFactor, 0) {
		o.LoadFactor = DefaultLoadFactor
	}
	if o.FailedRetry <= 0 {
		o.FailedRetry = DefaultFailedRetry
	}
	if o.DeadGrace < 0 {
		o.DeadGrace = 0
	}
	return o
}

// Decision is what one scheduling pass wants proposed.
type Decision struct {
	// Index is the State.Index the decision was computed from.
	Index uint64
	// Plan holds every allocation put and delete of the pass; it is empty
	// when nothing moves.
	Plan raftstore.Plan
	// Rollouts are rollout verdicts (complete, reverted, failed).
	Rollouts []raftstore.SetRollout
	// Reverts are groups put back to their previous spec after a failed
	// rolling update (CmdPutGroup with Rollout.Revert).
	Reverts []raftstore.Group
	// Commands are the commands to propose, in order: the Plan (when not
	// empty), then the reverts, then the rollout verdicts. Each one's Time
	// is the now given to Schedule.
	Commands []raftstore.Command
	// Next is when Schedule must run again even if the state does not
	// change: the end of a dead node's grace, a healthy deadline, a failed
	// allocation's retry. Zero means not before the next change.
	Next time.Time
	// Actions say what the pass did and why, one line each, for logs and
	// events.
	Actions []string
}

// Empty reports whether the decision proposes nothing.
func (d Decision) Empty() bool { return len(d.Commands) == 0 }

// AllocationID names an allocation, and the local group its agent runs it
// as: "<group>.<replica>" for a replicated group, "<group>.s<shard>.<replica>"
// for a sharded one. Group names are DNS labels, so the dot keeps these
// names apart from every local group's.
func AllocationID(group string, shard, replica int, sharded bool) string {
	if sharded {
		return group + ".s" + strconv.Itoa(shard) + "." + strconv.Itoa(replica)
	}
	return group + "." + strconv.Itoa(replica)
}

// Schedule computes one scheduling pass over st at time now. It never
// changes st. See the comment at the top of plan.go for what a pass does.
func Schedule(st raftstore.State, now time.Time, opts Options) Decision {
	p := newPass(st, now, opts.withDefaults())
	p.validate()
	// Groups are placed one after the other, so a later group can free
	// room (moving off a dead node, spreading out, shedding) that an
	// earlier one could have used: for an allocation still waiting, or a
	// shard still above its load bound. Another sweep gives them that
	// chance in this pass rather than the next; a sweep that changes
	// nothing ends it.
	for sweep := 0; sweep < 3; sweep++ {
		changes := p.changes
		for _, gv := range p.order {
			if gv.sharded {
				p.placeSharded(gv)
			} else {
				p.placeReplicated(gv)
			}
		}
		if p.changes == changes {
			break
		}
	}
	p.explainPending()
	for _, gv := range p.byName {
		p.rollout(gv)
	}
	return p.decide()
}

// alloc is the working copy of one allocation during a pass.
type alloc struct {
	raftstore.Allocation
	// orig is the allocation in the state; nil for a new one.
	orig  *raftstore.Allocation
	group *groupView
	// req is the request counted on Node (of Spec, else the group's).
	req api.Resources

	// placed: Node was chosen in this pass (new, moved, unplaced, or
	// placed back where it was); decide keeps the state's copy when the
	// node did not change after all, unless retry.
	placed bool
	// retry: placed back on the node it failed on, as a new generation.
	retry bool
	// respec: rewritten in place to the group's spec (a rolling update
	// batch); meta: the same, without a restart ([placement] changes only).
	respec, meta bool
	// avoid is the node it failed on; shedFrom the node a load-bound shed
	// took it from (it goes back there when nothing better takes it).
	avoid, shedFrom string
	// why says why it left its node, for Actions.
	why string
	// preempted: unplaced by a higher priority in this pass.
	preempted bool
}

// groupView is what a pass knows of one group.
type groupView struct {
	name    string
	g       raftstore.Group
	pl      *api.PlacementSpec // never nil
	sharded bool
	prio    int64
	req     api.Resources
	// mismatch maps each node to the first constraint it fails ("" when it
	// matches every one).
	mismatch map[string]string
	// allocs are the group's wanted allocations, ordered by shard, then
	// replica.
	allocs []*alloc
}

// shardCount and replicaCount are the group's shape with overrides.
func (gv *groupView) shardCount() int { return gv.pl.Shards }

func (gv *groupView) replicas(shard int) int {
	if gv.sharded {
		return gv.g.ShardReplicaCount(shard)
	}
	return gv.g.ReplicaCount()
}

// pass is one run of Schedule.
type pass struct {
	st   raftstore.State
	now  time.Time
	opts Options

	nodes     map[string]*nodeView
	nodeNames []string // every node view, sorted

	groups  map[string]*groupView
	byName  []*groupView // sorted by name
	order   []*groupView // placement order: priority desc, then name
	allocs  map[string]*alloc
	deletes map[string]string       // id → why
	placers map[string]*shardPlacer // sharded groups' placement state
	changes int                     // node assignments made, to detect a quiet sweep

	actions  []string // preemption and rollout lines, in decision order
	rollouts []raftstore.SetRollout
	reverts  []raftstore.Group
	next     time.Time
}

func newPass(st raftstore.State, now time.Time, opts Options) *pass {
	p := &pass{
		st: st, now: now, opts: opts,
		nodes:   map[string]*nodeView{},
		groups:  map[string]*groupView{},
		allocs:  map[string]*alloc{},
		deletes: map[string]string{},
		placers: map[string]*shardPlacer{},
	}
	for _, name := range slices.Sorted(maps.Keys(st.Nodes)) {
		p.addNode(name, st.Nodes[name], true)
	}
	for _, name := range slices.Sorted(maps.Keys(st.Groups)) {
		g := st.Groups[name]
		pl := g.Spec.Placement
		if pl == nil {
			pl = &api.PlacementSpec{}
		}
		gv := &groupView{
			name: name, g: g, pl: pl, sharded: pl.Sharded(),
			prio: opts.Priority(&g.Spec), req: g.Spec.Request(),
			mismatch: map[string]string{},
		}
		p.groups[name] = gv
		p.byName = append(p.byName, gv)
	}
	p.order = slices.Clone(p.byName)
	slices.SortStableFunc(p.order, func(a, b *groupView) int {
		switch {
		case a.prio > b.prio:
			return -1
		case a.prio < b.prio:
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	// Nodes named by allocations but unknown to the state get a view too,
	// so that every placed allocation is counted somewhere.
	for _, id := range slices.Sorted(maps.Keys(st.Allocations)) {
		a := st.Allocations[id]
		if a.Node != "" && p.nodes[a.Node] == nil {
			p.addNode(a.Node, raftstore.NodeInfo{Name: a.Node}, false)
		}
	}
	p.nodeNames = slices.Sorted(maps.Keys(p.nodes))
	for _, gv := range p.byName {
		for _, n := range p.nodeNames {
			if ok, failed := gv.pl.MatchConstraints(p.nodes[n].info.Labels); !ok {
				gv.mismatch[n] = failed
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(st.Allocations)) {
		orig := st.Allocations[id]
		a := &alloc{Allocation: orig, orig: &orig, group: p.groups[orig.Group]}
		p.allocs[id] = a
		if a.Node != "" {
			a.req = p.request(a)
			p.nodes[a.Node].add(a)
		}
	}
	return p
}

// request is what a counts on its node: its own spec's request, else its
// group's.
func (p *pass) request(a *alloc) api.Resources {
	if a.Spec != nil {
		return a.Spec.Request()
	}
	if a.group != nil {
		return a.group.req
	}
	return api.Resources{}
}

// setNode moves a's accounting from its node to node ("" = unplaced).
func (p *pass) setNode(a *alloc, node string) {
	p.changes++
	if a.Node != "" {
		p.nodes[a.Node].remove(a)
	}
	a.Node = node
	a.placed = true
	if node != "" {
		a.req = p.request(a)
		p.nodes[node].add(a)
	}
}

// place puts a on node with its group's current spec. Placed back on the
// node it came from (a shed that found nothing better, a move undone in a
// later round), it is the state's allocation again, unchanged; unless that
// is the node it failed on: then it is a retry, a new generation there.
func (p *pass) place(a *alloc, node string) {
	p.setNode(a, "")
	a.retry = node != "" && node == a.avoid
	if o := a.orig; o != nil && o.Node == node && !a.retry {
		shard, replica := a.Shard, a.Replica
		a.Allocation = *o
		a.Shard, a.Replica, a.Node = shard, replica, ""
		p.setNode(a, node)
		a.placed, a.why, a.shedFrom = false, "", ""
		return
	}
	a.Spec, a.GroupGeneration = &a.group.g.Spec, a.group.g.Generation
	a.Pending, a.PlacedAt = "", p.now
	a.Status, a.Ready, a.Reason = "", false, ""
	p.setNode(a, node)
}

// pend leaves a unplaced, at its group's generation (nothing runs it, so
// nothing needs rolling). Its Pending reason is written at the end of the
// placement phase (explainPending), on the final placement, so that the
// next pass, seeing the same placement, gives the same reason.
func (p *pass) pend(a *alloc) {
	if a.Node != "" {
		p.setNode(a, "")
	}
	a.Spec, a.GroupGeneration = &a.group.g.Spec, a.group.g.Generation
	a.Status, a.Ready, a.Reason = "", false, ""
}

// explainPending writes the Pending reason of every unplaced allocation.
// A preempted allocation says so until it is placed again: "preempted by
// <group> (priority P); <why it is still waiting>".
func (p *pass) explainPending() {
	for _, gv := range p.byName {
		var holders map[string]int
		for _, a := range gv.allocs {
			if a.Node != "" {
				continue
			}
			var reason string
			if gv.sharded {
				reason = p.placers[gv.name].explain(a)
			} else {
				if holders == nil {
					holders = p.holders(gv)
				}
				reason = p.explainReplica(gv, a, holders)
			}
			var preempted string
			switch {
			case a.preempted:
				preempted = a.Pending
			case a.orig != nil && a.orig.Node == "" && strings.HasPrefix(a.orig.Pending, preemptedPrefix):
				preempted, _, _ = strings.Cut(a.orig.Pending, "; ")
			}
			if preempted != "" {
				reason = preempted + "; " + reason
			}
			a.Pending = reason
		}
	}
}

// unplace takes a off its node; why (the first reason given in this pass)
// goes into the decision's Actions.
func (p *pass) unplace(a *alloc, why string) {
	if a.Node != "" && a.why == "" {
		a.why = why
	}
	p.setNode(a, "")
}

// wake records that the state must be looked at again at t.
func (p *pass) wake(t time.Time) {
	if t.After(p.now) && (p.next.IsZero() || t.Before(p.next)) {
		p.next = t
	}
}
