package supervisor

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func TestRestartTrackerDelays(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 5 * time.Second, Factor: 2, ResetAfter: time.Minute}
	type step struct {
		startFailure bool
		recoverable  bool
		code         uint32
		ranFor       time.Duration // how long the container ran before it exited
		reset        bool          // call reset before this step
		restart      bool
		delay        time.Duration
	}
	exit := func(code uint32, ranFor time.Duration, restart bool, delay time.Duration) step {
		return step{recoverable: true, code: code, ranFor: ranFor, restart: restart, delay: delay}
	}
	s := time.Second
	for _, tc := range []struct {
		name   string
		policy api.RestartPolicy
		steps  []step
	}{
		{"always: initial, ×factor, capped at max", api.RestartAlways, []step{
			exit(1, s, true, s), exit(0, s, true, 2*s), exit(1, s, true, 4*s), exit(1, s, true, 5*s), exit(0, s, true, 5*s)}},
		{"reset after ResetAfter of running", api.RestartAlways, []step{
			exit(1, s, true, s), exit(1, s, true, 2*s), exit(1, 2*time.Minute, true, s), exit(1, s, true, 2*s)}},
		{"an unknown start time never resets", api.RestartAlways, []step{
			exit(1, 0, true, s), exit(1, 0, true, 2*s)}},
		{"on-failure restarts non-zero only", api.RestartOnFailure, []step{
			exit(3, s, true, s), exit(0, s, false, 0), exit(137, s, true, 2*s)}},
		{"never", api.RestartNever, []step{exit(1, s, false, 0), exit(0, s, false, 0)}},
		{"start failures share the counter", api.RestartAlways, []step{
			{startFailure: true, recoverable: true, restart: true, delay: s},
			{startFailure: true, recoverable: true, restart: true, delay: 2 * s},
			exit(1, s, true, 4*s),
			{startFailure: true, recoverable: false},
			{startFailure: true, recoverable: true, reset: true, restart: true, delay: s}}},
		{"not recoverable never restarts", api.RestartAlways, []step{{code: 1, ranFor: s}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newRestartTracker(tc.policy, b)
			now := time.Now()
			for i, st := range tc.steps {
				if st.reset {
					tr.reset()
				}
				var d Decision
				if st.startFailure {
					d = tr.onStartFailure(st.recoverable)
				} else {
					started := time.Time{}
					if st.ranFor > 0 {
						started = now.Add(-st.ranFor)
					}
					d = tr.onExit(st.code, started, now, st.recoverable)
				}
				if d.Restart != st.restart || d.Delay != st.delay {
					t.Errorf("step %d: restart %v after %s; want %v after %s", i, d.Restart, d.Delay, st.restart, st.delay)
				}
				if !d.Restart && d.Reason == "" {
					t.Errorf("step %d: no restart and no reason", i)
				}
			}
		})
	}
}

func TestRestartPolicyInGroup(t *testing.T) {
	type exit struct {
		name    string
		code    uint32
		restart bool
	}
	for _, tc := range []struct {
		name   string
		policy api.RestartPolicy
		exits  []exit
		state  api.GroupState
		reason string
	}{
		{"always after 0", api.RestartAlways, []exit{{"a", 0, true}}, api.GroupRunning, ""},
		{"always after 1", api.RestartAlways, []exit{{"a", 1, true}}, api.GroupRunning, ""},
		{"on-failure after 1", api.RestartOnFailure, []exit{{"a", 1, true}}, api.GroupRunning, ""},
		{"on-failure after 0, other running", api.RestartOnFailure, []exit{{"a", 0, false}}, api.GroupRunning, "ContainerExited"},
		{"on-failure, all exit 0", api.RestartOnFailure, []exit{{"a", 0, false}, {"b", 0, false}}, api.GroupStopped, "Completed"},
		{"never, all exit 0", api.RestartNever, []exit{{"a", 0, false}, {"b", 0, false}}, api.GroupStopped, "Completed"},
		{"never, one exits 3", api.RestartNever, []exit{{"a", 0, false}, {"b", 3, false}}, api.GroupFailed, "ContainerFailed"},
		{"on-failure, one gives up", api.RestartOnFailure, []exit{{"b", 2, true}, {"a", 0, false}}, api.GroupRunning, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.start()
			g := testGroup("web", 1, "a", "b")
			g.Spec.Restart = tc.policy
			h.sup.Set(g)
			h.waitRunning("web", 2)
			starts := map[string]int{"a": 1, "b": 1}
			for _, e := range tc.exits {
				id := ContainerID("web", e.name)
				if !h.rt.exit(id, e.code) {
					t.Fatalf("%s was not running", id)
				}
				if e.restart {
					starts[e.name]++
					eventually(t, id+" restarted", func() bool {
						_, up := h.rt.running(id)
						return up && h.rt.count("StartTask", id) == starts[e.name]
					})
					continue
				}
				eventually(t, id+" given up", func() bool {
					return slices.ContainsFunc(h.eventsOf("ContainerExited"), func(ev api.Event) bool {
						return strings.Contains(ev.Message, fmt.Sprintf("container %s exited with code %d, not restarted", e.name, e.code))
					}) || slices.ContainsFunc(h.eventsOf(""), func(ev api.Event) bool {
						return (ev.Reason == "Completed" || ev.Reason == "ContainerFailed") && e.name == tc.exits[len(tc.exits)-1].name
					})
				})
			}
			if tc.reason != "" {
				eventually(t, tc.reason+" event", func() bool { return len(h.eventsOf(tc.reason)) > 0 })
			}
			consistently(t, 100*time.Millisecond, "no restart after "+tc.name, func() bool {
				return h.rt.count("StartTask", "web.a") == starts["a"] && h.rt.count("StartTask", "web.b") == starts["b"]
			}, func() string {
				return fmt.Sprintf("StartTask called %d/%d times for a/b; want %d/%d", h.rt.count("StartTask", "web.a"),
					h.rt.count("StartTask", "web.b"), starts["a"], starts["b"])
			})
			st := h.waitState("web", tc.state, tc.reason)
			total := 0
			for _, n := range []string{"a", "b"} {
				if got := containerStatus(st, n).Restarts; got != starts[n]-1 {
					t.Errorf("%s: %d restarts in status; want %d", n, got, starts[n]-1)
				}
				total += starts[n] - 1
			}
			if st.Restarts != total {
				t.Errorf("group restarts %d; want %d", st.Restarts, total)
			}
		})
	}
}

func containerStatus(st api.GroupStatus, name string) api.ContainerStatus {
	for _, c := range st.Containers {
		if c.Name == name {
			return c
		}
	}
	return api.ContainerStatus{}
}

func TestRestartBackoffGrows(t *testing.T) {
	h := newHarness(t) // testBackoff: 10ms ×2 up to 40ms
	h.start()
	h.sup.Set(testGroup("web", 1, "app"))
	h.waitRunning("web", 1)
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond}
	for i, d := range want {
		exitAt := time.Now()
		h.rt.exit("web.app", 1)
		eventually(t, fmt.Sprintf("restart %d", i+1), func() bool {
			_, up := h.rt.running("web.app")
			return up && h.rt.count("StartTask", "web.app") == i+2
		})
		if got := h.rt.callsOf("StartTask", "web.app")[i+1].At.Sub(exitAt); got < d {
			t.Errorf("restart %d after %s; want no earlier than %s", i+1, got, d)
		}
	}
	var got []string
	for _, e := range h.eventsOf("ContainerExited") {
		_, after, _ := strings.Cut(e.Message, "restarting in ")
		got = append(got, after)
	}
	if fmt.Sprint(got) != "[10ms 20ms 40ms 40ms]" {
		t.Errorf("back-off delays %v; want [10ms 20ms 40ms 40ms]", got)
	}
	st := h.waitRunning("web", 1)
	if st.Restarts != 4 || st.Containers[0].Restarts != 4 {
		t.Errorf("restarts %d (container %d); want 4", st.Restarts, st.Containers[0].Restarts)
	}
}
