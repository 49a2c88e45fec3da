package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// world is a cluster for scheduler tests: the real raftstore FSM, fed the
// commands Schedule decides, with a clock the test moves.
type world struct {
	t *testing.T
	*simCluster
	opts Options
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return &world{t: t, simCluster: newSimCluster()}
}

func (w *world) must(t raftstore.CommandType, payload any) {
	w.t.Helper()
	if err := w.apply(t, payload); err != nil {
		w.t.Fatalf("applying %s: %v", t, err)
	}
}

// node puts an alive node; mods change it first.
func (w *world) node(name string, mods ...func(*raftstore.NodeInfo)) {
	w.t.Helper()
	n, ok := w.fsm.Node(name)
	if !ok {
		n = raftstore.NodeInfo{Name: name, Status: raftstore.NodeAlive}
	}
	for _, m := range mods {
		m(&n)
	}
	n.UpdatedAt, n.Index = time.Time{}, 0 // stamped with the command's time, as membership does
	w.must(raftstore.CmdPutNode, n)
}

func withStatus(s raftstore.NodeStatus) func(*raftstore.NodeInfo) {
	return func(n *raftstore.NodeInfo) { n.Status = s }
}

func withLabels(kv ...string) func(*raftstore.NodeInfo) {
	return func(n *raftstore.NodeInfo) {
		n.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withCapacity(cpu api.MilliCPU, mem api.ByteSize) func(*raftstore.NodeInfo) {
	return func(n *raftstore.NodeInfo) { n.Capacity = api.Resources{CPU: cpu, Memory: mem} }
}

func (w *world) drain(name string, on bool) {
	w.t.Helper()
	w.must(raftstore.CmdSetNodeDrain, raftstore.NodeDrain{Name: name, Drain: on})
}

// gspec is a group spec with one container asking cpu.
func gspec(name string, pl api.PlacementSpec, cpu api.MilliCPU) api.GroupSpec {
	return api.GroupSpec{
		Name:      name,
		Placement: &pl,
		Containers: []api.ContainerSpec{{
			Name: "app", Image: "registry.example/app:1",
			Resources: api.ResourceSpec{Requests: api.RequestSpec{CPU: cpu}},
		}},
	}
}

func (w *world) putSpec(s api.GroupSpec) {
	w.t.Helper()
	w.must(raftstore.CmdPutGroup, raftstore.Group{Name: s.Name, Spec: s})
}

func (w *world) group(name string) raftstore.Group {
	w.t.Helper()
	g, ok := w.fsm.Group(name)
	if !ok {
		w.t.Fatalf("group %s does not exist", name)
	}
	return g
}

func (w *world) scale(name string, replicas int, shard *int) {
	w.t.Helper()
	w.must(raftstore.CmdScaleGroup, raftstore.ScaleGroup{Name: name, Replicas: replicas, Shard: shard})
}

func (w *world) schedule() Decision {
	return Schedule(w.fsm.State(), w.now, w.opts)
}

// step schedules once and applies the decision.
func (w *world) step() Decision {
	w.t.Helper()
	d := w.schedule()
	for _, c := range d.Commands {
		if err := w.applyCommand(c); err != nil {
			w.t.Fatalf("the FSM rejected %s: %v\nactions:\n  %s", c, err, strings.Join(d.Actions, "\n  "))
		}
	}
	return d
}

// settle steps until a pass decides nothing, which must be the pass right
// after the last one that decided something: one pass does all there is to
// do. The exception is a revert, a new group generation that the next pass
// rolls out. It returns the actions of every pass.
func (w *world) settle() []string {
	w.t.Helper()
	var actions []string
	for {
		d := w.step()
		if d.Empty() {
			return actions
		}
		actions = append(actions, d.Actions...)
		if len(d.Reverts) > 0 {
			continue
		}
		if again := w.step(); !again.Empty() {
			w.t.Fatalf("the scheduler does not settle in one pass; the first decided:\n  %s\nthe second:\n  %s",
				strings.Join(d.Actions, "\n  "), strings.Join(again.Actions, "\n  "))
		}
		return actions
	}
}

func (w *world) advance(d time.Duration) { w.now = w.now.Add(d) }

func (w *world) alloc(id string) raftstore.Allocation {
	w.t.Helper()
	a, ok := w.fsm.Allocation(id)
	if !ok {
		w.t.Fatalf("allocation %s does not exist", id)
	}
	return a
}

// nodes maps each allocation of group to its node ("" unplaced).
func (w *world) nodes(group string) map[string]string {
	out := map[string]string{}
	for _, a := range w.fsm.Allocations() {
		if a.Group == group {
			out[a.ID] = a.Node
		}
	}
	return out
}

// load counts group's allocations per node.
func (w *world) load(group string) map[string]int {
	out := map[string]int{}
	for _, a := range w.fsm.Allocations() {
		if a.Group == group && a.Node != "" {
			out[a.Node]++
		}
	}
	return out
}

// report records status for allocations as their agent would.
func (w *world) report(status api.GroupState, ready bool, ids ...string) {
	w.t.Helper()
	var ups []raftstore.AllocationStatus
	for _, id := range ids {
		a := w.alloc(id)
		ups = append(ups, raftstore.AllocationStatus{ID: id, Generation: a.Generation, Node: a.Node, Status: status, Ready: ready})
	}
	w.must(raftstore.CmdSetAllocationStatus, raftstore.SetAllocationStatus{Updates: ups})
}

// reportAll marks every placed allocation of group Running and Ready.
func (w *world) reportAll(group string) {
	w.t.Helper()
	var ids []string
	for id, n := range w.nodes(group) {
		if n != "" {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > 0 {
		w.report(api.GroupRunning, true, ids...)
	}
}

func describePlacement(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s→%q ", k, m[k])
	}
	return b.String()
}

func hasAction(lines []string, sub string) bool {
	for _, l := range lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}
