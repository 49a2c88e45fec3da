package api

import "time"

// The cluster routes of the admin API (also served on the inter-agent TLS
// port, where agentctl --addr reaches them):
//
//	GET  /v1/cluster/groups                   []ClusterGroup (cluster groups with their allocations)
//	GET  /v1/cluster/groups/{name}            ClusterGroup with Spec
//	POST /v1/cluster/groups/{name}/scale      ScaleRequest → ClusterGroup
//	GET  /v1/cluster/members                  []Member
//	GET  /v1/cluster/raft                     RaftInfo
//	POST /v1/cluster/raft/snapshot            take a snapshot now; RaftInfo
//	POST /v1/cluster/nodes/{name}/drain       move a node's allocations away; Member
//	POST /v1/cluster/nodes/{name}/undrain     let the scheduler use the node again; Member
//
// Cluster groups are applied and deleted through /v1/apply and
// /v1/groups/{name} like local groups: a group with [placement] goes to
// Raft, through the leader.
const (
	PathCluster        = "/v1/cluster"
	PathClusterGroups  = "/v1/cluster/groups"
	PathClusterMembers = "/v1/cluster/members"
	PathClusterRaft    = "/v1/cluster/raft"
	PathClusterNodes   = "/v1/cluster/nodes"
)

// SourceCluster is the Source of a group that runs an allocation of a
// cluster group on this node.
const SourceCluster = "cluster"

// ClusterGroup is a cluster group and where its allocations run.
type ClusterGroup struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	// Replicas is the wanted replica count (with the scale override);
	// for a sharded group Shards and ShardReplicas.
	Replicas      int         `json:"replicas,omitempty"`
	Shards        int         `json:"shards,omitempty"`
	ShardReplicas map[int]int `json:"shard_replicas,omitempty"`
	Priority      int64       `json:"priority"`
	Rollout       *Rollout    `json:"rollout,omitempty"`
	// Ready counts allocations that are Running and Ready at the
	// group's generation; Placed those with a node.
	Ready       int          `json:"ready"`
	Placed      int          `json:"placed"`
	Allocations []Allocation `json:"allocations"`
	Spec        *GroupSpec   `json:"spec,omitempty"`
}

// Rollout is the progress of a cluster group's latest generation.
type Rollout struct {
	Generation int64  `json:"generation"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	Revert     bool   `json:"revert,omitempty"`
}

// Allocation is one replica or shard copy of a cluster group.
type Allocation struct {
	ID              string     `json:"id"`
	Replica         int        `json:"replica"`
	Shard           int        `json:"shard"`
	Node            string     `json:"node,omitempty"`
	Generation      int64      `json:"generation"`
	GroupGeneration int64      `json:"group_generation"`
	Status          GroupState `json:"status,omitempty"`
	Ready           bool       `json:"ready"`
	Reason          string     `json:"reason,omitempty"`
	Pending         string     `json:"pending,omitempty"`
	UpdatedAt       time.Time  `json:"updated_at,omitzero"`
}

// ScaleRequest changes a cluster group's replica count, or one shard's
// (Shard set). Replicas 0 clears an override.
type ScaleRequest struct {
	Shard    *int `json:"shard,omitempty"`
	Replicas int  `json:"replicas"`
}

// Member is one agent of the cluster.
type Member struct {
	Name     string `json:"name"`
	Addr     string `json:"addr,omitempty"`
	APIAddr  string `json:"api_addr,omitempty"`
	RaftAddr string `json:"raft_addr,omitempty"`
	// Status is alive, suspect, dead or left (gossip), as the Raft state
	// records it.
	Status string `json:"status"`
	// Server: a voter candidate; Suffrage: voter, nonvoter or "" (not in
	// the Raft configuration yet).
	Server      bool              `json:"server"`
	Suffrage    string            `json:"suffrage,omitempty"`
	Leader      bool              `json:"leader,omitempty"`
	Drain       bool              `json:"drain,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Capacity    Resources         `json:"capacity"`
	Allocations int               `json:"allocations"`
	Version     string            `json:"version,omitempty"`
}

// RaftInfo is this agent's view of Raft.
type RaftInfo struct {
	Node              string       `json:"node"`
	State             string       `json:"state"`
	Term              uint64       `json:"term"`
	LastIndex         uint64       `json:"last_index"`
	CommitIndex       uint64       `json:"commit_index"`
	AppliedIndex      uint64       `json:"applied_index"`
	LastSnapshotIndex uint64       `json:"last_snapshot_index"`
	Leader            string       `json:"leader,omitempty"`
	LeaderAddr        string       `json:"leader_addr,omitempty"`
	LastContact       time.Time    `json:"last_contact,omitzero"`
	Peers             []RaftServer `json:"peers"`
}

// RaftServer is one member of the Raft configuration.
type RaftServer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
}
