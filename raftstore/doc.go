// Package raftstore will hold the hashicorp/raft wiring: the FSM with
// typed, versioned commands (groups, allocations, node status, leases,
// queues), snapshots, the log and stable stores, and a watch API for
// changes.
//
// It is not built yet: it comes with the Cluster issue. It will not decide
// placement (that is the cluster scheduler's).
package raftstore
