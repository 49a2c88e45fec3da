package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor"
)

// pairGroup is a group of two test apps that share an empty volume.
func pairGroup(name string, extra string) string {
	return fmt.Sprintf(`name = %q
grace_period = "5s"
%s
[[volume]]
name = "data"
type = "empty"

[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
[[container.mount]]
volume = "data"
path = "/data"

[[container]]
name = "peer"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":9090"]
[[container.mount]]
volume = "data"
path = "/data"
`, name, extra)
}

func TestGroupSharesLocalhostAndVolume(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "pair.toml", pairGroup("pair", ""))
	st := waitGroup(t, a, "pair", 30*time.Second, "all running", allRunning)
	ns := st.NetNS
	waitHTTP(t, ns, "http://127.0.0.1:8080/health")
	waitHTTP(t, ns, "http://127.0.0.1:9090/health")

	// Each container reaches the other on 127.0.0.1.
	for _, c := range []struct{ from, to string }{{"8080", "9090"}, {"9090", "8080"}} {
		code, body := nsDo(t, ns, "GET", "http://127.0.0.1:"+c.from+"/dial?addr=127.0.0.1:"+c.to, "")
		if code != 200 {
			t.Errorf("container on :%s cannot reach 127.0.0.1:%s: %d %s", c.from, c.to, code, body)
		}
	}
	// Files cross the empty volume both ways.
	for _, c := range []struct{ writer, reader, file string }{{"8080", "9090", "/data/a"}, {"9090", "8080", "/data/b"}} {
		want := "written by :" + c.writer
		if code, body := nsDo(t, ns, "POST", "http://127.0.0.1:"+c.writer+"/write?path="+c.file, want); code != 200 {
			t.Fatalf("write %s: %d %s", c.file, code, body)
		}
		code, body := nsDo(t, ns, "GET", "http://127.0.0.1:"+c.reader+"/read?path="+c.file, "")
		if code != 200 || body != want {
			t.Errorf("container on :%s reads %s = %d %q, want %q", c.reader, c.file, code, body, want)
		}
	}
	// Hostname is the group's name.
	if code, body := nsDo(t, ns, "GET", "http://127.0.0.1:8080/hostname", ""); code != 200 || strings.TrimSpace(body) != "pair" {
		t.Errorf("hostname = %d %q, want pair", code, body)
	}
}

func TestGroupsDoNotShareLocalhost(t *testing.T) {
	a := startAgent(t, agentOpts{})
	for _, g := range []string{"one", "two"} {
		applyTOML(t, a, g+".toml", fmt.Sprintf(`name = %q
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`, g))
	}
	one := waitGroup(t, a, "one", 30*time.Second, "running", allRunning)
	two := waitGroup(t, a, "two", 30*time.Second, "running", allRunning)
	if one.NetNS == two.NetNS {
		t.Fatalf("groups share a network namespace: %s", one.NetNS)
	}
	waitHTTP(t, one.NetNS, "http://127.0.0.1:8080/health")
	waitHTTP(t, two.NetNS, "http://127.0.0.1:8080/health")
	// Both listen on :8080 without conflict, and neither sees a third port
	// that only exists in the test's own namespace.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	code, body := nsDo(t, one.NetNS, "GET", "http://127.0.0.1:8080/dial?addr=127.0.0.1:"+port, "")
	if code == 200 {
		t.Errorf("group one reached the host's 127.0.0.1:%s: %s", port, body)
	}
}

func TestGroupSharesOneShim(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "pair.toml", pairGroup("shim", ""))
	st := waitGroup(t, a, "shim", 30*time.Second, "all running", allRunning)
	parents := map[int]bool{}
	for _, c := range st.Containers {
		parents[ppid(t, int(c.PID))] = true
	}
	if len(parents) != 1 {
		t.Errorf("containers of one group have %d shims (parents %v), want 1", len(parents), parents)
	}
}

func TestResourceLimitsAreInTheCgroup(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "lim.toml", `name = "lim"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep"]
[container.resources]
memory = "64MiB"
cpu = "500m"
pids = 100
`)
	waitGroup(t, a, "lim", 30*time.Second, "running", allRunning)
	id := supervisor.ContainerID("lim", "app")
	checks := []struct{ file, want string }{
		{"/sys/fs/cgroup/memory/" + env.Namespace + "/" + id + "/memory.limit_in_bytes", strconv.Itoa(64 << 20)},
		{"/sys/fs/cgroup/cpu/" + env.Namespace + "/" + id + "/cpu.cfs_quota_us", "50000"},
		{"/sys/fs/cgroup/cpu/" + env.Namespace + "/" + id + "/cpu.cfs_period_us", "100000"},
		{"/sys/fs/cgroup/pids/" + env.Namespace + "/" + id + "/pids.max", "100"},
	}
	for _, c := range checks {
		if got := readTrim(t, c.file); got != c.want {
			t.Errorf("%s = %s, want %s", c.file, got, c.want)
		}
	}
}

func TestHostVolumeOutsideAllowedPrefixIsRefused(t *testing.T) {
	a := startAgent(t, agentOpts{})
	ctx := context.Background()
	_, err := a.api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "h.toml", Content: `name = "h"
[[volume]]
name = "etc"
type = "host"
path = "/etc"
[[container]]
name = "app"
image = "berth.local/busybox:latest"
`}}})
	if err == nil || !strings.Contains(err.Error(), "not under an allowed prefix") {
		t.Fatalf("apply of a host volume on /etc: err = %v, want a refusal naming the prefix rule", err)
	}
	if _, err := a.api().Get(ctx, "h"); err == nil {
		t.Errorf("group h exists after a refused apply")
	}
}

func ppid(t testing.TB, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n, _ := strconv.Atoi(fields[1])
	return n
}
