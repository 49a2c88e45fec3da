package api

import (
	"context"
	"net/http"
	"net/url"
)

// PathEndpoints is the admin API's endpoints route:
//
//	GET /v1/endpoints/{service}   []Endpoint, the ready endpoints of service
//
// A service is named after a group: every ready copy of the group is one
// endpoint; for a cluster group, every ready allocation on any node. A service without ready endpoints (or unknown) has none: the
// answer is an empty list, not an error, so a client polling for
// endpoints need not tell "not yet" from "not here".
const PathEndpoints = "/v1/endpoints"

// Endpoint is one ready copy of a service.
type Endpoint struct {
	// Group is the group that serves (for a cluster group, one
	// allocation of it); Node the node it runs on.
	Group string `json:"group"`
	Node  string `json:"node"`
	// Shard is the endpoint's shard, for a sharded cluster group; 0
	// otherwise.
	Shard int `json:"shard"`
	// Address is where the node that answers reaches the endpoint at its
	// container ports: for an endpoint on that node, the group's IPv4
	// address on the node bridge ("127.0.0.1" for network = "host"); for
	// a group with network = "host" on another node, that node's address.
	// Empty for a bridge group on another node: its bridge address is
	// reachable from its own node only; use Ports.
	Address string `json:"address,omitempty"`
	// Ports are the group's published ports. For an endpoint on another
	// node each HostIP is the address to connect to (the node's publish
	// address, or its cluster advertise address, when the spec gives
	// none); ports published on a loopback address are left out, since
	// only their node reaches them.
	Ports []PortMapping `json:"ports,omitempty"`
	// Ready is the group's readiness; only ready endpoints are listed.
	Ready bool `json:"ready"`
}

// Endpoints returns the ready endpoints of service.
func (c *Client) Endpoints(ctx context.Context, service string) ([]Endpoint, error) {
	var eps []Endpoint
	if err := c.call(ctx, http.MethodGet, PathEndpoints+"/"+url.PathEscape(service), nil, nil, &eps); err != nil {
		return nil, err
	}
	if eps == nil {
		eps = []Endpoint{}
	}
	return eps, nil
}
