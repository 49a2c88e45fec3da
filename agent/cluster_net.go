package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/raftstore"
)

// A multi-node member: Raft over the TLS transport, gossip with the
// cluster key, the admin API also served over mutual TLS on api_port
// (with the route followers forward writes to), and the leader's chores
// of keeping the Raft configuration as gossip sees it.

// PathInternalRaftApply is where followers forward Raft writes; served on
// the TLS port only, to node certificates only.
const PathInternalRaftApply = "/v1/internal/raft/apply"

// openClusterNet opens a multi-node member.
func (a *Agent) openClusterNet(c *clusterRT, rc raftstore.Config) (retErr error) {
	cfg := a.cfg.Cluster
	t, err := cluster.LoadTLS(cfg.TLSDir, a.cfg.NodeName)
	if err != nil {
		return fmt.Errorf("cluster TLS (create certificates with agentctl tls init): %w", err)
	}
	c.tls = t
	bind := cfg.BindAddr
	if bind == "" {
		bind = "0.0.0.0"
	}
	tr, err := cluster.NewRaftTransport(net.JoinHostPort(bind, strconv.Itoa(cfg.RaftPort)), cfg.RaftAddr(), t, raftstore.DefaultMaxPool, raftstore.DefaultTransportTimeout, a.log.With("component", "raft-transport"))
	if err != nil {
		return fmt.Errorf("raft transport: %w", err)
	}
	rc.Voter, rc.Bootstrap = cfg.Server, false
	st, err := raftstore.Open(rc, tr)
	if err != nil {
		return fmt.Errorf("cluster state: %w", err)
	}
	defer func() {
		if retErr != nil {
			st.Close()
		}
	}()
	c.store = st

	mcfg := cluster.DefaultConfig()
	mcfg.NodeName, mcfg.BindAddr, mcfg.BindPort = a.cfg.NodeName, bind, cfg.GossipPort
	mcfg.AdvertiseAddr, mcfg.Join, mcfg.EncryptKey = cfg.Advertise, cfg.Join, cfg.EncryptKey
	mcfg.LeaveOnStop = a.leavesOnStop
	self := a.selfInfo()
	meta := cluster.Meta{Name: a.cfg.NodeName, APIAddr: cfg.APIAddr(), RaftAddr: cfg.RaftAddr(),
		Capacity: self.Capacity, Labels: self.Labels, Version: Version, Server: cfg.Server}
	m, err := cluster.New(mcfg, meta, a.log.With("component", "gossip"))
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	c.members = m
	c.prop = cluster.NewProposer(st, t, a.leaderAPI, a.log.With("component", "forward"))
	c.deadSince = map[string]time.Time{}
	return nil
}

// leavesOnStop says whether a stopping agent leaves the cluster: only
// when its node is drained or drains on shutdown, so its work has gone or
// goes. An agent stopped for a restart or an upgrade leaves its groups
// running, so it does not leave; back within the gossip suspicion time it
// is still the same member, and its allocations stay.
func (a *Agent) leavesOnStop() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg.DrainOnShutdown || a.drained
}

// leaderAPI returns the inter-agent API address of the node named id.
func (a *Agent) leaderAPI(id string) (string, error) {
	if a.cl.members != nil {
		for _, m := range a.cl.members.Members() {
			if m.Name == id && m.Meta.APIAddr != "" {
				return m.Meta.APIAddr, nil
			}
		}
	}
	if n, ok := a.cl.store.Node(id); ok && n.APIAddr != "" {
		return n.APIAddr, nil
	}
	return "", fmt.Errorf("no API address known for node %q: %w", id, api.ErrUnavailable)
}

// serveClusterAPI serves the admin API and the forwarding route over
// mutual TLS on api_port until ctx ends.
func (a *Agent) serveClusterAPI(ctx context.Context) error {
	cfg := a.cfg.Cluster
	bind := cfg.BindAddr
	if bind == "" {
		bind = "0.0.0.0"
	}
	addr := net.JoinHostPort(bind, strconv.Itoa(cfg.APIPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("inter-agent API on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	prop, _ := a.cl.prop.(*cluster.Proposer)
	if prop != nil {
		mux.Handle("POST "+PathInternalRaftApply, prop.Handler())
	}
	mux.Handle("/", a.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: a.cl.tls.Server()}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	a.log.Info("inter-agent API listening", "addr", addr)
	if err := srv.Serve(tls.NewListener(ln, srv.TLSConfig)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("inter-agent API: %w", err)
	}
	return nil
}

// runMembership runs gossip until ctx ends (then leaves gracefully), wakes
// the leader loop on every membership change and bootstraps Raft once
// bootstrap_expect servers are seen.
func (a *Agent) runMembership(ctx context.Context) error {
	go func() {
		if err := a.serveClusterAPI(ctx); err != nil {
			a.log.Error("inter-agent API stopped", "err", err)
		}
	}()
	done := make(chan error, 1)
	go func() { done <- a.cl.members.Run(ctx) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastChange := time.Now()
	rc := newReconnector(a.cl.members, a.log)
	for {
		select {
		case err := <-done:
			if err != nil {
				a.log.Warn("leaving the cluster", "err", err)
			}
			return nil
		case ev := <-a.cl.members.Events():
			a.log.Info("member "+ev.Type.String(), "member", ev.Member.Name, "addr", ev.Member.Addr)
			lastChange = time.Now()
			a.cl.wake()
		case <-tick.C:
		}
		a.maybeBootstrap(lastChange)
		rc.tick(time.Now())
	}
}

// Reconnect backoff for dead members: the first try soon after the death,
// then doubling up to the maximum, for as long as the member stays dead.
const (
	reconnectMin = 2 * time.Second
	reconnectMax = 30 * time.Second
)

// rejoiner is what the reconnector needs of gossip.
type rejoiner interface {
	Members() []cluster.Member
	Rejoin(addrs []string) (int, error)
}

// reconnector contacts dead members again (Serf's reconnect). Memberlist
// never probes a member it declared dead, so when a partition heals both
// sides stay dead to each other for good; a join with the dead member
// exchanges the full state, each side refutes its own death, and both
// are alive again within a second. Members that left are not contacted.
// One rejoin runs at a time, off the membership loop (a dial to a member
// that is really gone takes up to memberlist's TCP timeout).
type reconnector struct {
	m    rejoiner
	log  *slog.Logger
	next map[string]time.Time     // per dead member: its next try
	wait map[string]time.Duration // and the backoff after it
	busy atomic.Bool
}

func newReconnector(m rejoiner, log *slog.Logger) *reconnector {
	return &reconnector{m: m, log: log, next: map[string]time.Time{}, wait: map[string]time.Duration{}}
}

// tick starts a rejoin of the dead members whose time has come.
func (r *reconnector) tick(now time.Time) {
	var addrs, names []string
	dead := map[string]bool{}
	for _, m := range r.m.Members() {
		if m.State != raftstore.NodeDead || m.Addr == "" {
			continue
		}
		dead[m.Name] = true
		next, ok := r.next[m.Name]
		if !ok {
			r.next[m.Name], r.wait[m.Name] = now.Add(reconnectMin), reconnectMin
			continue
		}
		if now.Before(next) || r.busy.Load() {
			continue
		}
		r.wait[m.Name] = min(2*r.wait[m.Name], reconnectMax)
		r.next[m.Name] = now.Add(r.wait[m.Name])
		addrs, names = append(addrs, m.Addr), append(names, m.Name)
	}
	for name := range r.next {
		if !dead[name] {
			delete(r.next, name)
			delete(r.wait, name)
		}
	}
	if len(addrs) == 0 {
		return
	}
	r.busy.Store(true)
	go func() {
		defer r.busy.Store(false)
		n, err := r.m.Rejoin(addrs)
		if n > 0 {
			r.log.Info("reconnected to members declared dead", "members", names, "answered", n)
			return
		}
		r.log.Debug("dead members still unreachable", "members", names, "err", err)
	}()
}

// maybeBootstrap forms the first Raft configuration: when this server has
// no Raft state and no leader, and gossip has shown at least
// bootstrap_expect servers, stable for a second, the bootstrap_expect
// servers with the lowest names bootstrap together with the same list.
// Servers beyond them, and non-servers, are added by the leader.
func (a *Agent) maybeBootstrap(lastChange time.Time) {
	cfg := a.cfg.Cluster
	if cfg.BootstrapExpect < 1 || !cfg.Server || a.cl.bootstrapped {
		return
	}
	st := a.cl.store.Stats()
	if st.LastIndex > 0 || st.LeaderID != "" {
		a.cl.bootstrapped = true
		return
	}
	if time.Since(lastChange) < time.Second {
		return
	}
	var servers []raftstore.Server
	for _, m := range a.cl.members.Members() {
		if m.State == raftstore.NodeAlive && m.Meta.Server && m.Meta.RaftAddr != "" {
			servers = append(servers, raftstore.Server{ID: m.Name, Address: m.Meta.RaftAddr})
		}
	}
	if len(servers) < cfg.BootstrapExpect {
		return
	}
	slices.SortFunc(servers, func(x, y raftstore.Server) int { return strings.Compare(x.ID, y.ID) })
	servers = servers[:cfg.BootstrapExpect]
	if !slices.ContainsFunc(servers, func(s raftstore.Server) bool { return s.ID == a.cfg.NodeName }) {
		return // one of the first servers bootstraps; the leader adds this one
	}
	a.log.Info("bootstrapping the cluster", "servers", len(servers))
	if err := a.cl.store.BootstrapCluster(servers); err != nil {
		a.log.Error("bootstrap", "err", err)
		return
	}
	a.cl.bootstrapped = true
}

// reconcileRaftServers keeps the Raft configuration as gossip sees it
// (leader only): a member that left gracefully is removed; a voter dead
// for longer than voter_replace_after gives its vote to a live non-voter
// server (one dead voter per such candidate), so the cluster keeps its
// vote count; alive servers join as voters while there are fewer than
// voterTarget, every other alive member as a non-voter.
func (a *Agent) reconcileRaftServers(ctx context.Context) {
	servers, err := a.cl.store.Servers()
	if err != nil {
		return
	}
	conf := map[string]raftstore.Server{}
	voters := 0
	for _, s := range servers {
		conf[s.ID] = s
		if s.Suffrage == raftstore.Voter {
			voters++
		}
	}
	members := a.cl.members.Members()
	now := time.Now()
	state := map[string]cluster.Member{}
	for _, m := range members {
		state[m.Name] = m
		if m.State == raftstore.NodeDead {
			if _, ok := a.cl.deadSince[m.Name]; !ok {
				a.cl.deadSince[m.Name] = now
			}
		} else {
			delete(a.cl.deadSince, m.Name)
		}
	}
	// The servers: voters in the configuration and alive server members.
	var candidates []cluster.Member // alive servers without a vote
	serverSet := map[string]bool{}
	for _, s := range servers {
		if s.Suffrage == raftstore.Voter {
			serverSet[s.ID] = true
		}
	}
	for _, m := range members {
		if m.State != raftstore.NodeAlive || !m.Meta.Server {
			continue
		}
		serverSet[m.Name] = true
		if s, in := conf[m.Name]; !in || s.Suffrage != raftstore.Voter {
			candidates = append(candidates, m)
		}
	}
	// Graceful leaves, and long-dead voters with a replacement.
	replaceable := len(candidates)
	for _, s := range servers {
		if s.ID == a.cfg.NodeName {
			continue
		}
		m, known := state[s.ID]
		switch {
		case known && m.State == raftstore.NodeLeft:
			a.changeRaft(ctx, "remove (left)", s.ID, func() error { return a.cl.store.RemoveServer(ctx, s.ID) })
			delete(serverSet, s.ID)
			if s.Suffrage == raftstore.Voter {
				voters--
			}
		case known && m.State == raftstore.NodeDead && s.Suffrage == raftstore.Voter &&
			now.Sub(a.cl.deadSince[s.ID]) > time.Duration(a.cfg.Cluster.VoterReplaceAfter) && replaceable > 0:
			a.changeRaft(ctx, "remove (dead voter, replaced)", s.ID, func() error { return a.cl.store.RemoveServer(ctx, s.ID) })
			delete(serverSet, s.ID)
			voters--
			replaceable--
		}
	}
	target := voterTarget(len(serverSet))
	for _, m := range candidates {
		if voters >= target {
			break
		}
		a.changeRaft(ctx, "add voter", m.Name, func() error { return a.cl.store.AddVoter(ctx, m.Name, m.Meta.RaftAddr) })
		voters++
		conf[m.Name] = raftstore.Server{ID: m.Name, Suffrage: raftstore.Voter}
	}
	for _, m := range members {
		if _, in := conf[m.Name]; in || m.State != raftstore.NodeAlive || m.Meta.RaftAddr == "" {
			continue
		}
		a.changeRaft(ctx, "add non-voter", m.Name, func() error { return a.cl.store.AddNonvoter(ctx, m.Name, m.Meta.RaftAddr) })
	}
}

// voterTarget is how many of servers server candidates vote: as many as
// there are, up to MaxVoters, but an odd number. An even count tolerates
// no more failures than the odd count below it (4 voters need 3 for a
// quorum, as 5 do; 3 need 2) and makes every write wait for one more
// member, so the server beyond an odd count waits as a non-voter, ready
// to take the vote of a voter that dies (voter_replace_after).
func voterTarget(servers int) int {
	n := min(servers, MaxVoters)
	if n > 1 && n%2 == 0 {
		n--
	}
	return max(n, 1)
}

func (a *Agent) changeRaft(ctx context.Context, what, id string, f func() error) {
	if err := f(); err != nil {
		a.log.Warn("raft configuration: "+what, "member", id, "err", err)
		return
	}
	a.log.Info("raft configuration: "+what, "member", id)
}

// runScheduler runs the scheduler for as long as the agent runs; it
// plans only while this member leads (cluster.Scheduler).
func (a *Agent) runScheduler(ctx context.Context) error {
	return cluster.NewScheduler(a.cl.store, a.schedulerOptions(), a.log.With("component", "scheduler")).Run(ctx)
}

// schedulerOptions are the scheduler's settings from the agent config.
func (a *Agent) schedulerOptions() cluster.Options {
	return cluster.Options{
		DeadGrace: time.Duration(a.cfg.Cluster.DeadGrace),
		Priority: func(s *api.GroupSpec) int64 {
			p, _ := a.priority(s)
			return p
		},
	}
}
