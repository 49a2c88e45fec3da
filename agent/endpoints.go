package agent

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// A service is named after a group; its endpoints are the ready copies of
// the group. They come from two places:
//
//   - this node's groups, from the supervisor: the local group of that
//     name and the allocations of the cluster group of that name that run
//     here ("web.0", "web.s1.0"). Each is an endpoint only while the
//     supervisor says it is Ready, so a copy that turns not ready is gone
//     from the next answer. They are reached at their address on the
//     node bridge.
//   - the allocations of the cluster group on other nodes, from the Raft
//     state: Ready as their agent last reported it (at most ~50 ms after
//     the change, plus one Raft commit), on a node that is not dead or
//     gone. The state does not record their bridge address, which only
//     their own node can reach anyway: they are reached at their node's
//     publish address (PublishAddressLabel) or, without one, its cluster
//     advertise address, and their published ports.
//
// An endpoint is one Group on one Node; an allocation of this node is
// always taken from the supervisor, never from the (older) Raft state.

// endpointView is one read of everything endpoints come from, so that the
// ambassadors' feed reads the supervisor and the Raft state once for all
// their services.
type endpointView struct {
	self string
	// local are this node's groups.
	local []api.GroupStatus
	// allocs are the allocations of every cluster group, by group, and
	// byID the same by allocation ID.
	allocs map[string][]raftstore.Allocation
	byID   map[string]raftstore.Allocation
	nodes  map[string]raftstore.NodeInfo
	// clusterGroups are the cluster groups' shard counts (1 when not
	// sharded), by name.
	clusterGroups map[string]int
}

// endpointView reads the supervisor and the Raft state.
func (a *Agent) endpointView() *endpointView {
	v := &endpointView{
		self:          a.cfg.NodeName,
		allocs:        map[string][]raftstore.Allocation{},
		byID:          map[string]raftstore.Allocation{},
		nodes:         map[string]raftstore.NodeInfo{},
		clusterGroups: map[string]int{},
	}
	if a.sup != nil {
		v.local = a.sup.List()
	}
	if a.cl == nil || a.cl.store == nil {
		return v // unit tests without a cluster
	}
	for _, al := range a.cl.store.Allocations() {
		v.allocs[al.Group] = append(v.allocs[al.Group], al)
		v.byID[al.ID] = al
	}
	for _, n := range a.cl.store.Nodes() {
		v.nodes[n.Name] = n
	}
	for _, g := range a.cl.store.Groups() {
		shards := 1
		if p := g.Spec.Placement; p.Sharded() {
			shards = p.Shards
		}
		v.clusterGroups[g.Name] = shards
	}
	return v
}

// shards is the shard count of service: its [placement] shards for a
// sharded cluster group, else 1 (every endpoint is shard 0).
func (v *endpointView) shards(service string) int {
	if n, ok := v.clusterGroups[service]; ok && n > 0 {
		return n
	}
	return 1
}

// endpoints returns the ready endpoints of service, sorted by group.
func (v *endpointView) endpoints(service string) []api.Endpoint {
	out := v.localEndpoints(service)
	here := make(map[string]bool, len(out))
	for _, ep := range out {
		here[ep.Group] = true
	}
	for _, al := range v.allocs[service] {
		if al.Node == "" || al.Node == v.self || here[al.ID] {
			continue
		}
		if ep, ok := v.remoteEndpoint(al); ok {
			out = append(out, ep)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// localEndpoints returns the ready endpoints of service on this node.
func (v *endpointView) localEndpoints(service string) []api.Endpoint {
	out := []api.Endpoint{}
	for _, st := range v.local {
		if st.Name != service && !strings.HasPrefix(st.Name, service+".") {
			continue
		}
		if !st.Ready || st.State != api.GroupRunning || st.Network == nil {
			continue
		}
		ep := api.Endpoint{Group: st.Name, Node: v.self, Address: st.Network.Address, Ports: st.Network.Ports, Ready: true}
		if al, ok := v.byID[st.Name]; ok {
			ep.Shard = al.Shard
		}
		switch st.Network.Mode {
		case api.NetworkHost:
			ep.Address = "127.0.0.1" // it listens on the node itself
		case api.NetworkNone:
			continue // nothing can reach it
		}
		if ep.Address == "" {
			continue
		}
		out = append(out, ep)
	}
	return out
}

// remoteEndpoint is an allocation on another node as an endpoint, if it
// is one: running its spec, ready, on a node that is not gone.
func (v *endpointView) remoteEndpoint(al raftstore.Allocation) (api.Endpoint, bool) {
	if !al.Ready || al.Status != api.GroupRunning || al.Spec == nil {
		return api.Endpoint{}, false
	}
	n, ok := v.nodes[al.Node]
	if !ok || n.Status == raftstore.NodeDead || n.Status == raftstore.NodeLeft {
		return api.Endpoint{}, false
	}
	addr := nodeAddress(n)
	ep := api.Endpoint{Group: al.ID, Node: al.Node, Shard: al.Shard, Ready: true}
	switch al.Spec.EffectiveNetwork() {
	case api.NetworkNone:
		return api.Endpoint{}, false
	case api.NetworkHost:
		// It listens on its node's own addresses, at its container ports.
		if addr == "" {
			return api.Endpoint{}, false
		}
		ep.Address, ep.Ports = addr, []api.PortMapping{}
	default:
		// Its bridge address is reachable from its node only: other
		// nodes use its published ports.
		ep.Ports = remotePorts(al.Spec, addr)
	}
	return ep, true
}

// remotePorts are the published ports of an allocation on another node,
// with the address to reach each at: a port without a host IP at the
// node's address (none known: left out), one with a host IP at that IP,
// except loopback addresses, which only the node itself reaches.
func remotePorts(spec *api.GroupSpec, nodeAddr string) []api.PortMapping {
	out := []api.PortMapping{}
	for _, p := range spec.PortMappings() {
		switch {
		case p.HostIP == "" && nodeAddr == "":
			continue
		case p.HostIP == "":
			p.HostIP = nodeAddr
		default:
			if a, err := netip.ParseAddr(p.HostIP); err != nil || a.IsLoopback() {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// nodeAddress is where other nodes reach node n's published ports: its
// publish address ([network] publish_address, carried as a label), else
// the address of its inter-agent API (the cluster advertise address).
// Empty when neither is a usable address.
func nodeAddress(n raftstore.NodeInfo) string {
	if v := n.Labels[PublishAddressLabel]; v != "" {
		if a, err := netip.ParseAddr(v); err == nil && !a.IsUnspecified() {
			return a.String()
		}
	}
	host, _, err := net.SplitHostPort(n.APIAddr)
	if err != nil {
		return ""
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.IsUnspecified() {
		return ""
	}
	return a.String()
}

// endpoints returns the ready endpoints of service: this node's and, for
// a cluster group, those on the other nodes.
func (a *Agent) endpoints(service string) []api.Endpoint {
	return a.endpointView().endpoints(service)
}

// handleEndpoints serves GET /v1/endpoints/{service}.
func (a *Agent) handleEndpoints(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if !api.IsDNSLabel(service) {
		writeError(w, fmt.Errorf("service %q: a service is named after a group, a DNS label (lowercase letters, digits and '-'): %w", service, api.ErrInvalid))
		return
	}
	writeJSON(w, http.StatusOK, a.endpoints(service))
}
