// Package cluster will hold membership (hashicorp/memberlist), the
// scheduler that runs on the Raft leader (replicated and sharded groups,
// rescheduling, preemption), lease and queue logic, and leader forwarding.
//
// It is not built yet: it comes with the Cluster issue. Until then every
// agent runs only its local groups. It will not store bytes on disk (that
// is raftstore's) and will never import the supervisor.
package cluster
