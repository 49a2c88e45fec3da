package cluster

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// rolledOut builds a world with group web (replicas on as many nodes),
// placed, Running and Ready, its first rollout complete.
func rolledOut(t *testing.T, pl api.PlacementSpec) (*world, api.GroupSpec) {
	t.Helper()
	w := newWorld(t)
	for i := range pl.Replicas {
		w.node(simNodeName(i + 1))
	}
	s := gspec("web", pl, 100)
	w.putSpec(s)
	w.settle()
	w.reportAll("web")
	w.settle()
	if r := w.group("web").Rollout; r == nil || r.State != raftstore.RolloutComplete {
		t.Fatalf("first rollout: %+v, want complete", r)
	}
	return w, s
}

func withImage(s api.GroupSpec, image string) api.GroupSpec {
	s.Containers = slices.Clone(s.Containers)
	s.Containers[0].Image = image
	return s
}

// rewritten returns the IDs a decision rewrote, sorted.
func rewritten(d Decision) []string {
	var out []string
	for _, a := range d.Plan.Put {
		out = append(out, a.ID)
	}
	slices.Sort(out)
	return out
}

func TestRollingUpdateGoesInBatchesOfMaxParallel(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 5, MaxParallel: 2})
	before := w.nodes("web")
	w.advance(time.Second)
	w.putSpec(withImage(s, "registry.example/app:2"))

	d := w.step()
	if got := rewritten(d); !slices.Equal(got, []string{"web.0", "web.1"}) {
		t.Fatalf("first batch %v, want web.0 and web.1 (actions %q)", got, d.Actions)
	}
	for _, a := range d.Plan.Put {
		if a.Node != before[a.ID] || a.GroupGeneration != 2 || a.Status != "" || a.Ready || !a.PlacedAt.Equal(w.now) ||
			a.Spec.Containers[0].Image != "registry.example/app:2" {
			t.Errorf("rewrite %+v: want same node, generation 2, new image, status cleared, PlacedAt now", a)
		}
	}
	if want := w.now.Add(time.Duration(api.DefaultHealthyDeadline)); !w.schedule().Next.Equal(want) {
		t.Errorf("Next = %v, want the healthy deadline %v", w.schedule().Next, want)
	}

	// One of the batch ready is not enough: batches, not a window.
	w.advance(time.Second)
	w.report(api.GroupRunning, true, "web.0")
	w.report(api.GroupStarting, false, "web.1")
	if d := w.step(); !d.Empty() {
		t.Fatalf("next batch started before the whole batch was ready: %q", d.Actions)
	}
	w.report(api.GroupRunning, true, "web.1")
	if got := rewritten(w.step()); !slices.Equal(got, []string{"web.2", "web.3"}) {
		t.Fatalf("second batch %v, want web.2 and web.3", got)
	}
	w.report(api.GroupRunning, true, "web.2", "web.3")
	if got := rewritten(w.step()); !slices.Equal(got, []string{"web.4"}) {
		t.Fatalf("last batch %v, want web.4", got)
	}
	if d := w.step(); !d.Empty() {
		t.Fatalf("rollout finished before web.4 was ready: %q", d.Actions)
	}
	w.report(api.GroupRunning, true, "web.4")
	d = w.step()
	if len(d.Rollouts) != 1 || d.Rollouts[0].Rollout.State != raftstore.RolloutComplete {
		t.Fatalf("rollouts %+v, want complete", d.Rollouts)
	}
	if r := w.group("web").Rollout; r.State != raftstore.RolloutComplete || r.Generation != 2 {
		t.Errorf("rollout %+v, want generation 2 complete", r)
	}
	for id, n := range w.nodes("web") {
		if n != before[id] {
			t.Errorf("%s moved from %s to %s during the rollout", id, before[id], n)
		}
	}
	if d := w.step(); !d.Empty() {
		t.Errorf("a pass after completion decided %q", d.Actions)
	}
}

func TestRollingUpdateReplacesUnhealthyFirst(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 3, MaxParallel: 1})
	w.report(api.GroupBackOff, false, "web.2")
	w.putSpec(withImage(s, "registry.example/app:2"))
	if got := rewritten(w.step()); !slices.Equal(got, []string{"web.2"}) {
		t.Errorf("first batch %v, want web.2, which was not running anyway", got)
	}
}

func TestRollingUpdateRevertsAfterHealthyDeadline(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 3, MaxParallel: 1, HealthyDeadline: api.Duration(time.Minute)})
	w.advance(time.Second)
	w.putSpec(withImage(s, "registry.example/broken:2"))
	if got := rewritten(w.step()); !slices.Equal(got, []string{"web.0"}) {
		t.Fatalf("first batch %v, want web.0", got)
	}
	placed := w.now
	w.advance(10 * time.Second)
	w.report(api.GroupBackOff, false, "web.0")
	w.advance(49 * time.Second)
	d := w.step()
	if !d.Empty() {
		t.Fatalf("reverted before the deadline: %q", d.Actions)
	}
	if want := placed.Add(time.Minute); !d.Next.Equal(want) {
		t.Errorf("Next = %v, want the deadline %v", d.Next, want)
	}
	w.advance(time.Second)
	d = w.step()
	if len(d.Reverts) != 1 || d.Reverts[0].Spec.Containers[0].Image != s.Containers[0].Image {
		t.Fatalf("reverts %+v, want web back to %s (actions %q)", d.Reverts, s.Containers[0].Image, d.Actions)
	}
	if !hasAction(d.Actions, "web.0 is not Running and Ready within healthy_deadline 1m0s") {
		t.Errorf("actions do not say why: %q", d.Actions)
	}
	if d.Reverts[0].Generation != 3 {
		t.Errorf("revert proposes generation %d, want 3 explicitly (a newer spec must make it conflict)", d.Reverts[0].Generation)
	}
	g := w.group("web")
	if g.Generation != 3 || g.Rollout == nil || !g.Rollout.Revert || g.Rollout.State != raftstore.RolloutProgressing {
		t.Fatalf("group after the revert: generation %d rollout %+v; want generation 3, a progressing revert", g.Generation, g.Rollout)
	}

	// The healthy replicas run the spec reverted to: rewritten without a
	// restart; the broken one is replaced.
	d = w.step()
	for _, a := range d.Plan.Put {
		if a.GroupGeneration != 3 {
			t.Errorf("%s at group generation %d, want 3", a.ID, a.GroupGeneration)
		}
		switch a.ID {
		case "web.1", "web.2":
			if a.Status != api.GroupRunning || !a.Ready {
				t.Errorf("%s lost its status (%q, ready %v): it must not restart", a.ID, a.Status, a.Ready)
			}
		case "web.0":
			if a.Status != "" || a.Spec.Containers[0].Image != s.Containers[0].Image {
				t.Errorf("web.0 %+v: want the old image, status cleared", a)
			}
		}
	}
	if got := rewritten(d); !slices.Equal(got, []string{"web.0", "web.1", "web.2"}) {
		t.Fatalf("revert pass rewrote %v, want all three", got)
	}
	w.report(api.GroupRunning, true, "web.0")
	d = w.step()
	if len(d.Rollouts) != 1 || d.Rollouts[0].Rollout.State != raftstore.RolloutReverted {
		t.Fatalf("rollouts %+v, want reverted", d.Rollouts)
	}
	if r := w.group("web").Rollout; r.State != raftstore.RolloutReverted || !r.Revert {
		t.Errorf("rollout %+v, want reverted", r)
	}
	if d := w.step(); !d.Empty() {
		t.Errorf("a pass after the revert decided %q", d.Actions)
	}
}

func TestFailedRevertIsMarkedFailed(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 2, MaxParallel: 1, HealthyDeadline: api.Duration(time.Minute)})
	w.putSpec(withImage(s, "registry.example/broken:2"))
	w.step()
	w.advance(time.Minute)
	w.step() // revert
	w.step() // web.0 back to the old spec
	w.report(api.GroupBackOff, false, "web.0")
	w.advance(time.Minute)
	d := w.step()
	if len(d.Reverts) != 0 || len(d.Rollouts) != 1 || d.Rollouts[0].Rollout.State != raftstore.RolloutFailed {
		t.Fatalf("reverts %+v rollouts %+v: a failing revert must be marked failed, not reverted again", d.Reverts, d.Rollouts)
	}
	r := w.group("web").Rollout
	if r.State != raftstore.RolloutFailed || !strings.Contains(r.Reason, "reverting to the previous spec failed too") {
		t.Errorf("rollout %+v", r)
	}
	if d := w.step(); !d.Empty() {
		t.Errorf("a pass after the failure decided %q", d.Actions)
	}
}

func TestNewGroupThatNeverGetsReadyFails(t *testing.T) {
	w := newWorld(t)
	w.node("n1")
	w.putSpec(gspec("web", api.PlacementSpec{HealthyDeadline: api.Duration(time.Minute)}, 100))
	w.settle()
	w.advance(time.Minute)
	w.settle()
	r := w.group("web").Rollout
	if r.State != raftstore.RolloutFailed || !strings.Contains(r.Reason, "no previous spec to revert to") {
		t.Errorf("rollout %+v, want failed: nothing to revert to", r)
	}
}

func TestPlacementOnlyChangeRewritesAllAtOnce(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 4, MaxParallel: 1})
	before := w.nodes("web")
	changed := s
	pl := *s.Placement
	pl.MaxParallel = 3
	pl.HealthyDeadline = api.Duration(time.Hour)
	changed.Placement = &pl
	w.putSpec(changed)
	d := w.step()
	if got := rewritten(d); len(got) != 4 {
		t.Fatalf("rewrote %v, want all 4 at once (actions %q)", got, d.Actions)
	}
	for _, a := range d.Plan.Put {
		if a.Node != before[a.ID] || a.GroupGeneration != 2 || a.Status != api.GroupRunning || !a.Ready ||
			a.Spec.Placement.MaxParallel != 3 {
			t.Errorf("rewrite %+v: want same node, generation 2, status kept, new placement", a)
		}
	}
	if len(d.Rollouts) != 1 || d.Rollouts[0].Rollout.State != raftstore.RolloutComplete {
		t.Errorf("rollouts %+v, want complete in the same pass", d.Rollouts)
	}
	if d := w.step(); !d.Empty() {
		t.Errorf("a pass after the rewrite decided %q", d.Actions)
	}
}

func TestMovedAllocationTakesTheNewSpecAndCountsAsInFlight(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 3, MaxParallel: 1})
	w.node("spare")
	w.putSpec(withImage(s, "registry.example/app:2"))
	w.node(w.alloc("web.2").Node, withStatus(raftstore.NodeDead))
	d := w.step()
	var moved raftstore.Allocation
	for _, a := range d.Plan.Put {
		if a.ID == "web.2" {
			moved = a
		}
	}
	if moved.Node != "spare" || moved.GroupGeneration != 2 {
		t.Fatalf("web.2 %+v: want moved to spare at generation 2", moved)
	}
	if got := rewritten(d); !slices.Equal(got, []string{"web.2"}) {
		t.Errorf("pass wrote %v: the moved allocation is this pass's batch (%q)", got, d.Actions)
	}
}

func TestSameWorkload(t *testing.T) {
	base := gspec("web", api.PlacementSpec{Replicas: 2}, 100)
	placement := base
	placement.Placement = &api.PlacementSpec{Replicas: 5, MaxParallel: 3}
	image := withImage(base, "registry.example/app:2")
	for _, tc := range []struct {
		name string
		a, b *api.GroupSpec
		want bool
	}{
		{"identical", &base, &base, true},
		{"only [placement] differs", &base, &placement, true},
		{"the image differs", &base, &image, false},
		{"nil and a spec", nil, &base, false},
		{"nil and nil", nil, nil, true},
	} {
		if got := SameWorkload(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: SameWorkload = %v, want %v", tc.name, got, tc.want)
		}
	}
	if base.Placement.Replicas != 2 {
		t.Errorf("SameWorkload changed its argument")
	}
}

func TestRevertLosesToANewerSpec(t *testing.T) {
	w, s := rolledOut(t, api.PlacementSpec{Replicas: 1, HealthyDeadline: api.Duration(time.Minute)})
	w.putSpec(withImage(s, "registry.example/broken:2"))
	w.step()
	w.advance(time.Minute)
	d := w.schedule()
	if len(d.Reverts) != 1 {
		t.Fatalf("no revert decided: %q", d.Actions)
	}
	// The operator applies a fix before the revert is proposed.
	w.putSpec(withImage(s, "registry.example/fixed:3"))
	for _, c := range d.Commands {
		if c.Type != raftstore.CmdPutGroup {
			continue
		}
		if err := w.applyCommand(c); !errors.Is(err, api.ErrConflict) {
			t.Errorf("the stale revert applied over the newer spec: %v", err)
		}
	}
	if img := w.group("web").Spec.Containers[0].Image; img != "registry.example/fixed:3" {
		t.Errorf("group runs %s, want the operator's fix", img)
	}
}
