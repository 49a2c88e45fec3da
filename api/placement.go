package api

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// PlacementSpec makes a group cluster-scoped: it is stored in Raft and the
// scheduler on the Raft leader places its allocations on nodes. A group
// without [placement] is local to the agent that reads it.
//
// A group is either replicated (Replicas copies, Shards = 0) or sharded
// (Shards shards of ShardReplicas copies each); each copy is one
// allocation and runs as one group on its node.
type PlacementSpec struct {
	// Replicas is the number of copies of a replicated group. Default 1
	// when Shards is 0.
	Replicas int `toml:"replicas" json:"replicas,omitempty"`
	// Spread: "node" (default) puts at most one copy of the group on a
	// node and leaves copies unplaced when nodes run out; "prefer" spreads
	// as far as the nodes go and then doubles up.
	Spread Spread `toml:"spread" json:"spread,omitempty"`
	// Constraints select nodes by their labels: "key=value", "key!=value",
	// "key" (the label is set) or "!key" (it is not). All must hold.
	Constraints []string `toml:"constraints" json:"constraints,omitempty"`
	// Shards makes the group sharded: S shards, each placed with
	// rendezvous hashing.
	Shards int `toml:"shards" json:"shards,omitempty"`
	// ShardReplicas is the number of copies of each shard. Default 1.
	ShardReplicas int `toml:"shard_replicas" json:"shard_replicas,omitempty"`
	// MaxParallel is how many allocations a rolling update replaces at
	// once. Default 1.
	MaxParallel int `toml:"max_parallel" json:"max_parallel,omitempty"`
	// HealthyDeadline is how long a replaced allocation has to become Ready
	// before the update is reverted. Default 5m.
	HealthyDeadline Duration `toml:"healthy_deadline" json:"healthy_deadline,omitempty"`
	// MinReplicas and MaxReplicas bound the replica count a group may ask
	// for itself ("replicate yourself"); 0 means Replicas.
	MinReplicas int `toml:"min_replicas" json:"min_replicas,omitempty"`
	MaxReplicas int `toml:"max_replicas" json:"max_replicas,omitempty"`
}

// Spread says how a replicated group's copies share nodes.
type Spread string

const (
	SpreadNode   Spread = "node"
	SpreadPrefer Spread = "prefer"
)

// Placement defaults.
const (
	DefaultHealthyDeadline = Duration(5 * time.Minute)
	// MaxAllocations bounds replicas and shards × shard_replicas: a group
	// file is not the place for ten thousand allocations.
	MaxAllocations = 1000
)

// Clustered reports whether the group is cluster-scoped.
func (g *GroupSpec) Clustered() bool { return g.Placement != nil }

// Sharded reports whether the placement shards the group.
func (p *PlacementSpec) Sharded() bool { return p != nil && p.Shards > 0 }

// ReplicaCount is the replica count with its default: Replicas, or 1.
func (p *PlacementSpec) ReplicaCount() int {
	if p.Replicas > 0 {
		return p.Replicas
	}
	return 1
}

// ShardReplicaCount is ShardReplicas with its default, 1.
func (p *PlacementSpec) ShardReplicaCount() int {
	if p.ShardReplicas > 0 {
		return p.ShardReplicas
	}
	return 1
}

// Parallel is MaxParallel with its default, 1.
func (p *PlacementSpec) Parallel() int {
	if p.MaxParallel > 0 {
		return p.MaxParallel
	}
	return 1
}

// Deadline is HealthyDeadline with its default.
func (p *PlacementSpec) Deadline() Duration {
	if p.HealthyDeadline > 0 {
		return p.HealthyDeadline
	}
	return DefaultHealthyDeadline
}

// ReplicaBounds returns the range of replica counts a group may set
// itself to: [MinReplicas, MaxReplicas], each defaulting to Replicas.
func (p *PlacementSpec) ReplicaBounds() (lo, hi int) {
	lo, hi = p.MinReplicas, p.MaxReplicas
	if lo == 0 {
		lo = p.ReplicaCount()
	}
	if hi == 0 {
		hi = p.ReplicaCount()
	}
	return lo, hi
}

// Constraint is one parsed placement constraint.
type Constraint struct {
	Key   string
	Op    string // "=", "!=", "exists", "missing"
	Value string
}

// ParseConstraint parses "key=value", "key!=value", "key" or "!key".
func ParseConstraint(s string) (Constraint, error) {
	s = strings.TrimSpace(s)
	var c Constraint
	switch {
	case strings.Contains(s, "!="):
		k, val, _ := strings.Cut(s, "!=")
		c = Constraint{Key: strings.TrimSpace(k), Op: "!=", Value: strings.TrimSpace(val)}
	case strings.Contains(s, "="):
		k, val, _ := strings.Cut(s, "=")
		c = Constraint{Key: strings.TrimSpace(k), Op: "=", Value: strings.TrimSpace(val)}
	case strings.HasPrefix(s, "!"):
		c = Constraint{Key: strings.TrimSpace(s[1:]), Op: "missing"}
	default:
		c = Constraint{Key: s, Op: "exists"}
	}
	if c.Key == "" || strings.ContainsAny(c.Key, " !=") {
		return c, fmt.Errorf("constraint %q: write \"key=value\", \"key!=value\", \"key\" or \"!key\" with a node label key", s)
	}
	return c, nil
}

// Match reports whether a node with labels satisfies c.
func (c Constraint) Match(labels map[string]string) bool {
	v, ok := labels[c.Key]
	switch c.Op {
	case "=":
		return ok && v == c.Value
	case "!=":
		return !ok || v != c.Value
	case "exists":
		return ok
	case "missing":
		return !ok
	}
	return false
}

func (c Constraint) String() string {
	switch c.Op {
	case "exists":
		return c.Key
	case "missing":
		return "!" + c.Key
	}
	return c.Key + c.Op + c.Value
}

// MatchConstraints reports whether labels satisfy every constraint of p;
// the first one that fails is returned.
func (p *PlacementSpec) MatchConstraints(labels map[string]string) (bool, string) {
	for _, s := range p.Constraints {
		c, err := ParseConstraint(s)
		if err != nil || !c.Match(labels) {
			return false, s
		}
	}
	return true, ""
}

// placement checks the [placement] table.
func (v *validator) placement(g *GroupSpec) {
	p := g.Placement
	if p == nil {
		return
	}
	if p.Replicas < 0 {
		v.add("placement.replicas", "replicas must not be negative")
	}
	if p.Shards < 0 {
		v.add("placement.shards", "shards must not be negative")
	}
	if p.ShardReplicas < 0 {
		v.add("placement.shard_replicas", "shard_replicas must not be negative")
	}
	if p.Shards > 0 && p.Replicas > 0 {
		v.add("placement.replicas", "a group is replicated (replicas) or sharded (shards with shard_replicas), not both: remove replicas and set shard_replicas")
	}
	if p.Shards == 0 && p.ShardReplicas > 0 {
		v.add("placement.shard_replicas", "shard_replicas needs shards: add shards = N, or use replicas for an unsharded group")
	}
	total := p.ReplicaCount()
	if p.Shards > 0 {
		total = p.Shards * p.ShardReplicaCount()
	}
	if total > MaxAllocations {
		v.add("placement", "%d allocations is more than the maximum of %d per group", total, MaxAllocations)
	}
	switch p.Spread {
	case "", SpreadNode, SpreadPrefer:
	default:
		v.add("placement.spread", "%q is not a spread: use \"node\" (the default: at most one copy per node) or \"prefer\" (spread, then double up)", p.Spread)
	}
	for i, s := range p.Constraints {
		if _, err := ParseConstraint(s); err != nil {
			v.add(pathIndex("placement.constraints", i), "%s", err.Error())
		}
	}
	if p.MaxParallel < 0 {
		v.add("placement.max_parallel", "max_parallel must not be negative")
	}
	if p.HealthyDeadline < 0 {
		v.add("placement.healthy_deadline", "healthy_deadline must not be negative")
	}
	if p.MinReplicas < 0 {
		v.add("placement.min_replicas", "min_replicas must not be negative")
	}
	if p.MaxReplicas < 0 {
		v.add("placement.max_replicas", "max_replicas must not be negative")
	}
	if p.Shards > 0 && (p.MinReplicas > 0 || p.MaxReplicas > 0) {
		v.add("placement.min_replicas", "min_replicas and max_replicas bound a replicated group; a sharded group scales per shard (agentctl scale --shard)")
	}
	lo, hi := p.ReplicaBounds()
	if p.Shards == 0 && p.MinReplicas >= 0 && p.MaxReplicas >= 0 {
		if lo > hi {
			v.add("placement.min_replicas", "min_replicas %d is above max_replicas %d", lo, hi)
		}
		if n := p.ReplicaCount(); n < lo || n > hi {
			v.add("placement.replicas", "replicas %d is outside min_replicas..max_replicas (%d..%d)", n, lo, hi)
		}
	}
	if len(g.After) > 0 {
		v.add("after", "after names local groups, which a cluster group cannot wait for on every node; remove after or [placement]")
	}
}

// SortedLabels returns "k=v" pairs of labels, sorted: for tables.
func SortedLabels(labels map[string]string) []string {
	out := make([]string, 0, len(labels))
	for k, val := range labels {
		out = append(out, k+"="+val)
	}
	sort.Strings(out)
	return out
}
