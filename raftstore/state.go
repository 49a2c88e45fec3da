package raftstore

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/berth-project/berth/api"
)

// State is the replicated state: what every member holds in memory and
// what a snapshot contains. Each entry carries Index, the Raft index of the
// command that last changed it. Values read through Store or FSM are
// copies: changing them changes nothing replicated.
type State struct {
	// Index is the Raft index of the last command the FSM applied,
	// including commands it rejected.
	Index       uint64                `json:"index"`
	Groups      map[string]Group      `json:"groups"`
	Allocations map[string]Allocation `json:"allocations"`
	Nodes       map[string]NodeInfo   `json:"nodes"`
	// Leases by key (LeaseKey) and queue definitions by name. A queue's
	// items are not in the State (which readers copy whole): read them
	// with Items, Item, LeasedItems; snapshots hold them.
	Leases map[string]Lease `json:"leases,omitempty"`
	Queues map[string]Queue `json:"queues,omitempty"`
}

// Group is a cluster group: a group spec with a [placement] that the
// scheduler turns into allocations.
type Group struct {
	Name string        `json:"name"`
	Spec api.GroupSpec `json:"spec"`
	// Generation grows by one with every change of Spec; allocations
	// record the generation they run.
	Generation int64 `json:"generation"`
	// Previous is the spec this one replaced (the FSM keeps it): what a
	// failed rolling update reverts to.
	Previous *api.GroupSpec `json:"previous,omitempty"`
	// Rollout is the state of the rollout of Generation; the FSM starts
	// one on every change of Spec and the scheduler moves it on
	// (CmdSetRollout).
	Rollout *Rollout `json:"rollout,omitempty"`
	// Replicas, when above 0, overrides Spec.Placement.Replicas
	// (agentctl scale, or the group asking for itself).
	Replicas int `json:"replicas,omitempty"`
	// ShardReplicas overrides the replica count of single shards (hot
	// shards: agentctl scale --shard K --replicas M).
	ShardReplicas map[int]int `json:"shard_replicas,omitempty"`
	// Index is set by the FSM; it is ignored in commands.
	Index uint64 `json:"index,omitempty"`
}

// Rollout states.
const (
	RolloutProgressing = "progressing"
	RolloutComplete    = "complete"
	RolloutReverted    = "reverted"
	RolloutFailed      = "failed"
)

// Rollout is the progress of one group generation onto its allocations.
type Rollout struct {
	Generation int64 `json:"generation"`
	// State is progressing, complete, reverted or failed.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Revert marks the rollout of a spec that a failed update reverted
	// to; it is not reverted again when it fails.
	Revert    bool      `json:"revert,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// ReplicaCount is the group's replica count with the scale override.
func (g Group) ReplicaCount() int {
	if g.Replicas > 0 {
		return g.Replicas
	}
	if g.Spec.Placement == nil {
		return 1
	}
	return g.Spec.Placement.ReplicaCount()
}

// ShardReplicaCount is shard's replica count with the overrides.
func (g Group) ShardReplicaCount(shard int) int {
	if n, ok := g.ShardReplicas[shard]; ok && n > 0 {
		return n
	}
	if g.Spec.Placement == nil {
		return 1
	}
	return g.Spec.Placement.ShardReplicaCount()
}

// Allocation is one instance of a cluster group placed on a node: one
// replica, or one shard, of the group.
type Allocation struct {
	// ID is unique in the cluster, chosen by the scheduler.
	ID      string `json:"id"`
	Group   string `json:"group"`
	Replica int    `json:"replica"`
	Shard   int    `json:"shard"`
	// Node is the node that runs it; empty while it cannot be placed.
	Node string `json:"node,omitempty"`
	// GroupGeneration is the group generation whose spec it runs, and
	// Spec that spec: during a rolling update allocations of two
	// generations run side by side, so each carries its own.
	GroupGeneration int64          `json:"group_generation"`
	Spec            *api.GroupSpec `json:"spec,omitempty"`
	// PlacedAt is when the scheduler last placed or rewrote it: the start
	// of its healthy_deadline during a rollout.
	PlacedAt time.Time `json:"placed_at,omitzero"`
	// Pending says why it has no node (no node fits, constraints, …).
	Pending string `json:"pending,omitempty"`
	// Generation grows by one each time the scheduler rewrites the
	// allocation (moves it, or moves it to a newer group generation); a
	// status report for an older generation is ignored, so a node that
	// comes back cannot overwrite the status of an allocation moved away.
	Generation int64 `json:"generation"`
	// Status is the group's state on the node, as its agent reports it;
	// empty until the first report.
	Status api.GroupState `json:"status,omitempty"`
	Ready  bool           `json:"ready"`
	Reason string         `json:"reason,omitempty"`
	// UpdatedAt is the proposer's clock at the last change (Command.Time).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Index is set by the FSM; it is ignored in commands.
	Index uint64 `json:"index,omitempty"`
}

// NodeInfo is what the cluster knows of one agent.
type NodeInfo struct {
	Name     string            `json:"name"`
	APIAddr  string            `json:"api_addr"`
	RaftAddr string            `json:"raft_addr"`
	Capacity api.Resources     `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Version is the agent's build version.
	Version string     `json:"version,omitempty"`
	Status  NodeStatus `json:"status"`
	// Server says the node is a Raft voter candidate.
	Server bool `json:"server,omitempty"`
	// Drain asks the scheduler to move the node's allocations away and
	// place nothing new on it (CmdSetNodeDrain; PutNode keeps it).
	Drain bool `json:"drain,omitempty"`
	// UpdatedAt is the proposer's clock at the last change (Command.Time).
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// Index is set by the FSM; it is ignored in commands.
	Index uint64 `json:"index,omitempty"`
}

// NodeStatus is a node's membership status, as the cluster package decides
// it from memberlist. raftstore only stores it.
type NodeStatus string

const (
	NodeAlive   NodeStatus = "alive"
	NodeSuspect NodeStatus = "suspect"
	NodeDead    NodeStatus = "dead"
	NodeLeft    NodeStatus = "left"
)

func (s NodeStatus) String() string { return string(s) }

// Valid reports whether s is one of the known statuses.
func (s NodeStatus) Valid() bool {
	switch s {
	case NodeAlive, NodeSuspect, NodeDead, NodeLeft:
		return true
	}
	return false
}

func newState() State {
	return State{
		Groups:      map[string]Group{},
		Allocations: map[string]Allocation{},
		Nodes:       map[string]NodeInfo{},
		Leases:      map[string]Lease{},
		Queues:      map[string]Queue{},
	}
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	c := State{
		Index:       s.Index,
		Groups:      make(map[string]Group, len(s.Groups)),
		Allocations: maps.Clone(s.Allocations),
		Nodes:       make(map[string]NodeInfo, len(s.Nodes)),
		Leases:      maps.Clone(s.Leases), // no references inside
		Queues:      maps.Clone(s.Queues), // nor here
	}
	if c.Allocations == nil {
		c.Allocations = map[string]Allocation{}
	}
	if c.Leases == nil {
		c.Leases = map[string]Lease{}
	}
	if c.Queues == nil {
		c.Queues = map[string]Queue{}
	}
	for k, g := range s.Groups {
		c.Groups[k] = g.Clone()
	}
	for k, n := range s.Nodes {
		c.Nodes[k] = n.Clone()
	}
	return c
}

// Clone returns a deep copy of g. It is copied through its JSON form,
// which is how it travels through the log anyway.
func (g Group) Clone() Group {
	data, err := json.Marshal(g)
	if err != nil {
		// The group came out of a JSON decode (a command or a snapshot), so
		// it encodes; this is unreachable.
		panic("raftstore: cloning group " + g.Name + ": " + err.Error())
	}
	var c Group
	if err := json.Unmarshal(data, &c); err != nil {
		panic("raftstore: cloning group " + g.Name + ": " + err.Error())
	}
	c.Index = g.Index
	return c
}

// Clone returns a deep copy of n.
func (n NodeInfo) Clone() NodeInfo {
	n.Labels = maps.Clone(n.Labels)
	return n
}

// sortedValues returns m's values ordered by key, each cloned.
func sortedValues[V any](m map[string]V, clone func(V) V) []V {
	keys := slices.Sorted(maps.Keys(m))
	out := make([]V, 0, len(keys))
	for _, k := range keys {
		v := m[k]
		if clone != nil {
			v = clone(v)
		}
		out = append(out, v)
	}
	return out
}

// allocationOrder orders allocations by group, then replica, shard and ID.
func allocationOrder(a, b Allocation) int {
	return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Replica, b.Replica),
		cmp.Compare(a.Shard, b.Shard), cmp.Compare(a.ID, b.ID))
}
