// Package raftstore is Berth's replicated state: the hashicorp/raft wiring,
// the FSM that applies typed, versioned commands to an in-memory State
// (cluster groups, allocations, nodes, leases, work queues and their
// items), snapshots, the log and stable stores, and a watch API for
// changes.
//
// # What it owns, what it does not
//
// It owns the bytes: what a command means to the State (command.go,
// fsm.go), how the State is snapshotted and restored, how a member starts,
// bootstraps, joins and stops (store.go, membership.go), and how readers
// learn of changes (watch.go). It does not decide anything: placement,
// rescheduling, when a node is dead, when to campaign, renew or lease
// items belong to the cluster package and the agent, which propose
// commands on the leader. Only the deterministic rules of leases and
// queues are here (lease.go, queue.go): who gets a lease and its fencing
// token, which items a lease gets, retries and dead letters, all from the
// times the commands carry. It does not
// discover members (memberlist does, in cluster) and does not forward
// writes to the leader: a follower's Apply returns a *NotLeaderError that
// names the leader, and the cluster package forwards over the inter-agent
// TLS API. It does not speak TLS itself: Open takes any raft.Transport, so
// the cluster work can hand it a NetworkTransport over a TLS StreamLayer.
//
// # How to use it
//
// The embedded default, one agent that is its own cluster:
//
//	cfg := raftstore.DefaultConfig() // Voter, Bootstrap, 127.0.0.1:7947
//	cfg.NodeID, cfg.DataDir, cfg.Logger = node, "/var/lib/berth/raft", log
//	st, err := raftstore.Open(cfg, nil) // nil: a TCP transport on BindAddr
//	...
//	defer st.Close()
//	cmd, err := raftstore.NewCommand(raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: spec})
//	idx, err := st.Apply(ctx, cmd) // api.ErrNotLeader on a follower
//	for idx := range st.Watch(ctx) { reconcile(st.NodeAllocations(node), idx) }
//
// A cluster: the first voter bootstraps (Bootstrap = true); every other
// member opens with Bootstrap = false and the leader adds it with AddVoter
// (up to five voters) or AddNonvoter. Every member holds the whole State:
// read it locally (Groups, Allocations, NodeAllocations, Nodes, or State
// for one consistent copy); a follower may lag, so wait for an index with
// WaitIndex, and on the leader use Barrier (every acknowledged write
// applied) or VerifyLeader (still the leader) before reads that must be
// exact.
//
// # Commands and versions
//
// A Command is {Version, Type, Time, Payload}. Types are numbered for good
// (see CommandType). The FSM rejects, with an error value and never a panic, a command it cannot
// read: a newer Version, an unknown or reserved Type (errors.ErrUnsupported),
// a malformed payload (api.ErrInvalid). Apply must compute the same state on
// every member, so the FSM never reads a clock (UpdatedAt comes from
// Command.Time) and a rejection is the same everywhere; a new command
// version may only be proposed once every member's NodeInfo.Version reads
// it. Snapshots are the State as JSON with a format number (SnapshotFormat),
// and the queues' items beside it.
//
// # Storage: raft-boltdb/v2
//
// The log and the stable store are one bbolt file, DataDir/raft.db (via
// github.com/hashicorp/raft-boltdb/v2) behind a 512-entry raft.LogCache;
// snapshots are raft.FileSnapshotStore files under DataDir/snapshots (two
// kept). raft-boltdb rather than raft-wal because it is the store
// Consul, Nomad and Vault have run for years and is tagged stable (v2),
// while raft-wal is still v0; raft-wal's strengths (append-only segments,
// no free-page growth, higher write throughput) matter for write-heavy
// logs, and Berth's log is small and slow: desired state and status of
// 1–50 nodes, compacted by snapshots every SnapshotThreshold entries. bbolt
// was already in the module graph (containerd's).
//
// # Concurrency
//
// Raft calls the FSM's Apply, Snapshot and Restore one at a time from its
// own goroutine; readers take a RWMutex and get copies. Apply never waits
// for a watcher: Watch coalesces (a slow receiver gets the newest index,
// not every one) and WaitIndex wakes on a closed channel.
package raftstore
