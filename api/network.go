package api

// NetworkMode is how a group is connected.
type NetworkMode string

const (
	// NetworkBridge: the group's netns gets an address on the node bridge
	// through CNI (the default).
	NetworkBridge NetworkMode = "bridge"
	// NetworkHost: the group's containers use the node's network namespace.
	NetworkHost NetworkMode = "host"
	// NetworkNone: the group's netns has only loopback.
	NetworkNone NetworkMode = "none"
)

// network checks network and ports.
func (v *validator) network(g *GroupSpec) {
	switch g.Network {
	case "", NetworkBridge, NetworkHost, NetworkNone:
	default:
		v.add("network", "%q is not a network mode: use \"bridge\" (the default), \"host\" or \"none\"", g.Network)
	}
}
