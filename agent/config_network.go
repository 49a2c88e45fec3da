package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// NetworkConfig is [network] in agent.toml: the node bridge that groups
// with network = "bridge" (the default) get their address on, through the
// standard CNI plugins.
type NetworkConfig struct {
	// Bridge is the node bridge's name (at most 15 characters). It also
	// names the CNI network, so two agents on one host need two bridges.
	Bridge string `toml:"bridge"`
	// Subnet is where groups get addresses. The default, 10.89.0.0/16,
	// is neither Docker's 172.17.0.0/16 nor Podman's 10.88.0.0/16.
	Subnet string `toml:"subnet"`
	// Gateway is the bridge's own address; default the first address of
	// Subnet.
	Gateway string `toml:"gateway"`
	// Outbound lets groups reach beyond the node: it turns on IP
	// forwarding (net.ipv4.ip_forward, for the whole node) and masquerades
	// the groups' traffic. Published ports are then also reachable from
	// other machines. Default false: nothing global is changed, and
	// groups reach the node and each other only.
	Outbound bool `toml:"outbound"`
	// PluginDirs are searched for the CNI plugins (bridge, host-local,
	// portmap, firewall), in order.
	PluginDirs []string `toml:"plugin_dirs"`
	// PublishAddress is the node address that published ports without a
	// host IP ("9000:80") are published on, and the address other nodes
	// reach this node's endpoints at (the ambassadors of other nodes
	// connect to it). Empty or "0.0.0.0": ports are published on every
	// address, and other nodes use the node's cluster advertise address.
	// Set it on a machine with several addresses, or when several agents
	// share one host (each on its own address: portmap's rules match a
	// port on any local address, so two agents publishing one port
	// without it would take each other's traffic).
	PublishAddress string `toml:"publish_address"`
}

// PublishAddressLabel is the node label by which a node with a publish
// address tells the others (through gossip and the Raft state) where its
// published ports are. The agent sets it; it is not for agent.toml.
const PublishAddressLabel = "berth.io/publish-address"

// DefaultNetworkConfig returns [network] of a stock install.
func DefaultNetworkConfig() NetworkConfig {
	return NetworkConfig{
		Bridge:     "berth0",
		Subnet:     "10.89.0.0/16",
		PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
	}
}

// Validate checks [network] and cleans its paths.
func (n *NetworkConfig) Validate() error {
	var errs []error
	switch {
	case n.Bridge == "":
		errs = append(errs, errors.New(`network.bridge: must be set, e.g. "berth0"`))
	case len(n.Bridge) > 15:
		errs = append(errs, fmt.Errorf("network.bridge %q: is %d characters long; interface names have at most 15", n.Bridge, len(n.Bridge)))
	case strings.ContainsAny(n.Bridge, "/: \t\n") || n.Bridge == "." || n.Bridge == "..":
		errs = append(errs, fmt.Errorf("network.bridge %q: is not a valid interface name (no '/', ':' or whitespace)", n.Bridge))
	}
	subnet, err := netip.ParsePrefix(n.Subnet)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("network.subnet %q: is not a CIDR prefix such as \"10.89.0.0/16\"", n.Subnet))
	case !subnet.Addr().Is4():
		errs = append(errs, fmt.Errorf("network.subnet %s: must be IPv4", n.Subnet))
	case subnet.Bits() > 30 || subnet.Bits() < 8:
		errs = append(errs, fmt.Errorf("network.subnet %s: the prefix length must be between /8 and /30", n.Subnet))
	case subnet.Masked() != subnet:
		errs = append(errs, fmt.Errorf("network.subnet %s: has host bits set; write %s", n.Subnet, subnet.Masked()))
	}
	if n.Gateway != "" {
		gw, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || !gw.Is4():
			errs = append(errs, fmt.Errorf("network.gateway %q: is not an IPv4 address", n.Gateway))
		case subnet.IsValid() && !subnet.Contains(gw):
			errs = append(errs, fmt.Errorf("network.gateway %s: is not in network.subnet %s", n.Gateway, n.Subnet))
		case subnet.IsValid() && (gw == subnet.Addr() || gw == lastAddr(subnet)):
			errs = append(errs, fmt.Errorf("network.gateway %s: is the network or broadcast address of %s", n.Gateway, n.Subnet))
		}
	}
	if n.PublishAddress != "" {
		a, err := netip.ParseAddr(n.PublishAddress)
		switch {
		case err != nil || !a.Is4():
			errs = append(errs, fmt.Errorf("network.publish_address %q: is not an IPv4 address (published ports are IPv4 only); leave it out to publish on every address", n.PublishAddress))
		case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			errs = append(errs, fmt.Errorf("network.publish_address %s: is not a unicast address of the node", n.PublishAddress))
		}
	}
	if len(n.PluginDirs) == 0 {
		errs = append(errs, errors.New(`network.plugin_dirs: must list at least one directory, e.g. ["/usr/lib/cni", "/opt/cni/bin"]`))
	}
	for i, d := range n.PluginDirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("network.plugin_dirs[%d] %q: must be an absolute path", i, d))
			continue
		}
		n.PluginDirs[i] = filepath.Clean(d)
	}
	return errors.Join(errs...)
}

// lastAddr is the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 1 << (7 - i%8)
	}
	return netip.AddrFrom4(a)
}

// cniConfig is the supervisor's CNI configuration of [network]; the CNI
// cache and address records go under stateDir/cni.
func (n *NetworkConfig) cniConfig(stateDir string, log *slog.Logger) (supervisor.CNIConfig, error) {
	if err := n.Validate(); err != nil {
		return supervisor.CNIConfig{}, fmt.Errorf("agent config: %w: %w", err, api.ErrInvalid)
	}
	c := supervisor.CNIConfig{
		Bridge:     n.Bridge,
		Subnet:     netip.MustParsePrefix(n.Subnet),
		Outbound:   n.Outbound,
		PluginDirs: n.PluginDirs,
		StateDir:   filepath.Join(stateDir, "cni"),
		Logger:     log,
	}
	if n.Gateway != "" {
		c.Gateway = netip.MustParseAddr(n.Gateway)
	}
	if n.PublishAddress != "" {
		c.PublishAddress = netip.MustParseAddr(n.PublishAddress)
	}
	return c, nil
}

// publishAddress is the publish address of [network], or the invalid
// address when ports are published on every address.
func (n *NetworkConfig) publishAddress() netip.Addr {
	a, err := netip.ParseAddr(n.PublishAddress)
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// labelPublishAddress records this node's publish address in its labels
// (PublishAddressLabel), which gossip and the Raft state carry to the
// other nodes; without one, a label of that name set by hand is dropped,
// so that no node is advertised at an address it does not publish on.
func (a *Agent) labelPublishAddress() {
	addr := a.cfg.Network.publishAddress()
	if v, ok := a.cfg.Node.Labels[PublishAddressLabel]; ok && (!addr.IsValid() || v != addr.String()) {
		a.log.Warn("node label "+PublishAddressLabel+" is set by the agent from [network] publish_address; ignoring the one in agent.toml", "value", v)
		delete(a.cfg.Node.Labels, PublishAddressLabel)
	}
	if !addr.IsValid() {
		return
	}
	labels := maps.Clone(a.cfg.Node.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[PublishAddressLabel] = addr.String()
	a.cfg.Node.Labels = labels
}

// newNetwork makes the node network that groups with network = "bridge"
// attach to.
func (a *Agent) newNetwork() (supervisor.Network, error) {
	c, err := a.cfg.Network.cniConfig(a.cfg.StateDir, a.log)
	if err != nil {
		return nil, err
	}
	a.labelPublishAddress()
	return supervisor.NewCNI(c)
}
