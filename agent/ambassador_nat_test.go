package agent

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/containerd/pkg/netns"

	"github.com/berth-project/berth/api"
)

func testNat(listen string, split ...api.SplitSpec) *natAmbassador {
	ap := netip.MustParseAddrPort(listen)
	return &natAmbassador{spec: api.AmbassadorSpec{Listen: listen, Service: "web", Split: split, Mode: api.AmbassadorNAT},
		ip: ap.Addr(), lport: int(ap.Port()), port: int(ap.Port())}
}

// TestNatChainRules asserts the exact chain for 0, 1 and 3 endpoints and
// for a split.
func TestNatChainRules(t *testing.T) {
	n := testNat("127.0.0.1:6379")
	rules := func(addrs map[string][]string) string { return n.chainRules(natTargets(n.spec, addrs)) }
	const head = "*nat\n:BERTH-AMB-7F000001-6379 - [0:0]\n"
	if got, want := rules(nil), head+"COMMIT\n"; got != want {
		t.Errorf("0 endpoints:\n%s\nwant\n%s", got, want)
	}
	if got, want := rules(map[string][]string{"web": {"10.89.0.5:6379"}}),
		head+"-A BERTH-AMB-7F000001-6379 -p tcp -j DNAT --to-destination 10.89.0.5:6379\nCOMMIT\n"; got != want {
		t.Errorf("1 endpoint:\n%s\nwant\n%s", got, want)
	}
	if got, want := rules(map[string][]string{"web": {"10.89.0.5:6379", "10.89.0.6:6379", "10.89.0.7:6379"}}), head+
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode nth --every 3 --packet 0 -j DNAT --to-destination 10.89.0.5:6379\n"+
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.89.0.6:6379\n"+
		"-A BERTH-AMB-7F000001-6379 -p tcp -j DNAT --to-destination 10.89.0.7:6379\nCOMMIT\n"; got != want {
		t.Errorf("3 endpoints:\n%s\nwant\n%s", got, want)
	}

	s := testNat("127.0.0.1:6379", api.SplitSpec{Service: "web-v2", Percent: 20}, api.SplitSpec{Service: "web-v3", Percent: 10})
	split := s.chainRules(natTargets(s.spec, map[string][]string{
		"web": {"10.89.0.5:6379", "10.89.0.6:6379"}, "web-v2": {"10.89.0.9:6379"}, "web-v3": {"10.89.0.10:6379"}}))
	// 35 % each of web's two, 20 % and 10 %: each rule takes its share of
	// what reaches it.
	if want := head +
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode random --probability 0.35000000 -j DNAT --to-destination 10.89.0.5:6379\n" +
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode random --probability 0.53846154 -j DNAT --to-destination 10.89.0.6:6379\n" +
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode random --probability 0.66666667 -j DNAT --to-destination 10.89.0.9:6379\n" +
		"-A BERTH-AMB-7F000001-6379 -p tcp -j DNAT --to-destination 10.89.0.10:6379\nCOMMIT\n"; split != want {
		t.Errorf("split:\n%s\nwant\n%s", split, want)
	}
	// A split service without endpoints gives its share to web; web
	// without endpoints keeps its share, returned to be rejected.
	if got, want := s.chainRules(natTargets(s.spec, map[string][]string{"web": {"10.89.0.5:6379"}, "web-v3": {"10.89.0.10:6379"}})), head+
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode random --probability 0.90000000 -j DNAT --to-destination 10.89.0.5:6379\n"+
		"-A BERTH-AMB-7F000001-6379 -p tcp -j DNAT --to-destination 10.89.0.10:6379\nCOMMIT\n"; got != want {
		t.Errorf("split without v2:\n%s\nwant\n%s", got, want)
	}
	if got, want := s.chainRules(natTargets(s.spec, map[string][]string{"web-v2": {"10.89.0.9:6379"}})), head+
		"-A BERTH-AMB-7F000001-6379 -p tcp -m statistic --mode random --probability 0.80000000 -j RETURN\n"+
		"-A BERTH-AMB-7F000001-6379 -p tcp -j DNAT --to-destination 10.89.0.9:6379\nCOMMIT\n"; got != want {
		t.Errorf("split without web:\n%s\nwant\n%s", got, want)
	}
}

// TestNatSetupRules asserts the hooks, the loopback guard only for a
// loopback address, and that hooks already there are not added again.
func TestNatSetupRules(t *testing.T) {
	n := testNat("127.0.0.1:6379")
	want := "*nat\n:BERTH-AMB-7F000001-6379 - [0:0]\n:BERTH-AMB-POST - [0:0]\n" +
		"-A BERTH-AMB-POST -s 127.0.0.0/8 ! -o lo -j MASQUERADE\n" +
		"-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6379 -j BERTH-AMB-7F000001-6379\n" +
		"-A POSTROUTING -j BERTH-AMB-POST\nCOMMIT\n" +
		"*filter\n:BERTH-AMB-GUARD - [0:0]\n" +
		"-A BERTH-AMB-GUARD -d 127.0.0.0/8 ! -i lo -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n" +
		"-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6379 -j REJECT --reject-with tcp-reset\n" +
		"-A INPUT -j BERTH-AMB-GUARD\nCOMMIT\n"
	if got := n.setupRules(nil); got != want {
		t.Errorf("loopback:\n%s\nwant\n%s", got, want)
	}
	saved := "*nat\n-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6379 -j BERTH-AMB-7F000001-6379\n-A POSTROUTING -j BERTH-AMB-POST\nCOMMIT\n*filter\n-A INPUT -j BERTH-AMB-GUARD\n" +
		"-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6379 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
	if got := n.setupRules([]byte(saved)); strings.Contains(got, "-A OUTPUT") || strings.Contains(got, "-A INPUT") || strings.Contains(got, "-A POSTROUTING") {
		t.Errorf("hooks added twice:\n%s", got)
	}
	v := testNat("169.254.10.1:80")
	want = "*nat\n:BERTH-AMB-A9FE0A01-80 - [0:0]\n-A OUTPUT -d 169.254.10.1/32 -p tcp -m tcp --dport 80 -j BERTH-AMB-A9FE0A01-80\nCOMMIT\n" +
		"*filter\n-A OUTPUT -d 169.254.10.1/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\nCOMMIT\n"
	if got := v.setupRules(nil); got != want {
		t.Errorf("not loopback:\n%s\nwant\n%s", got, want)
	}
	if ip, port, ok := natChainAddr(v.chain()); !ok || ip != v.ip || port != 80 {
		t.Errorf("natChainAddr(%s) = %v %d %v", v.chain(), ip, port, ok)
	}
}

// TestNatAddrs asserts which endpoints the group's namespace reaches.
func TestNatAddrs(t *testing.T) {
	eps := []api.Endpoint{
		{Group: "web.0", Node: "n1", Address: "10.89.0.5", Ready: true},
		{Group: "web.1", Node: "n1", Address: "127.0.0.1", Ready: true}, // network = "host"
		{Group: "web.2", Node: "n2", Ports: []api.PortMapping{{HostIP: "192.0.2.2", HostPort: 16379, ContainerPort: 6379, Protocol: api.ProtocolTCP}}, Ready: true},
		{Group: "web.3", Node: "n3", Ports: []api.PortMapping{{HostIP: "192.0.2.3", HostPort: 8080, ContainerPort: 80, Protocol: api.ProtocolTCP}}, Ready: true},
	}
	addrs, unreachable := natAddrs(eps, 6379, "n1", false)
	if !reflect.DeepEqual(addrs, []string{"10.89.0.5:6379"}) || len(unreachable) != 3 ||
		!strings.Contains(unreachable[1], "web.2 on n2 (another node: needs [network] outbound = true") {
		t.Errorf("without outbound: %v, %q", addrs, unreachable)
	}
	addrs, unreachable = natAddrs(eps, 6379, "n1", true)
	if !reflect.DeepEqual(addrs, []string{"10.89.0.5:6379", "192.0.2.2:16379"}) || len(unreachable) != 2 ||
		!strings.Contains(unreachable[1], "web.3 on n3 (publishes container port 6379 on no address") {
		t.Errorf("with outbound: %v, %q", addrs, unreachable)
	}
}

// TestNatInNetns installs, updates, closes and sweeps the rules in a
// network namespace of its own (root and iptables needed).
func TestNatInNetns(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		missingPrerequisite(t, "needs iptables-restore (contrib/scripts/install-deps.sh installs iptables)")
	}
	ns, err := netns.NewNetNS(filepath.Join(t.TempDir(), "ns"))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Remove()
	save := func() string {
		out, err := natRun(ns.GetPath(), nil, "iptables-save")
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	spec := api.AmbassadorSpec{Listen: "127.0.0.1:6379", Service: "web", Mode: api.AmbassadorNAT}
	n, err := newNatAmbassador(ns.GetPath(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newNatAmbassador(ns.GetPath(), spec); err != nil { // again: idempotent
		t.Fatal(err)
	}
	s := save()
	for _, r := range []string{"-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6379 -j BERTH-AMB-7F000001-6379",
		"-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6379 -j REJECT --reject-with tcp-reset",
		"-A POSTROUTING -j BERTH-AMB-POST", "-A INPUT -j BERTH-AMB-GUARD"} {
		if c := strings.Count(s, r+"\n"); c != 1 {
			t.Errorf("%q %d times in\n%s", r, c, s)
		}
	}
	if out, _ := natRun(ns.GetPath(), nil, "cat", "/proc/sys/net/ipv4/conf/all/route_localnet"); strings.TrimSpace(string(out)) != "1" {
		t.Errorf("route_localnet = %q", out)
	}
	v := &endpointView{self: "n1", local: []api.GroupStatus{{Name: "web", State: api.GroupRunning, Ready: true,
		Network: &api.NetworkStatus{Mode: api.NetworkBridge, Address: "10.89.0.5"}}}}
	if _, err := n.update(v, false); err != nil {
		t.Fatal(err)
	}
	if s := save(); !strings.Contains(s, "-A BERTH-AMB-7F000001-6379 -p tcp -j DNAT --to-destination 10.89.0.5:6379\n") {
		t.Errorf("no DNAT after update:\n%s", s)
	}
	// A stale ambassador (the spec lost it): the sweep removes it, and
	// keeps what is asked for.
	other, err := newNatAmbassador(ns.GetPath(), api.AmbassadorSpec{Listen: "127.0.0.1:7000", Service: "web", Mode: api.AmbassadorNAT})
	if err != nil {
		t.Fatal(err)
	}
	if err := natSweep(ns.GetPath(), map[string]bool{n.chain(): true}); err != nil {
		t.Fatal(err)
	}
	if s := save(); strings.Contains(s, other.chain()) || strings.Contains(s, "--dport 7000") || !strings.Contains(s, n.chain()) {
		t.Errorf("after the sweep:\n%s", s)
	}
	if err := n.close(); err != nil {
		t.Fatal(err)
	}
	if s := save(); strings.Contains(s, "BERTH-AMB-7F") || strings.Contains(s, "--dport 6379") {
		t.Errorf("after close:\n%s", s)
	}
	if _, err := n.update(v, false); err != nil || strings.Contains(save(), "BERTH-AMB-7F") {
		t.Errorf("update after close wrote rules (err %v)", err)
	}
}
