package integration

import (
	"context"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestAgentKill9TenTimesWithTenGroups kills agentd with SIGKILL ten times
// in a row while ten groups run: every task keeps its PID and start time,
// restart counts survive, probes go on after each restart, and the logs
// have no gap.
func TestAgentKill9TenTimesWithTenGroups(t *testing.T) {
	a := startAgent(t, agentOpts{})
	const n = 10
	for i := 0; i < n; i++ {
		applyTOML(t, a, fmt.Sprintf("g%d.toml", i), fmt.Sprintf(`name = "g%d"
[restart_backoff]
initial = "100ms"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080", "--log-every", "50ms"]
[container.readiness]
period = "200ms"
timeout = "150ms"
http = { path = "/ready", port = 8080 }
`, i))
	}
	before := map[string]*api.GroupStatus{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("g%d", i)
		before[name] = waitGroup(t, a, name, 60*time.Second, "running and ready", func(s *api.GroupStatus) bool { return allRunning(s) && s.Ready })
	}
	// One restart before the kills, whose count must survive them.
	waitHTTP(t, before["g0"].NetNS, "http://127.0.0.1:8080/health")
	nsDo(t, before["g0"].NetNS, "POST", "http://127.0.0.1:8080/exit?code=1", "")
	before["g0"] = waitGroup(t, a, "g0", 20*time.Second, "restarted once", func(s *api.GroupStatus) bool {
		return allRunning(s) && s.Ready && s.Restarts == 1
	})

	for k := 0; k < 10; k++ {
		a.Kill()
		a.start()
		for name, b := range before {
			mark := time.Now()
			after := waitGroup(t, a, name, 20*time.Second, fmt.Sprintf("kill %d: reattached, probed again", k), func(s *api.GroupStatus) bool {
				if !allRunning(s) || len(s.Containers[0].Probes) == 0 {
					return false
				}
				return s.Containers[0].Probes[0].LastProbe.After(mark) && s.Ready
			})
			if !reflect.DeepEqual(pids(after), pids(b)) {
				t.Fatalf("kill %d: %s pids %v, want %v", k, name, pids(after), pids(b))
			}
			if d := after.Containers[0].StartedAt.Sub(b.Containers[0].StartedAt); d > time.Second || d < -time.Second {
				t.Errorf("kill %d: %s start time moved by %s", k, name, d)
			}
			if after.Restarts != b.Restarts {
				t.Errorf("kill %d: %s restarts %d, want %d", k, name, after.Restarts, b.Restarts)
			}
		}
	}

	// No gap in any group's numbered log lines (those of the current task).
	for name := range before {
		var ticks []int
		err := a.api().Logs(context.Background(), name, api.LogOptions{Tail: -1}, func(e api.LogEntry) error {
			if m := tickRE.FindStringSubmatch(strings.TrimSpace(e.Line)); m != nil && e.Stream == "stdout" {
				v, _ := strconv.Atoi(m[1])
				ticks = append(ticks, v)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		start := 0
		for i := 1; i < len(ticks); i++ {
			if ticks[i] == 1 {
				start = i // g0's restart began counting again
			}
		}
		ticks = ticks[start:]
		for i := 1; i < len(ticks); i++ {
			if ticks[i] != ticks[i-1]+1 {
				t.Fatalf("%s: log gap: tick %d followed by %d", name, ticks[i-1], ticks[i])
			}
		}
	}
}

// TestBackoffDeadlineSurvivesAgentRestart: a group waiting in BackOff keeps
// its deadline across a kill -9 of agentd, and its restart count.
func TestBackoffDeadlineSurvivesAgentRestart(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "slow.toml", `name = "slow"
[restart_backoff]
initial = "3s"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
[[container]]
name = "side"
image = "berth.local/busybox:latest"
command = ["sleep", "3600"]
`)
	st := waitGroup(t, a, "slow", 30*time.Second, "running", allRunning)
	waitHTTP(t, st.NetNS, "http://127.0.0.1:8080/health")
	nsDo(t, st.NetNS, "POST", "http://127.0.0.1:8080/exit?code=1", "")
	bo := waitGroup(t, a, "slow", 10*time.Second, "backoff", func(s *api.GroupStatus) bool { return s.State == api.GroupBackOff })
	a.Kill()
	a.start()
	after := waitGroup(t, a, "slow", 10*time.Second, "reattached", func(s *api.GroupStatus) bool { return s.State != "" })
	if after.Restarts != bo.Restarts {
		t.Errorf("restarts after the agent restart: %d, want %d", after.Restarts, bo.Restarts)
	}
	if after.State != api.GroupBackOff || after.NextRestart.Sub(bo.NextRestart).Abs() > 50*time.Millisecond {
		t.Errorf("after the agent restart: state %s, next restart %s, want BackOff at %s", after.State, after.NextRestart, bo.NextRestart)
	}
	running := waitGroup(t, a, "slow", 10*time.Second, "restarted at the deadline", allRunning)
	if time.Since(bo.NextRestart) < 0 || running.Containers[0].StartedAt.Before(bo.NextRestart.Add(-100*time.Millisecond)) {
		t.Errorf("restarted at %s, before the deadline %s", running.Containers[0].StartedAt, bo.NextRestart)
	}
}

// TestReadinessSurvivesAgentRestart: a ready group stays ready across a
// kill -9 of agentd: the probes resume from their verdicts instead of
// starting over as not ready.
func TestReadinessSurvivesAgentRestart(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "steady.toml", `name = "steady"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
[container.readiness]
initial_delay = "3s"
period = "500ms"
timeout = "200ms"
http = { path = "/ready", port = 8080 }
`)
	// The initial delay applies to resumed probes too: without the kept
	// verdict the group would be not ready for 3s after the restart.
	waitGroup(t, a, "steady", 30*time.Second, "ready", func(s *api.GroupStatus) bool { return allRunning(s) && s.Ready })
	a.Kill()
	a.start()
	st := waitGroup(t, a, "steady", 10*time.Second, "reattached", func(s *api.GroupStatus) bool { return s.Reason == "Reattached" })
	if !st.Ready || !st.Containers[0].Ready {
		t.Errorf("right after the reattach: group ready %v, container ready %v; want both still ready", st.Ready, st.Containers[0].Ready)
	}
	// Two probe periods later nothing has flapped.
	time.Sleep(1200 * time.Millisecond)
	st = getGroup(t, a, "steady")
	for _, e := range st.Events {
		if e.Reason == "NotReady" || e.Reason == "ContainerNotReady" {
			t.Errorf("readiness flapped after the restart: %s %s", e.Reason, e.Message)
		}
	}
	if !st.Ready {
		t.Errorf("not ready after the restart")
	}
}
