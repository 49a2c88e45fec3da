package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// validate is phase 1: deletions, creations and the allocations that must
// leave their node.
func (p *pass) validate() {
	for _, id := range slices.Sorted(maps.Keys(p.allocs)) {
		a := p.allocs[id]
		gv := a.group
		if gv == nil {
			p.drop(a, "its group "+strconv.Quote(a.Group)+" no longer exists")
			continue
		}
		shard, replica, ok := gv.wanted(id)
		if !ok {
			p.drop(a, "scaled down")
			continue
		}
		a.Shard, a.Replica = shard, replica
		if a.Node == "" {
			continue
		}
		n := p.nodes[a.Node]
		if why := n.mustLeave(p); why != "" {
			p.unplace(a, why)
			continue
		}
		if failed := gv.mismatch[a.Node]; failed != "" {
			p.unplace(a, fmt.Sprintf("node %s no longer matches constraint %q", a.Node, failed))
			continue
		}
		if a.Status == api.GroupFailed {
			retryAt := a.UpdatedAt.Add(p.opts.FailedRetry)
			if p.now.Before(retryAt) {
				p.wake(retryAt)
				continue
			}
			why := "failed on node " + a.Node
			if a.Reason != "" {
				why += ": " + a.Reason
			}
			a.avoid = a.Node
			p.unplace(a, why)
		}
	}
	for _, gv := range p.byName {
		p.collect(gv)
	}
}

// drop deletes a.
func (p *pass) drop(a *alloc, why string) {
	if a.Node != "" {
		p.nodes[a.Node].remove(a)
	}
	delete(p.allocs, a.ID)
	p.deletes[a.ID] = why
}

// wanted reports whether id is one of gv's allocations, and which.
func (gv *groupView) wanted(id string) (shard, replica int, ok bool) {
	rest, found := strings.CutPrefix(id, gv.name+".")
	if !found {
		return 0, 0, false
	}
	if gv.sharded {
		s, r, found := strings.Cut(rest, ".")
		if !found || !strings.HasPrefix(s, "s") {
			return 0, 0, false
		}
		shard, err1 := strconv.Atoi(s[1:])
		replica, err2 := strconv.Atoi(r)
		if err1 != nil || err2 != nil || shard < 0 || shard >= gv.shardCount() ||
			replica < 0 || replica >= gv.replicas(shard) || id != AllocationID(gv.name, shard, replica, true) {
			return 0, 0, false
		}
		return shard, replica, true
	}
	replica, err := strconv.Atoi(rest)
	if err != nil || replica < 0 || replica >= gv.replicas(0) || id != AllocationID(gv.name, 0, replica, false) {
		return 0, 0, false
	}
	return 0, replica, true
}

// collect gathers gv's wanted allocations, creating the missing ones, and
// unplaces second copies where only one may run: two replicas of a
// spread = "node" group, or of one shard, on one node.
func (p *pass) collect(gv *groupView) {
	shards := 1
	if gv.sharded {
		shards = gv.shardCount()
	}
	spreadNode := gv.sharded || gv.pl.Spread != api.SpreadPrefer
	for k := range shards {
		seen := map[string]string{}
		if !gv.sharded {
			k = 0
		}
		for r := range gv.replicas(k) {
			id := AllocationID(gv.name, k, r, gv.sharded)
			a := p.allocs[id]
			if a == nil {
				a = &alloc{Allocation: raftstore.Allocation{ID: id, Group: gv.name, Shard: k, Replica: r}, group: gv, placed: true}
				p.allocs[id] = a
			}
			gv.allocs = append(gv.allocs, a)
			if a.Node == "" || !spreadNode {
				continue
			}
			if other, dup := seen[a.Node]; dup {
				p.unplace(a, fmt.Sprintf("%s already runs on node %s", other, a.Node))
				continue
			}
			seen[a.Node] = a.ID
		}
	}
}
