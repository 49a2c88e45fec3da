package api

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// AmbassadorSpec is one [[ambassador]]: a TCP proxy the agent runs inside
// the group's network namespace, from Listen to the ready endpoints of
// Service.
type AmbassadorSpec struct {
	// Listen is host:port inside the group's netns, e.g. "127.0.0.1:6379".
	Listen string `toml:"listen" json:"listen"`
	// Service names the service (a group) whose endpoints receive the
	// connections.
	Service string `toml:"service" json:"service"`
	// Port is the service port to connect to; default the Listen port.
	Port int `toml:"port" json:"port,omitempty"`
	// Balance: "round-robin" (default), "least-conn", "source-hash" or
	// "shard".
	Balance Balance `toml:"balance" json:"balance,omitempty"`
	// ShardHeader, with balance = "shard", takes the shard key from this
	// HTTP request header; without it the key is the first line.
	ShardHeader string `toml:"shard_header" json:"shard_header,omitempty"`
	// Split sends a share of new connections to other services.
	Split []SplitSpec `toml:"split" json:"split,omitempty"`
	// Mode: "proxy" (default), the agent's user-space proxy, or "nat",
	// DNAT rules in the group's network namespace (round-robin and split
	// only: no retries, no least-conn, source-hash or shard).
	Mode AmbassadorMode `toml:"mode" json:"mode,omitempty"`
}

// AmbassadorMode is how an ambassador carries connections.
type AmbassadorMode string

const (
	// AmbassadorProxy is the agent's user-space TCP proxy (the default).
	AmbassadorProxy AmbassadorMode = "proxy"
	// AmbassadorNAT is kernel DNAT in the group's network namespace.
	AmbassadorNAT AmbassadorMode = "nat"
)

// SplitSpec sends Percent of an ambassador's new connections to Service.
type SplitSpec struct {
	Service string `toml:"service" json:"service"`
	Percent int    `toml:"percent" json:"percent"`
}

// Balance is an ambassador's load-balancing policy.
type Balance string

const (
	BalanceRoundRobin Balance = "round-robin"
	BalanceLeastConn  Balance = "least-conn"
	BalanceSourceHash Balance = "source-hash"
	BalanceShard      Balance = "shard"
)

// ambassadors checks the [[ambassador]] tables: a listen address that is
// an IP literal with a port, once per group; a service that names a group;
// a known balance; shard_header only with balance = "shard"; splits
// that leave the main service a share; and a known mode, "nat" only with
// round-robin on one IPv4 address.
func (v *validator) ambassadors(g *GroupSpec) {
	type bound struct {
		i    int
		addr netip.AddrPort
	}
	var seen []bound
	for i := range g.Ambassadors {
		a := &g.Ambassadors[i]
		p := pathIndex("ambassador", i)
		addr, addrOK := v.listenAddr(pathKey(p, "listen"), a.Listen)
		if addrOK {
			for _, b := range seen {
				if listenClash(addr, b.addr) {
					v.add(pathKey(p, "listen"), "%q is already taken by ambassador[%d] (at %s): give each ambassador its own port",
						a.Listen, b.i, v.where(pathKey(pathIndex("ambassador", b.i), "listen")))
					break
				}
			}
			seen = append(seen, bound{i, addr})
		}
		v.service(pathKey(p, "service"), a.Service)
		if a.Port < 0 || a.Port > 65535 {
			v.add(pathKey(p, "port"), "port %d is out of range: use a port from 1 to 65535, or leave it out to connect to the listen port", a.Port)
		}
		v.balance(pathKey(p, "balance"), a.Balance)
		switch {
		case a.ShardHeader != "" && a.Balance != BalanceShard:
			v.add(pathKey(p, "shard_header"), "shard_header is only read with balance = \"shard\": set balance = \"shard\", or remove shard_header")
		case strings.IndexFunc(a.ShardHeader, notTokenRune) >= 0:
			v.add(pathKey(p, "shard_header"), "header name %q may only contain letters, digits and !#$%%&'*+-.^_`|~", a.ShardHeader)
		}
		v.splits(p, a)
		v.mode(p, a, addr, addrOK)
	}
}

// modes are the ambassador's modes, in the order a message lists them.
var modes = []string{string(AmbassadorProxy), string(AmbassadorNAT)}

// mode checks the mode of ambassador a at p: a known one and, for "nat",
// what the kernel can do: round-robin (and split) on an IPv4 address.
func (v *validator) mode(p string, a *AmbassadorSpec, addr netip.AddrPort, addrOK bool) {
	field := pathKey(p, "mode")
	switch a.Mode {
	case "", AmbassadorProxy:
		return
	case AmbassadorNAT:
	default:
		msg := fmt.Sprintf("%q is not an ambassador mode: use \"proxy\" (the default: the agent's proxy, every balance, retries) or \"nat\" (DNAT rules in the group's network namespace: round-robin and split only, near the cost of a direct connection)", a.Mode)
		if s := closest(string(a.Mode), modes); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		v.add(field, "%s", msg)
		return
	}
	if a.Balance != "" && a.Balance != BalanceRoundRobin {
		why := map[Balance]string{
			BalanceLeastConn:  "it cannot count open connections",
			BalanceSourceHash: "it cannot hash a client address to an endpoint",
			BalanceShard:      "it cannot read a shard key from the stream",
		}[a.Balance]
		if why == "" {
			return // an unknown balance, reported at balance
		}
		v.add(field, "mode = \"nat\" cannot balance %q (balance at %s): the kernel picks an endpoint per connection, without state, so %s (nor retry another endpoint); remove mode to use the proxy, or use balance = \"round-robin\"",
			a.Balance, v.where(pathKey(p, "balance")), why)
	}
	if addrOK && (!addr.Addr().Is4() || addr.Addr().IsUnspecified()) {
		v.add(field, "mode = \"nat\" rewrites the group's connections to one IPv4 address, and %q is not one: listen on an address like \"127.0.0.1:%d\", or remove mode to use the proxy",
			a.Listen, addr.Port())
	}
}

// listenAddr parses an ambassador's listen address, "ip:port", or says
// what is wrong with it.
func (v *validator) listenAddr(field, listen string) (netip.AddrPort, bool) {
	const example = "127.0.0.1:6379"
	if listen == "" {
		v.add(field, "the ambassador needs a listen address inside the group: add listen = %q", example)
		return netip.AddrPort{}, false
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		if n, perr := strconv.Atoi(listen); perr == nil && n > 0 && n <= 65535 {
			v.add(field, "%q is not host:port; write \"127.0.0.1:%d\"", listen, n)
		} else {
			v.add(field, "%q is not host:port; write an IP address and a port, like %q", listen, example)
		}
		return netip.AddrPort{}, false
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		v.add(field, "port %q of %q is out of range: use a port from 1 to 65535", port, listen)
		return netip.AddrPort{}, false
	}
	if host == "" {
		v.add(field, "%q has no address: write \"127.0.0.1:%d\" for the group's localhost, or \"0.0.0.0:%d\" for every address of the group", listen, n, n)
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		hint := fmt.Sprintf("127.0.0.1:%d", n)
		if strings.Contains(host, ":") {
			hint = fmt.Sprintf("[::1]:%d", n)
		}
		v.add(field, "%q: the address must be an IP address (names are not resolved inside the group); write %q", listen, hint)
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(n)), true
}

// listenClash reports whether two listeners cannot both bind: the same
// port on the same address, or on any address when one is a wildcard.
func listenClash(a, b netip.AddrPort) bool {
	if a.Port() != b.Port() {
		return false
	}
	return a.Addr() == b.Addr() || a.Addr().IsUnspecified() || b.Addr().IsUnspecified()
}

// service checks the name of a service, which is the name of a group.
func (v *validator) service(field, name string) {
	if name == "" {
		v.add(field, "the ambassador needs a service: add service = \"cache\", the name of the group whose ready containers receive the connections")
		return
	}
	if msg := nameProblem(name, "service"); msg != "" {
		v.add(field, "%s", msg)
	}
}

// balances are the ambassador's balance policies, in the order a message
// lists them.
var balances = []string{string(BalanceRoundRobin), string(BalanceLeastConn), string(BalanceSourceHash), string(BalanceShard)}

func (v *validator) balance(field string, b Balance) {
	if b == "" || slices.Contains(balances, string(b)) {
		return
	}
	msg := fmt.Sprintf("%q is not a balance policy: use \"round-robin\" (the default), \"least-conn\" (the endpoint with the fewest open connections), \"source-hash\" (a client address always reaches the same endpoint) or \"shard\" (by a key, to the endpoint of its shard)", b)
	if s := closest(string(b), balances); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	v.add(field, "%s", msg)
}

// splits checks the split of ambassador a at p: each a service of its own
// with 1 to 99 percent, together less than 100.
func (v *validator) splits(p string, a *AmbassadorSpec) {
	first := make(map[string]int)
	total := 0
	for i, s := range a.Split {
		sp := pathIndex(pathKey(p, "split"), i)
		field := pathKey(sp, "service")
		switch {
		case s.Service == "":
			v.add(field, "the split needs a service: add service = \"%s-v2\", the group that receives the share", orDefault(a.Service, "cache"))
		case nameProblem(s.Service, "service") != "":
			v.add(field, "%s", nameProblem(s.Service, "service"))
		case s.Service == a.Service:
			v.add(field, "service %q is the ambassador's own service: a split sends a share to another service", s.Service)
		default:
			if j, dup := first[s.Service]; dup {
				v.add(field, "service %q is split to twice (first at %s): write one split with the sum of the percents",
					s.Service, v.where(pathKey(pathIndex(pathKey(p, "split"), j), "service")))
			} else {
				first[s.Service] = i
			}
		}
		switch {
		case s.Percent == 0:
			v.add(pathKey(sp, "percent"), "the split needs a percent: add percent = 10 to send 10%% of new connections to %q", s.Service)
			continue
		case s.Percent < 1 || s.Percent > 99:
			v.add(pathKey(sp, "percent"), "percent %d is out of range: use 1 to 99, the share of new connections that go to %q", s.Percent, s.Service)
			continue
		}
		total += s.Percent
	}
	if total >= 100 {
		v.add(pathKey(p, "split"), "the splits add up to %d%%, which leaves nothing for service %q: keep the total below 100", total, a.Service)
	}
}
