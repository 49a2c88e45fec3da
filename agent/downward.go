package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
	"github.com/berth-project/berth/supervisor"
)

// The downward API (api/downward.go lists the routes). Every group gets a
// unix socket of its own, made in its sandbox's API directory, which all
// its containers see read-only at /run/berth: /run/berth/agent.sock. The
// socket is the identity. A request on it acts for the group it was made
// for (the caller), so no token is needed and no route takes another
// group's name for a write: a group can only act for itself.
//
// The socket lives as long as the group's sandbox: it is made when the
// sandbox is ready (at every start, and when a runner finds its sandbox
// again after an agent restart: the socket a killed agent left behind is
// removed and made anew, and running containers see the new one, since the
// directory is bound, not the file), and closed and removed before the
// sandbox is destroyed and when the agent stops.

// downwardSocketName is the socket's name in the sandbox's API directory.
const downwardSocketName = "agent.sock"

// caller is the group at the other end of one downward socket: the group
// the socket was made for, by its name on this node (a local group, or an
// allocation of a cluster group: "web.0", "kv.s3.0"). Every route acts for
// it; identify says who it is now.
type caller struct {
	name string
}

// routeFunc registers one route of a group's socket.
type routeFunc func(pattern string, h http.HandlerFunc)

// downwardHandler returns the routes served on c's socket.
//
// Extension point: a feature that serves the downward API adds one line
// here, calling a method in its own file that registers its routes for c:
//
//	a.leaseRoutes(route, c) // lease.go: /v1/leases/{name}/...
//	a.queueRoutes(route, c) // queue.go: /v1/queues/{queue}/...
//
// Such a method gets who the caller is from a.identify(c) on each request
// (an allocation's node and generation change), acts for the caller only,
// and writes errors with writeError.
func (a *Agent) downwardHandler(c caller) http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, a.metrics.Instrument("downward "+pattern, h))
	}
	route("GET "+api.PathSelf, a.handleSelf(c))
	route("POST "+api.PathSelfReplicas, a.handleSelfReplicas(c))
	route("GET "+api.PathEndpoints+"/{service}", a.handleEndpoints)
	a.leaseRoutes(route, c)
	a.queueRoutes(route, c)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("the downward API has no route %s %s (GET %s lists the caller's place; see the README's Downward API section): %w",
			r.Method, r.URL.Path, api.PathSelf, api.ErrNotFound))
	})
	return mux
}

// identity is who a caller is, as of now.
type identity struct {
	// Group is the local group, or the cluster group of the allocation.
	Group string
	// Allocation is the allocation's ID; empty for a local group.
	Allocation      string
	Node            string
	Replica, Shard  int
	Shards          int
	Generation      int64
	GroupGeneration int64
}

// Cluster reports whether the caller is an allocation of a cluster group.
func (id identity) Cluster() bool { return id.Allocation != "" }

// identify says who c is now: a local group (name, node, generation) or
// an allocation (cluster group, allocation, replica, shard, node,
// generation) as the Raft state has it. A group no longer defined here,
// or an allocation the state has moved to another node, is refused.
func (a *Agent) identify(c caller) (identity, error) {
	node := a.cfg.NodeName
	a.mu.Lock()
	g, ok := a.groups[c.name]
	var gen int64
	var source string
	if ok {
		gen, source = g.Generation, g.Source
	}
	a.mu.Unlock()
	if !ok {
		return identity{}, fmt.Errorf("group %q is no longer defined on node %s: %w", c.name, node, api.ErrNotFound)
	}
	if source != api.SourceCluster {
		return identity{Group: c.name, Node: node, Generation: gen, GroupGeneration: gen}, nil
	}
	al, ok := a.cl.store.Allocation(c.name)
	if !ok {
		return identity{}, fmt.Errorf("allocation %q is no longer in the cluster state (its group was deleted or scaled down): %w", c.name, api.ErrNotFound)
	}
	if al.Node != node {
		return identity{}, fmt.Errorf("allocation %q now belongs to node %q, not %s: this copy is stale and stops soon: %w", c.name, al.Node, node, api.ErrConflict)
	}
	id := identity{Group: al.Group, Allocation: al.ID, Node: node, Replica: al.Replica, Shard: al.Shard,
		Generation: al.Generation, GroupGeneration: al.GroupGeneration}
	if al.Spec != nil && al.Spec.Placement.Sharded() {
		id.Shards = al.Spec.Placement.Shards
	}
	return id, nil
}

// handleSelf serves GET /v1/self: the caller's place, and its peers.
func (a *Agent) handleSelf(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := a.identify(c)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, a.selfView(id))
	}
}

// selfView is identity as the API shows it, with the cluster group's
// replica range and every copy of it.
func (a *Agent) selfView(id identity) api.Self {
	s := api.Self{Group: id.Group, Allocation: id.Allocation, Cluster: id.Cluster(), Node: id.Node,
		Replica: id.Replica, Shard: id.Shard, Shards: id.Shards,
		Generation: id.Generation, GroupGeneration: id.GroupGeneration, Peers: []api.Peer{}}
	if !id.Cluster() {
		return s
	}
	if g, ok := a.cl.store.Group(id.Group); ok && !g.Spec.Placement.Sharded() {
		s.Replicas = g.ReplicaCount()
		s.MinReplicas, s.MaxReplicas = g.Spec.Placement.ReplicaBounds()
	}
	nodes := map[string]raftstore.NodeInfo{}
	for _, n := range a.cl.store.Nodes() {
		nodes[n.Name] = n
	}
	for _, al := range a.cl.store.Allocations() {
		if al.Group != id.Group {
			continue
		}
		p := api.Peer{Allocation: al.ID, Replica: al.Replica, Shard: al.Shard, Node: al.Node, Generation: al.Generation,
			Status: al.Status, Ready: al.Ready, Self: al.ID == id.Allocation}
		switch {
		case al.Node == "":
		case al.Node == a.cfg.NodeName:
			p.Address, p.Ports = a.localAddress(al.ID)
		default:
			// As endpoints.go reaches it: at its node's publish address,
			// on its published ports.
			p.Address = nodeAddress(nodes[al.Node])
			if al.Spec != nil && al.Spec.EffectiveNetwork() == api.NetworkBridge {
				p.Ports = remotePorts(al.Spec, p.Address)
			}
		}
		s.Peers = append(s.Peers, p)
	}
	slices.SortFunc(s.Peers, func(x, y api.Peer) int {
		if x.Shard != y.Shard {
			return x.Shard - y.Shard
		}
		if x.Replica != y.Replica {
			return x.Replica - y.Replica
		}
		return strings.Compare(x.Allocation, y.Allocation)
	})
	return s
}

// localAddress is where a group of this node is reached from this node.
func (a *Agent) localAddress(name string) (string, []api.PortMapping) {
	if a.sup == nil {
		return "", nil // unit tests without a supervisor
	}
	st, ok := a.sup.Status(name)
	if !ok || st.Network == nil {
		return "", nil
	}
	switch st.Network.Mode {
	case api.NetworkHost:
		return "127.0.0.1", nil
	case api.NetworkNone:
		return "", nil
	}
	return st.Network.Address, st.Network.Ports
}

// handleSelfReplicas serves POST /v1/self/replicas: the caller's cluster
// group asks to run N copies, within its [placement] min_replicas and
// max_replicas. It goes through the same Raft command as agentctl scale
// (forwarded to the leader), with the bounds in the command so that the
// state machine refuses a count outside them too.
func (a *Agent) handleSelfReplicas(c caller) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req api.ReplicasRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, fmt.Errorf(`replicas: bad request body: %v (want {"replicas": N}; the socket names the group): %w`, err, api.ErrInvalid))
			return
		}
		if req.Replicas == nil {
			writeError(w, fmt.Errorf(`replicas: the body has no "replicas" (want {"replicas": N}): %w`, api.ErrInvalid))
			return
		}
		id, err := a.identify(c)
		if err != nil {
			writeError(w, err)
			return
		}
		res, err := a.scaleSelf(r.Context(), id, *req.Replicas)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// scaleSelf sets the replica count of id's cluster group to n, within its
// bounds.
func (a *Agent) scaleSelf(ctx context.Context, id identity, n int) (api.ReplicasResult, error) {
	if !id.Cluster() {
		return api.ReplicasResult{}, fmt.Errorf("group %q is a local group: only a cluster group (one with [placement]) can change its replica count: %w", id.Group, api.ErrInvalid)
	}
	g, ok := a.cl.store.Group(id.Group)
	if !ok {
		return api.ReplicasResult{}, clusterNotFound(id.Group)
	}
	p := g.Spec.Placement
	if p.Sharded() {
		return api.ReplicasResult{}, fmt.Errorf("cluster group %q is sharded: its copies are counted per shard, which only an operator sets (agentctl scale %s --shard K --replicas M): %w", id.Group, id.Group, api.ErrInvalid)
	}
	lo, hi := p.ReplicaBounds()
	if n < lo || n > hi {
		return api.ReplicasResult{}, fmt.Errorf("cluster group %q may set itself to %d..%d replicas ([placement] min_replicas = %d, max_replicas = %d; each defaults to replicas), not %d: %w",
			id.Group, lo, hi, lo, hi, n, api.ErrInvalid)
	}
	if _, err := a.propose(ctx, raftstore.CmdScaleGroup, raftstore.ScaleGroup{Name: id.Group, Replicas: n, Min: lo, Max: hi}); err != nil {
		return api.ReplicasResult{}, err
	}
	a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Group: id.Group, Reason: "ReplicasSet",
		Message: fmt.Sprintf("allocation %s set the replica count to %d (allowed %d..%d)", id.Allocation, n, lo, hi)})
	return api.ReplicasResult{Group: id.Group, Replicas: n, MinReplicas: lo, MaxReplicas: hi}, nil
}

// downward keeps one socket per group, each served by its own HTTP server
// whose handler acts for that group. It is the supervisor's
// SandboxObserver: its methods are called from group runners, never block
// for long, and are idempotent.
type downward struct {
	log     *slog.Logger
	handler func(caller) http.Handler

	mu     sync.Mutex
	socks  map[string]*groupSocket
	closed bool
}

var _ supervisor.SandboxObserver = (*downward)(nil)

func newDownward(log *slog.Logger, handler func(caller) http.Handler) *downward {
	return &downward{log: log, handler: handler, socks: map[string]*groupSocket{}}
}

// downwardAPI returns the agent's downward API, made at the first call.
func (a *Agent) downwardAPI() *downward {
	if a.downward == nil {
		a.downward = newDownward(a.log.With("component", "downward"), a.downwardHandler)
	}
	return a.downward
}

// groupSocket is one group's listener and server.
type groupSocket struct {
	path string
	// file is the socket file as made: only that file is removed at close
	// (another agent may have made a new one since).
	file os.FileInfo
	srv  *http.Server
}

// SandboxReady makes sure the group has its socket: it keeps the one it
// has while its file is still there, else makes it anew.
func (d *downward) SandboxReady(_ *api.GroupSpec, sb *supervisor.Sandbox) {
	if sb.APIDir == "" {
		return
	}
	path := filepath.Join(sb.APIDir, downwardSocketName)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if s := d.socks[sb.Group]; s != nil {
		if s.path == path && s.intact() {
			return
		}
		s.close()
		delete(d.socks, sb.Group)
	}
	s, ln, err := listenGroup(path)
	if err != nil {
		d.log.Error("cannot open the group's downward API socket; its containers cannot reach the agent", "group", sb.Group, "path", path, "err", err)
		return
	}
	s.srv = &http.Server{Handler: d.handler(caller{name: sb.Group}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("downward API socket failed", "group", sb.Group, "path", path, "err", err)
		}
	}()
	d.socks[sb.Group] = s
	d.log.Debug("downward API socket ready", "group", sb.Group, "path", path)
}

// SandboxGone closes the group's socket and removes its file.
func (d *downward) SandboxGone(group string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.socks[group]; s != nil {
		s.close()
		delete(d.socks, group)
	}
}

// Run returns when ctx ends, after closing every socket: the agent stops.
// Groups keep running; their containers reach the agent again once it
// is back.
func (d *downward) Run(ctx context.Context) error {
	<-ctx.Done()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for g, s := range d.socks {
		s.close()
		delete(d.socks, g)
	}
	return nil
}

// sockets returns the groups with a socket (tests).
func (d *downward) sockets() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]string{}
	for g, s := range d.socks {
		out[g] = s.path
	}
	return out
}

// intact reports whether the socket file is still the one made.
func (s *groupSocket) intact() bool {
	fi, err := os.Lstat(s.path)
	return err == nil && os.SameFile(fi, s.file)
}

// close stops serving (open connections too) and removes the file if it
// is still this socket's.
func (s *groupSocket) close() {
	_ = s.srv.Close()
	if s.intact() {
		_ = os.Remove(s.path)
	}
}

// maxSocketPath is the longest path bind(2) takes for a unix socket
// (sun_path is 108 bytes with its NUL).
const maxSocketPath = 107

// listenGroup removes what is at path (a socket a killed agent left
// behind) and listens there, with mode 0666 so that containers running as
// any user can connect (only the group's containers see the directory).
func listenGroup(path string) (*groupSocket, net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("remove the old socket: %w", err)
	}
	addr := path
	if len(path) > maxSocketPath {
		// Too long for bind(2): name the directory through an open
		// descriptor instead (/proc/self/fd/N/agent.sock).
		dir, err := os.Open(filepath.Dir(path))
		if err != nil {
			return nil, nil, err
		}
		defer dir.Close()
		addr = fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, nil, err
	}
	// The file is removed by close, and only while it is still this one.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fi, err := os.Lstat(path)
	if err == nil {
		err = os.Chmod(path, 0o666)
	}
	if err != nil {
		ln.Close()
		_ = os.Remove(path)
		return nil, nil, err
	}
	return &groupSocket{path: path, file: fi}, ln, nil
}
