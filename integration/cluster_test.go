package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster/pki"
)

// helloGroup is a replicated cluster group of the test app with a
// readiness probe.
func helloGroup(name string, replicas int, spread string) string {
	return fmt.Sprintf(`name = %q
grace_period = "2s"
[placement]
replicas = %d
spread = %q
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "200ms", timeout = "150ms" }
`, name, replicas, spread)
}

// TestClusterGroupOnOneNode proves the embedded default: without any
// cluster config an agent is its own one-node cluster and runs cluster
// groups, each allocation as a local group that knows its place.
func TestClusterGroupOnOneNode(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "solo"})
	applyTOML(t, a, "hello.toml", helloGroup("hello", 2, "prefer"))
	waitClusterGroup(t, a, "hello", 60*time.Second, "2 replicas ready", allReady(2))
	for i := range 2 {
		id := fmt.Sprintf("hello.%d", i)
		st := waitGroup(t, a, id, 30*time.Second, "running", allRunning)
		if st.Source != api.SourceCluster {
			t.Errorf("%s: source %q, want %q", id, st.Source, api.SourceCluster)
		}
		for k, want := range map[string]string{"BERTH_GROUP": "hello", "BERTH_REPLICA": fmt.Sprint(i), "BERTH_NODE": "solo"} {
			code, body := nsDo(t, st.NetNS, "GET", "http://127.0.0.1:8080/env?k="+k, "")
			if code != 200 || body != want {
				t.Errorf("%s: %s = %q (HTTP %d), want %q", id, k, body, code, want)
			}
		}
	}
	// A local group may not take a cluster group's name, nor the reverse.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "x.toml", Content: `name = "hello"
[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sleep", "1000"]
`}}})
	if err == nil || !strings.Contains(err.Error(), "cluster group") {
		t.Errorf("a local group named like a cluster group: err = %v, want a conflict naming the cluster group", err)
	}
	// Scale down, then delete: the allocations stop and disappear.
	if _, err := a.api().Scale(ctx, "hello", api.ScaleRequest{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	waitClusterGroup(t, a, "hello", 30*time.Second, "1 replica", allReady(1))
	waitFor(t, 30*time.Second, "hello.1 removed", func() (bool, error) {
		_, err := a.api().Get(ctx, "hello.1")
		return err != nil, nil
	})
	if err := a.api().Delete(ctx, "hello", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "hello.0 removed", func() (bool, error) {
		_, err := a.api().Get(ctx, "hello.0")
		return err != nil, nil
	})
	if _, err := a.api().ClusterGroup(ctx, "hello"); err == nil {
		t.Error("cluster group still there after delete")
	}
}

// TestClusterSpreadsAndReplacesALostNode starts three agents, applies a
// replicated group through a follower (the write is forwarded to the
// leader), checks one replica per node, then kills a node (agentd and its
// containers) and measures how long until its replica is Ready elsewhere.
// The node comes back and stops nothing but its stale allocation.
func TestClusterSpreadsAndReplacesALostNode(t *testing.T) {
	c := startCluster(t, clusterOpts{N: 3})
	leader := c.leader()
	follower := c.any(leader)
	applyTOML(t, follower, "hello.toml", helloGroup("hello", 2, "node"))
	g := waitClusterGroup(t, follower, "hello", 60*time.Second, "2 replicas ready", allReady(2))
	for n, k := range nodesOf(g) {
		if k != 1 {
			t.Fatalf("node %s runs %d replicas, want at most 1 (spread = node): %s", n, k, describeAllocs(g))
		}
	}
	// Lose the node of replica 0 (not the leader, so that this measures
	// rescheduling, not an election).
	var victim int = -1
	for _, al := range g.Allocations {
		if al.Replica == 0 {
			for i := range c.Agents {
				if clusterNodeName(i) == al.Node {
					victim = i
				}
			}
		}
	}
	if victim == leader {
		// Move the test's focus to replica 1, on a follower.
		for _, al := range g.Allocations {
			for i := range c.Agents {
				if clusterNodeName(i) == al.Node && i != leader {
					victim = i
				}
			}
		}
	}
	lost := clusterNodeName(victim)
	start := time.Now()
	c.killNode(victim)
	obs := c.any(victim)
	g = waitClusterGroup(t, obs, "hello", 30*time.Second, "2 replicas ready without "+lost, func(g *api.ClusterGroup) error {
		if err := allReady(2)(g); err != nil {
			return err
		}
		if nodesOf(g)[lost] > 0 {
			return fmt.Errorf("still placed on %s: %s", lost, describeAllocs(g))
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("node loss → replica Ready elsewhere: %s (target ≤ 5s)", took.Round(time.Millisecond))
	if took > 15*time.Second {
		t.Errorf("replacement took %s", took)
	}
	// The node comes back: it must stop its stale allocation and leave
	// the replacements alone.
	before := map[string]string{}
	for _, al := range g.Allocations {
		before[al.ID] = al.Node
	}
	c.Agents[victim].start()
	c.waitConverged(60 * time.Second)
	back := c.Agents[victim]
	waitFor(t, 30*time.Second, lost+" runs no stale allocation", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gs, err := back.api().List(ctx)
		if err != nil {
			return false, err
		}
		for _, st := range gs {
			if strings.HasPrefix(st.Name, "hello.") && before[st.Name] != lost {
				return false, fmt.Errorf("%s still runs %s (%s)", lost, st.Name, st.State)
			}
		}
		return true, nil
	})
	g = clusterGroup(t, obs, "hello")
	for _, al := range g.Allocations {
		if before[al.ID] != al.Node {
			t.Errorf("%s moved from %s to %s when %s came back", al.ID, before[al.ID], al.Node, lost)
		}
	}
}

// TestClusterLeaderLossKeepsAcknowledgedWrites kills the Raft leader
// while writes go on and checks that a new leader takes over and every
// write that was acknowledged is there.
func TestClusterLeaderLossKeepsAcknowledgedWrites(t *testing.T) {
	c := startCluster(t, clusterOpts{N: 3})
	leader := c.leader()
	follower := c.any(leader)
	var mu sync.Mutex
	acked := map[int]bool{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := follower.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "w.toml", Content: fmt.Sprintf(`name = "w%d"
[placement]
constraints = ["berth-test-nowhere"] # placed nowhere: only the write counts
[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sleep", "1000"]
`, i)}}})
			cancel()
			if err == nil {
				mu.Lock()
				acked[i] = true
				mu.Unlock()
			}
		}
	}()
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	c.Agents[leader].Kill()
	waitFor(t, 10*time.Second, "a new leader", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, err := follower.api().Raft(ctx)
		if err != nil {
			return false, err
		}
		return info.Leader != "" && info.Leader != clusterNodeName(leader), fmt.Errorf("leader %q", info.Leader)
	})
	t.Logf("leader loss → new leader seen by a follower: %s", time.Since(start).Round(time.Millisecond))
	mu.Lock()
	before := len(acked)
	mu.Unlock()
	waitFor(t, 20*time.Second, "writes acknowledged under the new leader", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= before+20, fmt.Errorf("%d since the new leader", len(acked)-before)
	})
	close(stop)
	<-done
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs, err := c.any(leader).api().ClusterGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, g := range gs {
		have[g.Name] = true
	}
	lost := 0
	for i := range acked {
		if !have[fmt.Sprintf("w%d", i)] {
			lost++
			t.Errorf("acknowledged write w%d is missing after the leader change", i)
		}
	}
	t.Logf("%d writes acknowledged, %d lost", len(acked), lost)
}

// TestClusterRefusesPlainAndForeignConnections: the inter-agent API and
// Raft refuse plain TCP and certificates of another CA; agentctl with the
// cluster's client certificate gets through.
func TestClusterRefusesPlainAndForeignConnections(t *testing.T) {
	c := startCluster(t, clusterOpts{N: 1, BootstrapExpect: 1})
	ip := c.IPs[0]
	for _, port := range []string{"7947", "7948"} {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 2*time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", port, err)
		}
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(conn, "GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 512)
		n, _ := conn.Read(buf)
		conn.Close()
		if strings.Contains(string(buf[:n]), "200 OK") || strings.Contains(string(buf[:n]), "version") {
			t.Errorf("port %s answered a plain request: %q", port, buf[:n])
		}
	}
	other, err := pki.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := other.Issue(pki.NodeCert{Name: "agentctl", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _, _, err := pki.ReadNode(c.TLSDir, "agentctl")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.ClientConfig(caPEM, certPEM, keyPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"7947", "7948"} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", net.JoinHostPort(ip, port), cfg.Clone())
		if err == nil {
			// TLS 1.3: the server's verdict on the client certificate
			// arrives with the first read.
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			fmt.Fprintf(conn, "GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n")
			buf := make([]byte, 512)
			n, rerr := conn.Read(buf)
			conn.Close()
			if rerr == nil && n > 0 {
				t.Errorf("port %s accepted a certificate of another CA: %q", port, buf[:n])
			}
		}
	}
	good, err := pkiClient(c.TLSDir, "agentctl")
	if err != nil {
		t.Fatal(err)
	}
	cl := api.NewRemoteClient(net.JoinHostPort(ip, "7948"), good)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cl.Version(ctx); err != nil {
		t.Errorf("agentctl's certificate refused: %v", err)
	}
	if _, err := cl.Members(ctx); err != nil {
		t.Errorf("members over TLS: %v", err)
	}
}

func pkiClient(dir, name string) (*tls.Config, error) {
	caPEM, certPEM, keyPEM, err := pki.ReadNode(dir, name)
	if err != nil {
		return nil, err
	}
	return pki.ClientConfig(caPEM, certPEM, keyPEM, "")
}

// TestClusterStateSurvivesSnapshotAndRestart: a snapshot compacts the
// log; after an agent restart the state is restored from it (and the log
// after it) and the allocations keep running untouched.
func TestClusterStateSurvivesSnapshotAndRestart(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "snap"})
	applyTOML(t, a, "hello.toml", helloGroup("hello", 1, "prefer"))
	waitClusterGroup(t, a, "hello", 60*time.Second, "1 replica ready", allReady(1))
	before := pids(waitGroup(t, a, "hello.0", 30*time.Second, "running", allRunning))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := a.api().RaftSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.LastSnapshotIndex == 0 {
		t.Fatalf("no snapshot index after a snapshot: %+v", info)
	}
	// One more write after the snapshot, replayed from the log.
	if _, err := a.api().Scale(ctx, "hello", api.ScaleRequest{Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	waitClusterGroup(t, a, "hello", 60*time.Second, "2 replicas ready", allReady(2))
	a.Restart()
	g := waitClusterGroup(t, a, "hello", 60*time.Second, "2 replicas ready after restart", allReady(2))
	if g.Replicas != 2 {
		t.Errorf("replicas after restart = %d, want 2 (the write after the snapshot)", g.Replicas)
	}
	info, err = a.api().Raft(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.LastSnapshotIndex == 0 {
		t.Errorf("restarted member has no snapshot: %+v", info)
	}
	after := pids(waitGroup(t, a, "hello.0", 30*time.Second, "running", allRunning))
	for c, p := range before {
		if after[c] != p {
			t.Errorf("hello.0/%s restarted across the agent restart: pid %d → %d", c, p, after[c])
		}
	}
}

// TestClusterIgnoresGossipWithoutTheKey: an agent with another gossip key
// (same certificates) never becomes a member.
func TestClusterIgnoresGossipWithoutTheKey(t *testing.T) {
	c := startCluster(t, clusterOpts{N: 1, BootstrapExpect: 1})
	cfg := c.agentConfig(0)
	wrongKey := strings.Replace(cfg, c.Key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 1)
	wrongKey = strings.ReplaceAll(wrongKey, c.IPs[0], "127.0.0.29")
	wrongKey = strings.Replace(wrongKey, "bootstrap_expect = 1", "bootstrap_expect = 0", 1)
	wrongKey += fmt.Sprintf("join = [%q]\n", net.JoinHostPort(c.IPs[0], "7946"))
	// It has a certificate of the cluster: only the gossip key is wrong.
	ca, err := pki.LoadCA(c.TLSDir)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(pki.NodeCert{Name: "n1x", IPs: []net.IP{net.ParseIP("127.0.0.29")}, Client: true, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteNode(c.TLSDir, "n1x", certPEM, keyPEM, false); err != nil {
		t.Fatal(err)
	}
	intruder := startAgent(t, agentOpts{NodeName: "n1x", Namespace: env.newNamespace(t), Config: wrongKey})
	_ = intruder
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ms, err := c.Agents[0].api().Members(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Name == "n1x" {
				t.Fatalf("an agent with another gossip key became a member: %+v", m)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}
