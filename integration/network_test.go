package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-project/berth/api"
)

// Tests of group networking: the bridge (CNI), published ports, the host
// and none modes, port conflicts, cleanup, and service endpoints.

// agentNetwork returns the bridge and subnet of a test agent, from its
// agent.toml (baseAgentConfig's [network]).
func agentNetwork(t testing.TB, a *agentProc) (string, netip.Prefix) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.Dir, "agent.toml"))
	if err != nil {
		t.Fatal(err)
	}
	bridge := regexp.MustCompile(`(?m)^bridge = "([^"]+)"`).FindSubmatch(b)
	subnet := regexp.MustCompile(`(?m)^subnet = "([^"]+)"`).FindSubmatch(b)
	if bridge == nil || subnet == nil {
		t.Fatalf("no [network] bridge and subnet in %s:\n%s", a.Dir, b)
	}
	return string(bridge[1]), netip.MustParsePrefix(string(subnet[1]))
}

// freeHostPort returns a TCP port nothing on the host listens on now.
func freeHostPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// hostGet does a GET from the host and returns status and body.
func hostGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHostGet waits until url answers 200 from the host and returns the
// body.
func waitHostGet(t testing.TB, url string) string {
	t.Helper()
	var body string
	waitFor(t, 20*time.Second, "GET "+url+" from the host", func() (bool, error) {
		code, b, err := hostGet(url)
		if err != nil {
			return false, err
		}
		if code != http.StatusOK {
			return false, fmt.Errorf("%d %s", code, b)
		}
		body = b
		return true, nil
	})
	return body
}

// serveGroup is a group of one testapp serving HTTP on :8080, with extra
// top-level lines (network, ports).
func serveGroup(name string, top ...string) string {
	return fmt.Sprintf("name = %q\n%s\n[[container]]\nname = \"app\"\nimage = \"berth.local/testapp:latest\"\nargs = [\"serve\", \"--listen\", \":8080\"]\n",
		name, strings.Join(top, "\n"))
}

// interfaces parses the interface names out of /proc/net/dev.
func interfaces(procNetDev string) []string {
	var out []string
	for _, l := range strings.Split(procNetDev, "\n") {
		if name, _, ok := strings.Cut(l, ":"); ok && !strings.Contains(name, "|") {
			out = append(out, strings.TrimSpace(name))
		}
	}
	sort.Strings(out)
	return out
}

// hostInterfaces lists the host's interfaces. It reads the calling
// thread's view: /proc/net is the main thread's, which may be parked in a
// group's namespace for good (netnsHTTP's threads never leave theirs).
func hostInterfaces(t testing.TB) []string {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b, err := os.ReadFile("/proc/thread-self/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	return interfaces(string(b))
}

// networkLeftovers lists what is left of an agent's network after its
// groups are gone: address records, CNI cache entries, veths on its
// bridge, iptables rules that name its network or forward to its subnet.
func networkLeftovers(t testing.TB, a *agentProc) []string {
	t.Helper()
	bridge, subnet := agentNetwork(t, a)
	var left []string
	ipam, _ := os.ReadDir(filepath.Join(a.StateDir, "cni", "ipam", bridge))
	for _, e := range ipam {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			b, _ := os.ReadFile(filepath.Join(a.StateDir, "cni", "ipam", bridge, e.Name()))
			left = append(left, fmt.Sprintf("address record %s (%s)", e.Name(), strings.Fields(string(b))))
		}
	}
	cache, _ := os.ReadDir(filepath.Join(a.StateDir, "cni", "cache", "results"))
	for _, e := range cache {
		left = append(left, "CNI cache entry "+e.Name())
	}
	if br, err := netlink.LinkByName(bridge); err == nil {
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				left = append(left, "veth "+l.Attrs().Name+" on "+bridge)
			}
		}
	}
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			t.Fatalf("iptables -t %s -S: %v", table, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, `name: \"`+bridge+`\"`) || strings.Contains(l, subnet.Addr().String()[:strings.LastIndex(subnet.Addr().String(), ".")+1]) {
				left = append(left, table+": "+l)
			}
		}
	}
	return left
}

// TestNetworkPublishedPortReachesTheGroup: a bridge group gets an address
// of the agent's subnet, the host reaches it by address and through its
// published port, and `agentctl get -o wide` shows both.
func TestNetworkPublishedPortReachesTheGroup(t *testing.T) {
	a := startAgent(t, agentOpts{})
	_, subnet := agentNetwork(t, a)
	port := freeHostPort(t)
	applyTOML(t, a, "web.toml", serveGroup("web", fmt.Sprintf(`ports = ["127.0.0.1:%d:8080"]`, port)))
	st := waitGroup(t, a, "web", 30*time.Second, "running", allRunning)
	n := st.Network
	if n == nil || n.Mode != api.NetworkBridge {
		t.Fatalf("network status %+v, want bridge", n)
	}
	addr, err := netip.ParseAddr(n.Address)
	if err != nil || !subnet.Contains(addr) {
		t.Fatalf("address %q is not in the agent's subnet %s", n.Address, subnet)
	}
	if want := []api.PortMapping{{HostIP: "127.0.0.1", HostPort: port, ContainerPort: 8080, Protocol: api.ProtocolTCP}}; !slices.Equal(n.Ports, want) {
		t.Errorf("ports %+v, want %+v", n.Ports, want)
	}
	if got := waitHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/hostname", port)); got != "web" {
		t.Errorf("published port answered %q, want the group's hostname web", got)
	}
	if got := waitHostGet(t, fmt.Sprintf("http://%s:8080/hostname", n.Address)); got != "web" {
		t.Errorf("group address answered %q, want web", got)
	}
	// The group knows its own address by name.
	if code, body := nsDo(t, st.NetNS, "GET", "http://127.0.0.1:8080/read?path=/etc/hosts", ""); code != 200 || !strings.Contains(body, n.Address+"\tweb") {
		t.Errorf("/etc/hosts of the group (%d): %q, want a line for %s", code, body, n.Address)
	}

	env.needAgentctl(t)
	out, err := exec.Command(env.AgentctlBin, "--socket", a.Socket, "get", "-o", "wide").CombinedOutput()
	if err != nil {
		t.Fatalf("agentctl get -o wide: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	if !strings.Contains(lines[0], "ADDRESS") || !strings.Contains(lines[0], "PORTS") ||
		!strings.Contains(string(out), n.Address) || !strings.Contains(string(out), fmt.Sprintf("127.0.0.1:%d->8080/tcp", port)) {
		t.Errorf("agentctl get -o wide lacks the address and ports:\n%s", out)
	}
}

// TestNetworkGroupsReachEachOtherByAddress: two bridge groups of one node
// reach each other at their addresses.
func TestNetworkGroupsReachEachOtherByAddress(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "a.toml", serveGroup("a"))
	applyTOML(t, a, "b.toml", serveGroup("b"))
	sa := waitGroup(t, a, "a", 30*time.Second, "running", allRunning)
	sb := waitGroup(t, a, "b", 30*time.Second, "running", allRunning)
	if sa.Network.Address == sb.Network.Address || sa.Network.Address == "" {
		t.Fatalf("addresses %q and %q: want two different ones", sa.Network.Address, sb.Network.Address)
	}
	waitHTTP(t, sa.NetNS, "http://127.0.0.1:8080/health")
	waitHTTP(t, sb.NetNS, "http://127.0.0.1:8080/health")
	for _, c := range []struct{ from, to *api.GroupStatus }{{sa, sb}, {sb, sa}} {
		url := fmt.Sprintf("http://127.0.0.1:8080/fetch?url=http://%s:8080/hostname", c.to.Network.Address)
		code, body := nsDo(t, c.from.NetNS, "GET", url, "")
		if code != 200 || body != c.to.Name {
			t.Errorf("%s → %s at %s: %d %q, want 200 %q", c.from.Name, c.to.Name, c.to.Network.Address, code, body, c.to.Name)
		}
	}
}

// TestNetworkHostAndNoneModes: a group with network = "host" is on the
// node's own network (the host reaches it on its loopback, it sees the
// host's interfaces); one with network = "none" has only loopback, as a
// bridge group has loopback and eth0.
func TestNetworkHostAndNoneModes(t *testing.T) {
	a := startAgent(t, agentOpts{})
	port := freeHostPort(t)
	applyTOML(t, a, "h.toml", fmt.Sprintf(`name = "h"
network = "host"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", "127.0.0.1:%d"]
`, port))
	applyTOML(t, a, "n.toml", serveGroup("n", `network = "none"`))
	applyTOML(t, a, "b.toml", serveGroup("b"))
	sh := waitGroup(t, a, "h", 30*time.Second, "running", allRunning)
	sn := waitGroup(t, a, "n", 30*time.Second, "running", allRunning)
	sb := waitGroup(t, a, "b", 30*time.Second, "running", allRunning)

	if sh.Network == nil || sh.Network.Mode != api.NetworkHost || sh.Network.Address != "" {
		t.Errorf("host: network status %+v", sh.Network)
	}
	before := hostInterfaces(t)
	body := waitHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/read?path=/proc/net/dev", port))
	after := hostInterfaces(t)
	got := interfaces(body)
	for _, i := range before {
		if slices.Contains(after, i) && !slices.Contains(got, i) {
			t.Errorf("host: the group does not see the host's interface %s (it sees %v)", i, got)
		}
	}
	for _, i := range got {
		if !slices.Contains(before, i) && !slices.Contains(after, i) {
			t.Errorf("host: the group sees %s, which the host does not have", i)
		}
	}

	if sn.Network == nil || sn.Network.Mode != api.NetworkNone || sn.Network.Address != "" {
		t.Errorf("none: network status %+v", sn.Network)
	}
	waitHTTP(t, sn.NetNS, "http://127.0.0.1:8080/health")
	if code, body := nsDo(t, sn.NetNS, "GET", "http://127.0.0.1:8080/read?path=/proc/net/dev", ""); code != 200 || !slices.Equal(interfaces(body), []string{"lo"}) {
		t.Errorf("none: interfaces %v (%d), want only lo", interfaces(body), code)
	}
	waitHTTP(t, sb.NetNS, "http://127.0.0.1:8080/health")
	if code, body := nsDo(t, sb.NetNS, "GET", "http://127.0.0.1:8080/read?path=/proc/net/dev", ""); code != 200 || !slices.Equal(interfaces(body), []string{"eth0", "lo"}) {
		t.Errorf("bridge: interfaces %v (%d), want eth0 and lo", interfaces(body), code)
	}
	// A bridge group cannot reach the host's loopback: it is not on it.
	if code, body := nsDo(t, sb.NetNS, "GET", fmt.Sprintf("http://127.0.0.1:8080/fetch?url=http://127.0.0.1:%d/health", port), ""); code == 200 {
		t.Errorf("bridge group reached the host's 127.0.0.1:%d: %s", port, body)
	}
}

// TestNetworkPortConflictIsRefused: a group that publishes a port another
// group of the node publishes is refused, through the API, agentctl and
// groups_dir alike, with the port and the group that has it, and nothing
// of it is applied.
func TestNetworkPortConflictIsRefused(t *testing.T) {
	a := startAgent(t, agentOpts{})
	port := freeHostPort(t)
	applyTOML(t, a, "web.toml", serveGroup("web", fmt.Sprintf(`ports = ["%d:8080"]`, port)))
	waitGroup(t, a, "web", 30*time.Second, "running", allRunning)

	want := fmt.Sprintf(`ports[0]: port %d/tcp is already published by group "web"`, port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := a.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "api.toml",
		Content: serveGroup("api", fmt.Sprintf(`ports = ["127.0.0.1:%d:8080"]`, port))}}})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`api.toml:2:10: group "api": ports[0]: port 127.0.0.1:%d/tcp is already published by group "web" (as %d/tcp)`, port, port)) {
		t.Errorf("apply: err = %v", err)
	}
	if _, err := a.api().Get(ctx, "api"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("refused group exists: %v", err)
	}

	env.needAgentctl(t)
	file := filepath.Join(t.TempDir(), "cli.toml")
	if err := os.WriteFile(file, []byte(serveGroup("cli", fmt.Sprintf(`ports = ["9:9", "%d:80"]`, port))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(env.AgentctlBin, "--socket", a.Socket, "apply", "-f", file).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), file+":2:17: group \"cli\": "+strings.Replace(want, "ports[0]", "ports[1]", 1)) {
		t.Errorf("agentctl apply: %v, want exit 3 and the conflict:\n%s", err, out)
	}

	dropped := filepath.Join(a.GroupsDir, "local.toml")
	if err := os.WriteFile(dropped, []byte(serveGroup("local", fmt.Sprintf(`ports = ["%d:8080/tcp"]`, port))), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a SpecInvalid event for local.toml", func() (bool, error) {
		code, body, err := httpUnix(a.Socket, "GET", "/v1/events?group=local", nil)
		if err != nil || code != 200 {
			return false, fmt.Errorf("%d %s %v", code, body, err)
		}
		var evs []api.Event
		if err := json.Unmarshal(body, &evs); err != nil {
			return false, err
		}
		for _, e := range evs {
			if e.Reason == "SpecInvalid" && strings.Contains(e.Message, dropped+":2:10: group \"local\": "+want) {
				return true, nil
			}
		}
		return false, fmt.Errorf("events %+v", evs)
	})
	if _, err := a.api().Get(ctx, "local"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("group of the refused file exists: %v", err)
	}
	// The port still goes to web.
	if got := waitHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/hostname", port)); got != "web" {
		t.Errorf("port %d answered %q, want web", port, got)
	}
}

// TestNetworkDeleting50GroupsLeavesNothing: after 50 bridge groups (ten of
// them publishing a port) are deleted, no address record, CNI cache entry,
// veth or iptables rule of the agent's network is left.
func TestNetworkDeleting50GroupsLeavesNothing(t *testing.T) {
	a := startAgent(t, agentOpts{})
	const n = 50
	var files []api.ApplyFile
	var names []string
	// sleep, as PID 1, ignores SIGTERM: a short grace keeps the deletes quick.
	for i := range n {
		name := fmt.Sprintf("g%02d", i)
		ports := ""
		if i%5 == 0 {
			ports = fmt.Sprintf(`ports = ["127.0.0.1:%d:80"]`, freeHostPort(t))
		}
		names = append(names, name)
		files = append(files, api.ApplyFile{Name: name + ".toml", Content: fmt.Sprintf(
			"name = %q\ngrace_period = \"100ms\"\n%s\n[[container]]\nname = \"main\"\nimage = \"berth.local/busybox:latest\"\ncommand = [\"sleep\", \"1000\"]\n", name, ports)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := a.api().Apply(ctx, api.ApplyRequest{Files: files}); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	for _, name := range names {
		st := waitGroup(t, a, name, 2*time.Minute, "running", allRunning)
		if st.Network == nil || st.Network.Address == "" {
			t.Fatalf("%s has no address: %+v", name, st.Network)
		}
		if other, dup := addrs[st.Network.Address]; dup {
			t.Errorf("%s and %s share %s", name, other, st.Network.Address)
		}
		addrs[st.Network.Address] = name
	}
	if left := networkLeftovers(t, a); len(left) < 2*n {
		t.Fatalf("only %d network objects while %d groups run: the check would not see leftovers:\n%s", len(left), n, strings.Join(left, "\n"))
	}

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.api().Delete(ctx, name, true); err != nil {
				errs <- fmt.Errorf("delete %s: %w", name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if left := networkLeftovers(t, a); len(left) > 0 {
		t.Errorf("left after deleting %d groups:\n%s", n, strings.Join(left, "\n"))
	}
}

// TestNetworkKilledAgentReleasesAddresses: an agent is killed (SIGKILL);
// behind its back the containers of its two groups are deleted, and of
// "gone" everything else too (its file, its namespace, its directories:
// only the address record and its port rules are left). Restarted, the
// agent gives "keep" back its address and releases everything of "gone".
func TestNetworkKilledAgentReleasesAddresses(t *testing.T) {
	a := startAgent(t, agentOpts{Namespace: env.newNamespace(t)})
	keepPort, gonePort := freeHostPort(t), freeHostPort(t)
	write := func(name string, port int) {
		if err := os.WriteFile(filepath.Join(a.GroupsDir, name+".toml"),
			[]byte(serveGroup(name, fmt.Sprintf(`ports = ["127.0.0.1:%d:8080"]`, port))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("keep", keepPort)
	write("gone", gonePort)
	keep := waitGroup(t, a, "keep", 30*time.Second, "running", allRunning)
	waitGroup(t, a, "gone", 30*time.Second, "running", allRunning)
	waitHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/health", gonePort))

	a.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cleanNamespace(ctx, env.Client, a.opts.Namespace, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(a.GroupsDir, "gone.toml")); err != nil {
		t.Fatal(err)
	}
	goneRun := filepath.Join(a.RunDir, "groups", "gone")
	if err := unmountUnder(goneRun); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{goneRun, filepath.Join(a.StateDir, "volumes", "gone")} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	bridge, _ := agentNetwork(t, a)
	records := func() map[string]int {
		out := map[string]int{}
		dir := filepath.Join(a.StateDir, "cni", "ipam", bridge)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if _, err := netip.ParseAddr(e.Name()); err == nil {
				b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				if f := strings.Fields(string(b)); len(f) > 0 {
					out[f[0]]++
				}
			}
		}
		return out
	}
	if r := records(); r["gone"] != 1 || r["keep"] != 1 {
		t.Fatalf("address records before the restart: %v, want one each for keep and gone", r)
	}

	a.start()
	got := waitGroup(t, a, "keep", 30*time.Second, "running again", func(st *api.GroupStatus) bool {
		return allRunning(st) && st.Containers[0].PID != keep.Containers[0].PID
	})
	if got.Network == nil || got.Network.Address != keep.Network.Address {
		t.Errorf("keep came back at %+v, want its address %s", got.Network, keep.Network.Address)
	}
	if body := waitHostGet(t, fmt.Sprintf("http://127.0.0.1:%d/hostname", keepPort)); body != "keep" {
		t.Errorf("keep's port answered %q", body)
	}
	waitFor(t, 10*time.Second, "gone's address released", func() (bool, error) {
		if r := records(); r["gone"] != 0 || r["keep"] != 1 {
			return false, fmt.Errorf("address records %v, want only keep's", r)
		}
		return true, nil
	})
	out, _ := exec.Command("iptables", "-w", "-t", "nat", "-S").Output()
	if strings.Contains(string(out), `id: \"gone\"`) || strings.Contains(string(out), fmt.Sprintf("--dport %d", gonePort)) {
		t.Errorf("port rules of gone left:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(a.StateDir, "cni", "cache", "results", bridge+"-gone-eth0")); !os.IsNotExist(err) {
		t.Errorf("CNI cache entry of gone left: %v", err)
	}
	if !strings.Contains(a.log(), "released the network addresses of groups that are gone") {
		t.Errorf("the agent's log does not say it released gone's address")
	}
}

// TestNetworkEndpointsFollowReadiness: a ready group is the endpoint of
// the service named after it, with its address and ports; it stops being
// one when its readiness probe fails, and is one again when it passes. A
// group with network = "none" is no endpoint, one with network = "host"
// is reached on 127.0.0.1.
func TestNetworkEndpointsFollowReadiness(t *testing.T) {
	a := startAgent(t, agentOpts{})
	port := freeHostPort(t)
	applyTOML(t, a, "cache.toml", fmt.Sprintf(`name = "cache"
ports = ["127.0.0.1:%d:8080"]
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "100ms", timeout = "100ms", failure_threshold = 1 }
`, port))
	applyTOML(t, a, "lonely.toml", serveGroup("lonely", `network = "none"`))
	st := waitGroup(t, a, "cache", 30*time.Second, "ready", func(st *api.GroupStatus) bool { return allRunning(st) && st.Ready })
	waitGroup(t, a, "lonely", 30*time.Second, "running", allRunning)

	endpoints := func(service string) []api.Endpoint {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eps, err := a.api().Endpoints(ctx, service)
		if err != nil {
			t.Fatalf("endpoints %s: %v", service, err)
		}
		return eps
	}
	want := []api.Endpoint{{Group: "cache", Node: "node1", Address: st.Network.Address, Ready: true,
		Ports: []api.PortMapping{{HostIP: "127.0.0.1", HostPort: port, ContainerPort: 8080, Protocol: api.ProtocolTCP}}}}
	if got := endpoints("cache"); len(got) != 1 || got[0].Group != "cache" || got[0].Address != want[0].Address ||
		got[0].Node != "node1" || !got[0].Ready || !slices.Equal(got[0].Ports, want[0].Ports) {
		t.Errorf("endpoints of cache: %+v, want %+v", got, want)
	}
	if got := endpoints("lonely"); len(got) != 0 {
		t.Errorf("a group with network = none is an endpoint: %+v", got)
	}
	if got := endpoints("nothing"); got == nil || len(got) != 0 {
		t.Errorf("endpoints of an unknown service: %#v, want an empty list", got)
	}
	code, body, err := httpUnix(a.Socket, "GET", "/v1/endpoints/Not_A_Name", nil)
	if err != nil || code != http.StatusBadRequest {
		t.Errorf("invalid service name: %d %s %v, want 400", code, body, err)
	}

	for _, c := range []struct {
		v    string
		want int
	}{{"false", 0}, {"true", 1}} {
		t0 := time.Now()
		if code, b, err := hostPost(fmt.Sprintf("http://%s:8080/ready?v=%s", st.Network.Address, c.v)); err != nil || code != 200 {
			t.Fatalf("set ready=%s: %d %s %v", c.v, code, b, err)
		}
		waitFor(t, 5*time.Second, fmt.Sprintf("%d endpoints of cache after ready=%s", c.want, c.v), func() (bool, error) {
			if got := endpoints("cache"); len(got) != c.want {
				return false, fmt.Errorf("%d endpoints", len(got))
			}
			return true, nil
		})
		t.Logf("ready=%s: endpoints followed in %s (readiness period 100ms)", c.v, time.Since(t0).Round(time.Millisecond))
	}

	env.needAgentctl(t)
	out, err := exec.Command(env.AgentctlBin, "--socket", a.Socket, "endpoints", "cache").CombinedOutput()
	if err != nil || !strings.Contains(string(out), st.Network.Address) {
		t.Errorf("agentctl endpoints cache: %v\n%s", err, out)
	}
}

// hostPost does a POST from the host.
func hostPost(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
