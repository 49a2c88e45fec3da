//go:build linux

package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
)

// CNIConfig configures NewCNI.
type CNIConfig struct {
	// Bridge is the node bridge every group with network = "bridge" is
	// attached to; it also names the CNI network (iptables comments, the
	// IPAM directory), so agents on one host need different bridges.
	Bridge string
	// Subnet is where groups get their addresses; Gateway is the bridge's
	// own address in it (default: the first address of Subnet).
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Outbound lets groups reach beyond the node: the bridge becomes a
	// gateway with IP forwarding on and masquerade, and the firewall
	// plugin admits the groups' forwarded traffic. Without it nothing
	// global (net.ipv4.ip_forward) is changed.
	Outbound bool
	// PluginDirs are searched for the CNI plugins, in order.
	PluginDirs []string
	// PublishAddress, when valid, is the node address that ports without
	// a host IP ("8080:80") are published on; otherwise they are
	// published on every address of the node. Several agents on one host
	// (tests, a lab) each publish on their own address, so that two
	// groups publishing the same port do not take each other's traffic.
	PublishAddress netip.Addr
	// StateDir holds the CNI result cache (StateDir/cache) and the
	// host-local address records (StateDir/ipam): under the agent's state
	// dir, never the global /var/lib/cni, so they survive a reboot with
	// the rest of the agent's state and nothing else shares them.
	StateDir string
	Logger   *slog.Logger
}

// ifName is the group's interface in its namespace.
const ifName = "eth0"

// requiredPlugins are the CNI plugins NewCNI's network list runs.
var requiredPlugins = []string{"bridge", "host-local", "portmap"}

// cniNetwork is the Linux Network: one CNI network list (bridge with
// host-local IPAM, portmap, and firewall when outbound) run by go-cni.
// Each group is one CNI attachment, container ID = group name, interface
// eth0. libcni's result cache is the record of an attachment: it holds
// the address and the port mappings, which a DEL needs again.
type cniNetwork struct {
	cfg      CNIConfig
	cni      gocni.CNI
	cacheDir string // libcni's cache, results under cacheDir/results
	ipamDir  string // host-local's dataDir; records in ipamDir/<bridge>
	log      *slog.Logger

	bridgeMu sync.Mutex // serializes creating the bridge
}

// NewCNI returns the CNI network of cfg. Plugins are looked up when a
// group is attached, so a missing plugin is the group's start failure,
// with the reason, not the agent's.
//
// go-cni cannot set libcni's cache directory per network, so NewCNI sets
// the process-wide libcni.CacheDir: one CNI network per process (the
// agent has one; tests make them one after another).
func NewCNI(cfg CNIConfig) (Network, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Bridge == "" || len(cfg.Bridge) > unix.IFNAMSIZ-1 {
		return nil, fmt.Errorf("cni: bridge name %q must be 1-%d characters: %w", cfg.Bridge, unix.IFNAMSIZ-1, api.ErrInvalid)
	}
	if !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 {
		return nil, fmt.Errorf("cni: subnet %s must be an IPv4 prefix of at most /30: %w", cfg.Subnet, api.ErrInvalid)
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = cfg.Subnet.Addr().Next()
	}
	if !cfg.Subnet.Contains(cfg.Gateway) {
		return nil, fmt.Errorf("cni: gateway %s is not in subnet %s: %w", cfg.Gateway, cfg.Subnet, api.ErrInvalid)
	}
	if cfg.StateDir == "" {
		return nil, fmt.Errorf("cni: a state dir is needed for the CNI cache and address records: %w", api.ErrInvalid)
	}
	n := &cniNetwork{
		cfg:      cfg,
		cacheDir: filepath.Join(cfg.StateDir, "cache"),
		ipamDir:  filepath.Join(cfg.StateDir, "ipam"),
		log:      cfg.Logger,
	}
	for _, d := range []string{n.cacheDir, n.ipamDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("cni: %w", err)
		}
	}
	libcni.CacheDir = n.cacheDir
	conf, err := n.confList()
	if err != nil {
		return nil, err
	}
	c, err := gocni.New(gocni.WithPluginDir(cfg.PluginDirs), gocni.WithInterfacePrefix("eth"), gocni.WithConfListBytes(conf))
	if err != nil {
		return nil, fmt.Errorf("cni: load network config: %w", err)
	}
	n.cni = c
	return n, nil
}

// confList is the CNI network list. The bridge is a gateway (address,
// IP forwarding) and masquerades only with Outbound; otherwise the agent
// gives the bridge its address itself (ensureBridge), which is all the
// host needs to reach the groups and their published ports.
func (n *cniNetwork) confList() ([]byte, error) {
	ipam := map[string]any{
		"type":    "host-local",
		"dataDir": n.ipamDir,
		"ranges":  [][]map[string]string{{{"subnet": n.cfg.Subnet.String(), "gateway": n.cfg.Gateway.String()}}},
		// The default route lets a group answer any address of the node
		// (not only the bridge's); without Outbound the node does not
		// forward, so it goes no further.
		"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
	}
	plugins := []map[string]any{
		{
			"type":        "bridge",
			"bridge":      n.cfg.Bridge,
			"isGateway":   n.cfg.Outbound,
			"ipMasq":      n.cfg.Outbound,
			"hairpinMode": true,
			"ipam":        ipam,
		},
		{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
	}
	if n.cfg.Outbound {
		plugins = append(plugins, map[string]any{"type": "firewall"})
	}
	return json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": n.cfg.Bridge, "plugins": plugins})
}

func (n *cniNetwork) Setup(ctx context.Context, group, netnsPath string, spec *api.GroupSpec) (_ *Attachment, retErr error) {
	ports := PublishedOn(spec.PortMappings(), n.cfg.PublishAddress)
	rec, err := n.cached(group)
	if err != nil {
		return nil, err
	}
	switch {
	case rec != nil && rec.Address != "" && slices.Equal(rec.Ports, ports) && linkInNetns(netnsPath, ifName):
		return rec, nil // attached already: a restart or a reattach
	case rec != nil || n.ipamHeld(group):
		// Other ports, a namespace made anew, or an attach that died half
		// way: start from nothing.
		if err := n.Teardown(ctx, group, netnsPath); err != nil {
			return nil, err
		}
	}
	if err := n.ensureBridge(); err != nil {
		return nil, err
	}
	res, err := n.cni.Setup(ctx, group, netnsPath, gocni.WithCapabilityPortMap(cniPorts(ports)))
	defer func() {
		if retErr != nil {
			// The plugins that succeeded are undone (libcni does not).
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := n.remove(cctx, group, netnsPath, ports); err != nil {
				n.log.Warn("roll back network attach", "group", group, "err", err)
			}
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("network %s: attach group %s: %w", n.cfg.Bridge, group, pluginHint(err, n.cfg.PluginDirs))
	}
	a := &Attachment{Group: group, Interface: ifName, Gateway: n.cfg.Gateway.String(), Ports: ports}
	if c := res.Interfaces[ifName]; c != nil {
		for _, ipc := range c.IPConfigs {
			if ip4 := ipc.IP.To4(); ip4 != nil {
				a.Address = ip4.String()
				break
			}
		}
	}
	if a.Address == "" {
		return nil, fmt.Errorf("network %s: attach group %s: the plugins returned no IPv4 address for %s", n.cfg.Bridge, group, ifName)
	}
	return a, nil
}

func (n *cniNetwork) Teardown(ctx context.Context, group, netnsPath string) error {
	rec, err := n.cached(group)
	if err != nil {
		return err
	}
	if rec == nil && !n.ipamHeld(group) {
		return nil // nothing attached: the fast path of network = "none"/"host"
	}
	var ports []api.PortMapping
	if rec != nil {
		ports = rec.Ports
	}
	if err := n.remove(ctx, group, netnsPath, ports); err != nil {
		return fmt.Errorf("network %s: detach group %s: %w", n.cfg.Bridge, group, pluginHint(err, n.cfg.PluginDirs))
	}
	return nil
}

// remove runs the CNI DEL of group. ports must be the ones it was
// attached with: portmap finds its rules by them. A namespace that is no
// longer pinned is passed as none, so only the address is released (the
// veth went with the namespace); masquerade rules, which the bridge
// plugin removes only with the veth, are removed here then.
func (n *cniNetwork) remove(ctx context.Context, group, netnsPath string, ports []api.PortMapping) error {
	ns := netnsPath
	if ns != "" && (!isNSFS(ns) || isHostNetns(ns)) {
		// Never the node's own namespace: DEL removes eth0 from it.
		ns = ""
	}
	if err := n.cni.Remove(ctx, group, ns, gocni.WithCapabilityPortMap(cniPorts(ports))); err != nil {
		return err
	}
	if ns == "" && n.cfg.Outbound {
		if err := purgeIptablesComment("nat", "POSTROUTING", fmt.Sprintf("name: %q id: %q", n.cfg.Bridge, group)); err != nil {
			return err
		}
	}
	// A cache entry outlives a DEL that had nothing to do; it must not
	// make the group look attached.
	_ = os.Remove(n.cachePath(group))
	return nil
}

func (n *cniNetwork) Reconcile(ctx context.Context, keep func(group string) bool) ([]string, error) {
	groups := map[string]bool{}
	ents, err := os.ReadDir(filepath.Join(n.cacheDir, "results"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network %s: %w", n.cfg.Bridge, err)
	}
	for _, e := range ents {
		if c, err := readCacheFile(filepath.Join(n.cacheDir, "results", e.Name())); err == nil &&
			c.NetworkName == n.cfg.Bridge && c.IfName == ifName {
			groups[c.ContainerID] = true
		}
	}
	for g := range n.ipamRecords() {
		groups[g] = true
	}
	var released []string
	var errs []error
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		if keep(g) {
			continue
		}
		if err := n.Teardown(ctx, g, ""); err != nil {
			errs = append(errs, err)
			continue
		}
		released = append(released, g)
	}
	return released, errors.Join(errs...)
}

// cachePath is where libcni caches the result of group's attachment.
func (n *cniNetwork) cachePath(group string) string {
	return filepath.Join(n.cacheDir, "results", n.cfg.Bridge+"-"+group+"-"+ifName)
}

// cacheFile is the part of libcni's cache format (kind "cniCacheV1")
// read here.
type cacheFile struct {
	Kind           string `json:"kind"`
	ContainerID    string `json:"containerId"`
	IfName         string `json:"ifName"`
	NetworkName    string `json:"networkName"`
	CapabilityArgs struct {
		PortMappings []gocni.PortMapping `json:"portMappings"`
	} `json:"capabilityArgs"`
	Result struct {
		IPs []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	} `json:"result"`
}

func readCacheFile(path string) (*cacheFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c cacheFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("CNI cache %s: %w", path, err)
	}
	return &c, nil
}

// cached returns group's attachment as libcni's cache records it, or nil.
func (n *cniNetwork) cached(group string) (*Attachment, error) {
	c, err := readCacheFile(n.cachePath(group))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		// A cache entry cut short (a crash while it was written): the
		// attachment is torn down and made again.
		n.log.Warn("unreadable CNI cache entry", "group", group, "err", err)
		return &Attachment{Group: group, Interface: ifName}, nil
	}
	a := &Attachment{Group: group, Interface: ifName, Gateway: n.cfg.Gateway.String()}
	for _, ip := range c.Result.IPs {
		if p, err := netip.ParsePrefix(ip.Address); err == nil && p.Addr().Is4() {
			a.Address = p.Addr().String()
			break
		}
	}
	for _, p := range c.CapabilityArgs.PortMappings {
		a.Ports = append(a.Ports, api.PortMapping{HostIP: p.HostIP, HostPort: int(p.HostPort),
			ContainerPort: int(p.ContainerPort), Protocol: api.Protocol(p.Protocol)})
	}
	if a.Ports == nil {
		a.Ports = []api.PortMapping{}
	}
	return a, nil
}

// ipamRecords returns the groups host-local holds an address for, from
// its records: one file per address, "<container id>\r\n<ifname>".
func (n *cniNetwork) ipamRecords() map[string]bool {
	out := map[string]bool{}
	dir := filepath.Join(n.ipamDir, n.cfg.Bridge)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue // lock, last_reserved_ip.0
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		id, _, _ := strings.Cut(string(b), "\n")
		if id = strings.TrimSpace(id); id != "" {
			out[id] = true
		}
	}
	return out
}

func (n *cniNetwork) ipamHeld(group string) bool { return n.ipamRecords()[group] }

// ensureBridge creates the node bridge with the gateway address, or puts
// the address back on it, and sets it up. A new bridge must not overlap an
// address the node already has.
func (n *cniNetwork) ensureBridge() error {
	n.bridgeMu.Lock()
	defer n.bridgeMu.Unlock()
	name := n.cfg.Bridge
	l, err := netlink.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		if err := n.checkOverlap(); err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network %s: create bridge: %w", name, err)
		}
		l, err = netlink.LinkByName(name)
	}
	if err != nil {
		return fmt.Errorf("network %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("network %s: the interface %s exists and is a %s, not a bridge: set another [network] bridge in agent.toml", name, name, l.Type())
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: n.cfg.Gateway.AsSlice(), Mask: net.CIDRMask(n.cfg.Subnet.Bits(), 32)}}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("network %s: %w", name, err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == gw.IPNet.String() }) {
		if err := netlink.AddrAdd(l, gw); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("network %s: address %s on the bridge: %w", name, gw.IPNet, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("network %s: bridge up: %w", name, err)
		}
	}
	return nil
}

// checkOverlap refuses a subnet that overlaps an address of another
// interface of the node (Docker's 172.17.0.0/16, Podman's 10.88.0.0/16, a
// LAN): routes to the groups would be ambiguous.
func (n *cniNetwork) checkOverlap() error {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("network %s: list addresses: %w", n.cfg.Bridge, err)
	}
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		other := netip.PrefixFrom(p, ones).Masked()
		if other.Overlaps(n.cfg.Subnet) && !p.IsLoopback() {
			dev := "?"
			if l, err := netlink.LinkByIndex(a.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			return fmt.Errorf("network %s: subnet %s overlaps %s on interface %s: choose another [network] subnet in agent.toml",
				n.cfg.Bridge, n.cfg.Subnet, other, dev)
		}
	}
	return nil
}

// linkInNetns reports whether the namespace pinned at path has a link
// named name.
func linkInNetns(path, name string) bool {
	if !isNSFS(path) {
		return false
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		return false
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return false
	}
	defer nl.Close()
	_, err = nl.LinkByName(name)
	return err == nil
}

// isHostNetns reports whether path is the agent's own network namespace
// (a group with network = "host" pins it). It looks at the calling
// thread's namespace: a goroutine that did not lock its thread runs on a
// thread in the agent's namespace (threads that join a group's are locked
// to theirs), while /proc/self is the main thread's.
func isHostNetns(path string) bool {
	return sameFile(path, "/proc/thread-self/ns/net")
}

// sameFile reports whether a and b are the same inode.
func sameFile(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func cniPorts(ports []api.PortMapping) []gocni.PortMapping {
	out := make([]gocni.PortMapping, len(ports))
	for i, p := range ports {
		out[i] = gocni.PortMapping{HostPort: int32(p.HostPort), ContainerPort: int32(p.ContainerPort),
			Protocol: string(p.Protocol), HostIP: p.HostIP}
	}
	return out
}

// pluginHint adds what to do to a plugin that cannot be found.
func pluginHint(err error, dirs []string) error {
	if strings.Contains(err.Error(), "failed to find plugin") {
		return fmt.Errorf("%w (searched %s; install the CNI plugins, e.g. apt-get install containernetworking-plugins, or set [network] plugin_dirs in agent.toml)",
			err, strings.Join(dirs, ", "))
	}
	return err
}

// purgeIptablesComment deletes the rules of chain in table that carry
// comment, and the chains they jump to that nothing else uses.
func purgeIptablesComment(table, chain, comment string) error {
	out, err := exec.Command("iptables", "-w", "-t", table, "-S", chain).Output()
	if err != nil {
		return fmt.Errorf("iptables -t %s -S %s: %w", table, chain, err)
	}
	var targets []string
	for _, line := range strings.Split(string(out), "\n") {
		// iptables -S prints the comment quoted, its quotes escaped.
		if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, strings.ReplaceAll(comment, `"`, `\"`)) {
			continue
		}
		args, err := SplitIptablesRule(line)
		if err != nil {
			return err
		}
		args[0] = "-D"
		if b, err := exec.Command("iptables", append([]string{"-w", "-t", table}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -t %s %s: %v: %s", table, strings.Join(args, " "), err, b)
		}
		for i := range args {
			if args[i] == "-j" && i+1 < len(args) && strings.HasPrefix(args[i+1], "CNI-") {
				targets = append(targets, args[i+1])
			}
		}
	}
	sort.Strings(targets)
	for _, t := range slices.Compact(targets) {
		_ = exec.Command("iptables", "-w", "-t", table, "-F", t).Run()
		_ = exec.Command("iptables", "-w", "-t", table, "-X", t).Run()
	}
	return nil
}

// SplitIptablesRule splits a line of iptables -S into arguments, undoing
// its double quotes ("name: \"berth0\" id: \"web\"").
func SplitIptablesRule(line string) ([]string, error) {
	var args []string
	var b strings.Builder
	inQuote, escaped, have := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			b.WriteRune(r)
			escaped = false
		case r == '\\' && inQuote:
			escaped = true
		case r == '"':
			inQuote = !inQuote
			have = true
		case r == ' ' && !inQuote:
			if have || b.Len() > 0 {
				args = append(args, b.String())
			}
			b.Reset()
			have = false
		default:
			b.WriteRune(r)
		}
	}
	if inQuote {
		return nil, fmt.Errorf("iptables rule with an open quote: %s", line)
	}
	if have || b.Len() > 0 {
		args = append(args, b.String())
	}
	return args, nil
}
