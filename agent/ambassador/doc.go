// Package ambassador is the TCP proxy behind a group's [[ambassador]]
// table: the application talks to a port on its own localhost, and the
// agent forwards each connection to a ready endpoint of a service (a
// group), chosen by a balance policy, with a share of new connections sent
// to experiment services (split).
//
// A Proxy owns one listener (the agent opens it inside the group's network
// namespace with supervisor.ListenInNetns) and the endpoint sets of the
// services it routes to, which the agent replaces whenever endpoints
// change (SetBackends): new connections use the new set at once,
// connections in flight keep going. Balance policies:
//
//   - round-robin: each new connection to the next ready backend;
//   - least-conn: to the backend with the fewest live connections;
//   - source-hash: a client address always reaches the same backend while
//     it is there, by rendezvous hashing of the address with the backend
//     IDs, so adding or removing one backend moves only its own clients;
//   - shard: the proxy reads a key from the start of the stream (the first
//     line, or an HTTP/1.x request header), maps it to a shard with the
//     cluster's shard function and connects to a ready backend of that
//     shard; the bytes it read are replayed to the backend first.
//
// A connection that cannot be made to one backend (refused, unreachable,
// dial timeout) is retried on the next candidate, each backend at most
// once, before the client's connection is closed. Bytes are copied both
// ways with half-close (CloseWrite) passed on; either side failing closes
// both.
//
// It does not find endpoints, watch readiness or open listeners in a
// namespace: the agent does, and calls SetBackends. It knows nothing of
// containerd or Raft.
//
// Use:
//
//	ln, err := supervisor.ListenInNetns(nsPath, "tcp", spec.Listen)
//	p, err := ambassador.New(ambassador.Config{Spec: spec, Listener: ln,
//		Shards: shards, ShardFunc: cluster.ShardOf, Log: log})
//	go p.Run(ctx) // ends when ctx does, closing every connection
//	p.SetBackends("cache", []ambassador.Backend{{ID: "cache/0", Addr: "10.88.0.7:6379", Ready: true}})
//	for _, b := range p.Stats().Backends { … } // for metrics
package ambassador
