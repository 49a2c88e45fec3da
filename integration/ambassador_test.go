package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/cluster/pki"
)

// Ambassador tests: the agent's proxy in a group's network namespace, to
// the ready endpoints of a service. The client is this test process,
// inside the group's namespace (it dials the group's 127.0.0.1 as the
// group's containers do), one fresh connection per request, so that each
// request is one routing decision.

// ambassadorBase is the first 127.0.0.x address of the cluster agents of
// these tests (60–69 are theirs).
const ambassadorBase = 60

// startPublishingCluster starts n agents on 127.0.0.<base+i> like
// startCluster, each with its own [network] whose publish_address is its
// own address: the allocations of every agent publish the same host port
// without colliding, and the other agents reach them there.
func startPublishingCluster(t *testing.T, n, base int) *testCluster {
	t.Helper()
	env.needAgentd(t)
	c := &testCluster{t: t, TLSDir: env.newDir(t, "tls"),
		opts: clusterOpts{N: n, Servers: n, BootstrapExpect: n, Base: base, Start: n}}
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
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", base+i)
		c.IPs = append(c.IPs, ip)
		cert, k, err := ca.Issue(pki.NodeCert{Name: clusterNodeName(i), IPs: []net.IP{net.ParseIP(ip)}, Client: true, Server: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteNode(c.TLSDir, clusterNodeName(i), cert, k, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		section, err := newTestNetwork()
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.agentConfig(i) + "\n" + section + fmt.Sprintf("publish_address = %q\n", c.IPs[i])
		c.Agents = append(c.Agents, startAgent(t, agentOpts{NodeName: clusterNodeName(i), Namespace: env.newNamespace(t), Config: cfg}))
	}
	c.waitConverged(60 * time.Second)
	return c
}

// inNetns runs f on a thread in the network namespace pinned at nsPath.
// The thread never leaves it: it stays locked and the runtime discards it
// with the goroutine.
func inNetns(t testing.TB, nsPath string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// request is one HTTP/1.0 request on a connection of its own from
// source (an address of the namespace; "" any) to addr; it returns the
// body of a 200 answer, or "" and why not.
func request(source, addr, path string, header ...string) (string, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET " + path + " HTTP/1.0\r\nHost: backend\r\n"
	for _, h := range header {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err // closed without an answer: no ready endpoint
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

// tally makes n requests for path from inside the namespace and counts
// the answers ("" counts the failures; the first error is returned).
func tally(t testing.TB, nsPath, source, addr, path string, n int, header ...string) (map[string]int, []string) {
	t.Helper()
	counts := map[string]int{}
	var order []string
	var firstErr error
	err := inNetns(t, nsPath, func() error {
		for range n {
			body, err := request(source, addr, path, header...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			counts[body]++
			order = append(order, body)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if counts[""] > 0 {
		t.Logf("%d of %d requests to %s failed; first: %v", counts[""], n, addr, firstErr)
	}
	return counts, order
}

// randomHostPort is a host port for a test's published ports: random in
// 20000–29999, away from the ephemeral range and from other tests' fixed
// ports.
func randomHostPort() int { return 20000 + rand.IntN(10000) }

// TestAmbassadorReachesReplicasOnThreeAgents: an ambassador in a local
// group of one agent reaches the ready replicas of a cluster group on
// three agents (this agent's at its bridge address, the others' at their
// node's publish address and published port): round robin spreads over
// them evenly; source-hash keeps each source on one replica; a split sends
// 10% to an experiment; balance = "shard" sends each key to the replica of
// its shard; a replica that turns not ready gets no connections within a
// readiness period, and gets them again once ready.
func TestAmbassadorReachesReplicasOnThreeAgents(t *testing.T) {
	c := startPublishingCluster(t, 3, ambassadorBase)
	a0 := c.Agents[0]
	port := randomHostPort()
	// period 1s, one failure: a replica is not ready at most 1s after it
	// stops answering /ready.
	const period = time.Second
	readiness := `readiness = { http = { path = "/ready", port = 8080 }, period = "1s", timeout = "500ms", failure_threshold = 1 }`
	cached := func(name, placement string, ports ...string) string {
		p := ""
		if len(ports) > 0 {
			p = fmt.Sprintf("ports = [%q]\n", ports[0])
		}
		return fmt.Sprintf("name = %q\ngrace_period = \"2s\"\n%s[placement]\n%s\n[[container]]\nname = \"app\"\nimage = \"berth.local/testapp:latest\"\nargs = [\"serve\", \"--listen\", \":8080\"]\n%s\n",
			name, p, placement, readiness)
	}
	applyTOML(t, a0, "b.toml", cached("b", "replicas = 3", fmt.Sprintf("%d:8080", port)))
	applyTOML(t, a0, "bexp.toml", cached("bexp", "replicas = 1", fmt.Sprintf("%d:8080", port+1)))
	applyTOML(t, a0, "kv.toml", cached("kv", "shards = 3\nshard_replicas = 1", fmt.Sprintf("%d:8080", port+2)))
	applyTOML(t, a0, "client.toml", `name = "client"
grace_period = "1s"
[[ambassador]]
listen = "127.0.0.1:7001"
service = "b"
port = 8080
[[ambassador]]
listen = "127.0.0.1:7002"
service = "b"
port = 8080
balance = "source-hash"
[[ambassador]]
listen = "127.0.0.1:7003"
service = "b"
port = 8080
split = [{ service = "bexp", percent = 10 }]
[[ambassador]]
listen = "127.0.0.1:7004"
service = "kv"
port = 8080
balance = "shard"
shard_header = "X-Key"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`)
	for name, n := range map[string]int{"b": 3, "bexp": 1, "kv": 3} {
		waitClusterGroup(t, a0, name, 90*time.Second, "all ready", allReady(n))
	}
	b := clusterGroup(t, a0, "b")
	if nodes := nodesOf(b); len(nodes) != 3 {
		t.Fatalf("the replicas of b are on %v; want one on each of the three agents", nodes)
	}
	client := waitGroup(t, a0, "client", 30*time.Second, "ready", func(st *api.GroupStatus) bool { return allRunning(st) && st.Ready })

	// The endpoints of b, as agent n1 sees them: its own replica at its
	// bridge address, the others at their agent's publish address.
	var eps []api.Endpoint
	waitFor(t, 10*time.Second, "three endpoints of b on n1", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var err error
		eps, err = a0.api().Endpoints(ctx, "b")
		if err != nil || len(eps) != 3 {
			return false, fmt.Errorf("%d endpoints (%v): %+v", len(eps), err, eps)
		}
		return true, nil
	})
	for _, ep := range eps {
		i := slices.Index([]string{"n1", "n2", "n3"}, ep.Node)
		switch {
		case i < 0:
			t.Errorf("endpoint %+v on an unknown node", ep)
		case i == 0 && ep.Address == "":
			t.Errorf("endpoint %+v on n1 itself has no bridge address", ep)
		case i > 0 && (ep.Address != "" || len(ep.Ports) != 1 || ep.Ports[0].HostIP != c.IPs[i] || ep.Ports[0].HostPort != port):
			t.Errorf("endpoint %+v on %s: want no address and port %s:%d", ep, ep.Node, c.IPs[i], port)
		}
	}
	replicas := map[string]bool{}
	for _, al := range b.Allocations {
		replicas[al.ID] = true
	}
	ns := client.NetNS

	t.Run("round-robin", func(t *testing.T) {
		counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 300)
		if len(counts) != 3 || counts[""] > 0 {
			t.Fatalf("answers %v; want the three replicas of b %v and no failure", counts, replicas)
		}
		lo, hi := 300, 0
		for name, n := range counts {
			if !replicas[name] {
				t.Errorf("%q answered; not a replica of b", name)
			}
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > 2 {
			t.Errorf("round robin over 300 connections: %v; want 100 each", counts)
		}
	})

	t.Run("source-hash", func(t *testing.T) {
		chosen := map[string]string{}
		for i := 1; i <= 12; i++ {
			src := fmt.Sprintf("127.0.0.%d", i)
			counts, _ := tally(t, ns, src, "127.0.0.1:7002", "/hostname", 10)
			if len(counts) != 1 || counts[""] > 0 {
				t.Errorf("source %s reached %v; want one replica for all 10 connections", src, counts)
				continue
			}
			for name := range counts {
				chosen[src] = name
			}
		}
		used := map[string]bool{}
		for _, r := range chosen {
			used[r] = true
		}
		if len(used) < 2 {
			t.Errorf("12 sources all on %v: source-hash does not spread sources", chosen)
		}
		t.Logf("sources → replicas: %v", chosen)
	})

	t.Run("split", func(t *testing.T) {
		counts, _ := tally(t, ns, "", "127.0.0.1:7003", "/env?k=BERTH_GROUP", 1000)
		if counts["bexp"] < 50 || counts["bexp"] > 150 || counts["b"]+counts["bexp"] != 1000 {
			t.Errorf("split over 1000 connections: %v; want about 100 (50–150) to bexp and the rest to b", counts)
		}
		t.Logf("split: %v", counts)
	})

	t.Run("shard", func(t *testing.T) {
		for i := range 30 {
			key := fmt.Sprintf("user-%d", i)
			want := strconv.Itoa(cluster.ShardOf(key, 3))
			counts, _ := tally(t, ns, "", "127.0.0.1:7004", "/env?k=BERTH_SHARD", 2, "X-Key: "+key)
			if counts[want] != 2 {
				t.Errorf("key %s reached shards %v; want shard %s (the scheduler's ShardOf)", key, counts, want)
			}
		}
	})

	t.Run("readiness", func(t *testing.T) {
		// A replica on another agent turns not ready: it gets no new
		// connection within a readiness period (the probe notices within
		// one, its agent reports it, the Raft state reaches n1), then
		// gets them again once ready.
		var victim api.Allocation
		for _, al := range b.Allocations {
			if al.Node == "n2" {
				victim = al
			}
		}
		at := net.JoinHostPort(c.IPs[1], strconv.Itoa(port))
		set := func(v string) time.Time {
			t.Helper()
			if code, body, err := hostPost(fmt.Sprintf("http://%s/ready?v=%s", at, v)); err != nil || code != 200 {
				t.Fatalf("POST /ready?v=%s to %s (%s): %d %s %v", v, victim.ID, at, code, body, err)
			}
			return time.Now()
		}
		t0 := set("false")
		var gone time.Duration
		waitFor(t, 5*period, victim.ID+" out of the round robin", func() (bool, error) {
			_, order := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 6)
			if slices.Contains(order, victim.ID) {
				return false, fmt.Errorf("%s still answers: %v", victim.ID, order)
			}
			gone = time.Since(t0)
			return true, nil
		})
		t.Logf("%s stopped getting connections %s after it stopped answering /ready (readiness period %s)", victim.ID, gone.Round(time.Millisecond), period)
		if gone > 2*period {
			t.Errorf("%s got connections for %s after it turned not ready; want it gone within a readiness period (+ one for the probe to notice)", victim.ID, gone.Round(time.Millisecond))
		}
		counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 60)
		if counts[victim.ID] > 0 || len(counts) != 2 || counts[""] > 0 {
			t.Errorf("while %s is not ready: %v; want only the two other replicas", victim.ID, counts)
		}
		set("true")
		waitFor(t, 5*period, victim.ID+" back in the round robin", func() (bool, error) {
			counts, _ := tally(t, ns, "", "127.0.0.1:7001", "/hostname", 6)
			if counts[victim.ID] == 0 {
				return false, fmt.Errorf("answers %v", counts)
			}
			return true, nil
		})
	})
}

// TestAmbassadorAllocationWaitsForAPublishedPort: an allocation placed on
// an agent where a local group already publishes its host port waits,
// Pending with reason PortConflict naming the port and the group, and
// starts once that group is deleted.
func TestAmbassadorAllocationWaitsForAPublishedPort(t *testing.T) {
	c := startPublishingCluster(t, 2, ambassadorBase+3)
	port := randomHostPort()
	// n2 publishes the port first, with a local group.
	applyTOML(t, c.Agents[1], "local.toml", serveGroup("holder", fmt.Sprintf(`ports = ["%d:8080"]`, port)))
	waitGroup(t, c.Agents[1], "holder", 30*time.Second, "running", allRunning)
	applyTOML(t, c.Agents[0], "web.toml", fmt.Sprintf(`name = "web"
grace_period = "1s"
ports = ["%d:8080"]
[placement]
replicas = 2
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`, port))
	var held api.Allocation
	waitClusterGroup(t, c.Agents[0], "web", 60*time.Second, "one replica ready, the one on n2 waiting for the port", func(g *api.ClusterGroup) error {
		for _, al := range g.Allocations {
			if al.Node == "n2" && strings.Contains(al.Reason, "PortConflict") {
				held = al
			}
		}
		if g.Ready != 1 || held.ID == "" {
			return fmt.Errorf("%d ready: %s", g.Ready, describeAllocs(g))
		}
		return nil
	})
	for _, want := range []string{fmt.Sprintf("port %d/tcp is already published by group \"holder\" on node n2", port), "waits until the port is free"} {
		if !strings.Contains(held.Reason, want) {
			t.Errorf("reason of %s: %q; want it to say %q", held.ID, held.Reason, want)
		}
	}
	st := getGroup(t, c.Agents[1], held.ID)
	if st.State != api.GroupPending || st.Reason != "PortConflict" {
		t.Errorf("%s on n2: %s %s %q; want Pending, PortConflict", held.ID, st.State, st.Reason, st.Message)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Agents[1].api().Delete(ctx, "holder", true); err != nil {
		t.Fatal(err)
	}
	waitClusterGroup(t, c.Agents[0], "web", 60*time.Second, "both replicas ready once the port is free", allReady(2))
	if body := waitHostGet(t, fmt.Sprintf("http://%s:%d/hostname", c.IPs[1], port)); body != held.ID {
		t.Errorf("n2's published port answered %q; want %s", body, held.ID)
	}
}

// TestAmbassadorExampleAndFailures: the README's example (web.toml,
// ambassador.toml, ambassador-v2.toml) runs as it says; an ambassador
// that cannot listen is a Warning event of its group; a changed
// [[ambassador]] is applied to the running group.
func TestAmbassadorExampleAndFailures(t *testing.T) {
	a := startAgent(t, agentOpts{})
	for _, f := range []string{"web.toml", "ambassador.toml", "ambassador-v2.toml"} {
		b, err := os.ReadFile(filepath.Join("..", "contrib", "examples", f))
		if err != nil {
			t.Fatal(err)
		}
		applyTOML(t, a, f, string(b))
	}
	for _, g := range []string{"web", "web-v2", "shop"} {
		waitGroup(t, a, g, 60*time.Second, "ready", func(st *api.GroupStatus) bool { return allRunning(st) && st.Ready })
	}
	shop := getGroup(t, a, "shop")
	counts, _ := tally(t, shop.NetNS, "", "127.0.0.1:9000", "/hostname", 200)
	// The shop's own client connects too, now and then: the share over
	// these 200 is about, not exactly, 10%.
	if counts["web-v2"] < 8 || counts["web-v2"] > 35 || counts["web"]+counts["web-v2"] != 200 {
		t.Errorf("through the example's ambassador: %v; want web, and about 10%% web-v2", counts)
	}
	t.Logf("through the example's ambassador: %v", counts)
	if !slices.ContainsFunc(shop.Events, func(ev api.Event) bool { return ev.Reason == "AmbassadorListening" }) {
		t.Errorf("no AmbassadorListening event in shop's events: %+v", shop.Events)
	}
	waitFor(t, 10*time.Second, "the example's client logs answers from web", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, found := 0, false
		err := a.api().Logs(ctx, "shop", api.LogOptions{Container: "client", Tail: -1}, func(l api.LogEntry) error {
			n++
			found = found || strings.Contains(l.Line, "answered by: web")
			return nil
		})
		if err != nil || !found {
			return false, fmt.Errorf("%d lines, none answered by web (%v)", n, err)
		}
		return true, nil
	})

	// An address the group does not have: a warning that says so, and
	// the other ambassador keeps working. Then the same ambassador to
	// web-v2 only: reopened.
	applyTOML(t, a, "ambassador.toml", `name = "shop"
grace_period = "1s"
[[ambassador]]
listen = "127.0.0.1:9000"
service = "web-v2"
port = 8080
[[ambassador]]
listen = "192.0.2.1:9001"
service = "web"
port = 8080
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`)
	var warning api.Event
	st := waitGroup(t, a, "shop", 60*time.Second, "running with an AmbassadorFailed warning", func(st *api.GroupStatus) bool {
		for _, ev := range getGroup(t, a, "shop").Events {
			if ev.Reason == "AmbassadorFailed" {
				warning = ev
			}
		}
		return allRunning(st) && warning.Reason != ""
	})
	if warning.Type != api.EventWarning || !strings.Contains(warning.Message, "192.0.2.1:9001") || !strings.Contains(warning.Message, "cannot assign requested address") {
		t.Errorf("warning %+v: want the address and the system's reason", warning)
	}
	counts, _ = tally(t, st.NetNS, "", "127.0.0.1:9000", "/hostname", 20)
	if counts["web-v2"] != 20 {
		t.Errorf("after the change to web-v2: %v; want only web-v2", counts)
	}

	// The proxy lives in agentd: after a restart the agent opens it again
	// when it reattaches to the running group.
	a.Restart()
	waitFor(t, 20*time.Second, "the ambassador back after an agent restart", func() (bool, error) {
		counts, _ := tally(t, st.NetNS, "", "127.0.0.1:9000", "/hostname", 5)
		if counts["web-v2"] != 5 {
			return false, fmt.Errorf("answers %v", counts)
		}
		return true, nil
	})
	if after := getGroup(t, a, "shop"); after.NetNS != st.NetNS || after.Restarts != st.Restarts {
		t.Errorf("shop after the agent restart: netns %s, %d restarts; want the same group (%s, %d)", after.NetNS, after.Restarts, st.NetNS, st.Restarts)
	}
}
