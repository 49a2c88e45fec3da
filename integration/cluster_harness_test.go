package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/cluster/pki"
)

// testCluster is several real agentd processes forming one cluster on
// loopback addresses 127.0.0.<base+i>, each with its own containerd
// namespace (one shared containerd), state dir and certificates from one
// test CA.
type testCluster struct {
	t testing.TB
	// Agents holds agent i, nil until it starts (clusterOpts.Start).
	Agents []*agentProc
	IPs    []string
	TLSDir string
	Key    string
	opts   clusterOpts
	// net is the agents' network when opts.Netns.
	net *clusterNet
}

// clusterOpts shape a test cluster.
type clusterOpts struct {
	// N agents; Servers of them (the first) are Raft voter candidates,
	// BootstrapExpect of them form the first configuration.
	N, Servers, BootstrapExpect int
	// Base is the last octet of the first agent's 127.0.0.x address.
	Base int
	// Extra is added to every agent's agent.toml (top level keys first).
	Extra string
	// Labels per agent index.
	Labels map[int]map[string]string
	// Cluster is added to every agent's [cluster] section
	// ("voter_replace_after = \"3s\"").
	Cluster string
	// Start is how many agents (the first) startCluster starts; 0 means
	// all N. The others start with c.startNode(i).
	Start int
	// Netns puts every agent in a network namespace of its own, on a
	// bridge in a "switch" namespace, at 10.251.<k>.<i+1> instead of
	// 127.0.0.<Base+i>: the test can cut an agent off (c.partition) and
	// its traffic never leaves the test's namespaces.
	Netns bool
}

// clusterNodeName names agent i.
func clusterNodeName(i int) string { return fmt.Sprintf("n%d", i+1) }

// startCluster starts opts.N agents and waits until every one of them
// sees a Raft leader and all members alive.
func startCluster(t testing.TB, opts clusterOpts) *testCluster {
	t.Helper()
	env.needAgentd(t)
	if opts.Servers == 0 {
		opts.Servers = min(opts.N, 5)
	}
	if opts.BootstrapExpect == 0 {
		opts.BootstrapExpect = min(opts.Servers, 3)
	}
	if opts.Base == 0 {
		opts.Base = 20
	}
	if opts.Start == 0 {
		opts.Start = opts.N
	}
	c := &testCluster{t: t, opts: opts, TLSDir: env.newDir(t, "tls")}
	if opts.Netns {
		// Registered before the agents start, so that its cleanup runs
		// after theirs (t.Cleanup is last in, first out).
		c.net = newClusterNet(t, opts.N)
	}
	key, err := cluster.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.Key = key
	ca, err := pki.NewCA("berth test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCA(c.TLSDir, ca, false); err != nil {
		t.Fatal(err)
	}
	for i := range opts.N {
		ip := fmt.Sprintf("127.0.0.%d", opts.Base+i)
		if c.net != nil {
			ip = c.net.ip4(i)
		}
		c.IPs = append(c.IPs, ip)
		cert, k, err := ca.Issue(pki.NodeCert{Name: clusterNodeName(i), IPs: []net.IP{net.ParseIP(ip)}, Client: true, Server: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteNode(c.TLSDir, clusterNodeName(i), cert, k, false); err != nil {
			t.Fatal(err)
		}
	}
	cert, k, err := ca.Issue(pki.NodeCert{Name: "agentctl", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteNode(c.TLSDir, "agentctl", cert, k, false); err != nil {
		t.Fatal(err)
	}
	c.Agents = make([]*agentProc, opts.N)
	for i := range opts.Start {
		c.startNode(i)
	}
	c.waitConverged(60 * time.Second)
	return c
}

// startNode starts agent i for the first time (see clusterOpts.Start).
func (c *testCluster) startNode(i int) *agentProc {
	c.t.Helper()
	if c.Agents[i] != nil {
		c.t.Fatalf("agent %s started already", clusterNodeName(i))
	}
	o := agentOpts{
		NodeName:  clusterNodeName(i),
		Namespace: env.newNamespace(c.t),
		Config:    c.agentConfig(i),
	}
	if c.net != nil {
		o.Prefix = []string{"nsenter", "--net=" + c.net.path(c.net.agents[i]), "--"}
	}
	c.Agents[i] = startAgent(c.t, o)
	return c.Agents[i]
}

// up reports whether agent i was started and runs.
func (c *testCluster) up(i int) bool { return c.Agents[i] != nil && c.Agents[i].Running() }

// agentConfig is agent i's agent.toml.
func (c *testCluster) agentConfig(i int) string {
	var b strings.Builder
	b.WriteString(c.opts.Extra + "\n")
	if l := c.opts.Labels[i]; len(l) > 0 {
		b.WriteString("[node.labels]\n")
		for k, v := range l {
			fmt.Fprintf(&b, "%s = %q\n", k, v)
		}
	}
	fmt.Fprintf(&b, "[cluster]\nadvertise = %q\nbind_addr = %q\nencrypt_key = %q\ntls_dir = %q\n",
		c.IPs[i], c.IPs[i], c.Key, c.TLSDir)
	b.WriteString(c.opts.Cluster + "\n")
	fmt.Fprintf(&b, "server = %t\n", i < c.opts.Servers)
	if i < c.opts.Servers {
		fmt.Fprintf(&b, "bootstrap_expect = %d\n", c.opts.BootstrapExpect)
	}
	// Every other agent is a seed, as in a real agent.toml: a restarted
	// agent finds the cluster through any of them.
	var seeds []string
	for j, ip := range c.IPs {
		if j != i {
			seeds = append(seeds, fmt.Sprintf("%q", net.JoinHostPort(ip, "7946")))
		}
	}
	if len(seeds) > 0 {
		fmt.Fprintf(&b, "join = [%s]\n", strings.Join(seeds, ", "))
	}
	return b.String()
}

// waitConverged waits until every running agent sees the same leader and
// every running agent as an alive member.
func (c *testCluster) waitConverged(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "cluster converged (one leader, all members alive)", func() (bool, error) {
		leader := ""
		running := map[string]bool{}
		for i := range c.Agents {
			if c.up(i) {
				running[clusterNodeName(i)] = true
			}
		}
		for i, a := range c.Agents {
			if !c.up(i) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			info, err := a.api().Raft(ctx)
			if err != nil {
				cancel()
				return false, err
			}
			ms, err := a.api().Members(ctx)
			cancel()
			if err != nil {
				return false, err
			}
			if info.Leader == "" {
				return false, fmt.Errorf("%s: no leader", clusterNodeName(i))
			}
			if leader != "" && info.Leader != leader {
				return false, fmt.Errorf("%s sees leader %s, others %s", clusterNodeName(i), info.Leader, leader)
			}
			leader = info.Leader
			alive := 0
			for _, m := range ms {
				if running[m.Name] && m.Status == "alive" {
					alive++
				}
			}
			if alive != len(running) {
				return false, fmt.Errorf("%s sees %d of %d members alive", clusterNodeName(i), alive, len(running))
			}
		}
		return true, nil
	})
}

// leader returns the index of the agent that leads Raft.
func (c *testCluster) leader() int {
	c.t.Helper()
	for i, a := range c.Agents {
		if !c.up(i) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		info, err := a.api().Raft(ctx)
		cancel()
		if err == nil && info.Leader != "" {
			for j := range c.Agents {
				if clusterNodeName(j) == info.Leader {
					return j
				}
			}
		}
	}
	c.t.Fatal("no agent knows a leader")
	return -1
}

// any returns a running agent other than the ones in skip.
func (c *testCluster) any(skip ...int) *agentProc {
	c.t.Helper()
outer:
	for i, a := range c.Agents {
		for _, s := range skip {
			if s == i {
				continue outer
			}
		}
		if c.up(i) {
			return a
		}
	}
	c.t.Fatal("no running agent")
	return nil
}

// killNode is a node loss: SIGKILL to agentd and to every process of its
// containers (the machine is gone).
func (c *testCluster) killNode(i int) {
	c.t.Helper()
	a := c.Agents[i]
	a.Kill()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), a.opts.Namespace), 30*time.Second)
	defer cancel()
	cs, err := env.Client.Containers(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, ctr := range cs {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			continue
		}
		_ = task.Kill(ctx, 9, containerd.WithKillAll)
	}
}

// clusterGroup reads a cluster group through agent a.
func clusterGroup(t testing.TB, a *agentProc, name string) *api.ClusterGroup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := a.api().ClusterGroup(ctx, name)
	if err != nil {
		t.Fatalf("cluster group %s: %v", name, err)
	}
	return g
}

// waitClusterGroup waits until cond holds for the cluster group as agent a
// sees it.
func waitClusterGroup(t testing.TB, a *agentProc, name string, timeout time.Duration, what string, cond func(*api.ClusterGroup) error) *api.ClusterGroup {
	t.Helper()
	var last *api.ClusterGroup
	waitFor(t, timeout, fmt.Sprintf("cluster group %s: %s", name, what), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := a.api().ClusterGroup(ctx, name)
		if err != nil {
			return false, err
		}
		last = g
		if err := cond(g); err != nil {
			return false, err
		}
		return true, nil
	})
	return last
}

// allReady is a waitClusterGroup condition: every wanted allocation is
// placed, Running and Ready at the group's generation.
func allReady(want int) func(*api.ClusterGroup) error {
	return func(g *api.ClusterGroup) error {
		if g.Ready != want || len(g.Allocations) != want {
			return fmt.Errorf("%d of %d ready (%d allocations, %d placed): %s", g.Ready, want, len(g.Allocations), g.Placed, describeAllocs(g))
		}
		return nil
	}
}

func describeAllocs(g *api.ClusterGroup) string {
	parts := make([]string, 0, len(g.Allocations))
	for _, al := range g.Allocations {
		s := fmt.Sprintf("%s@%s=%s", al.ID, al.Node, al.Status)
		if al.Ready {
			s += "+ready"
		}
		if al.Pending != "" {
			s += "(" + al.Pending + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// nodesOf returns the node of every placed allocation.
func nodesOf(g *api.ClusterGroup) map[string]int {
	out := map[string]int{}
	for _, al := range g.Allocations {
		if al.Node != "" {
			out[al.Node]++
		}
	}
	return out
}

// clusterNet is a test network of network namespaces: a "switch"
// namespace holding a bridge, and one namespace per agent with an eth0
// on that bridge (a veth pair whose other end, s<i>, is a bridge port in
// the switch). Every name carries the test process's PID and a sequence
// number, so that concurrent runs and tests never share one; the subnet
// is 10.251.<k>.0/24, k from the same numbers. Nothing is routed out of
// it: the agents reach each other and nothing else.
type clusterNet struct {
	t      testing.TB
	prefix string
	k      int
	sw     string
	agents []string
}

// clusterNetSeq numbers the test networks of this process.
var clusterNetSeq atomic.Int64

// newClusterNet makes the switch and n agent namespaces; t.Cleanup
// deletes them all (and with them the bridge and the veths), also when
// the test fails half way.
func newClusterNet(t testing.TB, n int) *clusterNet {
	t.Helper()
	seq := clusterNetSeq.Add(1)
	cn := &clusterNet{
		t:      t,
		prefix: fmt.Sprintf("bp%dx%d", os.Getpid(), seq),
		k:      int((int64(os.Getpid())*7 + seq) % 250),
	}
	cn.sw = cn.prefix + "s"
	t.Cleanup(cn.remove)
	cn.ip("netns", "add", cn.sw)
	cn.ip("-n", cn.sw, "link", "set", "lo", "up")
	cn.ip("-n", cn.sw, "link", "add", "br0", "type", "bridge")
	cn.ip("-n", cn.sw, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%sa%d", cn.prefix, i)
		cn.ip("netns", "add", ns)
		cn.agents = append(cn.agents, ns)
		port := cn.port(i)
		cn.ip("-n", cn.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		cn.ip("-n", cn.sw, "link", "set", port, "master", "br0", "up")
		cn.ip("-n", ns, "link", "set", "lo", "up")
		cn.ip("-n", ns, "addr", "add", cn.ip4(i)+"/24", "dev", "eth0")
		cn.ip("-n", ns, "link", "set", "eth0", "up")
	}
	return cn
}

// ip4 is agent i's address.
func (cn *clusterNet) ip4(i int) string { return fmt.Sprintf("10.251.%d.%d", cn.k, i+1) }

// port is agent i's bridge port in the switch namespace.
func (cn *clusterNet) port(i int) string { return fmt.Sprintf("s%d", i) }

// path is a namespace's bind mount, for nsenter --net.
func (cn *clusterNet) path(ns string) string { return "/run/netns/" + ns }

// ip runs one ip(8) command and fails the test when it fails.
func (cn *clusterNet) ip(args ...string) {
	cn.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		cn.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// cut takes agent i off the switch (its port down: nothing passes either
// way); mend puts it back.
func (cn *clusterNet) cut(i int)  { cn.ip("-n", cn.sw, "link", "set", cn.port(i), "down") }
func (cn *clusterNet) mend(i int) { cn.ip("-n", cn.sw, "link", "set", cn.port(i), "up") }

// remove deletes the namespaces; the veths and the bridge go with them.
func (cn *clusterNet) remove() {
	for _, ns := range append([]string{cn.sw}, cn.agents...) {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			cn.t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	}
	// A namespace lives on while a process is in it; every agent was
	// stopped by its own cleanup (which ran before this one).
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), cn.prefix) {
		cn.t.Errorf("test namespaces left after cleanup: %s", out)
	}
}

// partition cuts agent i off the others (see clusterNet).
func (c *testCluster) partition(i int) {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("partition needs clusterOpts.Netns")
	}
	c.net.cut(i)
}

// heal undoes partition.
func (c *testCluster) heal(i int) {
	c.t.Helper()
	c.net.mend(i)
}
