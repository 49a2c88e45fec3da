package integration

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// Tests of probes, hooks and restart backoff on real containers.

// probeNamed returns the status of a container's probe of the given kind
// (startup, liveness, readiness), or false.
func probeNamed(c api.ContainerStatus, kind string) (api.ProbeStatus, bool) {
	for _, p := range c.Probes {
		if p.Kind == kind {
			return p, true
		}
	}
	return api.ProbeStatus{}, false
}

// hookNamed returns the last run of a container's hook of the given kind
// (post_start, pre_stop), or false.
func hookNamed(c api.ContainerStatus, kind string) (api.HookStatus, bool) {
	for _, h := range c.Hooks {
		if h.Kind == kind {
			return h, true
		}
	}
	return api.HookStatus{}, false
}

// TestLivenessFailureRestartsOnlyThatContainer proves that an exec
// liveness probe failing failure_threshold times restarts its container
// (new task, restart count 1, LivenessProbeFailed event) and leaves the
// other container of the group alone.
func TestLivenessFailureRestartsOnlyThatContainer(t *testing.T) {
	a := startAgent(t, agentOpts{})
	// The marker is in /run, a tmpfs every task gets anew: the restarted
	// task starts without it. (A file in the rootfs, such as /tmp, would
	// survive the restart and fail the probe again.)
	applyTOML(t, a, "live.toml", `name = "live"
grace_period = "2s"
restart_backoff = { initial = "100ms" }
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
liveness = { exec = { command = ["sh", "-c", "test ! -e /run/dead"] }, period = "200ms", timeout = "200ms", failure_threshold = 2 }
[[container]]
name = "peer"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":9090"]
`)
	quiesceAtEnd(t, a, "live")
	before := waitGroup(t, a, "live", 30*time.Second, "running, the liveness probe passing", func(st *api.GroupStatus) bool {
		if !allRunning(st) {
			return false
		}
		p, ok := probeNamed(containerNamed(t, st, "app"), "liveness")
		return ok && p.Result == "success"
	})
	waitHTTP(t, before.NetNS, "http://127.0.0.1:8080/health")
	oldApp, oldPeer := containerNamed(t, before, "app"), containerNamed(t, before, "peer")

	if code, body := nsDo(t, before.NetNS, "POST", "http://127.0.0.1:8080/write?path=/run/dead", "x"); code != 200 {
		t.Fatalf("write /run/dead: %d %s", code, body)
	}
	// Restarted, and its new task's liveness probe passes.
	after := waitGroup(t, a, "live", 20*time.Second, "app restarted and alive again", func(st *api.GroupStatus) bool {
		c := containerNamed(t, st, "app")
		if c.State != api.ContainerRunning || c.PID == oldApp.PID || c.Restarts == 0 {
			return false
		}
		p, ok := probeNamed(c, "liveness")
		return ok && p.Result == "success" && p.LastProbe.After(c.StartedAt)
	})
	app, peer := containerNamed(t, after, "app"), containerNamed(t, after, "peer")
	if app.Restarts != 1 {
		t.Errorf("app: %d restarts, want 1", app.Restarts)
	}
	if peer.PID != oldPeer.PID || peer.Restarts != 0 || peer.State != api.ContainerRunning {
		t.Errorf("peer: pid %d → %d, %d restarts, state %s; want the same task, untouched", oldPeer.PID, peer.PID, peer.Restarts, peer.State)
	}
	if evs := eventsOf(after, "app", "LivenessProbeFailed"); len(evs) != 1 {
		t.Errorf("app: %d LivenessProbeFailed events, want 1", len(evs))
	} else if !strings.Contains(evs[0].Message, "exit code 1") {
		t.Errorf("LivenessProbeFailed message %q does not give the probe's exit code", evs[0].Message)
	}
	// peer was started once and never stopped.
	if n := len(eventsOf(after, "peer", "Started")); n != 1 {
		t.Errorf("peer started %d times, want 1", n)
	}
	for _, reason := range []string{"Killing", "Exited"} {
		if evs := eventsOf(after, "peer", reason); len(evs) > 0 {
			t.Errorf("peer: %s events: %v", reason, evs)
		}
	}
	if after.State != api.GroupRunning || after.Restarts != 1 {
		t.Errorf("group: state %s, %d restarts; want Running, 1", after.State, after.Restarts)
	}
	checkLegalTransitions(t, after)
}

// TestReadinessFlipsReadyBothWays proves that a failing readiness probe
// makes the container and the group not Ready without restarting
// anything, and a passing one makes them Ready again, with events each
// way.
func TestReadinessFlipsReadyBothWays(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "flip.toml", `name = "flip"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["serve", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "100ms", timeout = "100ms" }
`)
	ready := func(want bool) func(*api.GroupStatus) bool {
		return func(st *api.GroupStatus) bool {
			return allRunning(st) && st.Ready == want && st.Containers[0].Ready == want
		}
	}
	st := waitGroup(t, a, "flip", 30*time.Second, "ready", ready(true))
	pid := st.Containers[0].PID
	var since uint64 // events before the flips
	for _, e := range getGroup(t, a, "flip").Events {
		since = max(since, e.Seq)
	}

	for _, c := range []struct {
		v    string
		want bool
	}{{"false", false}, {"true", true}} {
		t0 := time.Now()
		if code, body := nsDo(t, st.NetNS, "POST", "http://127.0.0.1:8080/ready?v="+c.v, ""); code != 200 {
			t.Fatalf("POST /ready?v=%s: %d %s", c.v, code, body)
		}
		got := waitGroup(t, a, "flip", 2*time.Second, "ready = "+c.v, ready(c.want))
		t.Logf("ready=%s seen after %s", c.v, time.Since(t0).Round(time.Millisecond))
		p, _ := probeNamed(got.Containers[0], "readiness")
		if wantResult := map[bool]string{true: "success", false: "failure"}[c.want]; p.Result != wantResult {
			t.Errorf("ready=%s: readiness probe result %q, want %q", c.v, p.Result, wantResult)
		}
		if got.State != api.GroupRunning || got.Containers[0].PID != pid || got.Restarts != 0 {
			t.Errorf("ready=%s: state %s, pid %d (was %d), %d restarts; readiness must not restart anything",
				c.v, got.State, got.Containers[0].PID, pid, got.Restarts)
		}
	}

	// The flips' events, in order: the container's verdict, then the
	// group's condition, each way.
	st = getGroup(t, a, "flip")
	var got []string
	for _, e := range st.Events {
		if e.Seq > since && strings.Contains(e.Reason, "Ready") {
			got = append(got, e.Container+"/"+e.Reason)
		}
	}
	want := []string{"app/ContainerNotReady", "/NotReady", "app/ContainerReady", "/Ready"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events %v, want %v", got, want)
	}
	checkLegalTransitions(t, st)
}

// TestPostStartHookFailureRestarts proves that a failing post_start hook
// restarts its container again and again under restart = "always", with
// a PostStartHookFailed event and the failure in the hook's status, and
// that the container never counts as ready meanwhile.
func TestPostStartHookFailureRestarts(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "hook.toml", `name = "hook"
restart = "always"
grace_period = "1s"
restart_backoff = { initial = "100ms", max = "200ms" }
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep"]
post_start = { exec = { command = ["sh", "-c", "echo cannot warm up; exit 1"] } }
`)
	quiesceAtEnd(t, a, "hook")
	st := waitGroup(t, a, "hook", 30*time.Second, "app restarted twice", func(st *api.GroupStatus) bool {
		return len(st.Containers) == 1 && st.Containers[0].Restarts >= 2 && len(eventsOf(st, "app", "Started")) >= 3
	})
	app := st.Containers[0]
	h, ok := hookNamed(app, "post_start")
	if !ok {
		t.Fatalf("no post_start hook status: %+v", app.Hooks)
	}
	if h.Result != "failure" || !strings.Contains(h.Message, "exit code 1") || !strings.Contains(h.Message, "cannot warm up") {
		t.Errorf("post_start hook status %+v, want a failure with exit code 1 and the hook's output", h)
	}
	if n := len(eventsOf(st, "app", "PostStartHookFailed")); n < 2 {
		t.Errorf("%d PostStartHookFailed events, want at least 2", n)
	}
	if evs := eventsOf(st, "", "Ready"); len(evs) > 0 {
		t.Errorf("the group became Ready although post_start never succeeded: %v", evs)
	}
	checkLegalTransitions(t, st)
}

// TestPreStopRunsAndCountsAgainstGrace proves that the pre_stop hook runs
// before the stop signal and that its time is taken from the grace
// period: with a 2s grace and a 1s hook, a container that ignores SIGTERM
// is killed 2s after the stop request, not 3s.
func TestPreStopRunsAndCountsAgainstGrace(t *testing.T) {
	a := startAgent(t, agentOpts{})
	const grace = 2 * time.Second
	applyTOML(t, a, "drain.toml", `name = "drain"
grace_period = "2s"
restart = "never"
[[volume]]
name = "data"
type = "empty"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["sleep", "--ignore-term"]
pre_stop = { exec = { command = ["sh", "-c", "busybox sleep 1; echo pre > /data/pre"] } }
[[container.mount]]
volume = "data"
path = "/data"
`)
	waitGroup(t, a, "drain", 30*time.Second, "running", allRunning)

	start := time.Now()
	if err := a.api().Stop(context.Background(), "drain", true); err != nil {
		t.Fatal(err)
	}
	st := getGroup(t, a, "drain")
	app := st.Containers[0]
	if got := readTrim(t, volumeFile(a, "drain", "data", "pre")); got != "pre" {
		t.Errorf("pre_stop wrote %q, want \"pre\"", got)
	}
	if h, ok := hookNamed(app, "pre_stop"); !ok || h.Result != "success" {
		t.Errorf("pre_stop hook status %+v (found %v), want success", h, ok)
	}
	if app.ExitCode == nil || *app.ExitCode != 137 {
		t.Errorf("exit code %v, want 137 (SIGKILL at the end of the grace period)", app.ExitCode)
	}
	killedAfter := app.FinishedAt.Sub(start)
	t.Logf("killed %s after the stop request", killedAfter.Round(time.Millisecond))
	if killedAfter < grace || killedAfter > grace+300*time.Millisecond {
		t.Errorf("killed %s after the stop request, want within [2s, 2.3s]: the hook's second comes out of the grace period", killedAfter)
	}

	// The stop signal came after the hook: the app logged it ≥ 1s in.
	var termAt time.Time
	if err := a.api().Logs(context.Background(), "drain", api.LogOptions{Container: "app", Tail: -1}, func(e api.LogEntry) error {
		if strings.TrimSpace(e.Line) == "got SIGTERM" {
			termAt = e.Time
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if termAt.IsZero() {
		t.Errorf("the app never logged SIGTERM")
	} else if d := termAt.Sub(start); d < time.Second || d > grace {
		t.Errorf("SIGTERM %s after the stop request, want after the 1s hook and before the deadline", d)
	}
	checkLegalTransitions(t, st)
}

var restartingInRE = regexp.MustCompile(`restarting in (\S+)$`)

// TestBackoffGrowsAndResetsAfterHealthyRunning proves the restart
// backoff: the delay starts at initial, is multiplied by factor on every
// failure up to max, and goes back to initial after a run longer than
// reset_after; and each restart waits at least its delay.
func TestBackoffGrowsAndResetsAfterHealthyRunning(t *testing.T) {
	a := startAgent(t, agentOpts{})
	// Runs 1-4 fail after 0.1s, later runs after 1.2s (> reset_after).
	applyTOML(t, a, "flaky.toml", `name = "flaky"
restart = "always"
grace_period = "200ms"
restart_backoff = { initial = "200ms", factor = 2, max = "1s", reset_after = "1s" }
[[volume]]
name = "data"
type = "empty"
[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; if [ $n -le 4 ]; then sleep 0.1; else sleep 1.2; fi; exit 1"]
[[container.mount]]
volume = "data"
path = "/data"
`)
	quiesceAtEnd(t, a, "flaky")
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, 200 * time.Millisecond, 200 * time.Millisecond}
	st := waitGroup(t, a, "flaky", 30*time.Second, "7 starts", func(st *api.GroupStatus) bool {
		return len(eventsOf(st, "app", "Started")) > len(want)
	})
	starts, exits := eventsOf(st, "app", "Started"), eventsOf(st, "app", "Exited")
	var delays []time.Duration
	for _, e := range eventsOf(st, "", "ContainerExited") {
		m := restartingInRE.FindStringSubmatch(e.Message)
		if m == nil {
			t.Fatalf("BackOff event without a delay: %q", e.Message)
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatalf("BackOff event %q: %v", e.Message, err)
		}
		delays = append(delays, d)
	}
	if len(delays) < len(want) || len(exits) < len(want) {
		t.Fatalf("%d delays and %d exits for %d starts", len(delays), len(exits), len(starts))
	}
	for i, w := range want {
		// The gap from an exit to the next start: at least the delay,
		// and not much more.
		gap := starts[i+1].Time.Sub(exits[i].Time)
		t.Logf("restart %d: delay %s, exit → start %s", i+1, delays[i], gap.Round(time.Millisecond))
		if delays[i] != w {
			t.Errorf("restart %d: delay %s, want %s", i+1, delays[i], w)
		}
		if gap < delays[i] || gap > delays[i]+750*time.Millisecond {
			t.Errorf("restart %d: started %s after the exit, want the %s delay (+ up to 750ms to start)", i+1, gap, delays[i])
		}
	}
	checkLegalTransitions(t, st)
}
