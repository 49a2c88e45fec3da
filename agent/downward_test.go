package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
	"github.com/berth-project/berth/supervisor"
)

// downwardAgent is an agent named n1 with a real one-voter Raft store (in
// memory transport) holding a replicated cluster group "web" (replicas 2,
// min 1, max 3) with web.0 on n1 and web.1 on n2, a sharded group "kv"
// with kv.s0.0 on n1, and a local group "loc". No supervisor: the handlers
// under test read the agent's groups and the Raft state.
func downwardAgent(t *testing.T) *Agent {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = "n1"
	a := New(cfg, slog.New(slog.DiscardHandler))
	rc := raftstore.DefaultConfig()
	rc.NodeID, rc.DataDir, rc.Logger = "n1", t.TempDir(), slog.New(slog.DiscardHandler)
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	_, tr := raft.NewInmemTransport("n1")
	st, err := raftstore.Open(rc, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a.cl = &clusterRT{self: "n1", store: st, prop: storeProposer{st}, log: a.log}

	web := api.GroupSpec{Name: "web", Ports: []string{"8080:80"},
		Placement: &api.PlacementSpec{Replicas: 2, MinReplicas: 1, MaxReplicas: 3}}
	kv := api.GroupSpec{Name: "kv", Placement: &api.PlacementSpec{Shards: 2}}
	mustPropose(t, a, raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: web})
	mustPropose(t, a, raftstore.CmdPutGroup, raftstore.Group{Name: "kv", Spec: kv})
	mustPropose(t, a, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n2", APIAddr: "10.0.0.2:7948", Status: raftstore.NodeAlive})
	mustPropose(t, a, raftstore.CmdApplyPlan, raftstore.Plan{Put: []raftstore.Allocation{
		{ID: "web.0", Group: "web", Replica: 0, Node: "n1", GroupGeneration: 1, Spec: &web, Status: api.GroupRunning, Ready: true},
		{ID: "web.1", Group: "web", Replica: 1, Node: "n2", GroupGeneration: 1, Spec: &web, Status: api.GroupRunning, Ready: false},
		{ID: "kv.s0.0", Group: "kv", Shard: 0, Node: "n1", GroupGeneration: 1, Spec: &kv},
	}})
	a.groups["loc"] = &groupEntry{Spec: &api.GroupSpec{Name: "loc"}, Source: SourceAPI, Generation: 3}
	for _, id := range []string{"web.0", "web.1", "kv.s0.0"} {
		al, _ := st.Allocation(id)
		a.groups[id] = &groupEntry{Spec: allocationSpec(al), Source: api.SourceCluster, Generation: 1}
	}
	return a
}

func mustPropose(t *testing.T, a *Agent, typ raftstore.CommandType, payload any) {
	t.Helper()
	if _, err := a.propose(context.Background(), typ, payload); err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
}

// openSocket makes group's socket the way the supervisor does, in a
// fresh API directory, and returns its path.
func openSocket(t *testing.T, d *downward, group string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), group, "api")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d.SandboxReady(&api.GroupSpec{Name: group}, &supervisor.Sandbox{Group: group, APIDir: dir})
	path := filepath.Join(dir, downwardSocketName)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no socket for %s: %v", group, err)
	}
	return path
}

// call makes one request on a unix socket and returns the status and body.
func call(t *testing.T, socket, method, path, body string) (int, []byte) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://berth"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, socket, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func downwardOf(t *testing.T, a *Agent) *downward {
	d := a.downwardAPI()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// TestSelfSaysWhoTheSocketIsFor: each socket answers for its own group,
// a local group with its generation and no peers, an allocation with its
// cluster group, replica, bounds and every copy with readiness and where
// it is reached.
func TestSelfSaysWhoTheSocketIsFor(t *testing.T) {
	a := downwardAgent(t)
	d := downwardOf(t, a)

	code, body := call(t, openSocket(t, d, "loc"), "GET", api.PathSelf, "")
	var loc api.Self
	if code != http.StatusOK || json.Unmarshal(body, &loc) != nil {
		t.Fatalf("GET /v1/self on loc's socket: %d %s", code, body)
	}
	if loc.Group != "loc" || loc.Cluster || loc.Allocation != "" || loc.Node != "n1" || loc.Generation != 3 || loc.Peers == nil || len(loc.Peers) != 0 {
		t.Errorf("loc's self = %+v; want group loc, node n1, generation 3, no peers", loc)
	}

	code, body = call(t, openSocket(t, d, "web.0"), "GET", api.PathSelf, "")
	var web api.Self
	if code != http.StatusOK || json.Unmarshal(body, &web) != nil {
		t.Fatalf("GET /v1/self on web.0's socket: %d %s", code, body)
	}
	if web.Group != "web" || !web.Cluster || web.Allocation != "web.0" || web.Replica != 0 || web.Node != "n1" ||
		web.Replicas != 2 || web.MinReplicas != 1 || web.MaxReplicas != 3 || web.Generation < 1 || web.GroupGeneration != 1 {
		t.Errorf("web.0's self = %+v", web)
	}
	if len(web.Peers) != 2 {
		t.Fatalf("web.0's peers = %+v, want web.0 and web.1", web.Peers)
	}
	p0, p1 := web.Peers[0], web.Peers[1]
	if p0.Allocation != "web.0" || !p0.Self || !p0.Ready || p0.Node != "n1" {
		t.Errorf("peer 0 = %+v, want web.0, self, ready, on n1", p0)
	}
	wantPorts := []api.PortMapping{{HostIP: "10.0.0.2", HostPort: 8080, ContainerPort: 80, Protocol: api.ProtocolTCP}}
	if p1.Allocation != "web.1" || p1.Self || p1.Ready || p1.Node != "n2" || p1.Address != "10.0.0.2" || fmt.Sprint(p1.Ports) != fmt.Sprint(wantPorts) {
		t.Errorf("peer 1 = %+v, want web.1 not ready on n2 at 10.0.0.2 with ports %v", p1, wantPorts)
	}

	code, body = call(t, openSocket(t, d, "kv.s0.0"), "GET", api.PathSelf, "")
	var kv api.Self
	if code != http.StatusOK || json.Unmarshal(body, &kv) != nil {
		t.Fatalf("GET /v1/self on kv.s0.0's socket: %d %s", code, body)
	}
	if kv.Group != "kv" || kv.Shard != 0 || kv.Shards != 2 || kv.MaxReplicas != 0 {
		t.Errorf("kv.s0.0's self = %+v; want group kv, shard 0 of 2, no replica range", kv)
	}
}

// TestSelfReplicasWithinBoundsOnly: a replicated cluster group sets its
// own replica count within [min_replicas, max_replicas] through Raft;
// everything else is refused with the reason, and nothing is written.
func TestSelfReplicasWithinBoundsOnly(t *testing.T) {
	a := downwardAgent(t)
	d := downwardOf(t, a)
	web, loc, kv := openSocket(t, d, "web.0"), openSocket(t, d, "loc"), openSocket(t, d, "kv.s0.0")
	tests := []struct {
		name, socket, body string
		code               int
		want               string // in the error, or the replica count written
		replicas           int    // web's replica count after
	}{
		{"within", web, `{"replicas": 3}`, 200, "", 3},
		{"the lower bound", web, `{"replicas": 1}`, 200, "", 1},
		{"above max", web, `{"replicas": 4}`, 400, "1..3", 1},
		{"zero", web, `{"replicas": 0}`, 400, "max_replicas = 3", 1},
		{"no count", web, `{}`, 400, `no "replicas"`, 1},
		{"naming another group", web, `{"replicas": 2, "group": "other"}`, 400, `unknown field "group"`, 1},
		{"not JSON", web, `three`, 400, "bad request body", 1},
		{"local group", loc, `{"replicas": 2}`, 400, "local group", 1},
		{"local group naming a cluster group", loc, `{"replicas": 2, "group": "web"}`, 400, `unknown field "group"`, 1},
		{"sharded group", kv, `{"replicas": 2}`, 400, "sharded", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, tt.socket, "POST", api.PathSelfReplicas, tt.body)
			if code != tt.code {
				t.Fatalf("status %d (%s), want %d", code, body, tt.code)
			}
			if tt.code == 200 {
				var res api.ReplicasResult
				if err := json.Unmarshal(body, &res); err != nil || res.Group != "web" || res.MinReplicas != 1 || res.MaxReplicas != 3 {
					t.Errorf("answer %s", body)
				}
			} else {
				var e api.ErrorBody
				if err := json.Unmarshal(body, &e); err != nil || e.Class != "invalid" || !strings.Contains(e.Error, tt.want) {
					t.Errorf("error %s; want class invalid and %q in it", body, tt.want)
				}
			}
			if g, _ := a.cl.store.Group("web"); g.ReplicaCount() != tt.replicas {
				t.Errorf("web runs %d replicas, want %d", g.ReplicaCount(), tt.replicas)
			}
		})
	}
}

// TestCallerThatIsNoLongerHereIsRefused: an allocation the state moved to
// another node, and a group no longer defined, get an error, not another
// group's identity.
func TestCallerThatIsNoLongerHereIsRefused(t *testing.T) {
	a := downwardAgent(t)
	d := downwardOf(t, a)
	// web.1 runs on n2; a copy left on n1 is stale.
	code, body := call(t, openSocket(t, d, "web.1"), "POST", api.PathSelfReplicas, `{"replicas": 3}`)
	if code != http.StatusConflict || !strings.Contains(string(body), "now belongs to node") {
		t.Errorf("stale allocation: %d %s, want 409 naming its node", code, body)
	}
	if g, _ := a.cl.store.Group("web"); g.ReplicaCount() != 2 {
		t.Errorf("a stale copy scaled web to %d", g.ReplicaCount())
	}
	code, body = call(t, openSocket(t, d, "gone"), "GET", api.PathSelf, "")
	if code != http.StatusNotFound || !strings.Contains(string(body), `is no longer defined on node n1`) {
		t.Errorf("undefined group: %d %s, want 404", code, body)
	}
}

// TestDownwardServesNoAdminRoute: the socket serves the downward routes
// only; admin routes (which name groups) answer a JSON 404.
func TestDownwardServesNoAdminRoute(t *testing.T) {
	a := downwardAgent(t)
	d := downwardOf(t, a)
	sock := openSocket(t, d, "loc")
	for _, r := range []struct{ method, path string }{
		{"POST", api.PathClusterGroups + "/web/scale"},
		{"DELETE", api.PathGroups + "/web.0"},
		{"POST", api.PathApply},
		{"GET", api.PathGroups},
	} {
		code, body := call(t, sock, r.method, r.path, `{"replicas": 3}`)
		var e api.ErrorBody
		if code != http.StatusNotFound || json.Unmarshal(body, &e) != nil || e.Class != "not_found" {
			t.Errorf("%s %s: %d %s, want a JSON 404", r.method, r.path, code, body)
		}
	}
	if g, _ := a.cl.store.Group("web"); g.ReplicaCount() != 2 {
		t.Errorf("web scaled to %d through a group's socket", g.ReplicaCount())
	}
}

// echoHandler answers every request with the caller's name.
func echoHandler(c caller) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, c.name) })
}

// TestGroupSocketLifecycle: one socket per group, usable by any user,
// kept by a repeated SandboxReady, made anew over a file a killed agent
// left, made again when its file was removed, closed and removed at
// SandboxGone and when the agent stops; paths too long for bind(2) work.
func TestGroupSocketLifecycle(t *testing.T) {
	d := newDownward(slog.New(slog.DiscardHandler), echoHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	dir := filepath.Join(t.TempDir(), "api")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, downwardSocketName)
	// A socket file left by a killed agent: nothing listens on it.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	sb := &supervisor.Sandbox{Group: "g", APIDir: dir}
	d.SandboxReady(nil, sb)
	if code, body := call(t, path, "GET", "/", ""); code != 200 || string(body) != "g" {
		t.Fatalf("after ready: %d %q", code, body)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v, want a socket with 0666", fi.Mode())
	}
	d.SandboxReady(nil, sb) // again: the same socket stays
	if fi2, err := os.Stat(path); err != nil || !os.SameFile(fi, fi2) {
		t.Errorf("a second SandboxReady replaced the socket (err %v)", err)
	}
	if len(d.sockets()) != 1 {
		t.Errorf("sockets = %v, want one", d.sockets())
	}
	// Someone removed the file: the next SandboxReady makes it again.
	os.Remove(path)
	d.SandboxReady(nil, sb)
	if code, body := call(t, path, "GET", "/", ""); code != 200 || string(body) != "g" {
		t.Fatalf("after the file was removed and ready again: %d %q", code, body)
	}

	d.SandboxGone("g")
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file still there after SandboxGone (err %v)", err)
	}
	if len(d.sockets()) != 0 {
		t.Errorf("sockets after gone = %v", d.sockets())
	}
	d.SandboxGone("g") // idempotent

	// A path longer than bind(2) allows.
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60), "api")
	if err := os.MkdirAll(long, 0o755); err != nil {
		t.Fatal(err)
	}
	longPath := filepath.Join(long, downwardSocketName)
	if len(longPath) <= maxSocketPath {
		t.Fatalf("test path is only %d bytes", len(longPath))
	}
	d.SandboxReady(nil, &supervisor.Sandbox{Group: "long.s1.0", APIDir: long})
	if _, err := os.Stat(longPath); err != nil {
		t.Fatalf("no socket at the long path: %v", err)
	}
	// Reach it the way a container does, by a short path: the directory
	// bound elsewhere (here: a symlink to it).
	short := filepath.Join(t.TempDir(), "s")
	if err := os.Symlink(long, short); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, filepath.Join(short, downwardSocketName), "GET", "/", ""); code != 200 || string(body) != "long.s1.0" {
		t.Fatalf("long path socket: %d %q", code, body)
	}

	// The agent stops: every socket goes, and no new one is made.
	d.SandboxReady(nil, sb)
	cancel()
	<-done
	for _, p := range []string{path, longPath} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after the agent stopped (err %v)", p, err)
		}
	}
	d.SandboxReady(nil, sb)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a socket was made after the agent stopped")
	}
}
