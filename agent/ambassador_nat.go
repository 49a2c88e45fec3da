package agent

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/berth-project/berth/agent/ambassador"
	"github.com/berth-project/berth/api"
)

// An ambassador with mode = "nat" is not a listener: the agent writes
// iptables rules inside the group's network namespace (with nsenter and
// iptables-restore, which on Debian 12 is iptables-nft) and the kernel
// rewrites the group's connections to Listen into connections to one
// endpoint, with no process in between. The rules:
//
//	nat OUTPUT:     -d <ip>/32 -p tcp --dport <port> -j BERTH-AMB-<ip hex>-<port>
//	nat BERTH-AMB-<ip hex>-<port>: one DNAT per endpoint, round robin with
//	                -m statistic --mode nth, or with a split by
//	                --mode random --probability (the share of each)
//	filter OUTPUT:  -d <ip>/32 -p tcp --dport <port> -j REJECT --reject-with tcp-reset
//	                (what was not DNAT'd: no endpoint; the client fails fast)
//
// and, when Listen is a loopback address, for the whole group:
//
//	route_localnet = 1 (net.ipv4.conf.all), so that a connection from
//	    127.0.0.1 may leave by eth0 once DNAT'd;
//	nat POSTROUTING → BERTH-AMB-POST: -s 127.0.0.0/8 ! -o lo -j MASQUERADE
//	    (the endpoint answers the group's address, not its own loopback);
//	filter INPUT → BERTH-AMB-GUARD: drop new packets to 127.0.0.0/8 that
//	    arrive on any other interface than lo: route_localnet would
//	    otherwise let the bridge reach the group's loopback-only services
//	    (kube-proxy's CVE-2020-8558).
//
// The chain of an ambassador is replaced whole, in one iptables-restore
// transaction, whenever its endpoints change. The rules live in the
// group's namespace and go with it. The kernel decides per connection,
// without state: no retries, no least-conn, no keys (the API refuses
// those balances with nat), and only endpoints that the group's own
// namespace can route to: the node's bridge endpoints, and other nodes'
// published ports when [network] outbound is on (the node forwards and
// masquerades). Others get no connections and a Warning event.

const (
	natChainPrefix = "BERTH-AMB-"
	natPostChain   = "BERTH-AMB-POST"
	natGuardChain  = "BERTH-AMB-GUARD"
)

// natAmbassador is one ambassador with mode = "nat".
type natAmbassador struct {
	netns string
	spec  api.AmbassadorSpec
	ip    netip.Addr
	lport int // listen port
	port  int // service port
	// mu orders update and close; after close nothing is written.
	mu     sync.Mutex
	closed bool
	// applied is the chain last written, so that an unchanged feed
	// writes nothing.
	applied string
}

// natTarget is one DNAT destination, or none (reject) when addr is "".
type natTarget struct {
	addr   string
	weight float64 // share of new connections, 0..1
}

// newNatAmbassador checks the tools and spec and installs the hooks, with
// an empty chain (every connection refused until the first endpoints).
func newNatAmbassador(netns string, spec api.AmbassadorSpec) (*natAmbassador, error) {
	port, err := ambassador.ServicePort(spec)
	if err != nil {
		return nil, err
	}
	ap, err := netip.ParseAddrPort(spec.Listen)
	if err != nil || !ap.Addr().Unmap().Is4() || ap.Addr().IsUnspecified() {
		return nil, fmt.Errorf("ambassador %s: mode = \"nat\" needs an IPv4 address and port", spec.Listen)
	}
	for _, tool := range []string{"nsenter", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("ambassador %s: mode = \"nat\" needs %s on the node (install iptables and util-linux): %w", spec.Listen, tool, err)
		}
	}
	n := &natAmbassador{netns: netns, spec: spec, ip: ap.Addr().Unmap(), lport: int(ap.Port()), port: port}
	saved, err := natRun(netns, nil, "iptables-save")
	if err != nil {
		return nil, fmt.Errorf("ambassador %s: reading the group's rules: %w", spec.Listen, err)
	}
	if n.ip.IsLoopback() {
		if _, err := natRun(netns, nil, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"); err != nil {
			return nil, fmt.Errorf("ambassador %s: route_localnet in the group's network namespace: %w", spec.Listen, err)
		}
	}
	if _, err := natRun(netns, []byte(n.setupRules(saved)), "iptables-restore", "--noflush", "-w"); err != nil {
		return nil, fmt.Errorf("ambassador %s: installing the nat rules: %w", spec.Listen, err)
	}
	n.applied = n.chainRules(nil)
	return n, nil
}

// chain is the ambassador's nat chain.
func (n *natAmbassador) chain() string {
	return natChainName(n.ip, n.lport)
}

func natChainName(ip netip.Addr, port int) string {
	b := ip.As4()
	return fmt.Sprintf("%s%02X%02X%02X%02X-%d", natChainPrefix, b[0], b[1], b[2], b[3], port)
}

// match is the rule match of connections to Listen, as iptables-save
// prints it.
func (n *natAmbassador) match() string {
	return fmt.Sprintf("-d %s/32 -p tcp -m tcp --dport %d", n.ip, n.lport)
}

// hooks are the rules outside the ambassador's chain, by table, as
// iptables-save prints them.
func (n *natAmbassador) hooks() (nat, filter []string) {
	nat = []string{"-A OUTPUT " + n.match() + " -j " + n.chain()}
	filter = []string{"-A OUTPUT " + n.match() + " -j REJECT --reject-with tcp-reset"}
	if n.ip.IsLoopback() {
		nat = append(nat, "-A POSTROUTING -j "+natPostChain)
		filter = append(filter, "-A INPUT -j "+natGuardChain)
	}
	return nat, filter
}

// setupRules is the iptables-restore input that installs the ambassador
// in a namespace whose iptables-save is saved: its chain (empty), the
// loopback chains when Listen is a loopback address, and the hooks that
// are not there yet.
func (n *natAmbassador) setupRules(saved []byte) string {
	have := map[string]bool{}
	for _, l := range strings.Split(string(saved), "\n") {
		have[strings.TrimSpace(l)] = true
	}
	natHooks, filterHooks := n.hooks()
	var b strings.Builder
	b.WriteString("*nat\n")
	b.WriteString(":" + n.chain() + " - [0:0]\n")
	if n.ip.IsLoopback() {
		b.WriteString(":" + natPostChain + " - [0:0]\n")
		b.WriteString("-A " + natPostChain + " -s 127.0.0.0/8 ! -o lo -j MASQUERADE\n")
	}
	for _, h := range natHooks {
		if !have[h] {
			b.WriteString(h + "\n")
		}
	}
	b.WriteString("COMMIT\n*filter\n")
	if n.ip.IsLoopback() {
		b.WriteString(":" + natGuardChain + " - [0:0]\n")
		b.WriteString("-A " + natGuardChain + " -d 127.0.0.0/8 ! -i lo -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n")
	}
	for _, h := range filterHooks {
		if !have[h] {
			b.WriteString(h + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// chainRules is the iptables-restore input that replaces the
// ambassador's chain with DNAT to targets. A target without an address
// is a share with no endpoint: it returns undone, and filter OUTPUT
// rejects it.
func (n *natAmbassador) chainRules(targets []natTarget) string {
	c := n.chain()
	var b strings.Builder
	b.WriteString("*nat\n:" + c + " - [0:0]\n")
	equal := true
	for _, t := range targets {
		equal = equal && t.weight == targets[0].weight && t.addr != ""
	}
	left := 1.0
	for i, t := range targets {
		rest := len(targets) - i
		stat := ""
		switch {
		case rest == 1:
		case equal: // exact round robin: every rest-th of what reaches it
			stat = fmt.Sprintf(" -m statistic --mode nth --every %d --packet 0", rest)
		default:
			stat = fmt.Sprintf(" -m statistic --mode random --probability %.8f", t.weight/left)
		}
		left -= t.weight
		if t.addr == "" {
			if rest > 1 {
				b.WriteString("-A " + c + " -p tcp" + stat + " -j RETURN\n")
			}
			continue
		}
		b.WriteString("-A " + c + " -p tcp" + stat + " -j DNAT --to-destination " + t.addr + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// natTargets spreads the ambassador's connections: the main service's
// share (100 % less the splits) and each split's, each over the
// endpoints of its service. A split service without an endpoint gives
// its share to the main service (as the proxy hands such a connection
// back); a main service without one keeps its share as a reject.
func natTargets(spec api.AmbassadorSpec, addrs map[string][]string) []natTarget {
	type share struct {
		addrs []string
		pct   int
	}
	mainPct := 100
	var splits []share
	for _, s := range spec.Split {
		if len(addrs[s.Service]) > 0 {
			splits = append(splits, share{addrs[s.Service], s.Percent})
			mainPct -= s.Percent
		}
	}
	var out []natTarget
	add := func(sh share) {
		if len(sh.addrs) == 0 {
			out = append(out, natTarget{weight: float64(sh.pct) / 100})
			return
		}
		for _, a := range sh.addrs {
			out = append(out, natTarget{addr: a, weight: float64(sh.pct) / 100 / float64(len(sh.addrs))})
		}
	}
	add(share{addrs[spec.Service], mainPct})
	for _, s := range splits {
		add(s)
	}
	if len(out) == 1 && out[0].addr == "" {
		return nil // no endpoint at all: the chain is empty
	}
	return out
}

// natAddrs is where the group's namespace reaches the endpoints at the
// service port: a bridge endpoint of this node at its address, one on
// another node at its published port (or its address, for network =
// "host") when outbound is on. The others are returned, with why.
func natAddrs(eps []api.Endpoint, port int, self string, outbound bool) (addrs, unreachable []string) {
	routable := func(s string) bool {
		ip, err := netip.ParseAddr(s)
		return err == nil && ip.Unmap().Is4() && !ip.IsLoopback() && !ip.IsUnspecified()
	}
	for _, ep := range eps {
		name := ep.Group + " on " + ep.Node
		if ep.Node == self {
			if ep.Address == "" || !routable(ep.Address) {
				unreachable = append(unreachable, name+" (network = \"host\": on the node, not on the bridge)")
				continue
			}
			addrs = append(addrs, net.JoinHostPort(ep.Address, strconv.Itoa(port)))
			continue
		}
		if !outbound {
			unreachable = append(unreachable, name+" (another node: needs [network] outbound = true on this node)")
			continue
		}
		addr := ""
		if ep.Address != "" && routable(ep.Address) {
			addr = net.JoinHostPort(ep.Address, strconv.Itoa(port))
		} else {
			for _, p := range ep.Ports {
				if p.ContainerPort == port && p.Protocol == api.ProtocolTCP && routable(p.HostIP) {
					addr = net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
					break
				}
			}
		}
		if addr == "" {
			unreachable = append(unreachable, fmt.Sprintf("%s (publishes container port %d on no address the group can route to)", name, port))
			continue
		}
		addrs = append(addrs, addr)
	}
	return addrs, unreachable
}

// services are the services the ambassador sends to.
func (n *natAmbassador) services() []string {
	out := []string{n.spec.Service}
	for _, s := range n.spec.Split {
		out = append(out, s.Service)
	}
	return out
}

// update writes the chain for the endpoints in v, if it changed, and
// returns the warning for endpoints it cannot reach ("" if none).
func (n *natAmbassador) update(v *endpointView, outbound bool) (warning string, err error) {
	addrs := map[string][]string{}
	var unreachable []string
	for _, svc := range n.services() {
		a, u := natAddrs(v.endpoints(svc), n.port, v.self, outbound)
		addrs[svc] = a
		unreachable = append(unreachable, u...)
	}
	if len(unreachable) > 0 {
		warning = fmt.Sprintf("ambassador %s (mode = \"nat\"): ready endpoints the group's network namespace cannot reach get no connections: %s",
			n.spec.Listen, strings.Join(unreachable, ", "))
	}
	rules := n.chainRules(natTargets(n.spec, addrs))
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || rules == n.applied {
		return warning, nil
	}
	if _, err := natRun(n.netns, []byte(rules), "iptables-restore", "--noflush", "-w"); err != nil {
		return warning, fmt.Errorf("ambassador %s: writing the nat rules: %w", n.spec.Listen, err)
	}
	n.applied = rules
	return warning, nil
}

// forget stops updates and leaves the rules: the namespace is going, or
// the agent stops (the rules keep working until the next agent takes
// them over).
func (n *natAmbassador) forget() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
}

// close removes the ambassador's rules (not the loopback guard and
// route_localnet, which other nat ambassadors of the group may need; they
// go with the namespace).
func (n *natAmbassador) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	natHooks, filterHooks := n.hooks()
	var b strings.Builder
	b.WriteString("*nat\n")
	b.WriteString(strings.Replace(natHooks[0], "-A ", "-D ", 1) + "\n")
	b.WriteString("-F " + n.chain() + "\n-X " + n.chain() + "\n")
	b.WriteString("COMMIT\n*filter\n")
	b.WriteString(strings.Replace(filterHooks[0], "-A ", "-D ", 1) + "\n")
	b.WriteString("COMMIT\n")
	if _, err := natRun(n.netns, []byte(b.String()), "iptables-restore", "--noflush", "-w"); err != nil {
		return fmt.Errorf("ambassador %s: removing the nat rules: %w", n.spec.Listen, err)
	}
	return nil
}

// natSweep removes, in the namespace at netns, the nat ambassadors'
// rules of listen addresses that keep (by chain name) does not hold: an
// ambassador that a spec changed while no agent ran.
func natSweep(netns string, keep map[string]bool) error {
	if _, err := exec.LookPath("iptables-save"); err != nil {
		return nil // nothing can have been installed
	}
	saved, err := natRun(netns, nil, "iptables-save")
	if err != nil {
		return err
	}
	var stale []string
	for _, l := range strings.Split(string(saved), "\n") {
		if c, ok := strings.CutPrefix(l, ":"+natChainPrefix); ok {
			name := natChainPrefix + strings.Fields(c)[0]
			if name != natPostChain && name != natGuardChain && !keep[name] {
				stale = append(stale, name)
			}
		}
	}
	if len(stale) == 0 {
		return nil
	}
	var natB, filterB strings.Builder
	table := ""
	for _, l := range strings.Split(string(saved), "\n") {
		if strings.HasPrefix(l, "*") {
			table = l[1:]
		}
		if !strings.HasPrefix(l, "-A OUTPUT ") {
			continue
		}
		for _, c := range stale {
			ip, port, ok := natChainAddr(c)
			if !ok {
				continue
			}
			m := fmt.Sprintf("-A OUTPUT -d %s/32 -p tcp -m tcp --dport %d -j ", ip, port)
			switch {
			case table == "nat" && l == m+c:
				natB.WriteString("-D" + l[2:] + "\n")
			case table == "filter" && l == m+"REJECT --reject-with tcp-reset":
				filterB.WriteString("-D" + l[2:] + "\n")
			}
		}
	}
	for _, c := range stale {
		natB.WriteString("-F " + c + "\n-X " + c + "\n")
	}
	in := "*nat\n" + natB.String() + "COMMIT\n*filter\n" + filterB.String() + "COMMIT\n"
	_, err = natRun(netns, []byte(in), "iptables-restore", "--noflush", "-w")
	return err
}

// natChainAddr reads the listen address back from a chain name.
func natChainAddr(chain string) (netip.Addr, int, bool) {
	rest, ok := strings.CutPrefix(chain, natChainPrefix)
	hex, p, ok2 := strings.Cut(rest, "-")
	if !ok || !ok2 || len(hex) != 8 {
		return netip.Addr{}, 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 32)
	port, err2 := strconv.Atoi(p)
	if err != nil || err2 != nil {
		return netip.Addr{}, 0, false
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), port, true
}

// natRun runs a command inside the network namespace at netns, with
// stdin, and returns its output; an error carries its stderr.
func natRun(netns string, stdin []byte, cmd ...string) ([]byte, error) {
	c := exec.Command("nsenter", append([]string{"--net=" + netns, "--"}, cmd...)...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(cmd, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// natChainNames are the chains of a group's nat ambassadors, by name.
func natChainNames(specs map[string]api.AmbassadorSpec) map[string]bool {
	out := map[string]bool{}
	for _, s := range specs {
		if s.Mode != api.AmbassadorNAT {
			continue
		}
		if ap, err := netip.ParseAddrPort(s.Listen); err == nil && ap.Addr().Unmap().Is4() {
			out[natChainName(ap.Addr().Unmap(), int(ap.Port()))] = true
		}
	}
	return out
}
