package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/pkg/netns"
	"github.com/vishvananda/netlink"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// The cost of networking a group: apply → Running and delete of a
// one-container group through agentd with network = "bridge" (CNI: veth,
// address, portmap) against network = "none" (loopback only), and the CNI
// work alone (Setup and Teardown of the agent's network code on a pinned
// namespace, no containers).

// netGroup is a one-container group with the given network mode and, for
// bridge, one published port.
func netGroup(name string, mode api.NetworkMode, port int) api.ApplyFile {
	ports := ""
	if mode == api.NetworkBridge {
		ports = fmt.Sprintf("ports = [\"127.0.0.1:%d:8080\"]\n", port)
	}
	return api.ApplyFile{Name: name + ".toml", Content: fmt.Sprintf(`name = %q
network = %q
%sgrace_period = "100ms"
[[container]]
name = "sleep"
image = "berth.local/busybox:latest"
command = ["sleep", "86400"]
`, name, mode, ports)}
}

type networkResult struct {
	rounds                   int
	apply, del               map[api.NetworkMode][]time.Duration
	cniSetup, cniTeardown    []time.Duration
	cniSetupNoPorts, cniDown []time.Duration
}

// benchNetwork measures and prints the cost of networking a group.
func (b *bench) benchNetwork(ctx context.Context, rounds int) error {
	r := &networkResult{rounds: rounds, apply: map[api.NetworkMode][]time.Duration{}, del: map[api.NetworkMode][]time.Duration{}}
	if err := b.measureNetworkApply(ctx, rounds, r); err != nil {
		return err
	}
	if err := b.measureCNI(ctx, rounds, r); err != nil {
		return fmt.Errorf("CNI alone: %w", err)
	}
	r.print()
	amb, err := b.measureAgentAmbassador(ctx, *ambRequests, *ambRounds)
	if err != nil {
		return fmt.Errorf("ambassador in agentd: %w", err)
	}
	amb.print()
	return nil
}

// measureNetworkApply alternates bridge and none groups, so both see the
// same machine state, each timed from apply to its Started event and
// from delete to gone.
func (b *bench) measureNetworkApply(ctx context.Context, rounds int, r *networkResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ev := followEvents(ctx, b.api, "")
	for i := 0; i < rounds+1; i++ { // round 0 warms up
		for _, mode := range []api.NetworkMode{api.NetworkBridge, api.NetworkNone} {
			name := "net-" + string(mode)
			start := time.Now()
			port, err := freePort()
			if err != nil {
				return err
			}
			if _, err := b.api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{netGroup(name, mode, port)}}); err != nil {
				return err
			}
			at, err := ev.started(ctx, name)
			if err != nil {
				return fmt.Errorf("round %d: %w", i, err)
			}
			t0 := time.Now()
			if err := b.api.Delete(ctx, name, true); err != nil {
				return err
			}
			if i > 0 {
				r.apply[mode] = append(r.apply[mode], at.Sub(start))
				r.del[mode] = append(r.del[mode], time.Since(t0))
			}
		}
	}
	return nil
}

// measureCNI times the agent's CNI code alone on a bridge of its own: a
// Setup with one published port and its Teardown, and the same without
// ports.
func (b *bench) measureCNI(ctx context.Context, rounds int, r *networkResult) (retErr error) {
	bridge := fmt.Sprintf("bb%d", os.Getpid()%1000000)
	dir := filepath.Join(b.dir, "cni-bench")
	n, err := supervisor.NewCNI(supervisor.CNIConfig{
		Bridge: bridge, Subnet: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 240+os.Getpid()%10, os.Getpid()%250)),
		PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"}, StateDir: filepath.Join(dir, "state"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	defer func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil && retErr == nil {
				retErr = err
			}
		}
	}()
	ns, err := netns.NewNetNS(filepath.Join(dir, "ns"))
	if err != nil {
		return err
	}
	defer ns.Remove()
	port, err := freePort()
	if err != nil {
		return err
	}
	for i := 0; i < rounds+1; i++ {
		for _, ports := range [][]string{{fmt.Sprintf("127.0.0.1:%d:80", port)}, nil} {
			spec := &api.GroupSpec{Name: "cni-bench", Ports: ports}
			t0 := time.Now()
			if _, err := n.Setup(ctx, "cni-bench", ns.GetPath(), spec); err != nil {
				return err
			}
			t1 := time.Now()
			if err := n.Teardown(ctx, "cni-bench", ns.GetPath()); err != nil {
				return err
			}
			if i == 0 {
				continue
			}
			if ports != nil {
				r.cniSetup = append(r.cniSetup, t1.Sub(t0))
				r.cniTeardown = append(r.cniTeardown, time.Since(t1))
			} else {
				r.cniSetupNoPorts = append(r.cniSetupNoPorts, t1.Sub(t0))
				r.cniDown = append(r.cniDown, time.Since(t1))
			}
		}
	}
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that nothing listens on now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (r *networkResult) print() {
	fmt.Printf("\nnetworking one group (1 container, %d rounds each)\n", r.rounds)
	fmt.Printf("  %-44s %9s %9s %9s\n", "", "min", "median", "p95")
	printRow("apply → Running, network = \"bridge\", 1 port", r.apply[api.NetworkBridge])
	printRow("apply → Running, network = \"none\"", r.apply[api.NetworkNone])
	printRow("delete → gone, network = \"bridge\", 1 port", r.del[api.NetworkBridge])
	printRow("delete → gone, network = \"none\"", r.del[api.NetworkNone])
	fmt.Printf("  bridge − none, medians: apply +%s, delete +%s\n",
		ms(pct(r.apply[api.NetworkBridge], 50)-pct(r.apply[api.NetworkNone], 50)),
		ms(pct(r.del[api.NetworkBridge], 50)-pct(r.del[api.NetworkNone], 50)))
	printRow("CNI alone: setup, 1 port", r.cniSetup)
	printRow("CNI alone: teardown, 1 port", r.cniTeardown)
	printRow("CNI alone: setup, no ports", r.cniSetupNoPorts)
	printRow("CNI alone: teardown, no ports", r.cniDown)
}

// netOnly is -network-only.
var netOnly = flag.Bool("network-only", false, "after setup, run only the networking benchmarks (CNI per group, the agent's ambassador end to end); the ambassador micro-benchmark runs first as always")

// The bench's agentd gets a node bridge and subnet of its own (never the
// default berth0, which a real agent on this machine may use), and at the
// end the bench removes what networking left on the host: the bridge, the
// iptables rules that name it, and the portmap plugin's shared chains if
// this run made them and nothing else uses them.

// benchNet is the bench agent's network, set by agentConfig.
var benchNet struct {
	bridge string
	subnet netip.Prefix
	// chains are the CNI chains that existed before the bench started.
	chains map[string]bool
}

// agentConfig writes the bench agent's agent.toml (its [network]) and
// returns its path.
func (b *bench) agentConfig() (string, error) {
	benchNet.chains = cniChains()
	benchNet.bridge = fmt.Sprintf("bba%d", os.Getpid()%1000000)
	used, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for k := 0; k < 250 && !benchNet.subnet.IsValid(); k++ {
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 230+os.Getpid()%10, (os.Getpid()+k)%250))
		free := true
		for _, a := range used {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
				ones, _ := a.Mask.Size()
				free = free && !netip.PrefixFrom(ip, ones).Masked().Overlaps(p)
			}
		}
		if free {
			benchNet.subnet = p
		}
	}
	if !benchNet.subnet.IsValid() {
		return "", fmt.Errorf("no free /24 in 10.230.0.0/15 for the bench agent's bridge")
	}
	path := filepath.Join(b.dir, "agent.toml")
	cfg := fmt.Sprintf("[network]\nbridge = %q\nsubnet = %q\n", benchNet.bridge, benchNet.subnet)
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

// cleanupNetwork removes the bench agent's bridge and rules once the
// agent has stopped and its groups are gone.
func cleanupNetwork() error {
	if benchNet.bridge == "" {
		return nil
	}
	var errs []error
	if l, err := netlink.LinkByName(benchNet.bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", benchNet.bridge, err))
		}
	}
	// Rules of groups whose teardown did not run (a failed bench).
	comment := fmt.Sprintf(`name: \"%s\"`, benchNet.bridge)
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables -t %s -S: %w", table, err))
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "-A ") && strings.Contains(line, comment) {
				rule, err := supervisor.SplitIptablesRule(strings.TrimPrefix(line, "-A "))
				if err != nil {
					errs = append(errs, err)
					continue
				}
				_ = exec.Command("iptables", append([]string{"-w", "-t", table, "-D"}, rule...)...).Run()
			}
		}
	}
	removeUnusedChains(benchNet.chains)
	return errors.Join(errs...)
}

// cniChains lists the CNI chains of the nat and filter tables.
func cniChains() map[string]bool {
	out := map[string]bool{}
	for _, table := range []string{"nat", "filter"} {
		b, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], "CNI-") {
				out[table+"/"+f[1]] = true
			}
		}
	}
	return out
}

// removeUnusedChains deletes the shared chains of the portmap and
// firewall plugins that did not exist before (had) and hold no rule of
// any group now, with the jumps to them.
func removeUnusedChains(had map[string]bool) {
	now := cniChains()
	rules := func(table, chain string) []string {
		b, _ := exec.Command("iptables", "-w", "-t", table, "-S", chain).Output()
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "-A ") {
				out = append(out, l)
			}
		}
		return out
	}
	if now["nat/CNI-HOSTPORT-DNAT"] && !had["nat/CNI-HOSTPORT-DNAT"] && len(rules("nat", "CNI-HOSTPORT-DNAT")) == 0 {
		for _, jump := range [][]string{
			{"PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
			{"OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
			{"POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"},
		} {
			_ = exec.Command("iptables", append([]string{"-w", "-t", "nat", "-D"}, jump...)...).Run()
		}
		for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"} {
			if now["nat/"+c] && !had["nat/"+c] {
				_ = exec.Command("iptables", "-w", "-t", "nat", "-F", c).Run()
				_ = exec.Command("iptables", "-w", "-t", "nat", "-X", c).Run()
			}
		}
	}
	if now["filter/CNI-FORWARD"] && !had["filter/CNI-FORWARD"] {
		busy := false
		for _, l := range rules("filter", "CNI-FORWARD") {
			busy = busy || !strings.Contains(l, "-j CNI-ADMIN")
		}
		if !busy {
			_ = exec.Command("iptables", "-w", "-D", "FORWARD", "-m", "comment", "--comment", "CNI firewall plugin rules", "-j", "CNI-FORWARD").Run()
			for _, c := range []string{"CNI-FORWARD", "CNI-ADMIN"} {
				if !had["filter/"+c] {
					_ = exec.Command("iptables", "-w", "-F", c).Run()
					_ = exec.Command("iptables", "-w", "-X", c).Run()
				}
			}
		}
	}
}
