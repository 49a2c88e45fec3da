package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// openClusterNet opens a multi-node member: TLS transport, gossip.
func (a *Agent) openClusterNet(c *clusterRT, rc raftstore.Config) error {
	return fmt.Errorf("multi-node clusters are not wired yet: %w", errors.Join(api.ErrUnavailable))
}

// runMembership runs gossip until ctx ends.
func (a *Agent) runMembership(ctx context.Context) error { <-ctx.Done(); return nil }

// reconcileRaftServers keeps the Raft configuration as gossip sees it.
func (a *Agent) reconcileRaftServers(ctx context.Context) {}

// runScheduler runs the scheduler for as long as the agent runs.
func (a *Agent) runScheduler(ctx context.Context) error { <-ctx.Done(); return nil }
