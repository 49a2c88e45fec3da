package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/agent/ambassador"
	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
	"github.com/berth-project/berth/supervisor"
)

func TestBackendsOf(t *testing.T) {
	eps := []api.Endpoint{
		{Group: "web", Node: "n1", Address: "10.89.0.5", Ready: true},
		{Group: "web.1", Node: "n2", Shard: 1, Ready: true, Ports: []api.PortMapping{
			{HostIP: "192.0.2.2", HostPort: 9001, ContainerPort: 9001, Protocol: api.ProtocolTCP},
			{HostIP: "192.0.2.2", HostPort: 9000, ContainerPort: 8080, Protocol: api.ProtocolUDP},
			{HostIP: "192.0.2.2", HostPort: 9080, ContainerPort: 8080, Protocol: api.ProtocolTCP},
		}},
		{Group: "web.2", Node: "n3", Ready: true, Ports: []api.PortMapping{}},
	}
	got, missing := backendsOf(eps, 8080)
	want := []ambassador.Backend{
		{ID: "web", Addr: "10.89.0.5:8080", Ready: true},
		{ID: "web.1", Addr: "192.0.2.2:9080", Shard: 1, Ready: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("backends %+v, want %+v", got, want)
	}
	if !slices.Equal(missing, []string{"web.2 on n3"}) {
		t.Errorf("unreachable %v, want [web.2 on n3]", missing)
	}
}

// TestEndpointViewMergesOtherNodes: a cluster group's endpoints are this
// node's ready allocations (from the supervisor) and the ready, running
// allocations of other live nodes (from the Raft state), reached at their
// node's publish address or API address and their published ports.
func TestEndpointViewMergesOtherNodes(t *testing.T) {
	spec := &api.GroupSpec{Name: "web", Ports: []string{"9000:8080", "127.0.0.1:9100:9100", "192.0.2.9:9200:9200"}}
	hostSpec := &api.GroupSpec{Name: "web", Network: api.NetworkHost}
	alloc := func(id, node string, ready bool, status api.GroupState, s *api.GroupSpec) raftstore.Allocation {
		return raftstore.Allocation{ID: id, Group: "web", Node: node, Ready: ready, Status: status, Spec: s, Shard: len(id) % 2}
	}
	v := &endpointView{
		self: "n1",
		local: []api.GroupStatus{
			{Name: "web.0", State: api.GroupRunning, Ready: true, Network: &api.NetworkStatus{Mode: api.NetworkBridge, Address: "10.89.0.7"}},
			{Name: "webby", State: api.GroupRunning, Ready: true, Network: &api.NetworkStatus{Mode: api.NetworkBridge, Address: "10.89.0.8"}},
		},
		allocs: map[string][]raftstore.Allocation{"web": {
			alloc("web.0", "n1", false, api.GroupPending, spec), // stale: the supervisor knows better
			alloc("web.1", "n2", true, api.GroupRunning, spec),
			alloc("web.2", "n3", true, api.GroupRunning, spec),
			alloc("web.3", "n4", true, api.GroupRunning, spec),     // node dead
			alloc("web.4", "n2", false, api.GroupRunning, spec),    // not ready
			alloc("web.5", "n2", true, api.GroupStarting, spec),    // not running
			alloc("web.6", "", true, api.GroupRunning, spec),       // not placed
			alloc("web.7", "n3", true, api.GroupRunning, hostSpec), // host network
		}},
		nodes: map[string]raftstore.NodeInfo{
			"n2": {Name: "n2", APIAddr: "192.0.2.2:7947", Status: raftstore.NodeAlive, Labels: map[string]string{PublishAddressLabel: "198.51.100.2"}},
			"n3": {Name: "n3", APIAddr: "192.0.2.3:7947", Status: raftstore.NodeSuspect},
			"n4": {Name: "n4", APIAddr: "192.0.2.4:7947", Status: raftstore.NodeDead},
		},
		clusterGroups: map[string]int{"web": 4},
	}
	v.byID = map[string]raftstore.Allocation{}
	for _, al := range v.allocs["web"] {
		v.byID[al.ID] = al
	}
	got := v.endpoints("web")
	var names []string
	for _, ep := range got {
		names = append(names, ep.Group)
	}
	if want := []string{"web.0", "web.1", "web.2", "web.7"}; !slices.Equal(names, want) {
		t.Fatalf("endpoints %v, want %v: %+v", names, want, got)
	}
	if got[0].Address != "10.89.0.7" || got[0].Node != "n1" || got[0].Shard != 1 {
		t.Errorf("local allocation %+v: want its bridge address and shard from the state", got[0])
	}
	publish := func(ip string, host, ctr int) api.PortMapping {
		return api.PortMapping{HostIP: ip, HostPort: host, ContainerPort: ctr, Protocol: api.ProtocolTCP}
	}
	if want := []api.PortMapping{publish("198.51.100.2", 9000, 8080), publish("192.0.2.9", 9200, 9200)}; got[1].Address != "" || !slices.Equal(got[1].Ports, want) {
		t.Errorf("web.1 on n2 (publish address): %+v, want no address and ports %+v", got[1], want)
	}
	if want := []api.PortMapping{publish("192.0.2.3", 9000, 8080), publish("192.0.2.9", 9200, 9200)}; !slices.Equal(got[2].Ports, want) {
		t.Errorf("web.2 on n3 (API address): ports %+v, want %+v", got[2].Ports, want)
	}
	if got[3].Address != "192.0.2.3" {
		t.Errorf("web.7 with network = host on n3: %+v, want the node's address", got[3])
	}
	if v.shards("web") != 4 || v.shards("other") != 1 {
		t.Errorf("shards: web %d, other %d; want 4 and 1", v.shards("web"), v.shards("other"))
	}
}

func TestNodeAddress(t *testing.T) {
	for _, tt := range []struct {
		n    raftstore.NodeInfo
		want string
	}{
		{raftstore.NodeInfo{APIAddr: "192.0.2.1:7947"}, "192.0.2.1"},
		{raftstore.NodeInfo{APIAddr: "192.0.2.1:7947", Labels: map[string]string{PublishAddressLabel: "127.0.0.61"}}, "127.0.0.61"},
		{raftstore.NodeInfo{APIAddr: "0.0.0.0:7947"}, ""},
		{raftstore.NodeInfo{}, ""},
		{raftstore.NodeInfo{APIAddr: "192.0.2.1:7947", Labels: map[string]string{PublishAddressLabel: "nonsense"}}, "192.0.2.1"},
	} {
		if got := nodeAddress(tt.n); got != tt.want {
			t.Errorf("nodeAddress(%+v) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestPortHoldFirstComeFirstServed: an allocation that publishes a port a
// local group or a running allocation has waits, with the port and group
// in its reason; one that waits takes no port from another.
func TestPortHoldFirstComeFirstServed(t *testing.T) {
	a := testAgent(t)
	entry := func(source string, ports ...string) *groupEntry {
		return &groupEntry{Source: source, Spec: &api.GroupSpec{Ports: ports}}
	}
	a.groups = map[string]*groupEntry{
		"web":   entry(SourceAPI, "8080:80"),
		"api.0": entry(api.SourceCluster, "8080:8080"),
		"kv.0":  entry(api.SourceCluster, "7000:7000"),
		"db.0":  entry(api.SourceCluster, "127.0.0.1:5432:5432"),
	}
	for n, g := range a.groups {
		g.Spec.Name = n
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	hold := a.portHoldLocked("api.0", a.groups["api.0"])
	if !strings.Contains(hold, `port 8080/tcp is already published by group "web" on node n1`) {
		t.Errorf("api.0: %q, want the port and the local group", hold)
	}
	if h := a.portHoldLocked("web", a.groups["web"]); h != "" {
		t.Errorf("a local group waits: %q", h)
	}
	// kv.0 is handed over first and holds the port; kv.1, which comes
	// next, waits for it.
	if h := a.portHoldLocked("kv.0", a.groups["kv.0"]); h != "" {
		t.Errorf("kv.0 alone waits: %q", h)
	}
	a.groups["kv.1"] = entry(api.SourceCluster, "7000:7000")
	a.groups["kv.1"].Spec.Name = "kv.1"
	if h := a.portHoldLocked("kv.1", a.groups["kv.1"]); !strings.Contains(h, `group "kv.0"`) {
		t.Errorf("kv.1: %q, want it to wait for kv.0", h)
	}
	a.groups["kv.0"].portHold = "waiting"
	if h := a.portHoldLocked("kv.1", a.groups["kv.1"]); h != "" {
		t.Errorf("kv.1 waits for kv.0, which waits itself: %q", h)
	}
	if h := a.portHoldLocked("db.0", a.groups["db.0"]); h != "" {
		t.Errorf("db.0: %q, want no conflict", h)
	}
}

func TestPublishAddressConfig(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"", ""}, {"0.0.0.0", ""}, {"127.0.0.61", ""}, {"192.0.2.7", ""},
		{"fd00::1", "is not an IPv4 address"}, {"host", "is not an IPv4 address"}, {"224.0.0.1", "is not a unicast address"},
	} {
		c := DefaultConfig()
		c.NodeName = "n1"
		c.Network.PublishAddress = tt.addr
		err := c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), "network.publish_address") || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("publish_address %q: %v, want %q", tt.addr, err, tt.want)
		}
	}
	a := testAgent(t)
	a.cfg.Network.PublishAddress = "127.0.0.61"
	a.cfg.Node.Labels = map[string]string{"zone": "a"}
	a.labelPublishAddress()
	if a.cfg.Node.Labels[PublishAddressLabel] != "127.0.0.61" || a.cfg.Node.Labels["zone"] != "a" {
		t.Errorf("labels %v: want the publish address and the others kept", a.cfg.Node.Labels)
	}
	cc, err := a.cfg.Network.cniConfig(a.cfg.StateDir, nil)
	if err != nil || cc.PublishAddress.String() != "127.0.0.61" {
		t.Errorf("CNI config publish address %v, %v", cc.PublishAddress, err)
	}
	b := testAgent(t)
	b.cfg.Node.Labels = map[string]string{PublishAddressLabel: "192.0.2.1"}
	b.labelPublishAddress()
	if _, ok := b.cfg.Node.Labels[PublishAddressLabel]; ok {
		t.Errorf("a hand-set %s label is kept without a publish address", PublishAddressLabel)
	}
}

// needRoot skips a test that joins network namespaces without root, or
// fails it when CI=true.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		missingPrerequisite(t, "needs root to join a network namespace")
	}
}

// missingPrerequisite skips the test, or fails it under CI=true, where a
// missing prerequisite is a failure.
func missingPrerequisite(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: a missing prerequisite is a failure)")
	}
	t.Skip(msg)
}

// freeLocalPort returns a port of 127.0.0.1 nothing listens on now.
func freeLocalPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// nameServer answers every connection with name and closes it.
func nameServer(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// ask connects to addr and returns what it says ("" when it closes at
// once or refuses).
func ask(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestAmbassadorSetFollowsTheSandbox: SandboxReady opens the group's
// ambassadors (the agent's own namespace stands in for the group's), the
// feed gives them their endpoints, a changed table is reopened, a taken
// address is a Warning event, and SandboxGone closes them.
func TestAmbassadorSetFollowsTheSandbox(t *testing.T) {
	needRoot(t)
	a := testAgent(t)
	s := a.ambassadors()
	backend1, backend2 := nameServer(t, "one"), nameServer(t, "two")
	// The services' endpoints are groups with network = "host" on this
	// node, reached at 127.0.0.1 and the ambassador's service port.
	var mu sync.Mutex
	var ready []string
	s.view = func() *endpointView {
		mu.Lock()
		defer mu.Unlock()
		v := &endpointView{self: "n1"}
		for _, g := range ready {
			v.local = append(v.local, api.GroupStatus{Name: g, State: api.GroupRunning, Ready: true,
				Network: &api.NetworkStatus{Mode: api.NetworkHost}})
		}
		return v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	_, events, unsub := a.events.Subscribe("")
	defer unsub()

	listen := fmt.Sprintf("127.0.0.1:%d", freeLocalPort(t))
	sb := &supervisor.Sandbox{Group: "client", NetNSPath: "/proc/self/ns/net"}
	spec := &api.GroupSpec{Name: "client", Ambassadors: []api.AmbassadorSpec{{Listen: listen, Service: "one", Port: backend1}}}
	s.SandboxReady(spec, sb)
	waitEvent(t, events, "AmbassadorListening")
	// No ready endpoint: the connection is accepted and closed.
	if got, err := ask(listen); got != "" {
		t.Errorf("without endpoints %s answered %q, %v", listen, got, err)
	}
	mu.Lock()
	ready = []string{"one", "two"}
	mu.Unlock()
	s.wake()
	waitAnswer(t, listen, "one")

	// The same spec again: nothing changes. Another service port:
	// reopened, to the other backend.
	s.SandboxReady(spec, sb)
	spec2 := &api.GroupSpec{Name: "client", Ambassadors: []api.AmbassadorSpec{{Listen: listen, Service: "two", Port: backend2}}}
	s.SandboxReady(spec2, sb)
	waitEvent(t, events, "AmbassadorChanged")
	waitAnswer(t, listen, "two")

	// An address that is taken: a warning that says so.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	spec3 := &api.GroupSpec{Name: "client", Ambassadors: append(spec2.Ambassadors, api.AmbassadorSpec{Listen: taken.Addr().String(), Service: "one", Port: backend1})}
	s.SandboxReady(spec3, sb)
	ev := waitEvent(t, events, "AmbassadorFailed")
	if ev.Type != api.EventWarning || ev.Group != "client" || !strings.Contains(ev.Message, "address already in use") || !strings.Contains(ev.Message, taken.Addr().String()) {
		t.Errorf("failure event %+v: want a warning of group client naming the address and the reason", ev)
	}
	waitAnswer(t, listen, "two") // the other one keeps running
	// Freed: opened on a retry.
	taken.Close()
	waitEvent(t, events, "AmbassadorListening")
	waitAnswer(t, taken.Addr().String(), "one")

	s.SandboxGone("client")
	if _, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		t.Errorf("%s still accepts after SandboxGone", listen)
	}
	s.mu.Lock()
	n := len(s.groups)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d groups left after SandboxGone", n)
	}
}

// waitEvent waits for the next event with reason.
func waitEvent(t *testing.T, events <-chan api.Event, reason string) api.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.Reason == reason {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within 10s", reason)
		}
	}
}

// waitAnswer waits until addr answers want.
func waitAnswer(t *testing.T, addr, want string) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, err = ask(addr); got == want {
			return
		}
	}
	t.Fatalf("%s answered %q (%v), want %q", addr, got, err, want)
}
