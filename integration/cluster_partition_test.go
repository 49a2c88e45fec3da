package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// nowhereGroup is a cluster group whose constraint no node matches: a
// write to the Raft state and nothing else.
func nowhereGroup(name string) string {
	return fmt.Sprintf(`name = %q
[placement]
constraints = ["berth-test-nowhere"]
[[container]]
name = "app"
image = "berth.local/busybox:latest"
command = ["sleep", "1000"]
`, name)
}

// TestClusterPartitionMinorityCannotWriteAndHealedNodeConverges runs three
// agents in network namespaces of their own (clusterOpts.Netns), cuts one
// follower off the others and proves the three halves of a partition:
//
//   - the minority cannot write: an apply through it fails with a "no Raft
//     leader" error, and it is not applied later either;
//   - the majority carries on: it applies a change and re-places the
//     minority's allocation on its own nodes;
//   - the healed node converges (same leader, same applied index) and
//     stops its stale allocation (its generation is not the state's),
//     while the replacement keeps running untouched.
func TestClusterPartitionMinorityCannotWriteAndHealedNodeConverges(t *testing.T) {
	c := startCluster(t, clusterOpts{N: 3, Netns: true})
	leader := c.leader()
	// Two replicas, at most one per node: the cut-off node's replica has
	// exactly one place to go, and nothing moves back when it returns.
	applyTOML(t, c.Agents[leader], "hello.toml", helloGroup("hello", 2, "node"))
	g := waitClusterGroup(t, c.Agents[leader], "hello", 60*time.Second, "2 replicas ready", allReady(2))
	// The victim: a follower running a replica (of two replicas on two
	// nodes, at least one is on a follower).
	victim := -1
	var stale api.Allocation
	for _, al := range g.Allocations {
		for i := range c.Agents {
			if clusterNodeName(i) == al.Node && i != leader {
				victim, stale = i, al
			}
		}
	}
	lost := clusterNodeName(victim)
	majority := c.Agents[3-leader-victim]
	stalePIDs := pids(waitGroup(t, c.Agents[victim], stale.ID, 10*time.Second, "running", allRunning))

	start := time.Now()
	c.partition(victim)
	t.Logf("cut %s off (it runs %s, generation %d)", lost, stale.ID, stale.Generation)

	// The minority: once it knows it has no leader, a write through it
	// must fail, with a reason, within the agent's 10s write timeout.
	waitFor(t, 15*time.Second, lost+" to lose its leader", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		info, err := c.Agents[victim].api().Raft(ctx)
		if err != nil {
			return false, err
		}
		return info.Leader == "", fmt.Errorf("%s still sees leader %q (state %s)", lost, info.Leader, info.State)
	})
	t.Logf("%s has no leader %s after the cut", lost, time.Since(start).Round(time.Millisecond))
	// The majority at the same time: it declares the victim dead and
	// re-places its allocation.
	majorityDone := make(chan error, 1)
	go func() {
		majorityDone <- waitClusterCond(majority, "hello", 30*time.Second, func(g *api.ClusterGroup) error {
			if err := allReady(2)(g); err != nil {
				return err
			}
			if nodesOf(g)[lost] > 0 {
				return fmt.Errorf("still placed on %s: %s", lost, describeAllocs(g))
			}
			return nil
		})
	}()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := c.Agents[victim].api().Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "minority.toml", Content: nowhereGroup("minority")}}})
	cancel()
	took := time.Since(t0)
	t.Logf("write through the minority: %v after %s", err, took.Round(time.Millisecond))
	switch {
	case err == nil:
		t.Fatalf("a write through the cut-off minority %s was acknowledged", lost)
	case !strings.Contains(err.Error(), "no Raft leader"):
		t.Errorf("write through the minority: error %q does not say that there is no Raft leader", err)
	case took > 20*time.Second:
		t.Errorf("write through the minority took %s to fail; the agent bounds writes at 10s", took)
	}
	if err := <-majorityDone; err != nil {
		t.Fatalf("majority: %v", err)
	}
	t.Logf("majority re-placed %s %s after the cut", stale.ID, time.Since(start).Round(time.Millisecond))
	applyTOML(t, majority, "majority.toml", nowhereGroup("majority"))
	g = clusterGroup(t, majority, "hello")
	replacements := map[string]api.Allocation{}
	for _, al := range g.Allocations {
		replacements[al.ID] = al
	}
	moved := replacements[stale.ID]
	if moved.Generation <= stale.Generation {
		t.Errorf("%s re-placed on %s at generation %d, not above the stale %d", stale.ID, moved.Node, moved.Generation, stale.Generation)
	}
	replacementPIDs := map[string]map[string]uint32{}
	for _, al := range g.Allocations {
		for i := range c.Agents {
			if clusterNodeName(i) == al.Node {
				replacementPIDs[al.ID] = pids(waitGroup(t, c.Agents[i], al.ID, 10*time.Second, "running", allRunning))
			}
		}
	}
	// The cut-off node still runs its copy: nothing told it otherwise.
	if st := getGroup(t, c.Agents[victim], stale.ID); st.State != api.GroupRunning {
		t.Errorf("%s on the cut-off node: %s, want still running while cut off", stale.ID, st.State)
	}

	healed := time.Now()
	c.heal(victim)
	c.waitConverged(60 * time.Second)
	t.Logf("membership converged %s after the heal", time.Since(healed).Round(time.Millisecond))
	waitFor(t, 30*time.Second, lost+" at the leader's applied index", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		li, err := c.Agents[c.leader()].api().Raft(ctx)
		if err != nil {
			return false, err
		}
		vi, err := c.Agents[victim].api().Raft(ctx)
		if err != nil {
			return false, err
		}
		if vi.Leader != li.Leader || vi.AppliedIndex != li.AppliedIndex || vi.Term != li.Term {
			return false, fmt.Errorf("%s: leader %s term %d applied %d; leader %s: term %d applied %d",
				lost, vi.Leader, vi.Term, vi.AppliedIndex, li.Node, li.Term, li.AppliedIndex)
		}
		return true, nil
	})
	waitFor(t, 30*time.Second, lost+" stops its stale "+stale.ID, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := c.Agents[victim].api().Get(ctx, stale.ID)
		if err != nil {
			return true, nil
		}
		return false, fmt.Errorf("%s still there: %s source %s gen %d reason %s", stale.ID, st.State, st.Source, st.Generation, st.Reason)
	})
	// Its containers are gone, not only its record.
	for name, pid := range stalePIDs {
		if processAlive(int(pid)) {
			t.Errorf("%s/%s (pid %d) still runs on %s after the heal", stale.ID, name, pid, lost)
		}
	}
	g = clusterGroup(t, majority, "hello")
	if err := allReady(2)(g); err != nil {
		t.Errorf("after the heal: %v", err)
	}
	for _, al := range g.Allocations {
		before := replacements[al.ID]
		if al.Node != before.Node || al.Generation != before.Generation {
			t.Errorf("%s was %s generation %d before the heal, %s generation %d after", al.ID, before.Node, before.Generation, al.Node, al.Generation)
		}
		for i := range c.Agents {
			if clusterNodeName(i) != al.Node {
				continue
			}
			now := pids(getGroup(t, c.Agents[i], al.ID))
			for name, pid := range replacementPIDs[al.ID] {
				if now[name] != pid {
					t.Errorf("%s/%s on %s restarted by the heal: pid %d → %d", al.ID, name, al.Node, pid, now[name])
				}
			}
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	local, err := c.Agents[victim].api().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range local {
		if strings.HasPrefix(st.Name, "hello.") {
			t.Errorf("%s runs %s (%s) after the heal; its replica lives elsewhere now", lost, st.Name, st.State)
		}
	}
	// The refused write stays refused: nothing applies it after the heal.
	gs, err := majority.api().ClusterGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, g := range gs {
		have[g.Name] = true
	}
	if have["minority"] {
		t.Errorf("the write refused by the minority was applied after the heal")
	}
	if !have["majority"] {
		t.Errorf("the majority's write is missing after the heal")
	}
}

// waitClusterCond is waitClusterGroup for another goroutine: it returns
// the last error instead of failing the test.
func waitClusterCond(a *agentProc, name string, timeout time.Duration, cond func(*api.ClusterGroup) error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g, err := a.api().ClusterGroup(ctx, name)
		cancel()
		if err == nil {
			err = cond(g)
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("cluster group %s after %s: %v", name, timeout, last)
}
