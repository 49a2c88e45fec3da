package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// The cluster routes of the admin API (api/cluster.go lists them).
func (a *Agent) clusterRoutes(route func(pattern string, h http.HandlerFunc)) {
	route("GET "+api.PathClusterGroups, a.handleClusterGroups)
	route("GET "+api.PathClusterGroups+"/{name}", a.handleClusterGroup)
	route("POST "+api.PathClusterGroups+"/{name}/scale", a.handleScale)
	route("GET "+api.PathClusterMembers, a.handleMembers)
	route("GET "+api.PathClusterRaft, a.handleRaft)
	route("POST "+api.PathClusterRaft+"/snapshot", a.handleSnapshot)
	route("POST "+api.PathClusterNodes+"/{name}/drain", a.handleNodeDrain(true))
	route("POST "+api.PathClusterNodes+"/{name}/undrain", a.handleNodeDrain(false))
}

// clusterGroupView turns a Raft group and its allocations into the API's
// view.
func (a *Agent) clusterGroupView(g raftstore.Group, allocs []raftstore.Allocation, detail bool) api.ClusterGroup {
	prio, _ := a.priority(&g.Spec)
	v := api.ClusterGroup{Name: g.Name, Generation: g.Generation, Priority: prio, Allocations: []api.Allocation{}}
	if p := g.Spec.Placement; p.Sharded() {
		v.Shards = p.Shards
		v.ShardReplicas = map[int]int{}
		for k := range p.Shards {
			v.ShardReplicas[k] = g.ShardReplicaCount(k)
		}
	} else {
		v.Replicas = g.ReplicaCount()
	}
	if r := g.Rollout; r != nil {
		v.Rollout = &api.Rollout{Generation: r.Generation, State: r.State, Reason: r.Reason, Revert: r.Revert}
	}
	for _, al := range allocs {
		if al.Group != g.Name {
			continue
		}
		v.Allocations = append(v.Allocations, api.Allocation{
			ID: al.ID, Replica: al.Replica, Shard: al.Shard, Node: al.Node, Generation: al.Generation,
			GroupGeneration: al.GroupGeneration, Status: al.Status, Ready: al.Ready, Reason: al.Reason,
			Pending: al.Pending, UpdatedAt: al.UpdatedAt,
		})
		if al.Node != "" {
			v.Placed++
		}
		if al.Ready && al.Status == api.GroupRunning && al.GroupGeneration == g.Generation {
			v.Ready++
		}
	}
	if detail {
		spec := g.Spec
		v.Spec = &spec
	}
	return v
}

func (a *Agent) handleClusterGroups(w http.ResponseWriter, r *http.Request) {
	st := a.cl.store.State()
	allocs := make([]raftstore.Allocation, 0, len(st.Allocations))
	for _, al := range st.Allocations {
		allocs = append(allocs, al)
	}
	slices.SortFunc(allocs, func(x, y raftstore.Allocation) int { return strings.Compare(x.ID, y.ID) })
	out := []api.ClusterGroup{}
	for _, name := range sortedKeys(st.Groups) {
		out = append(out, a.clusterGroupView(st.Groups[name], allocs, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleClusterGroup(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	g, ok := a.cl.store.Group(name)
	if !ok {
		writeError(w, clusterNotFound(name))
		return
	}
	writeJSON(w, http.StatusOK, a.clusterGroupView(g, a.cl.store.Allocations(), true))
}

func clusterNotFound(name string) error {
	return fmt.Errorf("cluster group %q not found (agentctl get lists them): %w", name, api.ErrNotFound)
}

func (a *Agent) handleScale(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req api.ScaleRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, fmt.Errorf("scale: bad request body: %v: %w", err, api.ErrInvalid))
		return
	}
	if req.Replicas < 0 || req.Replicas > api.MaxAllocations {
		writeError(w, fmt.Errorf("scale %s: replicas %d: use 0 to %d: %w", name, req.Replicas, api.MaxAllocations, api.ErrInvalid))
		return
	}
	if _, err := a.propose(r.Context(), raftstore.CmdScaleGroup, raftstore.ScaleGroup{Name: name, Shard: req.Shard, Replicas: req.Replicas}); err != nil {
		writeError(w, err)
		return
	}
	g, ok := a.cl.store.Group(name)
	if !ok {
		writeError(w, clusterNotFound(name))
		return
	}
	writeJSON(w, http.StatusOK, a.clusterGroupView(g, a.cl.store.Allocations(), false))
}

// members returns the cluster's agents: the Raft state's nodes, with the
// Raft configuration's suffrage.
func (a *Agent) members() []api.Member {
	servers, _ := a.cl.store.Servers()
	suffrage := map[string]raftstore.Server{}
	for _, s := range servers {
		suffrage[s.ID] = s
	}
	count := map[string]int{}
	for _, al := range a.cl.store.Allocations() {
		if al.Node != "" {
			count[al.Node]++
		}
	}
	gossip := map[string]string{}
	if a.cl.members != nil {
		for _, m := range a.cl.members.Members() {
			gossip[m.Name] = m.Addr
		}
	}
	nodes := a.cl.store.Nodes()
	if !slices.ContainsFunc(nodes, func(n raftstore.NodeInfo) bool { return n.Name == a.cfg.NodeName }) {
		nodes = append(nodes, a.selfInfo()) // not recorded by the leader yet
	}
	out := make([]api.Member, 0, len(nodes))
	for _, n := range nodes {
		s := suffrage[n.Name]
		out = append(out, api.Member{
			Name: n.Name, Addr: gossip[n.Name], APIAddr: n.APIAddr, RaftAddr: n.RaftAddr, Status: string(n.Status),
			Server: n.Server, Suffrage: string(s.Suffrage), Leader: s.Leader, Drain: n.Drain,
			Labels: n.Labels, Capacity: n.Capacity, Allocations: count[n.Name], Version: n.Version,
		})
	}
	slices.SortFunc(out, func(x, y api.Member) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func (a *Agent) handleMembers(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.members())
}

func (a *Agent) handleRaft(w http.ResponseWriter, r *http.Request) {
	st := a.cl.store.Stats()
	info := api.RaftInfo{
		Node: a.cfg.NodeName, State: st.State, Term: st.Term, LastIndex: st.LastIndex, CommitIndex: st.CommitIndex,
		AppliedIndex: st.FSMIndex, LastSnapshotIndex: st.LastSnapshotIndex, Leader: st.LeaderID, LeaderAddr: st.LeaderAddr,
		LastContact: st.LastContact, Peers: []api.RaftServer{},
	}
	servers, err := a.cl.store.Servers()
	if err != nil {
		writeError(w, err)
		return
	}
	for _, s := range servers {
		info.Peers = append(info.Peers, api.RaftServer{ID: s.ID, Address: s.Address, Suffrage: string(s.Suffrage), Leader: s.Leader})
	}
	writeJSON(w, http.StatusOK, info)
}

func (a *Agent) handleNodeDrain(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, ok := a.cl.store.Node(name); !ok {
			writeError(w, fmt.Errorf("node %q is not a member of the cluster (agentctl members lists them): %w", name, api.ErrNotFound))
			return
		}
		if _, err := a.propose(r.Context(), raftstore.CmdSetNodeDrain, raftstore.NodeDrain{Name: name, Drain: drain}); err != nil {
			writeError(w, err)
			return
		}
		for _, m := range a.members() {
			if m.Name == name {
				writeJSON(w, http.StatusOK, m)
				return
			}
		}
		writeError(w, fmt.Errorf("node %q: %w", name, api.ErrNotFound))
	}
}

// applyCluster writes cluster groups to Raft, one command each, in order.
// The first failure stops it; groups before it stay applied (each is one
// Raft entry): the error says which.
func (a *Agent) applyCluster(ctx context.Context, specs []*api.GroupSpec, dryRun bool) ([]api.ApplyResult, error) {
	res := make([]api.ApplyResult, 0, len(specs))
	for _, spec := range specs {
		old, exists := a.cl.store.Group(spec.Name)
		if dryRun {
			r := api.ApplyResult{Group: spec.Name, Action: api.ActionCreated, Generation: 1}
			if exists {
				r.Action, r.Generation = api.ActionUpdated, old.Generation+1
				if specHash(&old.Spec) == specHash(spec) {
					r.Action, r.Generation = api.ActionUnchanged, old.Generation
				}
			}
			res = append(res, r)
			continue
		}
		err := a.checkGroupQueue(spec) // queue_define.go
		if err == nil {
			_, err = a.propose(ctx, raftstore.CmdPutGroup, raftstore.Group{Name: spec.Name, Spec: *spec})
		}
		if err == nil {
			err = a.putGroupQueue(ctx, spec)
		}
		if err != nil {
			done := make([]string, 0, len(res))
			for _, r := range res {
				done = append(done, r.Group)
			}
			if len(done) > 0 {
				return nil, fmt.Errorf("cluster group %q: %w (applied before it: %s)", spec.Name, err, strings.Join(done, ", "))
			}
			return nil, fmt.Errorf("cluster group %q: %w", spec.Name, err)
		}
		g, _ := a.cl.store.Group(spec.Name)
		r := api.ApplyResult{Group: spec.Name, Action: api.ActionUpdated, Generation: g.Generation}
		switch {
		case !exists:
			r.Action = api.ActionCreated
		case g.Generation == old.Generation:
			r.Action = api.ActionUnchanged
		}
		if r.Action != api.ActionUnchanged {
			a.events.Publish(api.Event{Time: time.Now(), Type: api.EventNormal, Group: spec.Name, Reason: "Applied",
				Message: fmt.Sprintf("cluster group %s, generation %d", r.Action, r.Generation)})
		}
		res = append(res, r)
	}
	return res, nil
}

// deleteCluster deletes a cluster group from Raft; its allocations stop
// on their nodes as the state reaches them.
func (a *Agent) deleteCluster(ctx context.Context, name string) (<-chan struct{}, error) {
	if _, err := a.propose(ctx, raftstore.CmdDeleteGroup, raftstore.DeleteGroup{Name: name}); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Wait (bounded) until no allocation of the group runs here.
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			busy := false
			for _, st := range a.sup.List() {
				if strings.HasPrefix(st.Name, name+".") {
					busy = true
				}
			}
			if !busy {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return done, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// handleSnapshot takes a Raft snapshot of this member now (and compacts
// its log); raft also takes them by itself.
func (a *Agent) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	if err := a.cl.store.Snapshot(); err != nil {
		writeError(w, err)
		return
	}
	a.handleRaft(w, r)
}
