package cluster

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Rolling updates.
//
// Every change of a group's spec raises its Generation G and starts a
// rollout (the FSM does both: CmdPutGroup). An allocation at a lower
// GroupGeneration must move to the group's spec:
//
//   - nothing runs it (no node): it takes the new spec at once;
//   - its spec differs from the group's only in [placement] (or not at
//     all: a revert to the spec it runs): it is rewritten at once, on the
//     same node, keeping its status: its agent has nothing to restart;
//   - otherwise it is replaced in place, max_parallel at a time: same
//     node, new spec, PlacedAt now, a new allocation generation, status
//     cleared. The next batch starts only when no allocation of G is in
//     flight, that is placed since the rollout started and not yet Running
//     and Ready: batches, not a sliding window. Stale allocations that are
//     not Running and Ready anyway go first: replacing them loses nothing.
//
// Allocations placed anew (new, moved, re-placed) take G's spec at once
// and count as in flight like a batch.
//
// The rollout's state machine (raftstore.Rollout.State):
//
//	              every placed allocation at G, Running and Ready
//	progressing ─────────────────────────────────────────────────► complete
//	     │                                             (reverted, for a revert)
//	     │ an allocation of G placed since the start is not Running
//	     │ and Ready by PlacedAt + healthy_deadline
//	     ├── not a revert, a previous spec exists ──► CmdPutGroup(previous,
//	     │        Revert): generation G+1, a new progressing rollout that
//	     │        the same machinery carries back to the old spec
//	     └── a revert, or no previous spec ─────────► failed (the reason
//	              names the allocation; stale allocations stay as they are)
//
// Verdicts are judged on the allocations as this pass leaves them. The
// verdict commands come after the pass's Plan, and Run stops at the first
// command that fails, so a verdict is never recorded without the Plan it
// was judged on.

// rollout is phase 3 for one group.
func (p *pass) rollout(gv *groupView) {
	g := gv.g
	r := raftstore.Rollout{Generation: g.Generation, State: raftstore.RolloutProgressing}
	if g.Rollout != nil {
		r = *g.Rollout
	}
	groupSpec := specKey(&g.Spec)
	var stale []*alloc
	for _, a := range gv.allocs {
		if a.Node == "" || a.GroupGeneration >= g.Generation || a.placed {
			continue
		}
		if a.Spec != nil && specKey(a.Spec) == groupSpec { // SameWorkload
			p.rewriteMeta(a)
			continue
		}
		stale = append(stale, a)
	}
	if r.State != raftstore.RolloutProgressing || r.Generation != g.Generation {
		return // finished, or failed: stale allocations stay as they are
	}

	var inflight []*alloc
	var late *alloc
	deadline := time.Duration(gv.pl.Deadline())
	for _, a := range gv.allocs {
		if a.Node == "" || a.GroupGeneration != g.Generation || (a.Status == api.GroupRunning && a.Ready) {
			continue
		}
		if !r.StartedAt.IsZero() && a.PlacedAt.Before(r.StartedAt) {
			continue // at G since before this rollout: not its doing
		}
		inflight = append(inflight, a)
		if a.placed {
			continue // placed in this pass: its deadline starts now
		}
		if end := a.PlacedAt.Add(deadline); p.now.Before(end) {
			p.wake(end)
		} else if late == nil {
			late = a
		}
	}
	if late != nil {
		p.rolloutFailed(gv, r, late, deadline)
		return
	}
	if len(stale) == 0 && len(inflight) == 0 {
		p.rolloutDone(gv, r)
		return
	}
	if len(inflight) > 0 || len(stale) == 0 {
		return // the batch in flight must be Running and Ready first
	}
	slots := gv.pl.Parallel()
	// Not Running and Ready first: replacing those costs nothing.
	slices.SortStableFunc(stale, func(a, b *alloc) int {
		return cmp.Compare(healthy(a), healthy(b))
	})
	batch := stale[:min(slots, len(stale))]
	ids := make([]string, len(batch))
	for i, a := range batch {
		p.rewrite(a)
		ids[i] = a.ID
	}
	p.actions = append(p.actions, fmt.Sprintf("rollout of %s generation %d: replace %s (max_parallel %d, %d left after)",
		gv.name, g.Generation, strings.Join(ids, ", "), gv.pl.Parallel(), len(stale)-len(batch)))
}

// healthy is 1 for Running and Ready, else 0: the sort key of stale
// allocations.
func healthy(a *alloc) int {
	if a.Status == api.GroupRunning && a.Ready {
		return 1
	}
	return 0
}

// rewriteMeta moves a to its group's generation without a restart.
func (p *pass) rewriteMeta(a *alloc) {
	node := a.Node
	p.setNode(a, "")
	a.Spec, a.GroupGeneration = &a.group.g.Spec, a.group.g.Generation
	p.setNode(a, node)
	a.placed, a.meta = false, true
}

// rewrite replaces a in place with its group's spec (one of a batch).
func (p *pass) rewrite(a *alloc) {
	node := a.Node
	p.setNode(a, "")
	a.Spec, a.GroupGeneration, a.PlacedAt = &a.group.g.Spec, a.group.g.Generation, p.now
	a.Status, a.Ready, a.Reason = "", false, ""
	p.setNode(a, node)
	a.placed, a.respec = false, true
}

// rolloutFailed reverts gv to its previous spec, or marks the rollout
// failed when it is a revert itself or there is nothing to revert to.
func (p *pass) rolloutFailed(gv *groupView, r raftstore.Rollout, late *alloc, deadline time.Duration) {
	g := gv.g
	what := fmt.Sprintf("%s is not Running and Ready within healthy_deadline %s of being placed on %s at %s (status %q",
		late.ID, deadline, late.Node, late.PlacedAt.UTC().Format(time.RFC3339), late.Status)
	if late.Reason != "" {
		what += ", " + late.Reason
	}
	what += ")"
	if r.Revert || g.Previous == nil {
		reason := what
		switch {
		case r.Revert:
			reason = "reverting to the previous spec failed too: " + what
		default:
			reason = "no previous spec to revert to: " + what
		}
		p.rollouts = append(p.rollouts, raftstore.SetRollout{Group: g.Name, Rollout: raftstore.Rollout{
			Generation: g.Generation, State: raftstore.RolloutFailed, Reason: reason}})
		p.actions = append(p.actions, fmt.Sprintf("rollout of %s generation %d failed: %s", gv.name, g.Generation, reason))
		return
	}
	p.reverts = append(p.reverts, raftstore.Group{
		Name: g.Name,
		Spec: *g.Previous,
		// The next generation, explicitly: should the group change between
		// this pass and the proposal, the FSM refuses the revert (a
		// conflict) instead of undoing the newer spec.
		Generation: g.Generation + 1,
		Rollout:    &raftstore.Rollout{State: raftstore.RolloutProgressing, Revert: true},
	})
	p.actions = append(p.actions, fmt.Sprintf("rollout of %s generation %d failed, reverting to the previous spec: %s",
		gv.name, g.Generation, what))
}

// rolloutDone records that every allocation runs the group's generation.
func (p *pass) rolloutDone(gv *groupView, r raftstore.Rollout) {
	g := gv.g
	done := raftstore.Rollout{Generation: g.Generation, State: raftstore.RolloutComplete}
	line := fmt.Sprintf("rollout of %s generation %d complete", gv.name, g.Generation)
	if r.Revert {
		done.State = raftstore.RolloutReverted
		done.Reason = "back on the spec before the failed update"
		line = fmt.Sprintf("rollout of %s generation %d complete: reverted to the spec before the failed update", gv.name, g.Generation)
	}
	unplaced := 0
	for _, a := range gv.allocs {
		if a.Node == "" {
			unplaced++
		}
	}
	if unplaced > 0 {
		// Nothing to wait for: what runs, runs the new spec. The unplaced
		// ones carry their own Pending reason.
		note := fmt.Sprintf("%d of %d allocations unplaced", unplaced, len(gv.allocs))
		if done.Reason != "" {
			done.Reason += "; "
		}
		done.Reason += note
		line += " (" + note + ")"
	}
	p.rollouts = append(p.rollouts, raftstore.SetRollout{Group: g.Name, Rollout: done})
	p.actions = append(p.actions, line)
}

// SameWorkload reports whether two group specs differ at most in their
// [placement]: an allocation rewritten from one to the other keeps
// running as it is. The scheduler rewrites such allocations without a
// restart, all at once; an agent that sees its allocation's spec change
// this way must not restart it either. nil equals only nil.
func SameWorkload(a, b *api.GroupSpec) bool {
	if a == nil || b == nil {
		return a == b
	}
	return specKey(a) == specKey(b)
}

// specKey is spec without [placement], encoded: two specs with the same
// key run the same containers.
func specKey(spec *api.GroupSpec) string {
	s := *spec
	s.Placement = nil
	data, err := json.Marshal(&s)
	if err != nil {
		return "unencodable: " + err.Error() // never equal to a real encoding
	}
	return string(bytes.TrimSpace(data))
}
