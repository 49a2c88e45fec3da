package cluster

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/berth-project/berth/raftstore"
)

// decide is phase 4: the Decision from the working copy.
func (p *pass) decide() Decision {
	d := Decision{Index: p.st.Index, Next: p.next}
	var lines []string
	for _, id := range slices.Sorted(maps.Keys(p.allocs)) {
		a := p.allocs[id]
		put, line := p.put(a)
		if put == nil {
			continue
		}
		d.Plan.Put = append(d.Plan.Put, *put)
		lines = append(lines, line)
	}
	for _, id := range slices.Sorted(maps.Keys(p.deletes)) {
		d.Plan.Delete = append(d.Plan.Delete, id)
		lines = append(lines, "delete "+id+": "+p.deletes[id])
	}
	d.Actions = append(lines, p.actions...)
	d.Rollouts, d.Reverts = p.rollouts, p.reverts

	add := func(t raftstore.CommandType, payload any) {
		c, err := raftstore.NewCommand(t, payload)
		if err != nil {
			// Every payload here is built to pass validation; say so loudly
			// instead of proposing something the FSM rejects.
			d.Actions = append(d.Actions, "internal error, not proposed: "+err.Error())
			return
		}
		c.Time = p.now.UTC()
		d.Commands = append(d.Commands, c)
	}
	if len(d.Plan.Put) > 0 || len(d.Plan.Delete) > 0 {
		add(raftstore.CmdApplyPlan, d.Plan)
	}
	for _, g := range d.Reverts {
		add(raftstore.CmdPutGroup, g)
	}
	for _, r := range d.Rollouts {
		add(raftstore.CmdSetRollout, r)
	}
	return d
}

// put returns the allocation to write for a, or nil when a is unchanged,
// and the line that says what changes.
func (p *pass) put(a *alloc) (*raftstore.Allocation, string) {
	o := a.orig
	out := a.Allocation
	out.Generation, out.UpdatedAt, out.Index = 0, time.Time{}, 0
	clearStatus := func() { out.Status, out.Ready, out.Reason = "", false, "" }
	g := a.group.g
	switch {
	case o == nil && a.Node != "":
		out.PlacedAt = p.now
		clearStatus()
		return &out, fmt.Sprintf("place %s on %s", a.ID, a.Node)
	case o == nil:
		out.PlacedAt = time.Time{}
		clearStatus()
		return &out, fmt.Sprintf("%s pending: %s", a.ID, a.Pending)
	case a.placed && (a.Node != o.Node || a.retry):
		clearStatus()
		why := ""
		if a.why != "" {
			why = ": " + a.why
		}
		switch {
		case a.Node == "":
			out.PlacedAt = time.Time{}
			if o.Node == "" {
				return &out, fmt.Sprintf("%s pending: %s", a.ID, a.Pending)
			}
			return &out, fmt.Sprintf("unplace %s from %s%s; pending: %s", a.ID, o.Node, why, a.Pending)
		case a.retry:
			out.PlacedAt = p.now
			return &out, fmt.Sprintf("restart %s on %s as a new generation%s (no other node fits)", a.ID, a.Node, why)
		case o.Node == "":
			out.PlacedAt = p.now
			return &out, fmt.Sprintf("place %s on %s", a.ID, a.Node)
		}
		out.PlacedAt = p.now
		return &out, fmt.Sprintf("move %s from %s to %s%s", a.ID, o.Node, a.Node, why)
	case a.respec:
		out.PlacedAt = p.now
		clearStatus()
		return &out, fmt.Sprintf("roll %s on %s to generation %d", a.ID, a.Node, g.Generation)
	case a.meta:
		return &out, fmt.Sprintf("rewrite %s to generation %d (spec unchanged but for [placement]: no restart)", a.ID, g.Generation)
	case a.Node == "" && (a.Pending != o.Pending || a.GroupGeneration != o.GroupGeneration):
		return &out, fmt.Sprintf("%s pending: %s", a.ID, a.Pending)
	case a.Shard != o.Shard || a.Replica != o.Replica:
		return &out, fmt.Sprintf("fix %s: shard %d, replica %d", a.ID, a.Shard, a.Replica)
	}
	return nil, ""
}
