package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
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
