package agent

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/berth-project/berth/api"
)

// A service is named after a group; its endpoints are the ready copies of
// the group. This node knows its own: the local group of that name and
// the allocations of the cluster group of that name that run here
// ("web.0", "web.s1.0"). Each is an endpoint only while the supervisor
// says it is Ready, so a copy that turns not ready is gone from the next
// answer. Endpoints on other nodes come from the Raft state: merge them
// in handleEndpoints, after localEndpoints (an endpoint is one Group on
// one Node).

// localEndpoints returns the ready endpoints of service on this node,
// sorted by group.
func (a *Agent) localEndpoints(service string) []api.Endpoint {
	out := []api.Endpoint{}
	for _, st := range a.sup.List() {
		if st.Name != service && !strings.HasPrefix(st.Name, service+".") {
			continue
		}
		if !st.Ready || st.State != api.GroupRunning || st.Network == nil {
			continue
		}
		ep := api.Endpoint{Group: st.Name, Node: a.cfg.NodeName, Address: st.Network.Address, Ports: st.Network.Ports, Ready: true}
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
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// handleEndpoints serves GET /v1/endpoints/{service}.
func (a *Agent) handleEndpoints(w http.ResponseWriter, r *http.Request) {
	service := r.PathValue("service")
	if !api.IsDNSLabel(service) {
		writeError(w, fmt.Errorf("service %q: a service is named after a group, a DNS label (lowercase letters, digits and '-'): %w", service, api.ErrInvalid))
		return
	}
	writeJSON(w, http.StatusOK, a.localEndpoints(service))
}
