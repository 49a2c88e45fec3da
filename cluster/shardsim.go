package cluster

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// ShardStep is what one membership change did to a sharded group.
type ShardStep struct {
	// Moves counts the allocations whose node changed.
	Moves int
	// Optimum is the fewest moves any placement could make: T/(N+1) for a
	// node joining N nodes (its fair share), and T/(N+1) for one of N+1
	// nodes leaving (the fair share it held), T being the allocations.
	Optimum float64
	// MaxLoad and MeanLoad are the most allocations on one node and the
	// mean over the nodes after the change; Bound is the load bound then.
	MaxLoad  int
	MeanLoad float64
	Bound    int
	// Passes is how many scheduling passes the change took until a pass
	// proposed nothing (the last, empty one included).
	Passes int
}

// MoveRatio is Moves / Optimum.
func (s ShardStep) MoveRatio() float64 { return float64(s.Moves) / s.Optimum }

// LoadRatio is MaxLoad / MeanLoad.
func (s ShardStep) LoadRatio() float64 { return float64(s.MaxLoad) / s.MeanLoad }

// ShardResult is the outcome of ShardMoves.
type ShardResult struct {
	Shards, Replicas, Nodes int
	// Initial is the placement on Nodes nodes (Moves counts placements).
	Initial ShardStep
	// Join adds node Nodes+1; Leave then takes that node away again (it
	// leaves, its allocations move at once); Fail then kills the first of
	// the original nodes (when Nodes > Replicas), whose fair share was
	// T/Nodes; it may have held up to the bound, so Fail's ratio can reach
	// LoadFactor even when nothing moves needlessly.
	Join, Leave, Fail ShardStep
}

// ShardMoves simulates a sharded group of shards × replicas allocations on
// n nodes with the real Schedule and the real raftstore FSM: it places the
// group, adds one node, then lets that node leave, and reports the moves
// and loads of each step. Deterministic: the same arguments give the same
// result. It is the shard benchmark of `make bench` and the base of the
// shard tests; it fails when the scheduler does not settle (a pass after
// its own decision must propose nothing) or leaves an allocation unplaced
// or two replicas of a shard on one node.
func ShardMoves(shards, replicas, n int) (ShardResult, error) {
	names := make([]string, n+1)
	for i := range names {
		names[i] = simNodeName(i + 1)
	}
	return ShardMovesNamed("shardsim", shards, replicas, names)
}

// ShardMovesNamed is ShardMoves for a group and nodes of given names:
// nodes[:len(nodes)-1] are the first nodes, the last one joins and leaves.
// Rendezvous ranks depend on the names, so a test of real agents (nodes
// n1…n4, its own group name) simulates exactly its own case with it.
func ShardMovesNamed(groupName string, shards, replicas int, nodes []string) (ShardResult, error) {
	n := len(nodes) - 1
	res := ShardResult{Shards: shards, Replicas: replicas, Nodes: n}
	if shards < 1 || replicas < 1 || n < 1 {
		return res, fmt.Errorf("shard simulation: shards, replicas and nodes must be positive (got %d, %d, %d): %w",
			shards, replicas, n, api.ErrInvalid)
	}
	sim := newSimCluster()
	for _, name := range nodes[:n] {
		if err := sim.putNode(name, raftstore.NodeAlive); err != nil {
			return res, err
		}
	}
	group := raftstore.Group{Name: groupName, Spec: api.GroupSpec{
		Name:      groupName,
		Placement: &api.PlacementSpec{Shards: shards, ShardReplicas: replicas},
	}}
	if err := sim.apply(raftstore.CmdPutGroup, group); err != nil {
		return res, err
	}
	var err error
	if res.Initial, err = sim.step(); err != nil {
		return res, fmt.Errorf("placing on %d nodes: %w", n, err)
	}
	total := float64(shards * replicas)
	res.Initial.Optimum = total

	joined := nodes[n]
	if err := sim.putNode(joined, raftstore.NodeAlive); err != nil {
		return res, err
	}
	if res.Join, err = sim.step(); err != nil {
		return res, fmt.Errorf("node %s joining: %w", joined, err)
	}
	res.Join.Optimum = total / float64(n+1)

	if err := sim.putNode(joined, raftstore.NodeLeft); err != nil {
		return res, err
	}
	if res.Leave, err = sim.step(); err != nil {
		return res, fmt.Errorf("node %s leaving: %w", joined, err)
	}
	res.Leave.Optimum = total / float64(n+1)

	if n > replicas {
		failed := nodes[0]
		if err := sim.putNode(failed, raftstore.NodeDead); err != nil {
			return res, err
		}
		if res.Fail, err = sim.step(); err != nil {
			return res, fmt.Errorf("node %s failing: %w", failed, err)
		}
		res.Fail.Optimum = total / float64(n)
	}
	return res, nil
}

func simNodeName(i int) string { return fmt.Sprintf("node-%02d", i) }

// simCluster drives a raftstore.FSM directly, as raft would.
type simCluster struct {
	fsm   *raftstore.FSM
	index uint64
	now   time.Time
}

func newSimCluster() *simCluster {
	return &simCluster{fsm: raftstore.NewFSM(), now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (s *simCluster) apply(t raftstore.CommandType, payload any) error {
	cmd, err := raftstore.NewCommand(t, payload)
	if err != nil {
		return err
	}
	cmd.Time = s.now
	return s.applyCommand(cmd)
}

func (s *simCluster) applyCommand(cmd raftstore.Command) error {
	data, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", cmd, err)
	}
	s.index++
	if err, ok := s.fsm.Apply(&raft.Log{Index: s.index, Type: raft.LogCommand, Data: data}).(error); ok {
		return err
	}
	return nil
}

func (s *simCluster) putNode(name string, status raftstore.NodeStatus) error {
	return s.apply(raftstore.CmdPutNode, raftstore.NodeInfo{Name: name, Status: status})
}

// reportRunning reports every placed allocation Running and Ready, as
// their agents would once they started them.
func (s *simCluster) reportRunning(st raftstore.State) error {
	var ups []raftstore.AllocationStatus
	for _, id := range slices.Sorted(maps.Keys(st.Allocations)) {
		a := st.Allocations[id]
		if a.Node != "" && (a.Status != api.GroupRunning || !a.Ready) {
			ups = append(ups, raftstore.AllocationStatus{ID: id, Generation: a.Generation, Node: a.Node, Status: api.GroupRunning, Ready: true})
		}
	}
	if len(ups) == 0 {
		return nil
	}
	return s.apply(raftstore.CmdSetAllocationStatus, raftstore.SetAllocationStatus{Updates: ups})
}

// step runs passes until one proposes nothing, measures the change, and
// reports the allocations running, as their agents would.
func (s *simCluster) step() (ShardStep, error) {
	var st ShardStep
	before := s.fsm.State()
	for st.Passes = 1; ; st.Passes++ {
		if st.Passes > 5 {
			return st, fmt.Errorf("the scheduler did not settle after %d passes", st.Passes-1)
		}
		s.now = s.now.Add(time.Second)
		d := Schedule(s.fsm.State(), s.now, Options{})
		if d.Empty() {
			break
		}
		for _, c := range d.Commands {
			if err := s.applyCommand(c); err != nil {
				return st, fmt.Errorf("applying %s: %w", c, err)
			}
		}
	}
	after := s.fsm.State()
	if err := s.reportRunning(after); err != nil {
		return st, err
	}
	load := map[string]int{}
	for id, a := range after.Allocations {
		if a.Node == "" {
			return st, fmt.Errorf("allocation %s is unplaced: %s", id, a.Pending)
		}
		if b, ok := before.Allocations[id]; ok && b.Node != a.Node {
			st.Moves++
		} else if !ok {
			st.Moves++
		}
		load[a.Node]++
	}
	seen := map[string]string{}
	for id, a := range after.Allocations {
		key := fmt.Sprintf("%s/%d@%s", a.Group, a.Shard, a.Node)
		if other, dup := seen[key]; dup {
			return st, fmt.Errorf("allocations %s and %s of one shard are both on %s", other, id, a.Node)
		}
		seen[key] = id
	}
	alive := 0
	for _, n := range after.Nodes {
		if n.Status == raftstore.NodeAlive {
			alive++
			st.MaxLoad = max(st.MaxLoad, load[n.Name])
		}
	}
	st.MeanLoad = float64(len(after.Allocations)) / float64(alive)
	st.Bound = shardBound(len(after.Allocations), alive, DefaultLoadFactor)
	return st, nil
}
