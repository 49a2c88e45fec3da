package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/raftstore"
)

// clusterRT is the agent's side of the cluster: its Raft member (every
// agent holds the whole state), its gossip membership (nil in the
// embedded single-node default) and the way it writes to Raft.
//
// The embedded default has no network listener at all: Raft runs on an
// in-memory transport with this agent as the only voter, so cluster groups
// work on one machine with nothing to configure and no port to collide.
type clusterRT struct {
	cfg   ClusterConfig
	self  string
	log   *slog.Logger
	store *raftstore.Store
	// members is nil in the embedded default.
	members *cluster.Membership
	// prop writes to Raft: locally on the leader, forwarded to it from a
	// follower.
	prop proposer
	// caughtUp is set once this member has applied everything the leader
	// had committed when it first heard from it: only then may the agent
	// stop allocations it finds in containerd but not in the state.
	caughtUp atomic.Bool
	// barrierBusy: checkCaughtUp has a barrier in flight.
	barrierBusy atomic.Bool
	// kick wakes the leader loop (membership changed).
	kick chan struct{}
	// tls is the cluster's certificates (nil in the embedded default).
	tls *cluster.TLS
	// bootstrapped: the first Raft configuration exists.
	bootstrapped bool
	// deadSince records when the leader first saw a member dead.
	deadSince map[string]time.Time
}

// proposer writes one command to Raft and returns its index once this
// member applied it.
type proposer interface {
	Apply(ctx context.Context, cmd raftstore.Command) (uint64, error)
}

// storeProposer applies on the local store: the embedded default, where
// this agent is always the leader.
type storeProposer struct{ s *raftstore.Store }

func (p storeProposer) Apply(ctx context.Context, cmd raftstore.Command) (uint64, error) {
	for {
		idx, err := p.s.Apply(ctx, cmd)
		var nl *raftstore.NotLeaderError
		if !errors.As(err, &nl) || nl.LeaderID != "" {
			return idx, err
		}
		// Right after a start the one voter has not elected itself yet.
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no Raft leader yet: %w", api.ErrUnavailable)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (a *Agent) raftDir() string { return filepath.Join(a.cfg.StateDir, "raft") }

// openCluster starts this agent's Raft member (and, in a cluster, its
// gossip member and TLS transport).
func (a *Agent) openCluster() error {
	c := &clusterRT{cfg: a.cfg.Cluster, self: a.cfg.NodeName, log: a.log.With("component", "cluster"), kick: make(chan struct{}, 1)}
	rc := raftstore.DefaultConfig()
	rc.NodeID, rc.DataDir, rc.Logger = a.cfg.NodeName, a.raftDir(), a.log.With("component", "raft")
	if !a.cfg.Cluster.Enabled() {
		_, tr := raft.NewInmemTransport(raft.ServerAddress("embedded:" + a.cfg.NodeName))
		rc.Voter, rc.Bootstrap = true, true
		// One voter and no network: it may elect itself at once.
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
		st, err := raftstore.Open(rc, tr)
		if err != nil {
			return fmt.Errorf("cluster state: %w", err)
		}
		c.store, c.prop = st, storeProposer{st}
		a.cl = c
		return nil
	}
	if err := a.openClusterNet(c, rc); err != nil {
		return err
	}
	a.cl = c
	return nil
}

// closeCluster stops the Raft member; gossip leaves in runCluster.
func (a *Agent) closeCluster() {
	if a.cl == nil {
		return
	}
	if err := a.cl.store.Close(); err != nil {
		a.log.Error("close cluster state", "err", err)
	}
}

// selfInfo is this node as the Raft state records it.
func (a *Agent) selfInfo() raftstore.NodeInfo {
	a.mu.Lock()
	capacity := a.capacity
	a.mu.Unlock()
	n := raftstore.NodeInfo{
		Name:     a.cfg.NodeName,
		Capacity: capacity,
		Labels:   a.cfg.Node.Labels,
		Version:  Version,
		Status:   raftstore.NodeAlive,
		Server:   a.cfg.Cluster.Server,
	}
	if a.cfg.Cluster.Enabled() {
		n.APIAddr, n.RaftAddr = a.cfg.Cluster.APIAddr(), a.cfg.Cluster.RaftAddr()
	}
	return n
}

// runCluster runs the cluster loops until ctx ends.
func (a *Agent) runCluster(ctx context.Context, goFn func(func() error)) {
	goFn(func() error { a.watchAllocations(ctx); return nil })
	goFn(func() error { a.reportAllocations(ctx); return nil })
	goFn(func() error { a.leaderLoop(ctx); return nil })
	goFn(func() error { return a.runScheduler(ctx) })
	if a.cl.members != nil {
		goFn(func() error { return a.runMembership(ctx) })
	}
}

// propose builds and writes one command.
func (a *Agent) propose(ctx context.Context, t raftstore.CommandType, payload any) (uint64, error) {
	cmd, err := raftstore.NewCommand(t, payload)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return a.cl.prop.Apply(ctx, cmd)
}

// checkCaughtUp sets caughtUp once the local state holds everything the
// leader had committed: this member proposes a Barrier and sees it
// applied. Raft's own indexes are not enough at start: until the first
// new entry commits, the commit index can still be the snapshot's while
// the log replay behind it is not applied yet, and a partial state would
// look like allocations that moved away. The barrier is proposed in the
// background, at most one at a time; the next call after it applied
// reports true.
func (c *clusterRT) checkCaughtUp() bool {
	if c.caughtUp.Load() {
		return true
	}
	if c.store.Stats().LeaderID == "" || !c.barrierBusy.CompareAndSwap(false, true) {
		return false
	}
	go func() {
		defer c.barrierBusy.Store(false)
		cmd, err := raftstore.NewCommand(raftstore.CmdBarrier, raftstore.Barrier{Node: c.self})
		if err != nil {
			c.log.Error("cluster barrier", "err", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		idx, err := c.prop.Apply(ctx, cmd)
		if err != nil {
			c.log.Debug("cluster barrier not applied yet", "err", err)
			return
		}
		c.caughtUp.Store(true)
		c.log.Info("cluster state caught up", "index", idx)
	}()
	return false
}

func (c *clusterRT) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// isClusterGroup reports whether name is a cluster group.
func (a *Agent) isClusterGroup(name string) bool {
	if a.cl == nil {
		return false // unit tests without a cluster
	}
	_, ok := a.cl.store.Group(name)
	return ok
}
