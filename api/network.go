package api

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

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

// EffectiveNetwork is the group's network mode, "bridge" when it sets none.
func (g *GroupSpec) EffectiveNetwork() NetworkMode {
	if g.Network == "" {
		return NetworkBridge
	}
	return g.Network
}

// Protocol is the transport protocol of a published port.
type Protocol string

const (
	ProtocolTCP Protocol = "tcp"
	ProtocolUDP Protocol = "udp"
)

// PortMapping is one published port: connections to HostIP:HostPort on
// the node go to ContainerPort on the group's address.
type PortMapping struct {
	// HostIP is the node address the port is published on; empty means
	// every address of the node.
	HostIP        string   `json:"host_ip,omitempty"`
	HostPort      int      `json:"host_port"`
	ContainerPort int      `json:"container_port"`
	Protocol      Protocol `json:"protocol"`
}

// String renders the mapping the way `agentctl get -o wide` shows it:
// "8080->80/tcp", "127.0.0.1:9000->9000/udp".
func (p PortMapping) String() string {
	host := strconv.Itoa(p.HostPort)
	if p.HostIP != "" {
		host = p.HostIP + ":" + host
	}
	return fmt.Sprintf("%s->%d/%s", host, p.ContainerPort, p.Protocol)
}

// Key is what two mappings must not share on one node: "8080/tcp" on
// every address, or "127.0.0.1:8080/tcp".
func (p PortMapping) Key() string {
	k := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
	if p.HostIP != "" {
		k = p.HostIP + ":" + k
	}
	return k
}

// Overlaps reports whether p and q cannot both be published on one node:
// the same port and protocol on the same address, or on every address
// and any one of them.
func (p PortMapping) Overlaps(q PortMapping) bool {
	if p.HostPort != q.HostPort || p.Protocol != q.Protocol {
		return false
	}
	return p.HostIP == q.HostIP || p.HostIP == "" || q.HostIP == ""
}

// ParsePort parses one entry of ports: "[host_ip:]host_port:container_port[/protocol]",
// e.g. "8080:80", "127.0.0.1:9000:9000/udp". The protocol is tcp unless
// it says udp; the host IP, when given, is an IPv4 address ("0.0.0.0"
// is the same as none). The error says what is wrong without repeating s.
func ParsePort(s string) (PortMapping, error) {
	var p PortMapping
	spec, proto, hasProto := strings.Cut(s, "/")
	switch {
	case !hasProto || proto == "tcp":
		p.Protocol = ProtocolTCP
	case proto == "udp":
		p.Protocol = ProtocolUDP
	case proto == "":
		return p, fmt.Errorf("the protocol after '/' is missing: write tcp or udp, or leave out the '/'")
	default:
		return p, fmt.Errorf("protocol %q is not supported: use tcp (the default) or udp", proto)
	}
	parts := strings.Split(spec, ":")
	switch len(parts) {
	case 1:
		return p, fmt.Errorf(`a published port needs a host port and a container port: write "%[1]s:%[1]s" (host:container)`, spec)
	case 2:
	case 3:
		ip := parts[0]
		if strings.HasPrefix(ip, "[") {
			return p, fmt.Errorf("host IP %s: IPv6 is not supported, the node bridge is IPv4 only", ip)
		}
		addr, err := netip.ParseAddr(ip)
		switch {
		case ip == "":
			return p, fmt.Errorf(`the host IP before the first ':' is empty: write an IPv4 address such as "127.0.0.1", or leave it out to publish on every address`)
		case err != nil:
			return p, fmt.Errorf("host IP %q is not an IPv4 address", ip)
		case !addr.Is4():
			return p, fmt.Errorf("host IP %s: IPv6 is not supported, the node bridge is IPv4 only", ip)
		}
		if !addr.IsUnspecified() {
			p.HostIP = addr.String()
		}
		parts = parts[1:]
	default:
		if strings.HasPrefix(spec, "[") || strings.Contains(spec, "::") {
			return p, fmt.Errorf("IPv6 host addresses are not supported, the node bridge is IPv4 only")
		}
		return p, fmt.Errorf(`too many ':': write "[host_ip:]host_port:container_port[/tcp|udp]"`)
	}
	var err error
	if p.HostPort, err = parsePortNumber("host", parts[0]); err != nil {
		return p, err
	}
	if p.ContainerPort, err = parsePortNumber("container", parts[1]); err != nil {
		return p, err
	}
	return p, nil
}

func parsePortNumber(what, s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("the %s port is missing", what)
	}
	if strings.Contains(s, "-") && !strings.HasPrefix(s, "-") {
		return 0, fmt.Errorf("%s port %q: port ranges are not supported; publish each port on its own", what, s)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%s port %q is not a number", what, s)
	}
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s port %d is out of range 1-65535", what, n)
	}
	return n, nil
}

// PortMappings returns the group's published ports, parsed. The spec must
// be valid; an entry that does not parse is left out.
func (g *GroupSpec) PortMappings() []PortMapping {
	out := make([]PortMapping, 0, len(g.Ports))
	for _, s := range g.Ports {
		if p, err := ParsePort(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// network checks network and ports.
func (v *validator) network(g *GroupSpec) {
	switch g.Network {
	case "", NetworkBridge, NetworkHost, NetworkNone:
	default:
		v.add("network", "%q is not a network mode: use \"bridge\" (the default), \"host\" or \"none\"", g.Network)
	}
	if len(g.Ports) > 0 {
		switch g.Network {
		case NetworkHost:
			v.add("ports", "ports are published only with network = \"bridge\": with network = \"host\" the containers listen on the node's addresses themselves; remove ports")
			return
		case NetworkNone:
			v.add("ports", "ports are published only with network = \"bridge\": with network = \"none\" the group has no address to forward them to; remove ports or use network = \"bridge\"")
			return
		}
	}
	seen := make([]PortMapping, 0, len(g.Ports))
	at := make([]int, 0, len(g.Ports))
	for i, s := range g.Ports {
		field := pathIndex("ports", i)
		p, err := ParsePort(s)
		if err != nil {
			v.add(field, "%q: %s", s, err)
			continue
		}
		for j, q := range seen {
			if p.Overlaps(q) {
				v.add(field, "%q: host port %d/%s is already published by ports[%d] %q (at %s); publish each host port once",
					s, p.HostPort, p.Protocol, at[j], g.Ports[at[j]], v.where(pathIndex("ports", at[j])))
				break
			}
		}
		seen = append(seen, p)
		at = append(at, i)
	}
}

// PortFieldError is a problem with entry i of the ports of group spec,
// which was decoded from data (the file named file): it carries the
// position where that entry is written, so an error found after
// decoding, such as a port another group already publishes, points at the
// line. data may be nil (no position).
func PortFieldError(file string, data []byte, spec *GroupSpec, i int, msg string) *FieldError {
	field := pathIndex("ports", i)
	e := &FieldError{File: file, Group: spec.Name, Field: field, Message: msg}
	if data != nil {
		p := indexPositions(data).locate(field)
		e.Line, e.Col = p.Line, p.Col
	}
	return e
}

// NetworkStatus is how a group is connected, as `agentctl get -o wide`
// shows it.
type NetworkStatus struct {
	Mode NetworkMode `json:"mode"`
	// Address is the group's IPv4 address on the node bridge (bridge
	// mode only).
	Address string `json:"address,omitempty"`
	// Ports are the ports published on the node.
	Ports []PortMapping `json:"ports,omitempty"`
}
