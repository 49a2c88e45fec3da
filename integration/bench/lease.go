package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/berth-project/berth/api"
)

// The lease benchmark of issue 7: lease failover after node loss. Three
// agents of their own (l1-l3 on -lease-ip-base, bridges bbl1-3) run a
// cluster group of three replicas, one per node, each a `testapp lease`
// candidate for one lease with a 1 s TTL. A trial kills the node of the
// current holder (agentd and its containers, SIGKILL) and measures until a
// surviving replica believes it holds the lease with a higher token (its
// own GET /lease, polled every 5 ms over the node bridge). The node then
// comes back and the next trial starts once all three replicas are ready.
// Expected: TTL − (time since the last renewal, ≤ TTL/3) + margin (200 ms)
// + one Raft round trip; more when the node was the Raft leader's (an
// election first).

var (
	leaseOnly   = flag.Bool("lease-only", false, "run only the lease failover benchmark")
	leaseTrials = flag.Int("lease-trials", 10, "trials of the lease failover measurement (0 skips it)")
	leaseIPBase = flag.Int("lease-ip-base", 51, "the lease benchmark's agents use 127.0.0.<base> to <base+2>")
)

// benchLeaseGroup restarts fast: every trial kills one replica with its
// node, and the default backoff, which the restarted agent keeps, would
// double each time.
const benchLeaseGroup = `name = "bench-lead"
grace_period = "1s"
restart_backoff = { initial = "100ms", max = "500ms" }
[placement]
replicas = 3
spread = "node"
[[lease]]
name = "leader"
ttl = "1s"
[[container]]
name = "app"
image = "berth.local/testapp:latest"
args = ["lease", "--lease", "leader", "--listen", ":8080"]
readiness = { http = { path = "/ready", port = 8080 }, period = "200ms", timeout = "150ms" }
`

type leaseResult struct {
	failover []time.Duration
	// onLeader marks the trials whose holder ran on the Raft leader's node.
	onLeader []bool
}

func (b *bench) leaseBenchOnly(ctx context.Context) error {
	r, err := b.measureLeases(ctx, max(*leaseTrials, 1))
	if err != nil {
		return fmt.Errorf("leases: %w", err)
	}
	r.print()
	return nil
}

func (b *bench) measureLeases(ctx context.Context, trials int) (*leaseResult, error) {
	c, err := b.startBenchCluster(ctx, 3, clusterShape{prefix: "l", ipBase: *leaseIPBase, subnetBase: 245, images: []string{b.testapp}})
	if c != nil {
		defer c.stop()
	}
	if err != nil {
		return nil, err
	}
	if _, err := c.nodes[0].api.Apply(ctx, api.ApplyRequest{Files: []api.ApplyFile{{Name: "lead.toml", Content: benchLeaseGroup}}}); err != nil {
		return nil, err
	}
	r := &leaseResult{}
	for trial := range trials {
		cands, err := leaseCandidates(ctx, c, 60*time.Second)
		if err != nil {
			return nil, fmt.Errorf("trial %d: %w", trial+1, err)
		}
		holder, token, err := oneHolder(ctx, cands, 0, 30*time.Second)
		if err != nil {
			return nil, fmt.Errorf("trial %d: %w", trial+1, err)
		}
		time.Sleep(time.Duration(trial%3) * 250 * time.Millisecond) // vary the phase against the renewals
		info, _ := c.live()[0].api.Raft(ctx)
		r.onLeader = append(r.onLeader, info != nil && info.Leader == holder.node.name)
		var rest []leaseCandidate
		for _, cd := range cands {
			if cd.node != holder.node {
				rest = append(rest, cd)
			}
		}
		t0 := time.Now()
		c.kill(ctx, holder.node)
		if _, _, err := oneHolder(ctx, rest, token, 30*time.Second); err != nil {
			return nil, fmt.Errorf("trial %d, after killing %s: %w", trial+1, holder.node.name, err)
		}
		r.failover = append(r.failover, time.Since(t0))
		if err := c.start(ctx, holder.node); err != nil {
			return nil, err
		}
		if err := c.converged(ctx, 60*time.Second); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// leaseCandidate is one replica of the bench group: where its app is.
type leaseCandidate struct {
	id   string
	node *benchNode
	addr string
}

var leaseHTTP = &http.Client{Timeout: time.Second}

// belief asks a candidate whether it holds the lease.
func (cd leaseCandidate) belief(ctx context.Context) (held bool, token uint64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(cd.addr, "8080")+"/lease", nil)
	if err != nil {
		return false, 0, err
	}
	resp, err := leaseHTTP.Do(req)
	if err != nil {
		return false, 0, err
	}
	defer resp.Body.Close()
	var b struct {
		Held  bool   `json:"held"`
		Token uint64 `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return false, 0, err
	}
	return b.Held, b.Token, nil
}

// leaseCandidates waits until the three replicas are ready, one per live
// node, and returns where their apps answer.
func leaseCandidates(ctx context.Context, c *benchCluster, timeout time.Duration) ([]leaseCandidate, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = nil
		var out []leaseCandidate
		g, err := c.live()[0].api.ClusterGroup(ctx, "bench-lead")
		if err != nil {
			last = err
		} else {
			for _, al := range g.Allocations {
				nd := c.node(al.Node)
				if !al.Ready || nd == nil || nd.cmd == nil {
					last = fmt.Errorf("%s on %q not ready", al.ID, al.Node)
					break
				}
				st, err := nd.api.Get(ctx, al.ID)
				if err != nil || st.Network == nil || st.Network.Address == "" {
					last = fmt.Errorf("%s: no address yet (%v)", al.ID, err)
					break
				}
				out = append(out, leaseCandidate{id: al.ID, node: nd, addr: st.Network.Address})
			}
			if last == nil && len(out) == 3 {
				return out, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("3 ready replicas of bench-lead: %v", last)
}

// oneHolder polls the candidates until exactly one believes it holds the
// lease with a token above after.
func oneHolder(ctx context.Context, cands []leaseCandidate, after uint64, timeout time.Duration) (leaseCandidate, uint64, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var hs []leaseCandidate
		var token uint64
		for _, cd := range cands {
			if held, tok, err := cd.belief(ctx); err == nil && held {
				hs = append(hs, cd)
				token = tok
			}
		}
		if len(hs) > 1 {
			return leaseCandidate{}, 0, fmt.Errorf("%d replicas believe they hold the lease at once", len(hs))
		}
		if len(hs) == 1 && token > after {
			return hs[0], token, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return leaseCandidate{}, 0, fmt.Errorf("no holder with a token above %d within %s", after, timeout)
}

func (r *leaseResult) print() {
	var all, follower, leader []time.Duration
	for i, d := range r.failover {
		all = append(all, d)
		if r.onLeader[i] {
			leader = append(leader, d)
		} else {
			follower = append(follower, d)
		}
	}
	slices.Sort(all)
	fmt.Printf("\nLeases (3 agentd processes on 127.0.0.%d-%d, one replica each, TTL 1s, margin 200ms)\n", *leaseIPBase, *leaseIPBase+2)
	fmt.Printf("  lease failover after node loss (%d trials, %d of them the Raft leader's node): p50 %s, max %s   (target ≤ 2s)\n",
		len(all), len(leader), sec(pct(all, 50)), sec(pct(all, 100)))
	if len(follower) > 0 && len(leader) > 0 {
		fmt.Printf("    holder on a follower: p50 %s, max %s; on the Raft leader: p50 %s, max %s\n",
			sec(pct(follower, 50)), sec(pct(follower, 100)), sec(pct(leader, 50)), sec(pct(leader, 100)))
	}
}
