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
//     shard; the bytes it read are replayed to the backend first. A key
//     whose shard has no ready backend is not sent elsewhere: the client's
//     connection is closed. A stream without a key (no newline in 4 KiB,
//     not HTTP/1.x, no such header) goes to any ready backend.
//
// Split sends percent_i of new connections to split service i, by a
// counter rather than a random draw, so the shares are exact over every
// 100 connections; a split service without a ready backend hands its
// share back to the main service.
//
// A connection that cannot be made to one backend (refused, unreachable,
// dial timeout) is retried on the next candidate, each backend at most
// once, before the client's connection is closed. Bytes are copied both
// ways with half-close (CloseWrite) passed on; either side failing closes
// both.
//
// Routing is per connection, at layer 4: with shard_header, a keep-alive
// HTTP connection goes where its first request's key belongs, and so do
// the requests after it on that connection.
//
// Cost: the proxy copies through a user-space buffer on one goroutine per
// direction, which is the least a user-space relay can do; measured by
// integration/bench (-ambassador-only), it costs what a bare relay costs,
// and a relay doubles the reads, writes and wakeups of a round trip: on a
// 2-core machine, a 1 KiB request/response takes about 10 µs through the
// proxy against 5 µs direct in one process, about 20 µs against 8 µs over
// three processes. Only an in-kernel path (NAT in the group's namespace,
// or sockmap) comes near direct; it could not read a shard key or retry.
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
//	port, _ := ambassador.ServicePort(spec)
//	for _, svc := range p.Services() { // on every change of their endpoints:
//		p.SetBackends(svc, []ambassador.Backend{{ID: "cache/0", Addr: "10.88.0.7:6379", Shard: 0, Ready: true}})
//	}
//	for _, b := range p.Stats().Backends { … } // for metrics
package ambassador
