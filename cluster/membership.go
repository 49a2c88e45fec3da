package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Member is one member of the cluster as the local member sees it.
type Member struct {
	Name string
	// Addr is the member's gossip address, host:port.
	Addr string
	Meta Meta
	// State is alive, suspect, dead or left.
	State raftstore.NodeStatus
}

// NodeInfo returns m as the Raft state records a node.
func (m Member) NodeInfo() raftstore.NodeInfo {
	return raftstore.NodeInfo{
		Name: m.Name, APIAddr: m.Meta.APIAddr, RaftAddr: m.Meta.RaftAddr,
		Capacity: m.Meta.Capacity, Labels: m.Meta.Labels, Version: m.Meta.Version,
		Status: m.State, Server: m.Meta.Server,
	}
}

// Membership is the local agent's memberlist member: it joins the cluster,
// carries the agent's Meta, and reports who is alive.
//
// New binds the gossip ports and makes the member; Run joins the cluster
// and, when its ctx ends, leaves it. Members, LocalNode, Events and
// UpdateMeta are safe for concurrent use, before and during Run.
type Membership struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	events chan MemberEvent

	mu      sync.Mutex // guards meta and encoded; memberlist's delegate takes it
	meta    Meta
	encoded []byte
	addr    string // advertised host:port, set by New

	table *memberTable

	stopMu  sync.Mutex // held through Leave and Shutdown
	stopped bool       // Leave or Shutdown ran: ml is shut down
}

// New validates cfg, checks that meta fits memberlist's metadata limit and
// starts the member, listening on cfg.BindAddr:cfg.BindPort. It joins
// nobody: Run does. meta.Name defaults to cfg.NodeName and must equal it.
func New(cfg Config, meta Meta, logger *slog.Logger) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if meta.Name == "" {
		meta.Name = cfg.NodeName
	}
	if meta.Name != cfg.NodeName {
		return nil, fmt.Errorf("node metadata names %q, the node is %q: %w", meta.Name, cfg.NodeName, api.ErrInvalid)
	}
	encoded, err := meta.Encode()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "cluster", "node", cfg.NodeName)

	m := &Membership{
		cfg:     cfg,
		log:     logger,
		events:  make(chan MemberEvent, cfg.EventBuffer),
		table:   newMemberTable(),
		meta:    meta,
		encoded: encoded,
	}
	mc, err := m.memberlistConfig()
	if err != nil {
		return nil, err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	// Nobody knows this member yet, so memberlist does not write the local
	// node concurrently: reading it once here does not race.
	addr := ml.LocalNode().Address()
	m.mu.Lock()
	m.ml, m.addr = ml, addr
	m.mu.Unlock()
	logger.Info("gossip started", "addr", addr, "encrypted", cfg.EncryptKey != "")
	return m, nil
}

func (m *Membership) memberlistConfig() (*memberlist.Config, error) {
	c := m.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.NodeName
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertisePort = c.BindPort // 0: memberlist advertises the port it bound
	if c.AdvertiseAddr != "" {
		host, port, err := net.SplitHostPort(c.AdvertiseAddr)
		if err != nil {
			host, port = c.AdvertiseAddr, ""
		}
		mc.AdvertiseAddr = host
		if port != "" {
			p, err := strconv.Atoi(port)
			if err != nil {
				return nil, fmt.Errorf("advertise address %q: bad port: %w", c.AdvertiseAddr, api.ErrInvalid)
			}
			mc.AdvertisePort = p
		}
	}
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	// AwarenessMaxMultiplier stays at DefaultLANConfig's 8: Lifeguard on.
	keyring, err := c.keyring()
	if err != nil {
		return nil, fmt.Errorf("cluster config: %v: %w", err, api.ErrInvalid)
	}
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.Delegate = (*metaDelegate)(m)
	mc.Events = &eventDelegate{ch: m.events, table: m.table, log: m.log}
	mc.LogOutput = nil
	mc.Logger = log.New(logWriter{m.log}, "", 0)
	return mc, nil
}

// Run joins cfg.Join, retrying with backoff (cfg.JoinRetry) until one
// member answers or ctx ends, then waits for ctx to end and leaves the
// cluster gracefully (at most cfg.LeaveTimeout), or only shuts down when
// cfg.LeaveOnStop says not to leave. Without cfg.Join the member waits to
// be joined. Run returns the leave's error, or nil.
func (m *Membership) Run(ctx context.Context) error {
	if len(m.cfg.Join) > 0 {
		m.join(ctx)
	}
	<-ctx.Done()
	if m.cfg.LeaveOnStop != nil && !m.cfg.LeaveOnStop() {
		m.log.Info("stopping gossip without leaving: the node's groups keep running")
		return m.Shutdown()
	}
	return m.Leave(m.cfg.LeaveTimeout)
}

func (m *Membership) join(ctx context.Context) {
	wait := m.cfg.JoinRetry.Interval
	for attempt := 1; ; attempt++ {
		n, err := m.ml.Join(m.cfg.Join)
		if n > 0 {
			if err != nil {
				m.log.Warn("joined the cluster, but not through every seed", "contacted", n, "err", err)
			}
			m.log.Info("joined the cluster", "contacted", n, "attempt", attempt, "members", m.ml.NumMembers())
			return
		}
		m.log.Warn("join failed; retrying", "seeds", m.cfg.Join, "attempt", attempt, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, m.cfg.JoinRetry.Max)
	}
}

// Rejoin contacts the members at addrs (gossip host:port) once, as a join
// does, and returns how many answered. Memberlist never contacts a member
// it declared dead again, so after a partition heals both sides would
// stay dead to each other; the agent calls Rejoin for its dead members
// now and then (Serf's reconnect).
func (m *Membership) Rejoin(addrs []string) (int, error) {
	m.stopMu.Lock()
	stopped := m.stopped
	m.stopMu.Unlock()
	if stopped { // a Join racing a Leave fails on its own
		return 0, fmt.Errorf("rejoin: member has left: %w", api.ErrUnavailable)
	}
	return m.ml.Join(addrs)
}

// Members returns every member the local member has heard of, itself
// included and sorted by name, with its last known state: members that
// failed or left stay listed (dead, left) until they come back.
//
// The table is kept from memberlist's event callbacks, which see its node
// table under its lock; memberlist.Members returns pointers into that
// table, which memberlist keeps writing, so reading them races. The price:
// memberlist has no callback for suspicion, so a suspect member is listed
// as alive until it is declared dead or refutes the suspicion.
func (m *Membership) Members() []Member {
	return m.table.list()
}

// LocalNode returns the local member.
func (m *Membership) LocalNode() Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Member{Name: m.cfg.NodeName, Addr: m.addr, Meta: m.meta, State: raftstore.NodeAlive}
}

// Events returns the membership changes (see eventDelegate for the rule:
// events are dropped, with a log line, when the consumer stalls; Members
// is always current). The channel is never closed: select on your own
// ctx as well.
func (m *Membership) Events() <-chan MemberEvent { return m.events }

// UpdateMeta replaces the local member's metadata and broadcasts it,
// waiting up to cfg.LeaveTimeout for the broadcast to go out. It fails,
// wrapping api.ErrInvalid, when meta is too big or names another node.
func (m *Membership) UpdateMeta(meta Meta) error {
	if meta.Name == "" {
		meta.Name = m.cfg.NodeName
	}
	if meta.Name != m.cfg.NodeName {
		return fmt.Errorf("node metadata names %q, the node is %q: %w", meta.Name, m.cfg.NodeName, api.ErrInvalid)
	}
	encoded, err := meta.Encode()
	if err != nil {
		return err
	}
	m.stopMu.Lock()
	if m.stopped {
		m.stopMu.Unlock()
		return fmt.Errorf("update node metadata: member has left: %w", api.ErrUnavailable)
	}
	m.mu.Lock()
	m.meta, m.encoded = meta, encoded
	m.mu.Unlock()
	m.stopMu.Unlock()
	if err := m.ml.UpdateNode(m.cfg.LeaveTimeout); err != nil {
		return fmt.Errorf("update node metadata: %v: %w", err, api.ErrUnavailable)
	}
	return nil
}

// Leave tells the other members that this one leaves (they report
// EventLeave, not EventFailed), waits up to timeout for the message to go
// out, then stops gossiping. It may be called more than once.
func (m *Membership) Leave(timeout time.Duration) error {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	if m.stopped {
		return nil
	}
	m.stopped = true
	start := time.Now()
	// Announce first that this member leaves (Meta.Leaving): memberlist
	// reports a leave and a failure alike, so the others tell them apart
	// by this flag (see eventDelegate.NotifyLeave).
	m.mu.Lock()
	if b, err := m.meta.encode(true); err == nil {
		m.encoded = b
	}
	m.mu.Unlock()
	if err := m.ml.UpdateNode(timeout); err != nil {
		m.log.Warn("could not announce the leave; the others may report this member failed", "err", err)
	}
	leaveErr := m.ml.Leave(max(timeout-time.Since(start), time.Millisecond))
	if leaveErr != nil {
		leaveErr = fmt.Errorf("leave the cluster: %w", leaveErr)
	}
	m.log.Info("left the cluster", "err", leaveErr)
	return errors.Join(leaveErr, m.ml.Shutdown())
}

// Shutdown stops gossiping without leaving: the others will find this
// member dead (EventFailed), as if it had crashed.
func (m *Membership) Shutdown() error {
	m.stopMu.Lock()
	defer m.stopMu.Unlock()
	if m.stopped {
		return nil
	}
	m.stopped = true
	return m.ml.Shutdown()
}

// metaDelegate is memberlist's Delegate, on the Membership itself: it only
// serves the local metadata; Berth sends no user messages over gossip.
// memberlist calls it from its own goroutines, so it only reads the
// encoded metadata under mu.
type metaDelegate Membership

var _ memberlist.Delegate = (*metaDelegate)(nil)

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.encoded) > limit { // Encode keeps it ≤ MetaMaxSize; memberlist asks for that
		return nil
	}
	return append([]byte(nil), d.encoded...)
}

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}
