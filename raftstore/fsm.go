package raftstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

// SnapshotFormat is the version of the snapshot encoding this build writes
// and the newest it restores. Format 2 added leases, queues and queue
// items (an older build must refuse it, not drop them); format 1
// snapshots restore with none.
const SnapshotFormat = 2

// Result is what the FSM returns for a command it applied: the log index
// and how many entries changed (0 for an idempotent repeat or an
// all-stale status report). A rejected command returns an error instead,
// and changes nothing.
type Result struct {
	Index   uint64
	Changed int
}

// FSM is the raft.FSM of Berth: it applies Commands to an in-memory State.
//
// Concurrency: raft calls Apply, Snapshot and Restore from one goroutine,
// one at a time; FSMSnapshot.Persist runs concurrently with later Applies.
// Readers (Group, Allocations, State, …) may be called from any goroutine:
// they take the read side of a RWMutex that Apply and Restore take for
// writing, and return copies. Apply never blocks on readers' watches (see
// Watch). Entries in the state are replaced, never changed in place, so a
// snapshot can share them with the live state.
type FSM struct {
	mu    sync.RWMutex
	state State
	// queues holds the items of each queue of state.Queues, with their
	// indexes (queue.go). Unlike the State's entries they change in
	// place: Snapshot copies them.
	queues map[string]*queueData

	*notifier
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM with an empty state.
func NewFSM() *FSM {
	return &FSM{state: newState(), queues: map[string]*queueData{}, notifier: newNotifier()}
}

// Apply applies one committed log entry. It returns a Result, or an error
// when the command is malformed, of an unknown type or a newer version, or
// not applicable to the state (a missing group, a stale generation); an
// error leaves the state untouched except for State.Index, which records
// that the entry was processed.
func (f *FSM) Apply(l *raft.Log) any {
	res := f.apply(l.Index, l.Data)
	f.notify(l.Index)
	return res
}

func (f *FSM) apply(index uint64, data []byte) any {
	cmd, err := decodeCommand(data)
	var p any
	if err == nil {
		p, err = cmd.decode()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.state.Index = index
	if err != nil {
		return fmt.Errorf("index %d: %w", index, err)
	}
	changed, err := f.applyPayload(index, cmd, p)
	if err != nil {
		return fmt.Errorf("index %d: command %s: %w", index, cmd, err)
	}
	return Result{Index: index, Changed: changed}
}

// applyPayload changes the state; f.mu is held. Each case checks
// everything before it writes anything.
func (f *FSM) applyPayload(index uint64, cmd Command, p any) (int, error) {
	s := &f.state
	if c, ok := p.(coordPayload); ok {
		return c.apply(f, index, cmd)
	}
	switch p := p.(type) {
	case *Barrier:
		return 0, nil
	case *Group:
		old, exists := s.Groups[p.Name]
		g := *p
		g.Index = index
		switch {
		case g.Generation == 0 && exists && sameSpec(old.Spec, g.Spec):
			return 0, nil // a repeat: nothing to roll out
		case g.Generation == 0:
			g.Generation = old.Generation + 1
		case g.Generation <= old.Generation:
			return 0, fmt.Errorf("group %q: generation %d is not above the stored %d: %w",
				g.Name, g.Generation, old.Generation, api.ErrConflict)
		}
		if exists {
			prev := old.Spec
			g.Previous = &prev
			g.Replicas, g.ShardReplicas = old.Replicas, old.ShardReplicas
		} else {
			g.Previous = nil
		}
		revert := g.Rollout != nil && g.Rollout.Revert
		g.Rollout = &Rollout{Generation: g.Generation, State: RolloutProgressing, Revert: revert, StartedAt: cmd.Time}
		s.Groups[g.Name] = g
		return 1, nil

	case *Plan:
		for _, a := range p.Put {
			if _, ok := s.Groups[a.Group]; !ok {
				return 0, fmt.Errorf("allocation %q: group %q: %w", a.ID, a.Group, api.ErrNotFound)
			}
			if old, ok := s.Allocations[a.ID]; ok && a.Generation != 0 && a.Generation <= old.Generation {
				return 0, fmt.Errorf("allocation %q: generation %d is not above the stored %d: %w",
					a.ID, a.Generation, old.Generation, api.ErrConflict)
			}
		}
		n := 0
		for _, id := range p.Delete {
			if _, ok := s.Allocations[id]; ok {
				delete(s.Allocations, id)
				n++
				n += f.revokeLeases(func(l Lease) bool { return l.Allocation == id })
			}
		}
		for _, a := range p.Put {
			old := s.Allocations[a.ID]
			a.Index = index
			if a.Generation == 0 {
				a.Generation = old.Generation + 1
			}
			if a.UpdatedAt.IsZero() {
				a.UpdatedAt = cmd.Time
			}
			s.Allocations[a.ID] = a
			n++
		}
		return n, nil

	case *ScaleGroup:
		g, ok := s.Groups[p.Name]
		if !ok {
			return 0, fmt.Errorf("group %q: %w", p.Name, api.ErrNotFound)
		}
		if p.Max > 0 && (p.Replicas < p.Min || p.Replicas > p.Max) {
			return 0, fmt.Errorf("group %q: %d replicas is outside min_replicas..max_replicas (%d..%d): %w",
				p.Name, p.Replicas, p.Min, p.Max, api.ErrInvalid)
		}
		if p.Shard != nil {
			if g.Spec.Placement == nil || *p.Shard >= g.Spec.Placement.Shards {
				return 0, fmt.Errorf("group %q has no shard %d: %w", p.Name, *p.Shard, api.ErrInvalid)
			}
			m := maps.Clone(g.ShardReplicas)
			if m == nil {
				m = map[int]int{}
			}
			if p.Replicas == 0 {
				delete(m, *p.Shard)
			} else {
				m[*p.Shard] = p.Replicas
			}
			if len(m) == 0 {
				m = nil
			}
			g.ShardReplicas = m
		} else {
			if g.Spec.Placement.Sharded() {
				return 0, fmt.Errorf("group %q is sharded: scale one shard (--shard K): %w", p.Name, api.ErrInvalid)
			}
			g.Replicas = p.Replicas
		}
		g.Index = index
		s.Groups[p.Name] = g
		return 1, nil

	case *SetRollout:
		g, ok := s.Groups[p.Group]
		if !ok || g.Generation != p.Rollout.Generation {
			return 0, nil // the group moved on: a stale verdict
		}
		r := p.Rollout
		if g.Rollout != nil {
			r.Revert = g.Rollout.Revert
			if r.StartedAt.IsZero() {
				r.StartedAt = g.Rollout.StartedAt
			}
		}
		if g.Rollout != nil && *g.Rollout == r {
			return 0, nil
		}
		g.Rollout = &r
		g.Index = index
		s.Groups[p.Group] = g
		return 1, nil

	case *NodeDrain:
		nd, ok := s.Nodes[p.Name]
		if !ok {
			return 0, fmt.Errorf("node %q: %w", p.Name, api.ErrNotFound)
		}
		if nd.Drain == p.Drain {
			return 0, nil
		}
		nd.Drain = p.Drain
		nd.Index = index
		s.Nodes[p.Name] = nd
		return 1, nil

	case *DeleteGroup:
		n := 0
		if _, ok := s.Groups[p.Name]; ok {
			delete(s.Groups, p.Name)
			n++
		}
		for id, a := range s.Allocations {
			if a.Group == p.Name {
				delete(s.Allocations, id)
				n++
			}
		}
		// What the group held goes with it (lease.go, queue.go).
		n += f.revokeLeases(func(l Lease) bool { return l.Group == p.Name })
		n += f.deleteGroupQueues(p.Name)
		return n, nil

	case *Allocation:
		if _, ok := s.Groups[p.Group]; !ok {
			return 0, fmt.Errorf("allocation %q: group %q: %w", p.ID, p.Group, api.ErrNotFound)
		}
		old := s.Allocations[p.ID]
		a := *p
		a.Index = index
		switch {
		case a.Generation == 0:
			a.Generation = old.Generation + 1
		case a.Generation <= old.Generation:
			return 0, fmt.Errorf("allocation %q: generation %d is not above the stored %d: %w",
				a.ID, a.Generation, old.Generation, api.ErrConflict)
		}
		if a.UpdatedAt.IsZero() {
			a.UpdatedAt = cmd.Time
		}
		s.Allocations[a.ID] = a
		return 1, nil

	case *DeleteAllocation:
		if _, ok := s.Allocations[p.ID]; !ok {
			return 0, nil
		}
		delete(s.Allocations, p.ID)
		return 1 + f.revokeLeases(func(l Lease) bool { return l.Allocation == p.ID }), nil

	case *SetAllocationStatus:
		n := 0
		for _, u := range p.Updates {
			a, ok := s.Allocations[u.ID]
			if !ok || (u.Generation != 0 && u.Generation != a.Generation) || (u.Node != "" && u.Node != a.Node) {
				continue // gone, moved or rewritten since the report
			}
			if a.Status == u.Status && a.Ready == u.Ready && a.Reason == u.Reason {
				continue
			}
			a.Status, a.Ready, a.Reason = u.Status, u.Ready, u.Reason
			a.UpdatedAt = cmd.Time
			a.Index = index
			s.Allocations[a.ID] = a
			n++
		}
		return n, nil

	case *NodeInfo:
		nd := *p
		nd.Drain = s.Nodes[nd.Name].Drain // CmdSetNodeDrain's alone
		nd.Index = index
		if nd.UpdatedAt.IsZero() {
			nd.UpdatedAt = cmd.Time
		}
		s.Nodes[nd.Name] = nd
		return 1, nil

	case *DeleteNode:
		if _, ok := s.Nodes[p.Name]; !ok {
			return 0, nil
		}
		delete(s.Nodes, p.Name)
		return 1, nil
	}
	// decode returns only the payloads above.
	return 0, fmt.Errorf("no handler for payload %T: %w", p, api.ErrInvalid)
}

func sameSpec(a, b api.GroupSpec) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// snapshotFile is the encoding of a snapshot.
type snapshotFile struct {
	Format int   `json:"format"`
	State  State `json:"state"`
	// Items are the items of each queue of State.Queues, by ID.
	Items map[string][]QueueItem `json:"items,omitempty"`
}

// Snapshot captures the state for raft to persist. It copies the maps
// (cheap: entries are shared, never changed in place) and the queue items
// (their data is shared), so that Persist can encode while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	items := make(map[string][]QueueItem, len(f.queues))
	for name, d := range f.queues {
		items[name] = d.snapshot()
	}
	return &fsmSnapshot{state: State{
		Index:       f.state.Index,
		Groups:      maps.Clone(f.state.Groups),
		Allocations: maps.Clone(f.state.Allocations),
		Nodes:       maps.Clone(f.state.Nodes),
		Leases:      maps.Clone(f.state.Leases),
		Queues:      maps.Clone(f.state.Queues),
	}, items: items}, nil
}

type fsmSnapshot struct {
	state State
	items map[string][]QueueItem
}

// Persist writes the state as JSON, with its format version.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(snapshotFile{Format: SnapshotFormat, State: s.state, Items: s.items}); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Restore replaces the state with a snapshot's. A snapshot of a newer
// format is refused and the state kept.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var file snapshotFile
	if err := json.NewDecoder(rc).Decode(&file); err != nil {
		return fmt.Errorf("reading snapshot: %v: %w", err, api.ErrInvalid)
	}
	if file.Format < 1 || file.Format > SnapshotFormat {
		return fmt.Errorf("snapshot format %d is not one this build reads (1 to %d): upgrade this agent: %w",
			file.Format, SnapshotFormat, api.ErrInvalid)
	}
	st := file.State
	if st.Groups == nil {
		st.Groups = map[string]Group{}
	}
	if st.Allocations == nil {
		st.Allocations = map[string]Allocation{}
	}
	if st.Nodes == nil {
		st.Nodes = map[string]NodeInfo{}
	}
	if st.Leases == nil {
		st.Leases = map[string]Lease{}
	}
	if st.Queues == nil {
		st.Queues = map[string]Queue{}
	}
	queues := make(map[string]*queueData, len(st.Queues))
	for name, q := range st.Queues {
		d, err := restoreQueueData(name, q.NextID, file.Items[name])
		if err != nil {
			return fmt.Errorf("reading snapshot: %v: %w", err, api.ErrInvalid)
		}
		queues[name] = d
	}
	f.mu.Lock()
	f.state = st
	f.queues = queues
	f.mu.Unlock()
	f.notify(st.Index)
	return nil
}

// Index returns the index of the last applied command.
func (f *FSM) Index() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Index
}

// State returns a deep copy of the whole state, consistent at one index.
func (f *FSM) State() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// Groups returns every cluster group, ordered by name.
func (f *FSM) Groups() []Group {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.state.Groups, Group.Clone)
}

// Group returns one group.
func (f *FSM) Group(name string) (Group, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	g, ok := f.state.Groups[name]
	if !ok {
		return Group{}, false
	}
	return g.Clone(), true
}

// Allocations returns every allocation, ordered by group, replica, shard
// and ID.
func (f *FSM) Allocations() []Allocation {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.SortedFunc(maps.Values(f.state.Allocations), allocationOrder)
}

// Allocation returns one allocation.
func (f *FSM) Allocation(id string) (Allocation, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.state.Allocations[id]
	return a, ok
}

// NodeAllocations returns the allocations placed on node, in the order of
// Allocations.
func (f *FSM) NodeAllocations(node string) []Allocation {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Allocation
	for _, a := range f.state.Allocations {
		if a.Node == node {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, allocationOrder)
	return out
}

// Nodes returns every node, ordered by name.
func (f *FSM) Nodes() []NodeInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.state.Nodes, NodeInfo.Clone)
}

// Node returns one node.
func (f *FSM) Node(name string) (NodeInfo, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.state.Nodes[name]
	if !ok {
		return NodeInfo{}, false
	}
	return n.Clone(), true
}
