package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

func stopGroup(name, grace, args string) string {
	return fmt.Sprintf(`name = %q
grace_period = %q
restart = "never"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = %s
`, name, grace, args)
}

func hasEvent(st *api.GroupStatus, reason string) bool {
	for _, e := range st.Events {
		if e.Reason == reason {
			return true
		}
	}
	return false
}

func TestStopLetsSIGTERMHandlerFinish(t *testing.T) {
	a := startAgent(t, agentOpts{})
	applyTOML(t, a, "term.toml", stopGroup("term", "10s", `["sleep", "--term-delay", "1s"]`))
	waitGroup(t, a, "term", 30*time.Second, "running", allRunning)

	start := time.Now()
	if err := a.api().Stop(context.Background(), "term", true); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	st := getGroup(t, a, "term")
	c := st.Containers[0]
	if c.ExitCode == nil || *c.ExitCode != 0 {
		t.Fatalf("exit code = %v, want 0 (the handler's own exit)", c.ExitCode)
	}
	if took < time.Second || took > 5*time.Second {
		t.Errorf("stop took %s, want about the 1s the handler takes (grace is 10s)", took)
	}
	if hasEvent(st, "KilledAtGrace") {
		t.Errorf("a container that exits on SIGTERM was SIGKILLed")
	}
	if st.State != api.GroupStopped {
		t.Errorf("state = %s, want Stopped", st.State)
	}
}

func TestStopEscalatesToKillAtGrace(t *testing.T) {
	a := startAgent(t, agentOpts{})
	const grace = time.Second
	applyTOML(t, a, "stubborn.toml", stopGroup("stubborn", grace.String(), `["sleep", "--ignore-term"]`))
	waitGroup(t, a, "stubborn", 30*time.Second, "running", allRunning)

	start := time.Now()
	if err := a.api().Stop(context.Background(), "stubborn", true); err != nil {
		t.Fatal(err)
	}
	st := getGroup(t, a, "stubborn")
	c := st.Containers[0]
	if c.ExitCode == nil || *c.ExitCode != 137 {
		t.Fatalf("exit code = %v, want 137 (SIGKILL)", c.ExitCode)
	}
	if !hasEvent(st, "KilledAtGrace") {
		t.Errorf("no KilledAtGrace event")
	}
	// The error of the kill against the grace deadline: the time the task
	// exited, as containerd recorded it, minus the deadline.
	errAt := c.FinishedAt.Sub(start.Add(grace))
	t.Logf("SIGKILL-at-grace error: %s", errAt)
	if errAt < 0 {
		t.Errorf("killed %s before the grace period ended", -errAt)
	}
	if errAt > 250*time.Millisecond {
		t.Errorf("killed %s after the grace deadline, want < 250ms", errAt)
	}
}
