package agent

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Allocations of cluster groups run on their node as ordinary groups named
// after the allocation ("web.1", "kv.s3.0": the dot keeps them apart from
// local group names, which are DNS labels) with Source "cluster". They go
// through the same admission, supervision and status as local groups; the
// agent only adds them, changes their spec and removes them as the Raft
// state says.

// isAllocationName reports whether a local group name is an allocation's.
func isAllocationName(name string) bool { return strings.Contains(name, ".") }

// allocationSpec is the spec an allocation runs under on its node: the
// cluster group's spec at the allocation's generation, named after the
// allocation, without [placement] (so a placement-only change does not
// restart it).
func allocationSpec(al raftstore.Allocation) *api.GroupSpec {
	s := *al.Spec
	s.Name = al.ID
	s.Placement = nil
	return &s
}

// allocationEnv is what the containers of an allocation learn of their
// place in the cluster.
func allocationEnv(al raftstore.Allocation) []string {
	env := []string{"BERTH_GROUP=" + al.Group, "BERTH_REPLICA=" + strconv.Itoa(al.Replica)}
	if p := al.Spec.Placement; p.Sharded() {
		env = append(env, "BERTH_SHARD="+strconv.Itoa(al.Shard), "BERTH_SHARDS="+strconv.Itoa(p.Shards))
	}
	return env
}

// watchAllocations makes this node run exactly its allocations, on every
// change of the Raft state.
func (a *Agent) watchAllocations(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	watch := a.cl.store.Watch(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-watch:
			if !ok {
				return
			}
		case <-tick.C:
			// Also when nothing is applied: checkCaughtUp's barrier may
			// have come back since the last pass.
		}
		a.syncAllocations()
	}
}

// syncAllocations adds, updates and removes allocation groups.
func (a *Agent) syncAllocations() {
	caughtUp := a.cl.checkCaughtUp()
	want := map[string]raftstore.Allocation{}
	for _, al := range a.cl.store.NodeAllocations(a.cfg.NodeName) {
		if al.Spec != nil && !queueRunsItems(al.Spec) { // queue_worker.go runs those
			want[al.ID] = al
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := false
	for _, id := range slices.Sorted(maps.Keys(want)) {
		al := want[id]
		if g, ok := a.groups[id]; ok && g.Source != api.SourceCluster {
			a.log.Error("allocation name taken by a local group; not running it", "allocation", id, "source", g.Source)
			continue
		}
		action, _ := a.upsertLocked(allocationSpec(al), api.SourceCluster)
		g := a.groups[id]
		if _, running := a.sup.Status(id); action == api.ActionCreated && running {
			// Running before an agent restart: it holds its room.
			g.adm = admission{admitted: true, admittedAt: time.Now()}
		}
		env := allocationEnv(al)
		if action != api.ActionUnchanged || !slices.Equal(g.env, env) {
			g.env = env
			a.pushLocked(id)
			changed = true
		}
	}
	for name, g := range a.groups {
		if g.Source == api.SourceCluster {
			if _, ok := want[name]; !ok {
				a.log.Info("allocation moved away or deleted; stopping it", "allocation", name)
				a.removeLocked(name)
				changed = true
			}
		}
	}
	if caughtUp {
		// Allocations found in containerd at start that the state no
		// longer gives this node (it was away while they moved).
		for _, st := range a.sup.List() {
			if _, ok := a.groups[st.Name]; !ok && isAllocationName(st.Name) && st.State != api.GroupDeleting {
				a.log.Info("stopping an allocation this node no longer owns", "allocation", st.Name)
				a.sup.Remove(st.Name)
			}
		}
	}
	if changed {
		if err := a.savePersistedLocked(); err != nil {
			a.log.Error("save agent state", "err", err)
		}
		a.admitLocked()
	}
}

// reportAllocations writes the status and readiness of this node's
// allocations into Raft: one batched command for everything that changed,
// soon after a group event and at least every few seconds, never a write
// per probe.
func (a *Agent) reportAllocations(ctx context.Context) {
	const (
		debounce = 50 * time.Millisecond
		resync   = 2 * time.Second
	)
	_, events, cancel := a.events.Subscribe("")
	defer func() { cancel() }()
	timer := time.NewTimer(resync)
	defer timer.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				// Fell behind: resubscribe and report everything.
				_, events, cancel = a.events.Subscribe("")
				timer.Reset(debounce)
				continue
			}
			if isAllocationName(ev.Group) && !pending {
				pending = true
				timer.Reset(debounce)
			}
			continue
		case <-timer.C:
		}
		pending = false
		a.reportOnce(ctx)
		timer.Reset(resync)
	}
}

// reportOnce proposes the status changes of this node's allocations.
func (a *Agent) reportOnce(ctx context.Context) {
	var updates []raftstore.AllocationStatus
	for _, al := range a.cl.store.NodeAllocations(a.cfg.NodeName) {
		st, ok := a.status(al.ID, false)
		if !ok || st.State == "" {
			continue
		}
		a.mu.Lock()
		g := a.groups[al.ID]
		current := g != nil && al.Spec != nil && g.Hash == specHash(allocationSpec(al))
		a.mu.Unlock()
		if !current {
			continue // not yet running this generation's spec
		}
		reason := st.Reason
		if st.Message != "" && st.State != api.GroupRunning {
			reason = strings.TrimSpace(reason + ": " + st.Message)
		}
		ready := st.Ready && st.State == api.GroupRunning
		if al.Status == st.State && al.Ready == ready && al.Reason == reason {
			continue
		}
		updates = append(updates, raftstore.AllocationStatus{
			ID: al.ID, Generation: al.Generation, Node: a.cfg.NodeName,
			Status: st.State, Ready: ready, Reason: reason,
		})
	}
	if len(updates) == 0 {
		return
	}
	if _, err := a.propose(ctx, raftstore.CmdSetAllocationStatus, raftstore.SetAllocationStatus{Updates: updates}); err != nil && ctx.Err() == nil {
		a.log.Warn("report allocation status", "allocations", len(updates), "err", err)
	}
}
