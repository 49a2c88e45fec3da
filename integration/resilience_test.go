package integration

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/supervisor/containerdproc"
)

// TestContainerdRestartKeepsGroupsRunning restarts containerd under a
// running group: agentd keeps answering (reporting containerd as down),
// reattaches when it is back, and restarts nothing that kept running.
func TestContainerdRestartKeepsGroupsRunning(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "steady.toml", `name = "steady"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--log-every", "50ms"]
[[container]]
name = "side"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	before := waitGroup(t, a, "steady", 30*time.Second, "running", allRunning)

	// containerd down: the API keeps answering and says so.
	if err := env.daemon.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "version reports containerd down", func() (bool, error) {
		v, err := a.api().Version(context.Background())
		if err != nil {
			return false, err
		}
		return !v.ContainerdOK, nil
	})
	if _, err := a.api().List(context.Background()); err != nil {
		t.Errorf("list while containerd is down: %v", err)
	}
	p, err := containerdproc.Start(context.Background(), env.daemonCfg)
	if err != nil {
		t.Fatal(err)
	}
	env.daemon = p
	after := waitGroup(t, a, "steady", 20*time.Second, "reattached after the containerd restart", func(s *api.GroupStatus) bool {
		return allRunning(s) && reflect.DeepEqual(pids(s), pids(before)) && hasEvent(s, "SupervisionLost")
	})
	waitFor(t, 5*time.Second, "ContainerdAvailable event", func() (bool, error) {
		var seen bool
		err := a.api().Events(context.Background(), api.EventOptions{}, func(e api.Event) error {
			seen = seen || e.Reason == "ContainerdAvailable"
			return nil
		})
		return seen, err
	})
	if after.Restarts != 0 {
		t.Errorf("%d restarts after a containerd restart, want 0", after.Restarts)
	}
	v, err := a.api().Version(context.Background())
	if err != nil || !v.ContainerdOK {
		t.Errorf("version after the restart: %+v, %v", v, err)
	}
	// Nothing reported a restart; the agent noticed containerd was gone.
	st := getGroup(t, a, "steady")
	for _, e := range st.Events {
		if e.Reason == "Started" && e.Container != "" && e.Time.After(before.StartedAt.Add(time.Second)) {
			t.Errorf("container started again: %+v", e)
		}
	}
}

// TestContainerExitWhileAgentDownIsRestartedOnReturn kills a container
// while agentd is down: its restart policy acts when agentd is back.
func TestContainerExitWhileAgentDownIsRestartedOnReturn(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "phoenix.toml", `name = "phoenix"
[restart_backoff]
initial = "100ms"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
`)
	before := waitGroup(t, a, "phoenix", 30*time.Second, "running", allRunning)
	waitHTTP(t, before.NetNS, "http://127.0.0.1:8080/health")
	a.Kill()
	if code, body := nsDo(t, before.NetNS, "POST", "http://127.0.0.1:8080/exit?code=3", ""); code != 200 {
		t.Fatalf("exit request: %d %s", code, body)
	}
	time.Sleep(200 * time.Millisecond) // the app exits while nobody watches
	a.start()
	after := waitGroup(t, a, "phoenix", 20*time.Second, "restarted by policy", func(s *api.GroupStatus) bool {
		return allRunning(s) && s.Containers[0].PID != before.Containers[0].PID
	})
	c := after.Containers[0]
	if c.Restarts < 1 {
		t.Errorf("restarts = %d, want ≥ 1", c.Restarts)
	}
	found := false
	for _, e := range after.Events {
		if e.Reason == "Exited" && strings.Contains(e.Message, "code 3") {
			found = true
		}
	}
	if !found {
		t.Errorf("no event records the exit with code 3 that happened while agentd was down")
	}
}
