package supervisor

import (
	"fmt"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestHeldGroupThatCompletesStaysDone: a group first held (waiting for
// admission or a dependency), then released, runs once under restart =
// "never"; the end its policy decides is final, whatever Set comes after
// (the queue worker's item groups are such groups).
func TestHeldGroupThatCompletesStaysDone(t *testing.T) {
	h := newHarness(t)
	h.start()
	g := testGroup("once", 1, "a")
	g.Spec.Restart = api.RestartNever
	held := g
	held.Hold, held.HoldReason = "waiting for admission", "Pending"
	h.sup.Set(held)
	h.waitState("once", api.GroupPending, "Pending")
	h.sup.Set(g)
	h.waitRunning("once", 1)
	id := ContainerID("once", "a")
	if !h.rt.exit(id, 0) {
		t.Fatalf("%s was not running", id)
	}
	h.waitState("once", api.GroupStopped, "Completed")
	h.sup.Set(g) // the agent pushes the same desired state again
	consistently(t, 200*time.Millisecond, "ran once", func() bool { return h.rt.count("StartTask", id) == 1 },
		func() string { return fmt.Sprint(h.rt.callsOf("", "")) })
	if st, _ := h.sup.Status("once"); st.State != api.GroupStopped || st.Reason != "Completed" {
		t.Errorf("state %s (%s), want Stopped (Completed)", st.State, st.Reason)
	}
}
