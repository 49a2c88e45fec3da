package api

// The downward API: HTTP/JSON on a unix socket of each group's own, which
// every container of the group sees at DownwardSocket (its path is also in
// the env var BERTH_AGENT_SOCKET). The socket is the caller's identity: a
// request on it acts for the group it was made for, and no route takes
// another group's name for a write. Errors are ErrorBody, as on the admin
// API.
//
//	GET  /v1/self                  Self: the caller's place, and its peers
//	POST /v1/self/replicas         ReplicasRequest → ReplicasResult ("replicate
//	                               yourself", cluster groups only, within
//	                               [placement] min_replicas..max_replicas)
//	GET  /v1/endpoints/{service}   []Endpoint, as on the admin API
//
// Leases (/v1/leases/…) and work queues (/v1/queues/…) are served on the
// same socket.
const (
	// DownwardSocket is where a container finds its group's socket.
	DownwardSocket   = "/run/berth/agent.sock"
	PathSelf         = "/v1/self"
	PathSelfReplicas = "/v1/self/replicas"
)

// Self is what a group learns of itself over its socket. For a copy of a
// cluster group Group is the cluster group's name and Allocation the copy
// ("web.1", "kv.s3.0"); for a local group Allocation is empty and Replica,
// Shard and Shards are 0.
type Self struct {
	Group      string `json:"group"`
	Allocation string `json:"allocation,omitempty"`
	// Cluster tells a copy of a cluster group from a local group.
	Cluster bool   `json:"cluster"`
	Node    string `json:"node"`
	Replica int    `json:"replica"`
	Shard   int    `json:"shard"`
	// Shards is the cluster group's shard count; 0 when it is not sharded.
	Shards int `json:"shards"`
	// Generation is the local group's generation, or the allocation's
	// (it grows each time the scheduler rewrites or moves the copy).
	Generation int64 `json:"generation"`
	// GroupGeneration is the generation of the spec the caller runs (for a
	// local group, Generation).
	GroupGeneration int64 `json:"group_generation"`
	// Replicas is the cluster group's wanted replica count, and
	// MinReplicas..MaxReplicas the range POST /v1/self/replicas accepts
	// (replicated cluster groups only).
	Replicas    int `json:"replicas,omitempty"`
	MinReplicas int `json:"min_replicas,omitempty"`
	MaxReplicas int `json:"max_replicas,omitempty"`
	// Peers are every copy of the cluster group, the caller included
	// (Self set), by shard then replica, as the Raft state has them;
	// empty for a local group.
	Peers []Peer `json:"peers"`
}

// Peer is one copy of the caller's cluster group.
type Peer struct {
	Allocation string `json:"allocation"`
	Replica    int    `json:"replica"`
	Shard      int    `json:"shard"`
	// Node is where it runs; empty while it cannot be placed.
	Node       string     `json:"node,omitempty"`
	Generation int64      `json:"generation"`
	Status     GroupState `json:"status,omitempty"`
	// Ready is the copy's readiness as its agent last reported it.
	Ready bool `json:"ready"`
	// Address is where the copy is reached from the caller: its address on
	// the node bridge when it runs on the caller's node ("127.0.0.1" with
	// network = "host"), else its node's publish address (as for
	// endpoints), where its published Ports are.
	Address string        `json:"address,omitempty"`
	Ports   []PortMapping `json:"ports,omitempty"`
	// Self marks the caller.
	Self bool `json:"self,omitempty"`
}

// ReplicasRequest asks for the caller's cluster group to run Replicas
// copies.
type ReplicasRequest struct {
	Replicas *int `json:"replicas"`
}

// ReplicasResult is the replica count now written to the cluster state;
// the scheduler places or stops copies to match.
type ReplicasResult struct {
	Group       string `json:"group"`
	Replicas    int    `json:"replicas"`
	MinReplicas int    `json:"min_replicas"`
	MaxReplicas int    `json:"max_replicas"`
}
