package agent

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-project/berth/api"
)

func TestNetworkConfigDefaults(t *testing.T) {
	c := DefaultConfig()
	n := c.Network
	if n.Bridge != "berth0" || n.Subnet != "10.89.0.0/16" || n.Outbound || len(n.PluginDirs) != 2 || n.PluginDirs[0] != "/usr/lib/cni" {
		t.Errorf("defaults %+v", n)
	}
	cc, err := n.cniConfig("/var/lib/berth", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cc.StateDir != "/var/lib/berth/cni" || cc.Subnet != netip.MustParsePrefix("10.89.0.0/16") || cc.Gateway.IsValid() {
		t.Errorf("CNI config %+v: want the state under /var/lib/berth/cni and the default gateway", cc)
	}
}

func TestNetworkConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*NetworkConfig)
		want string // "" valid
	}{
		{"defaults", func(*NetworkConfig) {}, ""},
		{"gateway in the subnet", func(n *NetworkConfig) { n.Gateway = "10.89.255.254" }, ""},
		{"bridge required", func(n *NetworkConfig) { n.Bridge = "" }, "network.bridge: must be set"},
		{"bridge at most 15 characters", func(n *NetworkConfig) { n.Bridge = "berth-bridge-one" }, "is 16 characters long; interface names have at most 15"},
		{"bridge without slash", func(n *NetworkConfig) { n.Bridge = "a/b" }, "is not a valid interface name"},
		{"subnet is a prefix", func(n *NetworkConfig) { n.Subnet = "10.89.0.0" }, `network.subnet "10.89.0.0": is not a CIDR prefix`},
		{"subnet IPv4", func(n *NetworkConfig) { n.Subnet = "fd00::/64" }, "must be IPv4"},
		{"subnet not too small", func(n *NetworkConfig) { n.Subnet = "10.89.0.0/31" }, "between /8 and /30"},
		{"subnet without host bits", func(n *NetworkConfig) { n.Subnet = "10.89.3.0/16" }, "has host bits set; write 10.89.0.0/16"},
		{"gateway an address", func(n *NetworkConfig) { n.Gateway = "gw" }, `network.gateway "gw": is not an IPv4 address`},
		{"gateway outside the subnet", func(n *NetworkConfig) { n.Gateway = "10.90.0.1" }, "is not in network.subnet 10.89.0.0/16"},
		{"gateway not the broadcast", func(n *NetworkConfig) { n.Gateway = "10.89.255.255" }, "is the network or broadcast address"},
		{"gateway not the network", func(n *NetworkConfig) { n.Gateway = "10.89.0.0" }, "is the network or broadcast address"},
		{"plugin dirs", func(n *NetworkConfig) { n.PluginDirs = nil }, "network.plugin_dirs: must list at least one"},
		{"plugin dirs absolute", func(n *NetworkConfig) { n.PluginDirs = []string{"cni"} }, `network.plugin_dirs[0] "cni": must be an absolute path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.NodeName = "n1"
			tt.edit(&c.Network)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, api.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid containing %q", err, tt.want)
			}
		})
	}
}

func TestNetworkConfigFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.toml")
	content := "[network]\nbridge = \"br-test\"\nsubnet = \"10.200.1.0/24\"\ngateway = \"10.200.1.254\"\noutbound = true\nplugin_dirs = [\"/opt/cni/bin/\"]\n"
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.NodeName = "n1"
	if err := LoadConfigFile(p, &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := NetworkConfig{Bridge: "br-test", Subnet: "10.200.1.0/24", Gateway: "10.200.1.254", Outbound: true, PluginDirs: []string{"/opt/cni/bin"}}
	if got := c.Network; got.Bridge != want.Bridge || got.Subnet != want.Subnet || got.Gateway != want.Gateway ||
		got.Outbound != want.Outbound || len(got.PluginDirs) != 1 || got.PluginDirs[0] != want.PluginDirs[0] {
		t.Errorf("network = %+v, want %+v", got, want)
	}
}
