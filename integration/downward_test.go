package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// downwardGroup is a group of two containers: "app" (testapp serve on
// :8080, readiness on /ready) and "api", running as an unprivileged user,
// which relays every /v1/... request it gets on :8081 to the group's
// downward socket: the test reaches the socket from inside the container.
// placement is the group's [placement] section, or "" for a local group.
func downwardGroup(name, placement string) string {
	return fmt.Sprintf(`name = %q
grace_period = "2s"
%s
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "200ms", timeout = "150ms" }

[[container]]
name = "api"
image = "berth.local/testapp:latest"
user = "65534:65534"
args = ["agentapi", "--listen", ":8081"]
`, name, placement)
}

// downwardCall makes a request on the downward socket of the group whose
// network namespace is ns, from inside its "api" container.
func downwardCall(t *testing.T, ns, method, path, body string) (int, string) {
	t.Helper()
	return nsDo(t, ns, method, "http://127.0.0.1:8081"+path, body)
}

// selfOf reads GET /v1/self from inside the group.
func selfOf(t *testing.T, ns string) (api.Self, error) {
	t.Helper()
	code, body := downwardCall(t, ns, "GET", api.PathSelf, "")
	var s api.Self
	if code != 200 {
		return s, fmt.Errorf("GET /v1/self: %d %s", code, body)
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		return s, fmt.Errorf("GET /v1/self: %v: %s", err, body)
	}
	return s, nil
}

// waitSelf waits until the group's socket answers GET /v1/self.
func waitSelf(t *testing.T, ns, what string) api.Self {
	t.Helper()
	var s api.Self
	waitFor(t, 20*time.Second, what, func() (bool, error) {
		var err error
		s, err = selfOf(t, ns)
		return err == nil, err
	})
	return s
}

// wantError checks a downward answer is the JSON error code/class whose
// message contains every one of want.
func wantError(t *testing.T, what string, code int, body string, wantCode int, wantClass string, want ...string) {
	t.Helper()
	var e api.ErrorBody
	if code != wantCode || json.Unmarshal([]byte(body), &e) != nil || e.Class != wantClass {
		t.Errorf("%s: %d %s; want %d with class %s", what, code, body, wantCode, wantClass)
		return
	}
	for _, w := range want {
		if !strings.Contains(e.Error, w) {
			t.Errorf("%s: error %q does not say %q", what, e.Error, w)
		}
	}
}

// TestDownwardSocketOfALocalGroupSurvivesAgentRestarts: a local group's
// containers reach their own socket at /run/berth/agent.sock (named in
// BERTH_AGENT_SOCKET), as a non-root user; it says who they are, refuses
// to scale a local group, answers endpoints like the admin API, and works
// again after kill -9 of agentd and after a clean stop, without the
// containers restarting.
func TestDownwardSocketOfALocalGroupSurvivesAgentRestarts(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "dw1"})
	applyTOML(t, a, "loc.toml", downwardGroup("loc", ""))
	st := waitGroup(t, a, "loc", 60*time.Second, "running and ready", func(s *api.GroupStatus) bool { return allRunning(s) && s.Ready })
	waitHTTP(t, st.NetNS, "http://127.0.0.1:8081/ready")

	for k, want := range map[string]string{"BERTH_AGENT_SOCKET": "/run/berth/agent.sock", "BERTH_GROUP": "loc", "BERTH_NODE": "dw1"} {
		if code, v := nsDo(t, st.NetNS, "GET", "http://127.0.0.1:8080/env?k="+k, ""); code != 200 || v != want {
			t.Errorf("%s = %q (HTTP %d), want %q", k, v, code, want)
		}
	}
	hostSock := filepath.Join(a.RunDir, "groups", "loc", "api", "agent.sock")
	if fi, err := os.Stat(hostSock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Errorf("host socket %s: %v, err %v; want a socket with mode 0666", hostSock, fi, err)
	}

	self, err := selfOf(t, st.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	if self.Group != "loc" || self.Cluster || self.Allocation != "" || self.Node != "dw1" || self.Generation != st.Generation || len(self.Peers) != 0 {
		t.Errorf("self = %+v; want local group loc on dw1 at generation %d, no peers", self, st.Generation)
	}
	code, body := downwardCall(t, st.NetNS, "POST", api.PathSelfReplicas, `{"replicas": 2}`)
	wantError(t, "a local group replicating itself", code, body, 400, "invalid", "local group", "[placement]")

	// The same endpoints as on the admin API.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adminEps, err := a.api().Endpoints(ctx, "loc")
	if err != nil {
		t.Fatal(err)
	}
	code, body = downwardCall(t, st.NetNS, "GET", api.PathEndpoints+"/loc", "")
	var eps []api.Endpoint
	if code != 200 || json.Unmarshal([]byte(body), &eps) != nil {
		t.Fatalf("GET /v1/endpoints/loc on the downward socket: %d %s", code, body)
	}
	if len(eps) != 1 || !reflect.DeepEqual(eps, adminEps) {
		t.Errorf("downward endpoints %+v, admin endpoints %+v; want the same single endpoint", eps, adminEps)
	}

	// kill -9: the socket a killed agent left is made anew when the group
	// is reattached, and the running container reaches it again.
	before := pids(st)
	a.Kill()
	a.start()
	again := waitSelf(t, st.NetNS, "loc's socket answers after kill -9 of agentd")
	if !reflect.DeepEqual(again, self) {
		t.Errorf("after kill -9: self %+v, want %+v", again, self)
	}
	// A clean stop removes the socket; the group runs on and reaches the
	// agent once it is back.
	a.Stop()
	if _, err := os.Stat(hostSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there while agentd is stopped (err %v)", err)
	}
	code, body = downwardCall(t, st.NetNS, "GET", api.PathSelf, "")
	if code != 502 {
		t.Errorf("with agentd stopped: %d %s; want the relay to fail to connect", code, body)
	}
	a.start()
	waitSelf(t, st.NetNS, "loc's socket answers after agentd stopped and started")
	if after := pids(getGroup(t, a, "loc")); !reflect.DeepEqual(after, before) {
		t.Errorf("containers restarted: pids %v, before %v", after, before)
	}

	if err := a.api().Delete(ctx, "loc", true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(hostSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after the group was deleted (err %v)", err)
	}
}

// TestDownwardReplicateYourself runs a cluster group on one agent (the
// embedded default): a copy reads its place and its peers' readiness,
// changes its group's replica count within [placement] min_replicas and
// max_replicas (new copies run, extra copies stop), and is refused with
// the bounds outside them; a local group's socket cannot act for the
// cluster group.
func TestDownwardReplicateYourself(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "dw2"})
	applyTOML(t, a, "web.toml", downwardGroup("web", `[placement]
replicas = 2
spread = "prefer"
min_replicas = 1
max_replicas = 3`))
	applyTOML(t, a, "loc.toml", downwardGroup("loc", ""))
	waitClusterGroup(t, a, "web", 60*time.Second, "2 replicas ready", allReady(2))
	ns := map[string]string{}
	for _, id := range []string{"web.0", "web.1", "loc"} {
		st := waitGroup(t, a, id, 30*time.Second, "running and ready", func(s *api.GroupStatus) bool { return allRunning(s) && s.Ready })
		ns[id] = st.NetNS
		waitHTTP(t, st.NetNS, "http://127.0.0.1:8081/ready")
	}

	self, err := selfOf(t, ns["web.0"])
	if err != nil {
		t.Fatal(err)
	}
	if self.Group != "web" || !self.Cluster || self.Allocation != "web.0" || self.Replica != 0 || self.Node != "dw2" ||
		self.Replicas != 2 || self.MinReplicas != 1 || self.MaxReplicas != 3 || self.Generation < 1 {
		t.Errorf("web.0's self = %+v", self)
	}
	if len(self.Peers) != 2 {
		t.Fatalf("web.0's peers = %+v, want web.0 and web.1", self.Peers)
	}
	for i, p := range self.Peers {
		if p.Allocation != fmt.Sprintf("web.%d", i) || p.Replica != i || p.Node != "dw2" || !p.Ready || p.Status != api.GroupRunning || p.Address == "" || p.Self != (i == 0) {
			t.Errorf("peer %d = %+v; want web.%d on dw2, running, ready, with an address, self only for web.0", i, p, i)
		}
	}
	if s1, err := selfOf(t, ns["web.1"]); err != nil || s1.Allocation != "web.1" || s1.Replica != 1 {
		t.Errorf("web.1's self = %+v (%v)", s1, err)
	}

	// Readiness: web.1 turns not ready, and web.0 sees it among its peers.
	peerReady := func(want bool) func() (bool, error) {
		return func() (bool, error) {
			s, err := selfOf(t, ns["web.0"])
			if err != nil {
				return false, err
			}
			for _, p := range s.Peers {
				if p.Allocation == "web.1" {
					return p.Ready == want, fmt.Errorf("web.1 ready %v", p.Ready)
				}
			}
			return false, fmt.Errorf("web.1 not among the peers %+v", s.Peers)
		}
	}
	nsDo(t, ns["web.1"], "POST", "http://127.0.0.1:8080/ready?v=false", "")
	waitFor(t, 20*time.Second, "web.0 sees web.1 not ready", peerReady(false))
	nsDo(t, ns["web.1"], "POST", "http://127.0.0.1:8080/ready?v=true", "")
	waitFor(t, 20*time.Second, "web.0 sees web.1 ready again", peerReady(true))

	// Within the bounds: a third copy is placed and runs.
	code, body := downwardCall(t, ns["web.1"], "POST", api.PathSelfReplicas, `{"replicas": 3}`)
	var res api.ReplicasResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || res.Group != "web" || res.Replicas != 3 || res.MinReplicas != 1 || res.MaxReplicas != 3 {
		t.Fatalf("web.1 asks for 3 replicas: %d %s", code, body)
	}
	waitClusterGroup(t, a, "web", 60*time.Second, "3 replicas ready", allReady(3))
	st2 := waitGroup(t, a, "web.2", 30*time.Second, "running and ready", func(s *api.GroupStatus) bool { return allRunning(s) && s.Ready })
	waitHTTP(t, st2.NetNS, "http://127.0.0.1:8081/ready")
	if s2, err := selfOf(t, st2.NetNS); err != nil || s2.Allocation != "web.2" || s2.Replica != 2 || s2.Replicas != 3 || len(s2.Peers) != 3 {
		t.Errorf("web.2's self = %+v (%v); want replica 2 of 3 with 3 peers", s2, err)
	}

	// Outside the bounds: refused with them, nothing changes.
	for _, n := range []int{4, 0} {
		code, body = downwardCall(t, ns["web.0"], "POST", api.PathSelfReplicas, fmt.Sprintf(`{"replicas": %d}`, n))
		wantError(t, fmt.Sprintf("%d replicas", n), code, body, 400, "invalid", "1..3", "min_replicas = 1", "max_replicas = 3")
	}

	// Another group's socket cannot act for web: loc is itself, its
	// requests cannot name web, and the admin routes are not served.
	if s, err := selfOf(t, ns["loc"]); err != nil || s.Group != "loc" || s.Cluster {
		t.Errorf("loc's self = %+v (%v)", s, err)
	}
	code, body = downwardCall(t, ns["loc"], "POST", api.PathSelfReplicas, `{"replicas": 1}`)
	wantError(t, "loc replicating itself", code, body, 400, "invalid", "local group")
	code, body = downwardCall(t, ns["loc"], "POST", api.PathSelfReplicas, `{"replicas": 1, "group": "web"}`)
	wantError(t, "loc naming web", code, body, 400, "invalid", `unknown field "group"`)
	code, body = downwardCall(t, ns["loc"], "POST", api.PathClusterGroups+"/web/scale", `{"replicas": 1}`)
	wantError(t, "the admin scale route on loc's socket", code, body, 404, "not_found", "no route")
	code, body = downwardCall(t, ns["loc"], "DELETE", api.PathGroups+"/web.0", "")
	wantError(t, "the admin delete route on loc's socket", code, body, 404, "not_found", "no route")
	if g := clusterGroup(t, a, "web"); g.Replicas != 3 {
		t.Errorf("web wants %d replicas after the refused requests, want 3", g.Replicas)
	}

	// Down again, asked by the copy that goes: web.1 and web.2 stop.
	code, body = downwardCall(t, st2.NetNS, "POST", api.PathSelfReplicas, `{"replicas": 1}`)
	if code != 200 {
		t.Fatalf("web.2 asks for 1 replica: %d %s", code, body)
	}
	waitClusterGroup(t, a, "web", 60*time.Second, "1 replica", allReady(1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitFor(t, 30*time.Second, "web.1 and web.2 removed", func() (bool, error) {
		_, err1 := a.api().Get(ctx, "web.1")
		_, err2 := a.api().Get(ctx, "web.2")
		return err1 != nil && err2 != nil, nil
	})
	if s, err := selfOf(t, ns["web.0"]); err != nil || s.Replicas != 1 || len(s.Peers) != 1 {
		t.Errorf("web.0's self after scaling down = %+v (%v); want 1 replica, 1 peer", s, err)
	}
}

// TestDownwardPeersAcrossNodes: on three agents, a copy sees its peers on
// the other nodes (at their node's address, with readiness), and its
// request for one more replica, made on a node that may not lead Raft, is
// forwarded to the leader and placed on the third node.
func TestDownwardPeersAcrossNodes(t *testing.T) {
	c := startCluster(t, clusterOpts{N: 3, Base: 70})
	leader := c.leader()
	applyTOML(t, c.any(leader), "web.toml", downwardGroup("web", `[placement]
replicas = 2
spread = "node"
min_replicas = 1
max_replicas = 3`))
	g := waitClusterGroup(t, c.Agents[leader], "web", 90*time.Second, "2 replicas ready", allReady(2))
	agentOf := func(node string) *agentProc {
		for i, a := range c.Agents {
			if clusterNodeName(i) == node {
				return a
			}
		}
		t.Fatalf("no agent is node %q", node)
		return nil
	}
	ipOf := map[string]string{}
	for i, ip := range c.IPs {
		ipOf[clusterNodeName(i)] = ip
	}
	// The caller: a copy on a follower when there is one.
	caller := g.Allocations[0]
	for _, al := range g.Allocations {
		if al.Node != clusterNodeName(leader) {
			caller = al
		}
	}
	st := waitGroup(t, agentOf(caller.Node), caller.ID, 30*time.Second, "running and ready", func(s *api.GroupStatus) bool { return allRunning(s) && s.Ready })
	waitHTTP(t, st.NetNS, "http://127.0.0.1:8081/ready")
	self, err := selfOf(t, st.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	if self.Allocation != caller.ID || self.Node != caller.Node || len(self.Peers) != 2 {
		t.Fatalf("%s's self = %+v; want it on %s with 2 peers", caller.ID, self, caller.Node)
	}
	for _, p := range self.Peers {
		switch {
		case p.Self:
			if p.Allocation != caller.ID || p.Address == "" || p.Address == ipOf[p.Node] {
				t.Errorf("self peer %+v: want %s at its bridge address", p, caller.ID)
			}
		case p.Node == caller.Node || p.Address != ipOf[p.Node] || !p.Ready:
			t.Errorf("remote peer %+v: want it ready on another node, at that node's address %s", p, ipOf[p.Node])
		}
	}

	code, body := downwardCall(t, st.NetNS, "POST", api.PathSelfReplicas, `{"replicas": 3}`)
	if code != 200 {
		t.Fatalf("%s on %s asks for 3 replicas: %d %s", caller.ID, caller.Node, code, body)
	}
	g = waitClusterGroup(t, c.Agents[leader], "web", 90*time.Second, "3 replicas ready", allReady(3))
	if n := nodesOf(g); len(n) != 3 {
		t.Errorf("3 replicas on nodes %v, want one on each", n)
	}
	waitFor(t, 20*time.Second, caller.ID+" sees 3 ready peers", func() (bool, error) {
		s, err := selfOf(t, st.NetNS)
		if err != nil {
			return false, err
		}
		ready := 0
		for _, p := range s.Peers {
			if p.Ready {
				ready++
			}
		}
		return s.Replicas == 3 && ready == 3, fmt.Errorf("replicas %d, peers %+v", s.Replicas, s.Peers)
	})
	code, body = downwardCall(t, st.NetNS, "POST", api.PathSelfReplicas, `{"replicas": 4}`)
	wantError(t, "4 replicas", code, body, 400, "invalid", "1..3")
}

// TestDownwardExamplesRun applies the downward API examples as they are in
// contrib/examples: whoami logs its own place; grow, applied with one
// replica, grows itself to three.
func TestDownwardExamplesRun(t *testing.T) {
	a := startAgent(t, agentOpts{NodeName: "dw3"})
	for _, f := range []string{"downward.toml", "cluster/downward.toml"} {
		b, err := os.ReadFile(filepath.Join(env.RepoRoot, "contrib", "examples", f))
		if err != nil {
			t.Fatal(err)
		}
		applyTOML(t, a, filepath.Base(f), string(b))
	}
	logHas := func(group, container, want string) func() (bool, error) {
		return func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var lines []string
			if err := a.api().Logs(ctx, group, api.LogOptions{Container: container, Tail: -1}, func(e api.LogEntry) error {
				lines = append(lines, e.Line)
				return nil
			}); err != nil {
				return false, err
			}
			for _, l := range lines {
				if strings.Contains(l, want) {
					return true, nil
				}
			}
			return false, fmt.Errorf("%s/%s log: %q", group, container, lines)
		}
	}
	waitFor(t, 30*time.Second, "whoami logs its place", logHas("whoami", "app", `HTTP 200 {"group":"whoami","cluster":false,"node":"dw3"`))
	waitClusterGroup(t, a, "grow", 60*time.Second, "grown to 3 replicas, ready", allReady(3))
	waitFor(t, 10*time.Second, "grow.0's init container logs the new count", logHas("grow.0", "grow", `HTTP 200 {"group":"grow","replicas":3`))
	waitFor(t, 10*time.Second, "grow.0's sidecar logs its place", logHas("grow.0", "self", `"allocation":"grow.0"`))
}
