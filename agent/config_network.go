package agent

import (
	"errors"
	"fmt"
	"log/slog"
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
}

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
	return c, nil
}

// newNetwork makes the node network that groups with network = "bridge"
// attach to.
func (a *Agent) newNetwork() (supervisor.Network, error) {
	c, err := a.cfg.Network.cniConfig(a.cfg.StateDir, a.log)
	if err != nil {
		return nil, err
	}
	return supervisor.NewCNI(c)
}
