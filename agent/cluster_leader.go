package agent

import (
	"context"
	"maps"
	"time"

	"github.com/berth-project/berth/raftstore"
)

// leaderLoop runs the leader's chores: it keeps the nodes in the Raft
// state as gossip sees them (the scheduler moves the allocations of a node
// recorded dead) and, in a cluster, the Raft configuration (voters and
// non-voters). It does nothing on followers.
func (a *Agent) leaderLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var leaderSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.cl.kick:
		}
		if !a.cl.store.IsLeader() {
			leaderSince = time.Time{}
			continue
		}
		if leaderSince.IsZero() {
			leaderSince = time.Now()
		}
		a.reconcileNodes(ctx, time.Since(leaderSince))
		if a.cl.members != nil {
			a.reconcileRaftServers(ctx)
		}
	}
}

// reconcileNodes writes a NodeInfo for every node whose gossip view
// differs from the state. A node in the state that gossip does not know
// at all (this leader restarted and never heard of it) is recorded dead
// once the leader has led for a while.
func (a *Agent) reconcileNodes(ctx context.Context, led time.Duration) {
	want := map[string]raftstore.NodeInfo{}
	if a.cl.members != nil {
		for _, m := range a.cl.members.Members() {
			want[m.Name] = m.NodeInfo()
		}
	}
	want[a.cfg.NodeName] = a.selfInfo()
	have := map[string]raftstore.NodeInfo{}
	for _, n := range a.cl.store.Nodes() {
		have[n.Name] = n
	}
	for name, n := range have {
		if _, ok := want[name]; !ok && led > 10*time.Second && n.Status != raftstore.NodeDead && n.Status != raftstore.NodeLeft {
			n.Status = raftstore.NodeDead
			want[name] = n
		}
	}
	for name, n := range want {
		if old, ok := have[name]; ok && sameNode(old, n) {
			continue
		}
		if _, err := a.propose(ctx, raftstore.CmdPutNode, n); err != nil {
			a.log.Warn("record node", "node", name, "status", n.Status, "err", err)
			return
		}
		a.log.Info("node recorded", "node", name, "status", n.Status)
	}
}

func sameNode(a, b raftstore.NodeInfo) bool {
	return a.Name == b.Name && a.APIAddr == b.APIAddr && a.RaftAddr == b.RaftAddr &&
		a.Capacity == b.Capacity && maps.Equal(a.Labels, b.Labels) && a.Version == b.Version &&
		a.Status == b.Status && a.Server == b.Server
}
