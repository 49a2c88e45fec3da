package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// Leader election end to end: real agentd processes, real containers of
// the test app campaigning over their downward sockets (testapp lease),
// and a shared file where every holder appends (token, wall time, holder)
// for as long as it believes it holds the lease. The file is the proof:
// no two holders' intervals may overlap, and tokens grow with time.

// leaseGroupTOML is a group of candidates: each container campaigns for
// lease and appends to /shared/log while it holds it; its readiness probe
// is the app's /ready, which the test can turn off.
func leaseGroupTOML(name, placement, leases, shared string) string {
	return fmt.Sprintf(`name = %q
grace_period = "2s"
%s
%s
[[volume]]
name = "shared"
type = "host"
path = %q
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["lease", "--lease", "%s", "--out", "/shared/log", "--every", "5ms", "--listen", ":8080"]
mount = [{ volume = "shared", path = "/shared" }]
readiness = { http = { path = "/ready", port = 8080 }, period = "100ms", timeout = "90ms", failure_threshold = 1 }
`, name, placement, leases, shared, leaseNameOf(leases))
}

// leaseNameOf is the name of the first [[lease]] in leases.
func leaseNameOf(leases string) string {
	_, rest, _ := strings.Cut(leases, `name = "`)
	n, _, _ := strings.Cut(rest, `"`)
	return n
}

// sharedDir is a directory the test's groups may bind (host volumes).
func sharedDir(t *testing.T) (dir, agentToml string) {
	dir = env.newDir(t, "lease")
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir, fmt.Sprintf("[volumes]\nhost_path_prefixes = [%q]\n", dir)
}

// belief is a candidate's view of itself (testapp lease GET /lease).
type belief struct {
	Held     bool      `json:"held"`
	Token    uint64    `json:"token"`
	Holder   string    `json:"holder"`
	Deadline time.Time `json:"deadline"`
}

// candidate is one running copy of a candidate group: where to reach it.
type candidate struct {
	name  string // group on its node (an allocation ID, or a local group)
	agent *agentProc
	node  int // index of its agent in the cluster; -1 on one agent
	netns string
}

func (c candidate) belief(t *testing.T) (belief, error) {
	code, body := nsDo(t, c.netns, "GET", "http://127.0.0.1:8080/lease", "")
	var b belief
	if code != 200 {
		return b, fmt.Errorf("%s: GET /lease: %d %s", c.name, code, body)
	}
	return b, json.Unmarshal([]byte(body), &b)
}

func (c candidate) setReady(t *testing.T, ready bool) {
	t.Helper()
	if code, body := nsDo(t, c.netns, "POST", fmt.Sprintf("http://127.0.0.1:8080/ready?v=%t", ready), ""); code != 200 {
		t.Fatalf("%s: set ready %t: %d %s", c.name, ready, code, body)
	}
}

// holders returns the candidates that believe they hold the lease.
func holders(t *testing.T, cs []candidate) ([]candidate, []belief, error) {
	var hs []candidate
	var bs []belief
	for _, c := range cs {
		b, err := c.belief(t)
		if err != nil {
			return nil, nil, err
		}
		if b.Held {
			hs = append(hs, c)
			bs = append(bs, b)
		}
	}
	return hs, bs, nil
}

// waitOneHolder waits until exactly one of cs (except skip) believes it
// holds the lease with a token above after, and returns it and when it
// was first seen.
func waitOneHolder(t *testing.T, cs []candidate, after uint64, timeout time.Duration, what string) (candidate, belief, time.Time) {
	t.Helper()
	var h candidate
	var b belief
	var at time.Time
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		hs, bs, err := holders(t, cs)
		switch {
		case err != nil:
			last = err
		case len(hs) > 1:
			t.Fatalf("%s: %d candidates believe they hold the lease at once: %v %v", what, len(hs), hs, bs)
		case len(hs) == 1 && bs[0].Token > after:
			h, b, at = hs[0], bs[0], time.Now()
			return h, b, at
		default:
			last = fmt.Errorf("%d holders (%v)", len(hs), bs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: no single holder with a token above %d after %s: %v", what, after, timeout, last)
	return h, b, at
}

// heldLine is one line a holder appended.
type heldLine struct {
	token  uint64
	at     time.Time
	holder string
}

// tenure is one token's stretch in the log.
type tenure struct {
	token       uint64
	holder      string
	first, last time.Time
	lines       int
}

// checkNoOverlap reads the holders' log and fails the test unless every
// token belongs to one holder, the tokens' stretches do not overlap, and
// tokens grow with time. It returns the stretches in time order.
func checkNoOverlap(t *testing.T, path string) []tenure {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byToken := map[uint64]*tenure{}
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("%s:%d: malformed line %q", path, n+1, sc.Text())
		}
		tok, err1 := strconv.ParseUint(fields[0], 10, 64)
		ns, err2 := strconv.ParseInt(fields[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("%s:%d: malformed line %q", path, n+1, sc.Text())
		}
		n++
		l := heldLine{token: tok, at: time.Unix(0, ns), holder: fields[2]}
		tn := byToken[tok]
		if tn == nil {
			tn = &tenure{token: tok, holder: l.holder, first: l.at, last: l.at}
			byToken[tok] = tn
		}
		if tn.holder != l.holder {
			t.Fatalf("token %d appended by two holders: %s and %s", tok, tn.holder, l.holder)
		}
		if l.at.Before(tn.first) {
			tn.first = l.at
		}
		if l.at.After(tn.last) {
			tn.last = l.at
		}
		tn.lines++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var out []tenure
	for _, tn := range byToken {
		out = append(out, *tn)
	}
	slices.SortFunc(out, func(a, b tenure) int { return a.first.Compare(b.first) })
	for i := 1; i < len(out); i++ {
		p, c := out[i-1], out[i]
		if !c.first.After(p.last) {
			t.Errorf("holders overlapped: %s (token %d) wrote until %s, %s (token %d) from %s",
				p.holder, p.token, p.last.Format(time.RFC3339Nano), c.holder, c.token, c.first.Format(time.RFC3339Nano))
		}
		if c.token <= p.token {
			t.Errorf("token %d of %s came after token %d of %s", c.token, c.holder, p.token, p.holder)
		}
	}
	for _, tn := range out {
		t.Logf("token %d: %s held %s – %s (%d lines)", tn.token, tn.holder,
			tn.first.Format("15:04:05.000"), tn.last.Format("15:04:05.000"), tn.lines)
	}
	return out
}

// clusterCandidates finds the copies of a cluster group and their netns.
func clusterCandidates(t *testing.T, c *testCluster, g *api.ClusterGroup) []candidate {
	t.Helper()
	var out []candidate
	for _, al := range g.Allocations {
		for i, a := range c.Agents {
			if clusterNodeName(i) == al.Node {
				st := waitGroup(t, a, al.ID, 30*time.Second, "running", allRunning)
				out = append(out, candidate{name: al.ID, agent: a, node: i, netns: st.NetNS})
			}
		}
	}
	return out
}

func without(cs []candidate, name string) []candidate {
	var out []candidate
	for _, c := range cs {
		if c.name != name {
			out = append(out, c)
		}
	}
	return out
}

// TestLeaseOneHolderFailsOverAfterNodeLossWithoutOverlap: three replicas
// of a cluster group, one per node, campaign for one lease with a 1 s TTL.
// Exactly one holds it; every replica's leader-elector endpoint (GET / on
// the socket, from inside the container) names it. A holder that turns
// un-ready loses it to another replica, with a higher token. Then the
// holder's node is killed (agentd and its containers, kill -9): another
// replica holds the lease within 2 s, with a higher token. The shared log
// proves that no two holders' stretches overlapped.
func TestLeaseOneHolderFailsOverAfterNodeLossWithoutOverlap(t *testing.T) {
	shared, volumes := sharedDir(t)
	c := startCluster(t, clusterOpts{N: 3, Base: 75, Extra: volumes})
	a := c.any()
	applyTOML(t, a, "lead.toml", leaseGroupTOML("lead", "[placement]\nreplicas = 3\nspread = \"node\"",
		"[[lease]]\nname = \"leader\"\nttl = \"1s\"", shared))
	g := waitClusterGroup(t, a, "lead", 60*time.Second, "3 replicas ready", allReady(3))
	for n, k := range nodesOf(g) {
		if k != 1 {
			t.Fatalf("node %s runs %d replicas, want 1: %s", n, k, describeAllocs(g))
		}
	}
	cs := clusterCandidates(t, c, g)
	h1, b1, _ := waitOneHolder(t, cs, 0, 20*time.Second, "first election")
	t.Logf("first holder %s (token %d) on %s", h1.name, b1.Token, clusterNodeName(h1.node))

	// The leader-elector answer, as an app written for the sidecar reads it.
	for _, cand := range cs {
		code, body := nsDo(t, cand.netns, "GET", "http://127.0.0.1:8080/elector", "")
		var ans api.ElectorAnswer
		if code != 200 || json.Unmarshal([]byte(body), &ans) != nil || ans.Name != h1.name {
			t.Errorf("%s: GET / = %d %s, want {\"name\": %q}", cand.name, code, body, h1.name)
		}
	}

	// Un-ready holders lose the lease. Repeat until the holder is not on
	// the Raft leader's node, so that the node loss below measures the
	// lease failover, not a Raft election.
	holder, token := h1, b1.Token
	leader := c.leader()
	for round := 0; round == 0 || holder.node == leader; round++ {
		if round > 2 {
			t.Fatalf("the lease stays on the Raft leader's node %s", clusterNodeName(leader))
		}
		start := time.Now()
		holder.setReady(t, false)
		next, nb, at := waitOneHolder(t, without(cs, holder.name), token, 10*time.Second, "after "+holder.name+" turned un-ready")
		t.Logf("%s turned un-ready: %s holds the lease (token %d) after %s", holder.name, next.name, nb.Token, at.Sub(start).Round(time.Millisecond))
		if b, err := holder.belief(t); err != nil || b.Held {
			t.Fatalf("un-ready %s still believes it holds the lease: %+v %v", holder.name, b, err)
		}
		holder.setReady(t, true)
		holder, token = next, nb.Token
	}
	waitClusterGroup(t, a, "lead", 30*time.Second, "3 replicas ready again", allReady(3))
	time.Sleep(500 * time.Millisecond) // a few renewals

	// Node loss.
	survivors := without(cs, holder.name)
	killed := time.Now()
	c.killNode(holder.node)
	next, nb, at := waitOneHolder(t, survivors, token, 10*time.Second, "after the holder's node was killed")
	failover := at.Sub(killed)
	t.Logf("node %s killed: %s holds the lease (token %d) after %s", clusterNodeName(holder.node), next.name, nb.Token, failover.Round(time.Millisecond))
	if failover > 2*time.Second {
		t.Errorf("failover took %s, want at most 2 s (TTL 1 s + margin 0.2 s)", failover.Round(time.Millisecond))
	}
	time.Sleep(300 * time.Millisecond)
	tenures := checkNoOverlap(t, filepath.Join(shared, "log"))
	if len(tenures) < 3 {
		t.Errorf("%d holders in the log, want at least 3 (first, after un-ready, after node loss)", len(tenures))
	}
	if last := tenures[len(tenures)-1]; last.holder != next.name || last.token != nb.Token {
		t.Errorf("the log ends with %s (token %d), want %s (token %d)", last.holder, last.token, next.name, nb.Token)
	}
}

// TestLeaseSharedAcrossGroupsAndRestartOnLose: on one agent, two local
// groups that declare the same lease shared compete for one lease; when
// the holder group is stopped the other takes over at once (not after the
// TTL), and the log shows no overlap. A group that declares on_lose =
// "restart" and turns un-ready while holding its lease is restarted.
func TestLeaseSharedAcrossGroupsAndRestartOnLose(t *testing.T) {
	shared, volumes := sharedDir(t)
	a := startAgent(t, agentOpts{NodeName: "solo", Config: volumes})
	lease := "[[lease]]\nname = \"db\"\nshared = true\nttl = \"30s\""
	applyTOML(t, a, "alpha.toml", leaseGroupTOML("alpha", "", lease, shared))
	applyTOML(t, a, "beta.toml", leaseGroupTOML("beta", "", lease, shared))
	var cs []candidate
	for _, n := range []string{"alpha", "beta"} {
		st := waitGroup(t, a, n, 60*time.Second, "running", allRunning)
		cs = append(cs, candidate{name: n, agent: a, node: -1, netns: st.NetNS})
	}
	h1, b1, _ := waitOneHolder(t, cs, 0, 20*time.Second, "shared lease")
	if want := h1.name + "@solo"; b1.Holder != want {
		t.Errorf("holder %q, want %q", b1.Holder, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.api().Stop(ctx, h1.name, false); err != nil {
		t.Fatal(err)
	}
	// The TTL is 30 s: only the release when the holder stopped explains
	// a new holder within 10 s.
	h2, b2, at := waitOneHolder(t, without(cs, h1.name), b1.Token, 10*time.Second, "after "+h1.name+" stopped")
	t.Logf("%s stopped: %s holds the shared lease (token %d) after %s", h1.name, h2.name, b2.Token, at.Sub(start).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	checkNoOverlap(t, filepath.Join(shared, "log"))

	// on_lose = "restart".
	applyTOML(t, a, "gamma.toml", leaseGroupTOML("gamma", "",
		"[[lease]]\nname = \"leader\"\non_lose = \"restart\"\nttl = \"30s\"", shared))
	st := waitGroup(t, a, "gamma", 60*time.Second, "running", allRunning)
	g := candidate{name: "gamma", agent: a, node: -1, netns: st.NetNS}
	waitOneHolder(t, []candidate{g}, 0, 20*time.Second, "gamma's lease")
	before := pids(st)["app"]
	g.setReady(t, false)
	st = waitGroup(t, a, "gamma", 30*time.Second, "restarted", func(st *api.GroupStatus) bool {
		return allRunning(st) && pids(st)["app"] != before
	})
	reasons := map[string]bool{}
	for _, ev := range st.Events {
		reasons[ev.Reason] = true
	}
	for _, want := range []string{"LeaseGranted", "LeaseLost", "LeaseRestart"} {
		if !reasons[want] {
			t.Errorf("gamma's events lack %s: %v", want, st.Events)
		}
	}
	// After the restart it is ready again and campaigns anew.
	g.netns = st.NetNS
	waitOneHolder(t, []candidate{g}, 0, 20*time.Second, "gamma's lease after the restart")
}

// TestLeaseExamplesRun applies the leader election examples as they are in
// contrib/examples: the local singleton is granted its lease (its log says
// so), and of the three copies of the cluster group exactly one holds the
// lease, which the leader-elector endpoint names.
func TestLeaseExamplesRun(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "ex"})
	for _, f := range []string{"leader-election.toml", "cluster/leader-election.toml"} {
		b, err := os.ReadFile(filepath.Join(env.RepoRoot, "contrib", "examples", f))
		if err != nil {
			t.Fatal(err)
		}
		applyTOML(t, a, filepath.Base(f), string(b))
	}
	waitFor(t, 60*time.Second, "singleton logs its grant", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var lines []string
		if err := a.api().Logs(ctx, "singleton", api.LogOptions{Container: "app", Tail: -1}, func(e api.LogEntry) error {
			lines = append(lines, e.Line)
			return nil
		}); err != nil {
			return false, err
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "granted leader token ") && strings.Contains(l, "holder singleton@ex") {
				return true, nil
			}
		}
		return false, fmt.Errorf("log: %q", lines)
	})
	waitClusterGroup(t, a, "elect", 60*time.Second, "3 copies ready", allReady(3))
	var cs []candidate
	for i := range 3 {
		id := fmt.Sprintf("elect.%d", i)
		st := waitGroup(t, a, id, 30*time.Second, "running", allRunning)
		cs = append(cs, candidate{name: id, agent: a, node: -1, netns: st.NetNS})
	}
	h, _, _ := waitOneHolder(t, cs, 0, 20*time.Second, "elect")
	code, body := nsDo(t, cs[0].netns, "GET", "http://127.0.0.1:8080/elector", "")
	if want := fmt.Sprintf(`{"name":%q}`, h.name); code != 200 || strings.TrimSpace(body) != want {
		t.Errorf("GET / from elect.0: %d %s, want %s", code, body, want)
	}
}

// TestLeaseKeptAcrossAgentRestart: the holder's agentd is killed (kill -9;
// its containers keep running) and started again. The new agentd adopts
// the lease from the Raft state and renews it with the same token: the app
// keeps believing it holds it past the expiry it knew when its agent died,
// and the log has that one token throughout.
func TestLeaseKeptAcrossAgentRestart(t *testing.T) {
	shared, volumes := sharedDir(t)
	a := startAgent(t, agentOpts{NodeName: "rs", Config: volumes})
	applyTOML(t, a, "keep.toml", leaseGroupTOML("keep", "", "[[lease]]\nname = \"leader\"\nttl = \"3s\"", shared))
	st := waitGroup(t, a, "keep", 60*time.Second, "running", allRunning)
	cand := candidate{name: "keep", agent: a, node: -1, netns: st.NetNS}
	_, b1, _ := waitOneHolder(t, []candidate{cand}, 0, 20*time.Second, "keep's lease")
	killed := time.Now()
	a.Kill()
	a.start()
	// Past the end of every belief the dead agent could have given out.
	end := killed.Add(3*time.Second + 500*time.Millisecond)
	time.Sleep(time.Until(end) + 500*time.Millisecond)
	b2, err := cand.belief(t)
	if err != nil || !b2.Held || b2.Token != b1.Token {
		t.Fatalf("after the agent restart: %+v %v, want held with token %d", b2, err, b1.Token)
	}
	tenures := checkNoOverlap(t, filepath.Join(shared, "log"))
	if len(tenures) != 1 || !tenures[0].last.After(end) {
		t.Fatalf("log: %+v, want token %d alone, written past %s", tenures, b1.Token, end.Format("15:04:05.000"))
	}
}
