//go:build linux

package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
)

var testBridgeSeq atomic.Int32

// needCNI skips the test without root, iptables or the CNI plugins in
// /usr/lib/cni, or fails it when CI=true.
func needCNI(t *testing.T) {
	t.Helper()
	needRootForNetns(t)
	var missing []string
	for _, p := range requiredPlugins {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			missing = append(missing, "/usr/lib/cni/"+p)
		}
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		missing = append(missing, "iptables")
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("needs %v (CI=true: a missing prerequisite is a failure)", missing)
	}
	t.Skipf("needs %v", missing)
}

// testCNI is a CNI network on a bridge and /24 of its own (unique to this
// process and test), with sandboxes using it. Cleanup deletes the bridge
// and the shared portmap chains if the test made them.
type testCNI struct {
	net      *cniNetwork
	sb       *hostSandboxes
	bridge   string
	subnet   netip.Prefix
	stateDir string
}

func newTestCNI(t *testing.T, opts ...func(*CNIConfig)) *testCNI {
	t.Helper()
	needCNI(t)
	n := testBridgeSeq.Add(1)
	bridge := fmt.Sprintf("bu%dx%d", os.Getpid()%100000, n)
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 240+os.Getpid()%10, (os.Getpid()/10*7+int(n))%250))
	dir := t.TempDir()
	hadChains := iptablesChains(t)
	cfg := CNIConfig{Bridge: bridge, Subnet: subnet, PluginDirs: []string{"/usr/lib/cni"},
		StateDir: filepath.Join(dir, "state", "cni"), Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&cfg)
	}
	nw, err := NewCNI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCNI{net: nw.(*cniNetwork), bridge: bridge, subnet: subnet, stateDir: filepath.Join(dir, "state", "cni"),
		sb: &hostSandboxes{runDir: filepath.Join(dir, "run"), stateDir: filepath.Join(dir, "state")}}
	tc.sb.useNetwork(nw)
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete bridge %s: %v", bridge, err)
			}
		}
		removeEmptyPortmapChains(t, hadChains)
		removeEmptyFirewallChains(t, hadChains)
	})
	return tc
}

// iptablesChains lists the CNI chains of the nat and filter tables.
func iptablesChains(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, table := range []string{"nat", "filter"} {
		b, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			t.Fatalf("iptables -t %s -S: %v", table, err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], "CNI-") {
				out[table+"/"+f[1]] = true
			}
		}
	}
	return out
}

// iptablesMentions returns the nat and filter rules that mention s.
func iptablesMentions(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"nat", "filter"} {
		b, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, s) {
				out = append(out, table+": "+l)
			}
		}
	}
	return out
}

// removeEmptyPortmapChains deletes the portmap plugin's shared chains when
// the test made them and no rule of any container is left in them.
func removeEmptyPortmapChains(t *testing.T, had map[string]bool) {
	t.Helper()
	now := iptablesChains(t)
	if !now["nat/CNI-HOSTPORT-DNAT"] || had["nat/CNI-HOSTPORT-DNAT"] {
		return
	}
	b, _ := exec.Command("iptables", "-w", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT").Output()
	if strings.Contains(string(b), "-A CNI-HOSTPORT-DNAT") {
		return // in use by someone else
	}
	for _, jump := range [][]string{
		{"PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
		{"OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
		{"POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"},
	} {
		_ = exec.Command("iptables", append([]string{"-w", "-t", "nat", "-D"}, jump...)...).Run()
	}
	for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"} {
		if had["nat/"+c] {
			continue
		}
		_ = exec.Command("iptables", "-w", "-t", "nat", "-F", c).Run()
		if out, err := exec.Command("iptables", "-w", "-t", "nat", "-X", c).CombinedOutput(); err != nil {
			t.Errorf("delete chain %s: %v: %s", c, err, out)
		}
	}
}

// removeEmptyFirewallChains deletes the firewall plugin's shared chains
// when the test made them and no container's rule is left in them.
func removeEmptyFirewallChains(t *testing.T, had map[string]bool) {
	t.Helper()
	now := iptablesChains(t)
	if !now["filter/CNI-FORWARD"] || had["filter/CNI-FORWARD"] {
		return
	}
	b, _ := exec.Command("iptables", "-w", "-S", "CNI-FORWARD").Output()
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "-A CNI-FORWARD") && !strings.Contains(l, "-j CNI-ADMIN") {
			return // in use by someone else
		}
	}
	_ = exec.Command("iptables", "-w", "-D", "FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD").Run()
	for _, c := range []string{"CNI-FORWARD", "CNI-ADMIN"} {
		if had["filter/"+c] {
			continue
		}
		_ = exec.Command("iptables", "-w", "-F", c).Run()
		if out, err := exec.Command("iptables", "-w", "-X", c).CombinedOutput(); err != nil {
			t.Errorf("delete chain %s: %v: %s", c, err, out)
		}
	}
}

// freePort returns a TCP port of 127.0.0.1 nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// serve answers each connection with answer, then closes it.
func serve(ln net.Listener, answer string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, answer)
			c.Close()
		}
	}()
}

// fetch connects to addr and returns what it says.
func fetch(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func bridgeSpec(name string, ports ...string) *api.GroupSpec {
	return &api.GroupSpec{Name: name, Ports: ports, Containers: []api.ContainerSpec{{Name: "app", Image: "x"}}}
}

// linkAddrs returns the IPv4 addresses of link name in the namespace at
// path.
func linkAddrs(t *testing.T, path, name string) []string {
	t.Helper()
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	l, err := nl.LinkByName(name)
	if err != nil {
		return nil
	}
	as, err := nl.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		out = append(out, a.IP.String())
	}
	return out
}

// bridgePorts counts the interfaces attached to bridge.
func bridgePorts(t *testing.T, bridge string) int {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return 0
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			n++
		}
	}
	return n
}

// TestCNIBridgeAttachPublishAndRelease: a bridge group gets an address of
// the subnet on eth0, the host reaches it by address and through its
// published port, a second Ensure keeps the same attachment, and Destroy
// releases the address, the veth, the cache entry and the port rules.
func TestCNIBridgeAttachPublishAndRelease(t *testing.T) {
	tc := newTestCNI(t)
	ctx := context.Background()
	hostPort := freePort(t)
	spec := bridgeSpec("web", fmt.Sprintf("127.0.0.1:%d:8080", hostPort))
	sb, err := tc.sb.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	destroyed := false
	t.Cleanup(func() {
		if !destroyed {
			_ = tc.sb.Destroy(ctx, "web")
		}
	})
	st := sb.Network
	if st == nil || st.Mode != api.NetworkBridge || !tc.subnet.Contains(netip.MustParseAddr(st.Address)) {
		t.Fatalf("network status %+v: want bridge mode and an address in %s", st, tc.subnet)
	}
	if st.Address == tc.subnet.Addr().Next().String() {
		t.Errorf("the group got the gateway's address %s", st.Address)
	}
	if want := []api.PortMapping{{HostIP: "127.0.0.1", HostPort: hostPort, ContainerPort: 8080, Protocol: api.ProtocolTCP}}; !slices.Equal(st.Ports, want) {
		t.Errorf("ports %+v, want %+v", st.Ports, want)
	}
	if got := linkAddrs(t, sb.NetNSPath, "eth0"); !slices.Equal(got, []string{st.Address}) {
		t.Errorf("eth0 in the group's netns has %v, want [%s]", got, st.Address)
	}
	hosts, err := os.ReadFile(sb.Files["/etc/hosts"])
	if err != nil || !strings.Contains(string(hosts), st.Address+"\tweb\n") {
		t.Errorf("/etc/hosts lacks the group's address: %q (%v)", hosts, err)
	}

	ln := listenInNetns(t, sb.NetNSPath, "0.0.0.0:8080")
	serve(ln, "hello from web")
	for _, addr := range []string{net.JoinHostPort(st.Address, "8080"), fmt.Sprintf("127.0.0.1:%d", hostPort)} {
		if got, err := fetch(addr); err != nil || got != "hello from web" {
			t.Errorf("connect to %s from the host: %q, %v", addr, got, err)
		}
	}

	// Again (a restart of the group's containers): the same attachment.
	again, err := tc.sb.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if again.Network.Address != st.Address {
		t.Errorf("second Ensure moved the group from %s to %s", st.Address, again.Network.Address)
	}
	if n := len(tc.net.ipamRecords()); n != 1 {
		t.Errorf("%d address records after two Ensures, want 1", n)
	}
	if n := bridgePorts(t, tc.bridge); n != 1 {
		t.Errorf("%d veths on the bridge, want 1", n)
	}
	if len(iptablesMentions(t, `name: \"`+tc.bridge+`\"`)) == 0 {
		t.Errorf("no port rule names network %s", tc.bridge)
	}

	ln.Close()
	if err := tc.sb.Destroy(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	destroyed = true
	if recs := tc.net.ipamRecords(); len(recs) != 0 {
		t.Errorf("address records left: %v", recs)
	}
	if ents, _ := os.ReadDir(filepath.Join(tc.stateDir, "cache", "results")); len(ents) != 0 {
		t.Errorf("cache entries left: %v", ents)
	}
	if n := bridgePorts(t, tc.bridge); n != 0 {
		t.Errorf("%d veths left on the bridge", n)
	}
	if left := iptablesMentions(t, `name: \"`+tc.bridge+`\"`); len(left) > 0 {
		t.Errorf("iptables rules left: %v", left)
	}
	if _, err := fetch(fmt.Sprintf("127.0.0.1:%d", hostPort)); err == nil {
		t.Errorf("the published port still answers after Destroy")
	}
}

// TestCNIPublishAddressKeepsTwoNodesApart: two agents on one host, each
// with its own publish address, publish the same port without a host IP;
// each address reaches its own group, and the status shows the address.
func TestCNIPublishAddressKeepsTwoNodesApart(t *testing.T) {
	ctx := context.Background()
	port := freePort(t)
	for i, addr := range []string{"127.0.0.68", "127.0.0.69"} {
		tc := newTestCNI(t, func(c *CNIConfig) { c.PublishAddress = netip.MustParseAddr(addr) })
		name := fmt.Sprintf("web%d", i)
		sb, err := tc.sb.Ensure(ctx, bridgeSpec(name, fmt.Sprintf("%d:8080", port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tc.sb.Destroy(ctx, name) })
		want := []api.PortMapping{{HostIP: addr, HostPort: port, ContainerPort: 8080, Protocol: api.ProtocolTCP}}
		if !slices.Equal(sb.Network.Ports, want) {
			t.Errorf("%s: ports %+v, want %+v", name, sb.Network.Ports, want)
		}
		serve(listenInNetns(t, sb.NetNSPath, "0.0.0.0:8080"), "hello from "+name)
		// The same spec again: the attachment is kept, not replaced.
		again, err := tc.sb.Ensure(ctx, bridgeSpec(name, fmt.Sprintf("%d:8080", port)))
		if err != nil || again.Network.Address != sb.Network.Address {
			t.Errorf("%s: second Ensure: %+v, %v; want the same attachment", name, again.Network, err)
		}
	}
	for i, addr := range []string{"127.0.0.68", "127.0.0.69"} {
		if got, err := fetch(net.JoinHostPort(addr, strconv.Itoa(port))); err != nil || got != fmt.Sprintf("hello from web%d", i) {
			t.Errorf("%s:%d answered %q, %v; want web%d", addr, port, got, err, i)
		}
	}
}

func TestPublishedOn(t *testing.T) {
	ports := []api.PortMapping{{HostPort: 80, ContainerPort: 8080, Protocol: api.ProtocolTCP},
		{HostIP: "127.0.0.1", HostPort: 81, ContainerPort: 81, Protocol: api.ProtocolUDP}}
	got := PublishedOn(ports, netip.MustParseAddr("192.0.2.7"))
	if got[0].HostIP != "192.0.2.7" || got[1].HostIP != "127.0.0.1" || ports[0].HostIP != "" {
		t.Errorf("PublishedOn 192.0.2.7: %+v (input now %+v)", got, ports)
	}
	for _, a := range []netip.Addr{{}, netip.IPv4Unspecified()} {
		if got := PublishedOn(ports, a); !slices.Equal(got, ports) {
			t.Errorf("PublishedOn %v: %+v, want the ports unchanged", a, got)
		}
	}
}

// TestCNIPortsChangeReplacesTheAttachment: Ensure with other ports
// republishes them; the old port stops forwarding.
func TestCNIPortsChangeReplacesTheAttachment(t *testing.T) {
	tc := newTestCNI(t)
	ctx := context.Background()
	p1, p2 := freePort(t), freePort(t)
	sb, err := tc.sb.Ensure(ctx, bridgeSpec("web", fmt.Sprintf("127.0.0.1:%d:8080", p1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.sb.Destroy(ctx, "web") })
	sb, err = tc.sb.Ensure(ctx, bridgeSpec("web", fmt.Sprintf("127.0.0.1:%d:8080", p2)))
	if err != nil {
		t.Fatal(err)
	}
	if len(sb.Network.Ports) != 1 || sb.Network.Ports[0].HostPort != p2 {
		t.Fatalf("ports %+v, want only %d", sb.Network.Ports, p2)
	}
	serve(listenInNetns(t, sb.NetNSPath, "0.0.0.0:8080"), "ok")
	if got, err := fetch(fmt.Sprintf("127.0.0.1:%d", p2)); err != nil || got != "ok" {
		t.Errorf("new port %d: %q, %v", p2, got, err)
	}
	if _, err := fetch(fmt.Sprintf("127.0.0.1:%d", p1)); err == nil {
		t.Errorf("old port %d still forwards", p1)
	}
	if n := len(tc.net.ipamRecords()); n != 1 {
		t.Errorf("%d address records, want 1", n)
	}
}

// TestCNINetworkModes: none is loopback only, host pins the agent's own
// namespace, and switching modes releases or makes the attachment.
func TestCNINetworkModes(t *testing.T) {
	tc := newTestCNI(t)
	ctx := context.Background()
	spec := bridgeSpec("db")
	t.Cleanup(func() { _ = tc.sb.Destroy(ctx, "db") })

	sb, err := tc.sb.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	bridged := sb.Network.Address

	spec.Network = api.NetworkNone
	sb, err = tc.sb.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Network.Mode != api.NetworkNone || sb.Network.Address != "" {
		t.Errorf("none: status %+v", sb.Network)
	}
	if got := linkAddrs(t, sb.NetNSPath, "eth0"); got != nil {
		t.Errorf("none: eth0 still has %v", got)
	}
	if recs := tc.net.ipamRecords(); len(recs) != 0 {
		t.Errorf("none: address %s not released: %v", bridged, recs)
	}
	if isHostNetns(sb.NetNSPath) {
		t.Errorf("none: the group is in the host's namespace")
	}

	spec.Network = api.NetworkHost
	sb, err = tc.sb.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !isHostNetns(sb.NetNSPath) || sb.Network.Mode != api.NetworkHost {
		t.Errorf("host: %s is not the agent's own namespace (status %+v)", sb.NetNSPath, sb.Network)
	}

	spec.Network = api.NetworkBridge
	sb, err = tc.sb.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if isHostNetns(sb.NetNSPath) || sb.Network.Address == "" || len(linkAddrs(t, sb.NetNSPath, "eth0")) != 1 {
		t.Errorf("bridge again: status %+v", sb.Network)
	}

	// Destroy of a host-mode group must not touch the host's interfaces.
	spec.Network = api.NetworkHost
	if _, err := tc.sb.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	before, beforeErr := net.InterfaceByName("eth0")
	if err := tc.sb.Destroy(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if beforeErr != nil {
		t.Logf("the host has no eth0: cannot check that it is left alone")
	} else if after, err := net.InterfaceByName("eth0"); err != nil || after.Index != before.Index {
		t.Errorf("the host's eth0 is gone or replaced after Destroy of a host-mode group: %v", err)
	}
	if recs := tc.net.ipamRecords(); len(recs) != 0 {
		t.Errorf("address records left: %v", recs)
	}
}

// TestCNIReconcileReleasesGroupsWhoseNamespaceIsGone: an agent that died
// after the namespace was unpinned (or a reboot) leaves address records;
// Reconcile releases those and keeps the ones still pinned.
func TestCNIReconcileReleasesGroupsWhoseNamespaceIsGone(t *testing.T) {
	tc := newTestCNI(t)
	ctx := context.Background()
	for _, g := range []string{"alive", "lost"} {
		if _, err := tc.sb.Ensure(ctx, bridgeSpec(g, fmt.Sprintf("127.0.0.1:%d:80", freePort(t)))); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tc.sb.Destroy(ctx, g) })
	}
	// "lost" loses its namespace behind the agent's back.
	if err := unpin(tc.sb.netnsPath("lost")); err != nil {
		t.Fatal(err)
	}
	if recs := tc.net.ipamRecords(); !recs["lost"] || !recs["alive"] {
		t.Fatalf("records before reconcile: %v", recs)
	}
	sup := New(Config{Sandboxes: tc.sb, Network: tc.net, Logger: slog.New(slog.DiscardHandler)})
	released, err := sup.ReconcileNetwork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(released, []string{"lost"}) {
		t.Errorf("released %v, want [lost]", released)
	}
	if recs := tc.net.ipamRecords(); recs["lost"] || !recs["alive"] {
		t.Errorf("records after reconcile: %v, want only alive", recs)
	}
	if left := iptablesMentions(t, `id: \"lost\"`); len(left) > 0 {
		t.Errorf("port rules of the lost group left: %v", left)
	}
	if _, err := os.Stat(tc.net.cachePath("lost")); !os.IsNotExist(err) {
		t.Errorf("cache entry of the lost group left: %v", err)
	}
	if n := bridgePorts(t, tc.bridge); n != 1 {
		t.Errorf("%d veths on the bridge, want 1 (alive)", n)
	}
}

// TestCNIMissingPluginSaysWhatToDo: a plugin dir without the plugins fails
// the attach with the reason and a hint, and leaves nothing behind.
func TestCNIMissingPluginSaysWhatToDo(t *testing.T) {
	needCNI(t)
	dir := t.TempDir()
	nw, err := NewCNI(CNIConfig{Bridge: fmt.Sprintf("bm%d", os.Getpid()%100000), Subnet: netip.MustParsePrefix("10.239.239.0/24"),
		PluginDirs: []string{filepath.Join(dir, "empty")}, StateDir: filepath.Join(dir, "cni"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(fmt.Sprintf("bm%d", os.Getpid()%100000)); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	sb := &hostSandboxes{runDir: filepath.Join(dir, "run"), stateDir: filepath.Join(dir, "state")}
	sb.useNetwork(nw)
	_, err = sb.Ensure(context.Background(), bridgeSpec("web"))
	if err == nil || !strings.Contains(err.Error(), `failed to find plugin "bridge"`) || !strings.Contains(err.Error(), "plugin_dirs") {
		t.Fatalf("Ensure = %v, want a missing bridge plugin with a hint", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "groups", "web")); !os.IsNotExist(err) {
		t.Errorf("failed sandbox not removed: %v", err)
	}
}

// TestCNISubnetOverlapIsRefused: a subnet that overlaps an address of
// another interface is refused before any bridge is made. Its range,
// 10.243/16, is outside the test agents' subnets (10.200-10.239), so a
// concurrent integration run cannot own the first overlapping interface.
func TestCNISubnetOverlapIsRefused(t *testing.T) {
	needCNI(t)
	name := fmt.Sprintf("bo%d", os.Getpid()%100000)
	dummy := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(dummy) })
	addr, _ := netlink.ParseAddr("10.243.238.1/24")
	if err := netlink.AddrAdd(dummy, addr); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bridge := fmt.Sprintf("bp%d", os.Getpid()%100000)
	nw, err := NewCNI(CNIConfig{Bridge: bridge, Subnet: netip.MustParsePrefix("10.243.0.0/16"),
		PluginDirs: []string{"/usr/lib/cni"}, StateDir: filepath.Join(dir, "cni"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ns := filepath.Join(dir, "net")
	if err := pinNamespace(ns, unix.CLONE_NEWNET); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unpin(ns) })
	_, err = nw.Setup(context.Background(), "web", ns, bridgeSpec("web"))
	want := fmt.Sprintf("subnet 10.243.0.0/16 overlaps 10.243.238.0/24 on interface %s: choose another [network] subnet", name)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Setup = %v, want %q", err, want)
	}
	if _, err := netlink.LinkByName(bridge); err == nil {
		t.Errorf("bridge %s made despite the overlap", bridge)
	}
}

func TestNewCNIValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg  CNIConfig
		want string
	}{
		{CNIConfig{Bridge: "abcdefghijklmnop", Subnet: netip.MustParsePrefix("10.1.0.0/24"), StateDir: "/x"}, "must be 1-15 characters"},
		{CNIConfig{Bridge: "b", Subnet: netip.MustParsePrefix("fd00::/64"), StateDir: "/x"}, "must be an IPv4 prefix"},
		{CNIConfig{Bridge: "b", Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.2.0.1"), StateDir: "/x"}, "gateway 10.2.0.1 is not in subnet 10.1.0.0/24"},
		{CNIConfig{Bridge: "b", Subnet: netip.MustParsePrefix("10.1.0.0/24")}, "a state dir is needed"},
	} {
		_, err := NewCNI(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewCNI(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestSplitIptablesRule(t *testing.T) {
	got, err := SplitIptablesRule(`-A POSTROUTING -s 10.1.0.2/32 -m comment --comment "name: \"b0\" id: \"web\"" -j CNI-abc`)
	want := []string{"-A", "POSTROUTING", "-s", "10.1.0.2/32", "-m", "comment", "--comment", `name: "b0" id: "web"`, "-j", "CNI-abc"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %q, %v\nwant %q", got, err, want)
	}
}

// TestCNIOutboundOnlyWhenAsked: without outbound the node's ip_forward is
// left as it was and nothing masquerades; with it the group's traffic is
// masqueraded, and Reconcile removes the masquerade rules of a group whose
// namespace is gone (the bridge plugin removes them only with the veth).
func TestCNIOutboundOnlyWhenAsked(t *testing.T) {
	const fwd = "/proc/sys/net/ipv4/ip_forward"
	orig, err := os.ReadFile(fwd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(fwd, orig, 0o644); err != nil {
			t.Errorf("restore ip_forward: %v", err)
		}
	})
	if err := os.WriteFile(fwd, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tc := newTestCNI(t)
	if _, err := tc.sb.Ensure(ctx, bridgeSpec("quiet")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tc.sb.Destroy(ctx, "quiet") })
	if b, _ := os.ReadFile(fwd); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("ip_forward turned on without outbound")
	}
	prefix := strings.TrimSuffix(tc.subnet.Addr().String(), "0") // "10.241.7."
	if m := append(iptablesMentions(t, prefix), iptablesMentions(t, `name: \"`+tc.bridge+`\"`)...); len(m) > 0 {
		t.Errorf("rules for the network without outbound (no ports either): %v", m)
	}

	out := newTestCNI(t)
	cfg := out.net.cfg
	cfg.Outbound = true
	nw, err := NewCNI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.net = nw.(*cniNetwork)
	out.sb.useNetwork(nw)
	sb, err := out.sb.Ensure(ctx, bridgeSpec("chatty"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = out.sb.Destroy(ctx, "chatty") })
	if b, _ := os.ReadFile(fwd); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("outbound: ip_forward is %q, want 1", b)
	}
	masq := `name: \"` + out.bridge + `\" id: \"chatty\"`
	if len(iptablesMentions(t, masq)) == 0 {
		t.Fatalf("outbound: no masquerade rule for the group (%s)", sb.Network.Address)
	}
	if err := unpin(sb.NetNSPath); err != nil {
		t.Fatal(err)
	}
	if _, err := out.net.Reconcile(ctx, out.sb.netnsPinned); err != nil {
		t.Fatal(err)
	}
	if left := iptablesMentions(t, masq); len(left) > 0 {
		t.Errorf("masquerade rules left after Reconcile: %v", left)
	}
	if recs := out.net.ipamRecords(); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
}
