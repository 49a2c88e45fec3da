package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Queue definitions follow their groups (queues.go says why a queue is a
// cluster group's).

// checkQueueRules refuses a [queue] on a group without [placement]: its
// items live in the cluster state, its parallelism is cluster-wide and its
// workers may run on any node, so it needs one definition in the cluster.
func checkQueueRules(spec *api.GroupSpec) error {
	if spec.Queue == nil || spec.Clustered() {
		return nil
	}
	return fmt.Errorf("group %q: [queue] needs [placement]: a queue's items live in the cluster state and any node may work on them, so the group that defines it is a cluster group; add [placement] (replicas = how many copies work on the queue; on one machine the agent is a one-node cluster): %w",
		spec.Name, api.ErrInvalid)
}

// queueOfSpec is the PutQueue a group's spec asks for, if any.
func queueOfSpec(group string, spec *api.GroupSpec) (raftstore.PutQueue, bool) {
	if spec == nil || spec.Queue == nil {
		return raftstore.PutQueue{}, false
	}
	q := *spec.Queue
	q.Name = q.EffectiveName(group)
	return raftstore.PutQueue{Name: q.Name, Group: group, Spec: q}, true
}

// checkGroupQueue refuses, before the group is written, a queue name that
// another group's queue has.
func (a *Agent) checkGroupQueue(spec *api.GroupSpec) error {
	want, ok := queueOfSpec(spec.Name, spec)
	if !ok {
		return nil
	}
	if q, exists := a.cl.store.Queue(want.Name); exists && q.Group != spec.Name {
		return fmt.Errorf("group %q: queue %q belongs to group %q: name this group's queue otherwise ([queue] name = \"…\"): %w",
			spec.Name, want.Name, q.Group, api.ErrConflict)
	}
	return nil
}

// putGroupQueue writes the queue of a cluster group that was just
// written, and deletes a queue the group defined before but no longer
// does. The leader's reconcileQueues does the same for changes made
// otherwise; this makes the queue usable as soon as apply returns.
func (a *Agent) putGroupQueue(ctx context.Context, spec *api.GroupSpec) error {
	want, ok := queueOfSpec(spec.Name, spec)
	for _, q := range a.cl.store.Queues() {
		if q.Group == spec.Name && (!ok || q.Name != want.Name) {
			if _, err := a.propose(ctx, raftstore.CmdDeleteQueue, raftstore.DeleteQueue{Name: q.Name}); err != nil {
				return fmt.Errorf("delete queue %q, which group %q no longer defines: %w", q.Name, spec.Name, err)
			}
		}
	}
	if !ok {
		return nil
	}
	if q, exists := a.cl.store.Queue(want.Name); exists && q.Group == want.Group && q.Spec == want.Spec {
		return nil
	}
	if _, err := a.propose(ctx, raftstore.CmdPutQueue, want); err != nil {
		return fmt.Errorf("queue %q of group %q: %w", want.Name, spec.Name, err)
	}
	return nil
}

// runQueues runs the queue loops until ctx ends: the container-mode
// worker on every node and, on the leader, the queue chores.
func (a *Agent) runQueues(ctx context.Context) error {
	qs := a.queueState()
	go qs.worker.Run(ctx)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !a.cl.store.IsLeader() {
			qs.mu.Lock()
			clear(qs.requeued) // a later leader starts over
			qs.mu.Unlock()
			continue
		}
		a.reconcileQueues(ctx)
		a.requeueLostNodes(ctx)
	}
}

// reconcileQueues keeps every queue in step with the group that defines
// it: created when missing, its spec updated, deleted when its group is
// gone or defines it no more. A name two groups want stays with the group
// that has it. Leader only.
func (a *Agent) reconcileQueues(ctx context.Context) {
	want := map[string]raftstore.PutQueue{}
	for _, g := range a.cl.store.Groups() {
		if p, ok := queueOfSpec(g.Name, &g.Spec); ok {
			if other, dup := want[p.Name]; dup && other.Group < p.Group {
				continue
			}
			want[p.Name] = p
		}
	}
	have := map[string]raftstore.Queue{}
	for _, q := range a.cl.store.Queues() {
		have[q.Name] = q
		g, ok := a.cl.store.Group(q.Group)
		if p, defines := queueOfSpec(q.Group, &g.Spec); ok && defines && p.Name == q.Name {
			continue
		}
		if _, err := a.propose(ctx, raftstore.CmdDeleteQueue, raftstore.DeleteQueue{Name: q.Name}); err != nil {
			a.log.Warn("delete a queue no group defines", "queue", q.Name, "group", q.Group, "err", err)
			return
		}
		a.log.Info("queue deleted: its group no longer defines it", "queue", q.Name, "group", q.Group)
		delete(have, q.Name)
	}
	for _, name := range sortedKeys(want) {
		p := want[name]
		q, exists := have[name]
		switch {
		case exists && q.Group != p.Group:
			continue // another group's: refused at apply
		case exists && q.Spec == p.Spec:
			continue
		}
		if _, err := a.propose(ctx, raftstore.CmdPutQueue, p); err != nil {
			a.log.Warn("write the queue of a group", "queue", name, "group", p.Group, "err", err)
			return
		}
		a.log.Info("queue written", "queue", name, "group", p.Group, "created", !exists)
	}
}

// requeueLostNodes queues again, at once, the items leased on nodes
// recorded dead: their workers are gone, and waiting out the visibility
// timeout would only delay them (the attempt does not count). Once per
// death of a node. Leader only.
func (a *Agent) requeueLostNodes(ctx context.Context) {
	qs := a.queueState()
	for _, n := range a.cl.store.Nodes() {
		qs.mu.Lock()
		done := qs.requeued[n.Name]
		if n.Status != raftstore.NodeDead {
			delete(qs.requeued, n.Name)
		}
		qs.mu.Unlock()
		if n.Status != raftstore.NodeDead || done == n.Index {
			continue
		}
		leased := 0
		for _, q := range a.cl.store.Queues() {
			for _, it := range a.cl.store.Items(q.Name, raftstore.ItemFilter{State: api.ItemLeased}) {
				if it.Node == n.Name {
					leased++
				}
			}
		}
		if leased > 0 {
			if _, err := a.propose(ctx, raftstore.CmdRequeueNode, raftstore.RequeueNode{Node: n.Name, Now: time.Now()}); err != nil {
				a.log.Warn("requeue the items of a lost node", "node", n.Name, "items", leased, "err", err)
				continue
			}
			a.log.Info("items of a lost node queued again", "node", n.Name, "items", leased)
			a.events.Publish(api.Event{Time: time.Now(), Type: api.EventWarning, Reason: "ItemsRequeued",
				Message: fmt.Sprintf("%d queue items leased on node %s, which is dead, are queued again", leased, n.Name)})
		}
		qs.mu.Lock()
		qs.requeued[n.Name] = n.Index
		qs.mu.Unlock()
	}
}
