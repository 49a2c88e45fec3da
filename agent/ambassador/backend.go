package ambassador

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
)

// Backend is one endpoint of a service, as the agent knows it.
type Backend struct {
	// ID names the endpoint stably across updates (e.g. "cache/2", the
	// allocation): counters follow it, and source-hash hashes it. Empty
	// means Addr.
	ID string
	// Addr is host:port to connect to, reachable from the agent's network
	// namespace.
	Addr string
	// Shard is the endpoint's shard index, for balance = "shard".
	Shard int
	// Ready: only ready endpoints receive new connections.
	Ready bool
}

// BackendStats are the counters of one backend of one service.
type BackendStats struct {
	Service string
	ID      string
	Addr    string
	Shard   int
	Ready   bool
	// Listed is false for a backend that SetBackends no longer lists but
	// that still has live connections.
	Listed bool
	// Connections made to the backend, Failures of connection attempts
	// (each attempt that fell through to the next backend counts one),
	// and Active connections now (attempts in progress included).
	Connections uint64
	Failures    uint64
	Active      int64
}

// Stats are a proxy's counters, for metrics.
type Stats struct {
	// Accepted client connections, and Dropped ones: closed because no
	// backend could be reached (or none is ready), or because the shard
	// key could not be read.
	Accepted uint64
	Dropped  uint64
	// Backends, sorted by service and ID.
	Backends []BackendStats
}

// counters of one backend ID; they outlive SetBackends updates so that
// least-conn sees the connections made before an update.
type counters struct {
	conns, fails atomic.Uint64
	active       atomic.Int64

	// Guarded by service.mu.
	last   Backend // as last listed
	listed bool
}

// target is one ready backend in a snapshot: immutable.
type target struct {
	id, addr string
	shard    int
	c        *counters
	svc      *service
}

// service holds the endpoint set of one service. The snapshot of ready
// backends is read without a lock on every connection; SetBackends
// replaces it whole.
type service struct {
	name  string
	ready atomic.Pointer[[]target] // sorted by ID
	rr    atomic.Uint64            // round-robin position

	mu       sync.Mutex
	counters map[string]*counters // by ID: listed, or unlisted with live connections
}

func newService(name string) *service {
	s := &service{name: name, counters: make(map[string]*counters)}
	s.ready.Store(new([]target))
	return s
}

// set replaces the endpoint set. A repeated ID takes its last entry.
func (s *service) set(backends []Backend) {
	byID := make(map[string]Backend, len(backends))
	for _, b := range backends {
		if b.ID == "" {
			b.ID = b.Addr
		}
		byID[b.ID] = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ready := make([]target, 0, len(byID))
	for id, b := range byID {
		c := s.counters[id]
		if c == nil {
			c = new(counters)
			s.counters[id] = c
		}
		c.last, c.listed = b, true
		if b.Ready && b.Addr != "" {
			ready = append(ready, target{id: id, addr: b.Addr, shard: b.Shard, c: c, svc: s})
		}
	}
	for id, c := range s.counters {
		if _, ok := byID[id]; ok {
			continue
		}
		c.listed = false
		if c.active.Load() == 0 {
			delete(s.counters, id)
		}
	}
	slices.SortFunc(ready, func(a, b target) int { return cmp.Compare(a.id, b.id) })
	s.ready.Store(&ready)
}

// snapshot returns the ready backends; the slice must not be changed.
func (s *service) snapshot() []target { return *s.ready.Load() }

// acquire counts a connection attempt to t as active.
func (t target) acquire() { t.c.active.Add(1) }

// release ends what acquire began; an unlisted backend's counters go when
// its last connection does.
func (t target) release() {
	if t.c.active.Add(-1) != 0 {
		return
	}
	s := t.svc
	s.mu.Lock()
	if !t.c.listed && t.c.active.Load() == 0 && s.counters[t.id] == t.c {
		delete(s.counters, t.id)
	}
	s.mu.Unlock()
}

// stats appends the counters of s to out.
func (s *service) stats(out []BackendStats) []BackendStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := len(out)
	for id, c := range s.counters {
		out = append(out, BackendStats{
			Service: s.name, ID: id, Addr: c.last.Addr, Shard: c.last.Shard, Ready: c.last.Ready && c.listed,
			Listed: c.listed, Connections: c.conns.Load(), Failures: c.fails.Load(), Active: c.active.Load(),
		})
	}
	slices.SortFunc(out[start:], func(a, b BackendStats) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
