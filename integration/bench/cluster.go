package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/cluster/pki"
	"github.com/berth-project/berth/raftstore"
)

// The cluster benchmarks of issue 6: node loss → replica Ready elsewhere,
// Raft leader loss → new leader (real agentd processes on 127.0.0.41-43,
// -cluster-ip-base, sharing the bench's containerd, one namespace each),
// Raft apply throughput (three raftstore members on the TLS transport, in
// process, on the next three addresses),
// and the shard simulation (moves and load for N = 3..10).

type benchNode struct {
	name, ip, ns, dir string
	cmd               *exec.Cmd
	api               *api.Client
}

type benchCluster struct {
	b     *bench
	nodes []*benchNode
	tls   string
	// prefix names its agents and bridges (clusterShape).
	prefix string
}

// clusterShape says how startBenchCluster names and places its agents, so
// that the benchmarks' clusters never share an address, a bridge, a
// subnet or a containerd namespace.
type clusterShape struct {
	// prefix names the agents (c1, c2…), their bridges (bbc1…), their
	// namespaces (berth-bench-c1…) and the TLS directory.
	prefix string
	// ipBase is the last octet of the first agent's 127.0.0.x address;
	// subnetBase the second octet of its 10.x.0.0/24 bridge subnet.
	ipBase, subnetBase int
	// images are imported into every agent's namespace.
	images []string
}

// startBenchCluster starts n agents of one cluster, every one a server
// (bootstrap_expect n) that joins the others, and waits until they agree
// on a leader. On an error it returns what it started, for stop.
func (b *bench) startBenchCluster(ctx context.Context, n int, shape clusterShape) (*benchCluster, error) {
	c := &benchCluster{b: b, tls: filepath.Join(b.dir, shape.prefix+"-tls"), prefix: shape.prefix}
	key, err := cluster.GenerateKey()
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA("bench CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteCA(c.tls, ca, false); err != nil {
		return nil, err
	}
	for i := range n {
		nd := &benchNode{name: fmt.Sprintf("%s%d", shape.prefix, i+1), ip: fmt.Sprintf("127.0.0.%d", shape.ipBase+i),
			ns: fmt.Sprintf("berth-bench-%s%d", shape.prefix, i+1)}
		nd.dir = filepath.Join(b.dir, nd.name)
		cert, k, err := ca.Issue(pki.NodeCert{Name: nd.name, IPs: []net.IP{net.ParseIP(nd.ip)}, Client: true, Server: true})
		if err != nil {
			return nil, err
		}
		if err := pki.WriteNode(c.tls, nd.name, cert, k, false); err != nil {
			return nil, err
		}
		for _, img := range shape.images {
			if err := importDirect(ctx, b.client, nd.ns, img); err != nil {
				return nil, err
			}
		}
		c.nodes = append(c.nodes, nd)
	}
	for i, nd := range c.nodes {
		var seeds []string
		for j, o := range c.nodes {
			if j != i {
				seeds = append(seeds, fmt.Sprintf("%q", o.ip+":7946"))
			}
		}
		conf := fmt.Sprintf("[network]\nbridge = \"bb%s%d\"\nsubnet = \"10.%d.0.0/24\"\n[cluster]\nadvertise = %q\nbind_addr = %q\nencrypt_key = %q\ntls_dir = %q\nserver = true\nbootstrap_expect = %d\njoin = [%s]\n",
			shape.prefix, i+1, shape.subnetBase+i, nd.ip, nd.ip, key, c.tls, n, strings.Join(seeds, ", "))
		if err := os.MkdirAll(nd.dir, 0o750); err != nil {
			return c, err
		}
		if err := os.WriteFile(filepath.Join(nd.dir, "agent.toml"), []byte(conf), 0o644); err != nil {
			return c, err
		}
		if err := c.start(ctx, nd); err != nil {
			return c, err
		}
	}
	return c, c.converged(ctx, 60*time.Second)
}

func (c *benchCluster) start(ctx context.Context, nd *benchNode) error {
	logf, err := os.OpenFile(filepath.Join(nd.dir, "agentd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	sock := filepath.Join(nd.dir, "agent.sock")
	nd.cmd = exec.Command(c.b.agentd, "--config", filepath.Join(nd.dir, "agent.toml"), "--node-name", nd.name,
		"--state-dir", filepath.Join(nd.dir, "state"), "--run-dir", filepath.Join(nd.dir, "run"),
		"--groups-dir", filepath.Join(nd.dir, "groups"), "--socket", sock,
		"--containerd-address", c.b.ctrdAddr, "--namespace", nd.ns, "--managed-containerd", "never", "--log-level", "warn")
	nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
	if err := nd.cmd.Start(); err != nil {
		return err
	}
	nd.api = api.NewClient(sock)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := nd.api.Version(ctx); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("agentd %s did not answer within 20s (log in %s)", nd.name, nd.dir)
}

// kill is a node loss: SIGKILL to agentd and to its containers.
func (c *benchCluster) kill(ctx context.Context, nd *benchNode) {
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	_ = nd.cmd.Wait()
	nd.cmd = nil
	nctx := namespaces.WithNamespace(ctx, nd.ns)
	cs, _ := c.b.client.Containers(nctx)
	for _, ctr := range cs {
		if task, err := ctr.Task(nctx, nil); err == nil {
			_ = task.Kill(nctx, 9, containerd.WithKillAll)
		}
	}
}

func (c *benchCluster) live() []*benchNode {
	var out []*benchNode
	for _, nd := range c.nodes {
		if nd.cmd != nil {
			out = append(out, nd)
		}
	}
	return out
}

// converged waits until every live agent sees one leader and all live
// members alive.
func (c *benchCluster) converged(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = c.checkConverged(ctx)
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("cluster did not converge in %s: %v", timeout, last)
}

func (c *benchCluster) checkConverged(ctx context.Context) error {
	live := c.live()
	leader := ""
	for _, nd := range live {
		info, err := nd.api.Raft(ctx)
		if err != nil {
			return err
		}
		if info.Leader == "" || (leader != "" && info.Leader != leader) {
			return fmt.Errorf("%s sees leader %q", nd.name, info.Leader)
		}
		leader = info.Leader
		ms, err := nd.api.Members(ctx)
		if err != nil {
			return err
		}
		alive := 0
		for _, m := range ms {
			for _, o := range live {
				if m.Name == o.name && m.Status == "alive" {
					alive++
				}
			}
		}
		if alive != len(live) {
			return fmt.Errorf("%s sees %d of %d alive", nd.name, alive, len(live))
		}
	}
	return nil
}

func (c *benchCluster) node(name string) *benchNode {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	return nil
}

func (c *benchCluster) stop() {
	for _, nd := range c.nodes {
		if nd.cmd != nil {
			_ = nd.cmd.Process.Signal(syscall.SIGTERM)
			_ = nd.cmd.Wait()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = cleanDirect(namespaces.WithNamespace(ctx, nd.ns), c.b.client)
		cancel()
		removeCgroups(nd.ns)
		_ = os.RemoveAll(filepath.Join("/run/containerd/runc", nd.ns))
		_ = exec.Command("ip", "link", "del", "bb"+nd.name).Run() // its bridge
	}
}

type clusterResult struct {
	nodeLoss, leaderLoss []time.Duration
	// nodeDead is, per node-loss trial, when the Raft state recorded the
	// victim dead (gossip's detection plus the leader's write), as the
	// watcher saw it; the rest of nodeLoss is placement, start and
	// readiness.
	nodeDead []time.Duration
	// stableTerms counts the term changes seen in a quiet window after
	// the trials (false elections), watched for stableFor.
	stableTerms    int
	stableFor      time.Duration
	nodeLossLeader int
	// nodeLossOnLeader says, per node-loss trial, whether the victim was
	// the Raft leader.
	nodeLossOnLeader []bool
	throughput       map[int]float64
	shards           []cluster.ShardResult
}

// measureCluster runs the cluster benchmarks.
func (b *bench) measureCluster(ctx context.Context, trials int) (*clusterResult, error) {
	res := &clusterResult{throughput: map[int]float64{}}
	for n := 3; n <= 10; n++ {
		for _, sr := range [][2]int{{16, 2}, {256, 2}} {
			r, err := cluster.ShardMoves(sr[0], sr[1], n)
			if err != nil {
				return nil, err
			}
			res.shards = append(res.shards, r)
		}
	}
	for _, writers := range []int{1, 64} {
		ops, err := raftThroughput(b.dir, writers)
		if err != nil {
			return nil, fmt.Errorf("raft throughput: %w", err)
		}
		res.throughput[writers] = ops
	}
	c, err := b.startBenchCluster(ctx, 3, clusterShape{prefix: "c", ipBase: *clusterIPBase, subnetBase: 230, images: []string{b.busybox, b.testapp}})
	if c != nil {
		defer c.stop()
	}
	if err != nil {
		return nil, err
	}
	group := `name = "bench-hello"
grace_period = "1s"
[placement]
replicas = 1
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "200ms", timeout = "150ms" }
`
	if _, err := c.nodes[0].api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "hello.toml", Content: group}}}); err != nil {
		return nil, err
	}
	for range trials {
		time.Sleep(*clusterCalm)
		obs := c.live()[0]
		where, err := settledOn(ctx, c, "bench-hello", 60*time.Second)
		if err != nil {
			return nil, err
		}
		victim := c.node(where)
		info, _ := obs.api.Raft(ctx)
		onLeader := info != nil && info.Leader == where
		if onLeader {
			res.nodeLossLeader++
		}
		res.nodeLossOnLeader = append(res.nodeLossOnLeader, onLeader)
		var watcher *benchNode
		for _, nd := range c.live() {
			if nd != victim {
				watcher = nd
			}
		}
		t0 := time.Now()
		dead := make(chan time.Duration, 1)
		watchCtx, stopWatch := context.WithCancel(ctx)
		go func() { dead <- recordedDead(watchCtx, watcher.api, where, t0) }()
		c.kill(ctx, victim)
		_, err = readyOn(ctx, watcher.api, "bench-hello", where, 30*time.Second)
		ready := time.Since(t0)
		stopWatch()
		res.nodeDead = append(res.nodeDead, <-dead)
		if err != nil {
			return nil, err
		}
		res.nodeLoss = append(res.nodeLoss, ready)
		if err := c.start(ctx, victim); err != nil {
			return nil, err
		}
		if err := c.converged(ctx, 60*time.Second); err != nil {
			return nil, err
		}
	}
	for range trials {
		info, err := c.live()[0].api.Raft(ctx)
		if err != nil {
			return nil, err
		}
		old := c.node(info.Leader)
		var watcher *benchNode
		for _, nd := range c.live() {
			if nd != old {
				watcher = nd
			}
		}
		t0 := time.Now()
		_ = old.cmd.Process.Signal(syscall.SIGKILL)
		_ = old.cmd.Wait()
		old.cmd = nil
		for {
			if time.Since(t0) > 30*time.Second {
				return nil, fmt.Errorf("no new leader within 30s")
			}
			if info, err := watcher.api.Raft(ctx); err == nil && info.Leader != "" && info.Leader != old.name && info.State != "" {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		res.leaderLoss = append(res.leaderLoss, time.Since(t0))
		if err := c.start(ctx, old); err != nil {
			return nil, err
		}
		if err := c.converged(ctx, 60*time.Second); err != nil {
			return nil, err
		}
	}
	// No false elections: with every agent up, the term must not move.
	res.stableFor = *clusterQuiet
	first, err := c.live()[0].api.Raft(ctx)
	if err != nil {
		return nil, err
	}
	term := first.Term
	for end := time.Now().Add(res.stableFor); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, nd := range c.live() {
			if info, err := nd.api.Raft(ctx); err == nil && info.Term > term {
				res.stableTerms += int(info.Term - term)
				term = info.Term
			}
		}
	}
	return res, nil
}

// readyOn waits until the group's allocation is Ready on a node other
// than not, and returns that node.
// recordedDead polls c's members until node is recorded dead and returns
// how long after t0 that was (0 when ctx ended first).
func recordedDead(ctx context.Context, c *api.Client, node string, t0 time.Time) time.Duration {
	for ctx.Err() == nil {
		if ms, err := c.Members(ctx); err == nil {
			for _, m := range ms {
				if m.Name == node && m.Status == "dead" {
					return time.Since(t0)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}

// settledOn waits until every live agent sees the group's one allocation
// Ready on the same node, and still there half a second later: a trial
// must not start while a restarted agent's view lags (it would name a
// node the replica has left) or while the allocation moves.
func settledOn(ctx context.Context, c *benchCluster, group string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	agreed := func() string {
		node := ""
		for _, nd := range c.live() {
			g, err := nd.api.ClusterGroup(ctx, group)
			if err != nil || len(g.Allocations) != 1 {
				return ""
			}
			al := g.Allocations[0]
			if !al.Ready || al.Node == "" || al.GroupGeneration != g.Generation || (node != "" && al.Node != node) {
				return ""
			}
			node = al.Node
		}
		return node
	}
	for time.Now().Before(deadline) {
		if n := agreed(); n != "" {
			time.Sleep(500 * time.Millisecond)
			if agreed() == n {
				return n, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("%s: the agents did not agree on one ready allocation within %s", group, timeout)
}

func readyOn(ctx context.Context, c *api.Client, group, not string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		g, err := c.ClusterGroup(ctx, group)
		if err == nil {
			for _, al := range g.Allocations {
				if al.Ready && al.Node != "" && al.Node != not && al.GroupGeneration == g.Generation {
					return al.Node, nil
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("%s: no ready allocation off %q within %s", group, not, timeout)
}

// raftThroughput measures Raft applies per second on the leader of three
// in-process raftstore members talking over the TLS transport on loopback.
func raftThroughput(dir string, writers int) (float64, error) {
	tlsDir := filepath.Join(dir, fmt.Sprintf("raft-tls-%d", writers))
	ca, err := pki.NewCA("bench raft CA", time.Hour)
	if err != nil {
		return 0, err
	}
	var stores []*raftstore.Store
	defer func() {
		for _, s := range stores {
			_ = s.Close()
		}
	}()
	for i := range 3 {
		name := fmt.Sprintf("r%d", i+1)
		ip := fmt.Sprintf("127.0.0.%d", *clusterIPBase+3+i)
		cert, k, err := ca.Issue(pki.NodeCert{Name: name, IPs: []net.IP{net.ParseIP(ip)}, Client: true, Server: true})
		if err != nil {
			return 0, err
		}
		if err := pki.WriteCA(tlsDir, ca, true); err != nil {
			return 0, err
		}
		if err := pki.WriteNode(tlsDir, name, cert, k, true); err != nil {
			return 0, err
		}
		t, err := cluster.LoadTLS(tlsDir, name)
		if err != nil {
			return 0, err
		}
		tr, err := cluster.NewRaftTransport(ip+":0", "", t, 0, 0, nil)
		if err != nil {
			return 0, err
		}
		cfg := raftstore.DefaultConfig()
		cfg.NodeID, cfg.DataDir, cfg.Voter, cfg.Bootstrap = name, filepath.Join(tlsDir, name), true, i == 0
		s, err := raftstore.Open(cfg, tr)
		if err != nil {
			return 0, err
		}
		stores = append(stores, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	leader := stores[0]
	for !leader.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range stores[1:] {
		if err := leader.AddVoter(ctx, s.ID(), s.Addr()); err != nil {
			return 0, err
		}
	}
	total := 2000
	if writers > 1 {
		total = 20000
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	t0 := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += writers {
				cmd, err := raftstore.NewCommand(raftstore.CmdPutNode, raftstore.NodeInfo{Name: fmt.Sprintf("n%d", i%100), Status: raftstore.NodeAlive})
				if err == nil {
					_, err = leader.Apply(ctx, cmd)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(total) / time.Since(t0).Seconds(), nil
}

func (r *clusterResult) print() {
	fmt.Printf("\nCluster (3 agentd processes on 127.0.0.%d-%d, one containerd)\n", *clusterIPBase, *clusterIPBase+2)
	fmt.Printf("  node loss → replica Ready elsewhere (%d trials, %d of them the leader's node): p50 %s, max %s   (target ≤ 5s)\n",
		len(r.nodeLoss), r.nodeLossLeader, sec(pct(r.nodeLoss, 50)), sec(pct(r.nodeLoss, 100)))
	var trials []string
	for i, d := range r.nodeLoss {
		mark := ""
		if i < len(r.nodeLossOnLeader) && r.nodeLossOnLeader[i] {
			mark = "(leader)"
		}
		if i < len(r.nodeDead) && r.nodeDead[i] > 0 {
			mark += "[dead " + sec(r.nodeDead[i]) + "]"
		}
		trials = append(trials, sec(d)+mark)
	}
	fmt.Printf("    every trial, in order: %s\n", strings.Join(trials, " "))
	fmt.Printf("  Raft leader loss → new leader seen by a follower (%d trials): p50 %s, max %s   (target ≤ 1s)\n",
		len(r.leaderLoss), sec(pct(r.leaderLoss, 50)), sec(pct(r.leaderLoss, 100)))
	sorted := slices.Sorted(slices.Values(r.leaderLoss))
	var all []string
	for _, d := range sorted {
		all = append(all, sec(d))
	}
	fmt.Printf("    every trial: %s\n", strings.Join(all, " "))
	fmt.Printf("  false elections: %d term changes in %s with every agent up\n", r.stableTerms, r.stableFor)
	keys := make([]int, 0, len(r.throughput))
	for k := range r.throughput {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		fmt.Printf("  Raft apply throughput, 3 members over TLS, %2d writer(s): %.0f applies/s\n", k, r.throughput[k])
	}
	fmt.Printf("\nShard placement (rendezvous under a load bound; real Schedule + FSM)\n")
	fmt.Printf("  %6s %3s %3s  %12s %12s %12s  %10s\n", "S×R", "N", "", "join moves", "leave moves", "fail moves", "max/mean")
	for _, s := range r.shards {
		fmt.Printf("  %3d×%-2d %3d      %5d/%-5.1f %5d/%-5.1f %5d/%-5.1f  %5.2f  (ratios %.2f %.2f %.2f)\n",
			s.Shards, s.Replicas, s.Nodes, s.Join.Moves, s.Join.Optimum, s.Leave.Moves, s.Leave.Optimum,
			s.Fail.Moves, s.Fail.Optimum, s.Join.LoadRatio(), s.Join.MoveRatio(), s.Leave.MoveRatio(), s.Fail.MoveRatio())
	}
	fmt.Printf("  targets: moves/optimum ≤ 1.05, max/mean ≤ 1.10\n")
}

func sec(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// clusterOnly is -cluster-only: the bench's setup, then the cluster
// benchmarks alone (with -cluster-trials trials).
var (
	clusterOnly   = flag.Bool("cluster-only", false, "run only the cluster benchmarks (node loss, leader loss, Raft throughput, shard moves)")
	clusterCalm   = flag.Duration("cluster-calm", 5*time.Second, "before each node-loss trial, how long the cluster has been whole (gossip's Lifeguard raises probe timeouts after failed probes and lowers them again over a few seconds)")
	clusterQuiet  = flag.Duration("cluster-quiet", 20*time.Second, "after the leader-loss trials, how long to watch the Raft term for false elections")
	clusterIPBase = flag.Int("cluster-ip-base", 41, "the cluster benchmarks use 127.0.0.<base> to <base+5>: three agents, then three Raft members")
)

func (b *bench) clusterOnly(ctx context.Context) error {
	cr, err := b.measureCluster(ctx, max(clusterTrials, 1))
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	cr.print()
	return nil
}
