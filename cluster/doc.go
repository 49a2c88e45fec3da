// Package cluster owns cluster membership: which agents exist, how to reach
// them and whether they are alive, over hashicorp/memberlist (SWIM gossip
// with Lifeguard). Later it will also hold the scheduler that runs on the
// Raft leader (replicated and sharded groups, rescheduling, preemption),
// lease and queue logic, and leader forwarding.
//
// It does not store anything on disk (that is raftstore's: the cluster
// package decides a node's raftstore.NodeStatus, raftstore records it), it
// does not issue certificates (cluster/pki does) and it never imports the
// supervisor.
//
// # Membership
//
// Every agent is one memberlist member. Build it from DefaultConfig, set
// NodeName, BindAddr/BindPort, Join (seed members) and EncryptKey (from
// GenerateKey, i.e. `agentctl keygen`; required as soon as Join is set),
// and describe the agent in a Meta (API and Raft addresses, capacity,
// labels, version, whether it may be a Raft voter):
//
//	m, err := cluster.New(cfg, meta, log) // binds the gossip port
//	go m.Run(ctx)                          // joins with backoff; leaves when ctx ends
//	for ev := range m.Events() { ... }    // Join, Leave, Update, Failed
//	m.Members()                            // everyone, with Meta and state
//	m.UpdateMeta(newMeta)                  // e.g. capacity or labels changed
//
// Meta travels in memberlist's node metadata, so it is limited to 512
// bytes (Encode says so when it is too big) and reaches every member
// within a few gossip rounds.
//
// A member that stops without leaving is declared dead (EventFailed) in
// ≈ 2–3 s on a LAN (see the failure-detection constants in config.go); one
// that calls Leave (or whose Run ctx ends) is reported as EventLeave.
//
// # Concurrency
//
// memberlist calls its delegates from its own goroutines with its locks
// held. The delegates here never block: events go to a buffered channel
// and are dropped, with a log line, when the consumer stalls; Members is
// kept from the same callbacks and is always current, so a consumer that
// falls behind reconciles from it. All Membership methods are safe for
// concurrent use.
//
// # Scheduler and inter-agent transport
//
// Schedule(state, now, opts) is the pure planning pass (plan*.go);
// Scheduler.Run proposes its Decisions on the Raft leader; ShardOf and
// Rank are the shard functions the ambassador shares (rendezvous.go).
// tls.go, transport.go and forward.go carry Raft and forwarded writes
// over mutual TLS.
package cluster
