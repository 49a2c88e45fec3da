package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Leader election (DESIGN.md, Leases), the agent's side. The lease itself
// is Raft state (raftstore/lease.go): key, holder, node, fencing token,
// expiry. This file is what happens around it on a node:
//
//   - campaign: a group asks for a lease over its downward socket; the
//     agent proposes an Acquire (forwarded to the Raft leader) stamped with
//     its own wall clock, and while another holder has it waits for the
//     lease to change (a release or revoke: retry at once) or for the
//     holder's expiry plus the clock-drift margin (then retry). Failover
//     therefore takes about TTL + margin after the holder's last renewal.
//   - hold: the holder's agent renews every TTL/3 while the holder group is
//     running and ready, and stops at once when it turns un-ready or stops.
//     It considers the lease lost at (send time of the last successful
//     renewal + TTL) on its own monotonic clock: the Raft expiry is that
//     same send time + TTL, and a campaigner is granted only after expiry
//     + margin by its clock, so the holder stops believing first.
//     On loss, on_lose = "notify" tells the app (GET answers held = false,
//     a long-poll returns, a LeaseLost event) and "restart" also restarts
//     the holder group, so that a process that believed it led is gone.
//     The lease is given back in Raft (a waiting campaigner is granted at
//     once) as soon as nothing can still believe in it: when the holder
//     resigns, when no container of its group runs any more (a stopped
//     group, or the stop of a restart), else when its belief expires. A
//     told holder that still runs hands over sooner by resigning.
//   - recovery: a restarted agent adopts the leases Raft says its groups
//     hold and keeps renewing them with the same token (or releases them).
//   - node death: the Raft leader revokes the leases of nodes recorded dead.
//
// Holders: an allocation holds as its ID ("web.1", the hostname of its
// containers); a local group as "<group>@<node>" (a local group of the
// same name may run on several nodes and compete for the same lease). A
// campaign may name a sub-holder (CampaignRequest.Holder): it is appended,
// "<default>/<holder>", so that a group can never pose as another one.

// Lease timing.
const (
	// leaseMarginMin and leaseMarginMax bound the clock-drift margin: a
	// campaigner is granted a lease only once the holder's expiry plus the
	// margin has passed by the campaigner's clock. It is TTL/5 within
	// these bounds: 200 ms for a 1 s lease, 1 s for the default 5 s.
	leaseMarginMin = 200 * time.Millisecond
	leaseMarginMax = 2 * time.Second
	// defaultCampaignTimeout is how long a campaign waits for the grant
	// unless the request says; maxCampaignTimeout and maxLeaseWait bound
	// what a request may ask.
	defaultCampaignTimeout = 30 * time.Second
	maxCampaignTimeout     = 10 * time.Minute
	maxLeaseWait           = 10 * time.Minute
	// leaseRetry is the pause before an Acquire or a renewal is tried again
	// after a failure that was not a refusal (no Raft leader yet).
	leaseRetry = 100 * time.Millisecond
	// releaseTimeout bounds a release sent in the background.
	releaseTimeout = 5 * time.Second
)

// leaseMargin is the clock-drift margin for a lease of ttl.
func leaseMargin(ttl time.Duration) time.Duration {
	return min(max(ttl/5, leaseMarginMin), leaseMarginMax)
}

// leaseStore is what leases read of the Raft state; *raftstore.Store is
// one. Its methods are safe for concurrent use.
type leaseStore interface {
	Lease(key string) (raftstore.Lease, bool)
	Leases() []raftstore.Lease
	Nodes() []raftstore.NodeInfo
	IsLeader() bool
	Watch(ctx context.Context) <-chan uint64
}

// proposeFunc writes one command through the Raft leader and returns once
// this member applied it (Agent.propose).
type proposeFunc func(ctx context.Context, t raftstore.CommandType, payload any) (uint64, error)

// holderState is what the node knows of a lease holder's group.
type holderState int

const (
	// holderGone: the group is not defined here, or stopped, or stopping.
	holderGone holderState = iota
	// holderUnknown: defined, but its runner has not said how it is yet
	// (right after an agent start).
	holderUnknown
	// holderNotReady: started but not (or no longer) ready.
	holderNotReady
	// holderReady: running and ready: its leases are renewed.
	holderReady
)

func (s holderState) String() string {
	return [...]string{"gone", "unknown", "not ready", "ready"}[s]
}

// leaseGroups is what leases need of the groups on this node. Calls must
// not block for long.
type leaseGroups interface {
	// holder returns the group's spec (nil when it is not defined here)
	// and its state.
	holder(group string) (*api.GroupSpec, holderState)
	// stopped reports whether no container of the group runs (it may be
	// defined, and start again later).
	stopped(group string) bool
	// restart restarts the group's containers (on_lose = "restart"),
	// calling stopped once they are all gone, before they start again. It
	// may block until then.
	restart(ctx context.Context, group, why string, stopped func())
}

// leaseManager is this node's side of every lease: campaigns, the holds
// of its groups, recovery after a restart, and (on the Raft leader) the
// revocation of dead nodes' leases. Run must be running for campaigns to
// be answered. Safe for concurrent use.
type leaseManager struct {
	node    string
	log     *slog.Logger
	store   leaseStore
	propose proposeFunc
	groups  leaseGroups
	events  *Events

	started chan struct{} // closed by Run once ctx is set
	ctx     context.Context
	// recovered is closed once this node's leases were adopted after the
	// agent started (recover).
	recovered chan struct{}

	mu sync.Mutex
	// holds are the leases held by this node's groups, by key.
	holds map[string]*hold
	// acquiring counts the Acquires in flight per key: recovery leaves
	// those keys to their campaign.
	acquiring map[string]int
	// changed is closed and replaced whenever a lease, a hold or a
	// group's state may have changed: waiters re-check.
	changed chan struct{}
	// electors are the campaigns run for the leader-elector endpoint
	// (GET /), by key and holder.
	electors map[string]bool
}

// hold is one lease held by a group of this node.
type hold struct {
	key, name string
	// group is the holder's group on this node (an allocation ID or a
	// local group), whose readiness keeps the lease.
	group  string
	holder string
	token  uint64
	ttl    time.Duration
	onLose api.OnLose
	// deadline is when this node stops believing it holds the lease: the
	// send time of the last successful Acquire or Renew plus ttl, on the
	// monotonic clock. Guarded by leaseManager.mu.
	deadline time.Time
	// poke asks the keeper to look again now (one slot).
	poke chan struct{}
	// done is closed when the hold ends; why says how (under mu).
	done chan struct{}
	why  string
	// adopted: found in Raft after an agent start; renewed at once.
	adopted bool
}

func newLeaseManager(node string, log *slog.Logger, store leaseStore, propose proposeFunc, groups leaseGroups, events *Events) *leaseManager {
	return &leaseManager{
		node: node, log: log, store: store, propose: propose, groups: groups, events: events,
		started:   make(chan struct{}),
		recovered: make(chan struct{}),
		holds:     map[string]*hold{},
		acquiring: map[string]int{},
		changed:   make(chan struct{}),
		electors:  map[string]bool{},
	}
}

// Run watches the Raft state and this node's group events until ctx ends:
// it wakes waiters when a lease changes, pokes the keepers of holds whose
// group changed, adopts this node's leases once its state holds what was
// committed before the start (sync), and on the Raft leader revokes the
// leases of dead nodes. When
// ctx ends the holds stop being renewed without being released: a
// restarted agent adopts them again.
func (m *leaseManager) Run(ctx context.Context) error {
	m.ctx = ctx
	close(m.started)
	watch := m.store.Watch(ctx)
	_, evs, cancel := m.events.Subscribe("")
	defer func() { cancel() }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	seen := map[string]uint64{} // key → index of the lease last seen
	recovered := false
	synced := make(chan struct{})
	go m.sync(ctx, synced)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-synced:
			synced = nil
			leases := m.store.Leases()
			m.recover(leases)
			recovered = true
			close(m.recovered)
			m.broadcast()
			continue
		case _, ok := <-watch:
			if !ok {
				return nil // the store closed
			}
		case ev, ok := <-evs:
			if !ok {
				// Fell behind: subscribe again and look at every hold.
				_, evs, cancel = m.events.Subscribe("")
				m.pokeAll("")
			} else if ev.Group != "" && !isLeaseEvent(ev.Reason) {
				m.pokeAll(ev.Group)
			}
			m.broadcast()
			continue
		case <-tick.C:
		}
		leases := m.store.Leases()
		if leasesChanged(seen, leases) {
			m.pokeAll("")
			m.broadcast()
		}
		if m.store.IsLeader() && recovered {
			m.revokeDead(ctx, leases)
		}
	}
}

// recoveryWait bounds how long a request waits for the adoption of this
// node's leases after an agent start (the state catching up).
const recoveryWait = 10 * time.Second

// waitRecovered waits until this node's leases were adopted after the
// agent started, at most recoveryWait: until then a holder would be told
// it does not hold a lease its agent is about to renew.
func (m *leaseManager) waitRecovered(ctx context.Context) {
	t := time.NewTimer(recoveryWait)
	defer t.Stop()
	select {
	case <-m.recovered:
	case <-t.C:
	case <-ctx.Done():
	}
}

// syncKey is the (never held) lease that sync releases.
var syncKey = raftstore.LeaseKey("", "berth-agent-start", true)

// sync makes sure this member's state holds everything the cluster
// committed before the agent started, then closes done: it writes a
// command that changes nothing (the release of a lease nobody holds)
// through the leader, and the proposer returns once this member applied
// it, so everything committed before is applied too. A member's own view
// of "caught up" can stall after a restart (entries that never reach the
// state machine, such as a new leader's no-op, count in the commit index),
// and a write cannot.
func (m *leaseManager) sync(ctx context.Context, done chan<- struct{}) {
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := m.propose(cctx, raftstore.CmdLeaseRelease, raftstore.LeaseRelease{Key: syncKey, Holder: m.node, Token: 1})
		cancel()
		if err == nil {
			close(done)
			return
		}
		m.log.Debug("lease state sync failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(leaseRetry):
		}
	}
}

// isLeaseEvent tells this file's own events, which need no re-check.
func isLeaseEvent(reason string) bool { return strings.HasPrefix(reason, "Lease") }

// leasesChanged updates seen to leases and reports whether anything
// differs.
func leasesChanged(seen map[string]uint64, leases []raftstore.Lease) bool {
	changed := len(seen) != len(leases)
	now := make(map[string]bool, len(leases))
	for _, l := range leases {
		now[l.Key] = true
		if seen[l.Key] != l.Index {
			changed = true
		}
		seen[l.Key] = l.Index
	}
	for k := range seen {
		if !now[k] {
			delete(seen, k)
			changed = true
		}
	}
	return changed
}

// broadcast wakes every waiter.
func (m *leaseManager) broadcast() {
	m.mu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// changes returns the channel the next broadcast closes.
func (m *leaseManager) changes() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// pokeAll asks the keepers of group's holds (every hold when group is
// empty) to look again now.
func (m *leaseManager) pokeAll(group string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.holds {
		if group == "" || h.group == group {
			select {
			case h.poke <- struct{}{}:
			default:
			}
		}
	}
}

// leaseCaller is who campaigns: a group of this node.
type leaseCaller struct {
	// local is the group's name on this node: its socket's group.
	local string
	// group scopes its leases: the cluster group of an allocation, else
	// the local group.
	group string
	// allocation is set for an allocation of a cluster group.
	allocation string
	// holder is the name it holds leases as.
	holder string
}

// defaultHolder is the holder name of a group of this node.
func defaultHolder(local, allocation, node string) string {
	if allocation != "" {
		return allocation
	}
	return local + "@" + node
}

// withSubHolder qualifies a sub-holder named in a request.
func (c leaseCaller) withSubHolder(sub string) (leaseCaller, error) {
	if sub == "" {
		return c, nil
	}
	if len(sub) > 63 || strings.ContainsAny(sub, "/ \t\r\n") {
		return c, fmt.Errorf("holder %q: use at most 63 characters without '/' or spaces (it names one candidate within the group, e.g. a container or a pod-style ID): %w", sub, api.ErrInvalid)
	}
	c.holder += "/" + sub
	return c, nil
}

// leaseSpec is the [[lease]] of spec named name, with its defaults: a
// declared one; for "shard-K" a declared "shard" (one declaration for
// every shard's ownership lease); else the defaults (ttl 5s, notify,
// scoped to the group). Leases need no declaration.
func leaseSpec(spec *api.GroupSpec, name string) api.LeaseSpec {
	ls := api.LeaseSpec{Name: name}
	if spec != nil {
		if l, ok := spec.Lease(name); ok {
			ls = *l
		} else if rest, ok := strings.CutPrefix(name, "shard-"); ok && isDigits(rest) {
			if l, ok := spec.Lease("shard"); ok {
				ls = *l
				ls.Name = name
			}
		}
	}
	ls.TTL = ls.EffectiveTTL()
	ls.OnLose = ls.EffectiveOnLose()
	return ls
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// checkLeaseName refuses a name that cannot be a lease's.
func checkLeaseName(name string) error {
	if !api.IsDNSLabel(name) {
		return fmt.Errorf("lease name %q is not a DNS label (lowercase letters, digits and '-', at most 63): %w", name, api.ErrInvalid)
	}
	return nil
}

// leaseKey is the Raft key of c's lease ls.
func (c leaseCaller) leaseKey(ls api.LeaseSpec) string {
	return raftstore.LeaseKey(c.group, ls.Name, ls.Shared)
}

// errCampaignTimeout is a campaign that was not granted in time; the
// message names the holder.
type campaignTimeoutError struct {
	key   string
	cur   raftstore.Lease
	held  bool
	state holderState
	wait  time.Duration
}

func (e *campaignTimeoutError) Error() string {
	switch {
	case e.state != holderReady:
		return fmt.Sprintf("lease %s not granted within %s: the campaigning group is %s (only a running, ready group may hold a lease)", e.key, e.wait, e.state)
	case e.held:
		return fmt.Sprintf("lease %s not granted within %s: held by %s on node %s (token %d, expiry %s)",
			e.key, e.wait, e.cur.Holder, e.cur.Node, e.cur.Token, e.cur.Expiry.UTC().Format(time.RFC3339Nano))
	}
	return fmt.Sprintf("lease %s not granted within %s: no Raft leader accepted the request", e.key, e.wait)
}

func (e *campaignTimeoutError) Unwrap() error {
	if e.held || e.state != holderReady {
		return api.ErrConflict
	}
	return api.ErrUnavailable
}

// campaign asks for lease ls for c and returns it once granted, or an
// error once timeout passes (an api.ErrConflict naming the holder) or ctx
// ends. A caller that already holds the lease gets it at once.
func (m *leaseManager) campaign(ctx context.Context, c leaseCaller, ls api.LeaseSpec, timeout time.Duration) (raftstore.Lease, error) {
	select {
	case <-m.started:
	case <-ctx.Done():
		return raftstore.Lease{}, ctx.Err()
	}
	key := c.leaseKey(ls)
	ttl, margin := ls.TTL.D(), leaseMargin(ls.TTL.D())
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var retryAt time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := m.changes()
		if l, ok := m.heldBy(key, c.holder); ok {
			return l, nil
		}
		_, state := m.groups.holder(c.local)
		if state == holderGone {
			return raftstore.Lease{}, fmt.Errorf("group %q is not running on node %s: only a running, ready group may campaign: %w", c.local, m.node, api.ErrConflict)
		}
		cur, held := m.store.Lease(key)
		now := time.Now()
		var wake time.Time // zero: only a change wakes us
		switch {
		case state != holderReady:
			// Wait for readiness (an event wakes us).
		case now.Before(retryAt):
			wake = retryAt
		case !held || cur.Holder == c.holder || cur.Expiry.Add(margin).Before(now):
			l, err := m.acquire(ctx, c, ls, key, ttl, margin)
			switch {
			case err == nil:
				return l, nil
			case ctx.Err() != nil:
			case errors.Is(err, api.ErrConflict):
				// Someone else was granted first; the store has it now.
				if cur, held = m.store.Lease(key); held {
					wake = cur.Expiry.Add(margin).Add(time.Millisecond)
				}
			default:
				m.log.Debug("lease acquire failed; retrying", "key", key, "holder", c.holder, "err", err)
				retryAt = time.Now().Add(leaseRetry)
				wake = retryAt
			}
		default:
			wake = cur.Expiry.Add(margin).Add(time.Millisecond)
		}
		var fire <-chan time.Time
		if !wake.IsZero() {
			resetTimer(timer, time.Until(wake))
			fire = timer.C
		}
		select {
		case <-changed:
		case <-fire:
		case <-ctx.Done():
			cur, held := m.store.Lease(key)
			_, state := m.groups.holder(c.local)
			return raftstore.Lease{}, &campaignTimeoutError{key: key, cur: cur, held: held, state: state, wait: timeout}
		}
	}
}

// acquire proposes one Acquire for c and, when granted, starts keeping the
// lease. It returns an api.ErrConflict error when another holder has it.
func (m *leaseManager) acquire(ctx context.Context, c leaseCaller, ls api.LeaseSpec, key string, ttl, margin time.Duration) (raftstore.Lease, error) {
	m.mu.Lock()
	m.acquiring[key]++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.acquiring[key]--; m.acquiring[key] <= 0 {
			delete(m.acquiring, key)
		}
		m.mu.Unlock()
	}()
	send := time.Now()
	_, err := m.propose(ctx, raftstore.CmdLeaseAcquire, raftstore.LeaseAcquire{
		Key: key, Group: c.group, Holder: c.holder, Node: m.node, Allocation: c.allocation,
		Now: send.UTC(), TTL: ttl, Margin: margin,
	})
	if err != nil {
		return raftstore.Lease{}, err
	}
	// The proposer returns once this member applied the grant; a newer
	// change may have replaced it since.
	l, ok := m.store.Lease(key)
	if !ok || l.Holder != c.holder {
		return raftstore.Lease{}, fmt.Errorf("lease %s changed right after the grant: %w", key, api.ErrConflict)
	}
	h, fresh := m.keep(l, c.local, ls, send.Add(ttl), false)
	if fresh {
		m.log.Info("lease granted", "key", key, "holder", c.holder, "token", l.Token)
		m.publish(h.group, api.EventNormal, "LeaseGranted",
			fmt.Sprintf("lease %s granted to %s with fencing token %d (ttl %s)", key, c.holder, l.Token, ttl))
	}
	return l, nil
}

// keep records a hold of l by group and starts renewing it; when the
// node already keeps l (same holder and token) it extends the deadline
// and reports fresh = false.
func (m *leaseManager) keep(l raftstore.Lease, group string, ls api.LeaseSpec, deadline time.Time, adopted bool) (h *hold, fresh bool) {
	m.mu.Lock()
	if old := m.holds[l.Key]; old != nil {
		if old.holder == l.Holder && old.token == l.Token {
			if deadline.After(old.deadline) {
				old.deadline = deadline
			}
			m.mu.Unlock()
			return old, false
		}
		// A different holder or token: the old hold is over.
		m.endLocked(old, fmt.Sprintf("replaced by %s (token %d)", l.Holder, l.Token))
	}
	h = &hold{key: l.Key, name: ls.Name, group: group, holder: l.Holder, token: l.Token, ttl: ls.TTL.D(),
		onLose: ls.OnLose, deadline: deadline, poke: make(chan struct{}, 1), done: make(chan struct{}), adopted: adopted}
	m.holds[l.Key] = h
	m.mu.Unlock()
	m.broadcast()
	go m.renew(h)
	return h, true
}

// heldBy returns the lease of key when this node holds it for holder and
// still believes it does.
func (m *leaseManager) heldBy(key, holder string) (raftstore.Lease, bool) {
	m.mu.Lock()
	h := m.holds[key]
	valid := h != nil && h.holder == holder && time.Now().Before(h.deadline)
	m.mu.Unlock()
	if !valid {
		return raftstore.Lease{}, false
	}
	l, ok := m.store.Lease(key)
	if !ok || l.Holder != holder || l.Token != h.token {
		return raftstore.Lease{}, false
	}
	return l, true
}

// holdOf returns a copy of the node's hold of key: its holder, token and
// deadline; ok is false when the node holds nothing there.
func (m *leaseManager) holdOf(key string) (holder string, token uint64, deadline time.Time, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.holds[key]
	if h == nil {
		return "", 0, time.Time{}, false
	}
	return h.holder, h.token, h.deadline, true
}

// renew keeps h: a Renew every ttl/3 while the holder group is ready,
// until the hold ends. It ends the hold when the group stops or turns
// un-ready (releasing the lease), when Raft no longer names the holder
// (revoked, or granted elsewhere), and when the deadline passes without a
// successful renewal.
func (m *leaseManager) renew(h *hold) {
	period := h.ttl / 3
	next := time.Now().Add(period)
	if h.adopted {
		next = time.Now()
	}
	timer := time.NewTimer(period)
	defer timer.Stop()
	waitUntil := next
	for {
		m.mu.Lock()
		deadline := h.deadline
		m.mu.Unlock()
		resetTimer(timer, min(time.Until(waitUntil), time.Until(deadline)))
		select {
		case <-m.ctx.Done():
			return // the agent stops: a restarted agent adopts the lease
		case <-h.done:
			return
		case <-h.poke:
		case <-timer.C:
		}
		now := time.Now()
		if !now.Before(deadline) {
			m.end(h, "it was not renewed before it expired", true, releaseNow)
			return
		}
		switch _, state := m.groups.holder(h.group); state {
		case holderGone:
			m.end(h, fmt.Sprintf("group %s stopped", h.group), false, releaseWhenStopped)
			return
		case holderNotReady:
			m.end(h, fmt.Sprintf("group %s is not ready", h.group), true, releaseWhenStopped)
			return
		case holderUnknown:
			// Not renewed until the group's state is known (an event
			// pokes us); the deadline still holds.
			waitUntil = now.Add(period)
			if deadline.Before(waitUntil) {
				waitUntil = deadline
			}
			continue
		}
		if l, ok := m.store.Lease(h.key); !ok {
			m.end(h, "it was released or revoked (its node may have been declared dead)", true, releaseNone)
			return
		} else if l.Holder != h.holder || l.Token != h.token {
			m.end(h, fmt.Sprintf("it is held by %s with token %d", l.Holder, l.Token), true, releaseNone)
			return
		}
		waitUntil = next
		if now.Before(next) {
			continue
		}
		send := time.Now()
		ctx, cancel := context.WithDeadline(m.ctx, deadline)
		_, err := m.propose(ctx, raftstore.CmdLeaseRenew, raftstore.LeaseRenew{
			Key: h.key, Holder: h.holder, Token: h.token, Now: send.UTC(), TTL: h.ttl,
		})
		cancel()
		switch {
		case err == nil:
			m.mu.Lock()
			h.deadline = send.Add(h.ttl)
			m.mu.Unlock()
			next = send.Add(period)
		case m.ctx.Err() != nil:
			return
		case errors.Is(err, raftstore.ErrLeaseLost) || errors.Is(err, api.ErrConflict):
			m.end(h, "the renewal was refused: "+err.Error(), true, releaseNone)
			return
		default:
			m.log.Warn("lease renewal failed; retrying until it expires", "key", h.key, "holder", h.holder,
				"expires_in", time.Until(deadline).Round(time.Millisecond), "err", err)
			next = time.Now().Add(min(leaseRetry, period))
		}
		waitUntil = next
	}
}

// resetTimer makes t fire after d (at once when d <= 0), whether or not
// it fired and was drained before.
func resetTimer(t *time.Timer, d time.Duration) {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
	}
	t.Reset(max(d, 0))
}

// releaseMode says when a hold that ends gives its lease back in Raft.
type releaseMode int

const (
	// releaseNone: Raft no longer names the holder (revoked, taken).
	releaseNone releaseMode = iota
	// releaseNow: nothing can believe in the lease any more (its holder
	// resigned, or the deadline passed).
	releaseNow
	// releaseWhenStopped: as soon as no container of the holder's group
	// runs, or at the deadline, whichever is first. A holder that is still
	// running may not have heard yet that it lost the lease (it is told at
	// once, and may resign to hand it over sooner): a new holder must not
	// be granted while it can still believe it leads.
	releaseWhenStopped
)

// end ends h: it stops renewing, gives the lease back as mode says (in
// the background, so that a waiting campaigner is granted as soon as it
// is safe) and, when lost, applies the on_lose policy.
func (m *leaseManager) end(h *hold, why string, lost bool, mode releaseMode) {
	m.mu.Lock()
	if m.holds[h.key] != h {
		m.mu.Unlock()
		return
	}
	m.endLocked(h, why)
	deadline := h.deadline
	m.mu.Unlock()
	m.broadcast()
	typ, reason, msg := api.EventNormal, "LeaseReleased", fmt.Sprintf("lease %s released by %s (token %d): %s", h.key, h.holder, h.token, why)
	if lost {
		typ, reason = api.EventWarning, "LeaseLost"
		msg = fmt.Sprintf("lease %s lost by %s (token %d): %s", h.key, h.holder, h.token, why)
		if h.onLose == api.OnLoseRestart {
			msg += "; restarting the group (on_lose = \"restart\")"
		}
	}
	m.log.Info(msg, "group", h.group)
	m.publish(h.group, typ, reason, msg)
	restart := lost && h.onLose == api.OnLoseRestart
	release := func() {
		if mode != releaseNone {
			m.release(h.key, h.holder, h.token)
		}
	}
	switch {
	case restart:
		// The group's containers go first; the lease is given back before
		// they start again.
		go m.groups.restart(m.ctx, h.group, msg, release)
	case mode == releaseNow:
		go release()
	case mode == releaseWhenStopped:
		go m.releaseWhenStopped(h, deadline)
	}
}

// releaseWhenStopped releases h's lease once no container of its group
// runs, or at deadline.
func (m *leaseManager) releaseWhenStopped(h *hold, deadline time.Time) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		changed := m.changes()
		if m.groups.stopped(h.group) || !time.Now().Before(deadline) {
			break
		}
		if l, ok := m.store.Lease(h.key); !ok || l.Holder != h.holder || l.Token != h.token {
			return // resigned, revoked or taken meanwhile
		}
		select {
		case <-m.ctx.Done():
			return
		case <-changed:
		case <-timer.C:
		}
	}
	m.release(h.key, h.holder, h.token)
}

// endLocked removes h and wakes whoever waits on it; m.mu held.
func (m *leaseManager) endLocked(h *hold, why string) {
	delete(m.holds, h.key)
	h.why = why
	close(h.done)
}

// release proposes the release of key by holder with token; it changes
// nothing when the lease has moved on.
func (m *leaseManager) release(key, holder string, token uint64) {
	m.mu.Lock()
	h := m.holds[key]
	again := h != nil && h.holder == holder && h.token == token
	m.mu.Unlock()
	if again {
		return // the holder campaigned again and got the same grant back
	}
	ctx, cancel := context.WithTimeout(m.ctx, releaseTimeout)
	defer cancel()
	if _, err := m.propose(ctx, raftstore.CmdLeaseRelease, raftstore.LeaseRelease{Key: key, Holder: holder, Token: token}); err != nil && m.ctx.Err() == nil {
		m.log.Warn("lease release failed; it expires by itself", "key", key, "holder", holder, "err", err)
	}
}

// resign gives up c's lease of key, if c holds it. It answers whether the
// Raft state named c as the holder.
func (m *leaseManager) resign(ctx context.Context, c leaseCaller, key string) (bool, error) {
	m.mu.Lock()
	h := m.holds[key]
	if h != nil && h.holder == c.holder {
		m.endLocked(h, "resigned")
	}
	m.mu.Unlock()
	if h != nil && h.holder == c.holder {
		m.broadcast()
	}
	l, ok := m.store.Lease(key)
	if !ok || l.Holder != c.holder {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	if _, err := m.propose(ctx, raftstore.CmdLeaseRelease, raftstore.LeaseRelease{Key: key, Holder: l.Holder, Token: l.Token}); err != nil {
		return true, fmt.Errorf("release lease %s: %w", key, err)
	}
	msg := fmt.Sprintf("lease %s released by %s (token %d): resigned", key, l.Holder, l.Token)
	m.log.Info(msg, "group", c.local)
	m.publish(c.local, api.EventNormal, "LeaseReleased", msg)
	return true, nil
}

// view is a lease as the API shows it to holder: Held only while this
// node holds it for holder and believes it does, and then Expiry is that
// belief's end (on a holder's own node, its wall clock is the agent's).
func (m *leaseManager) view(key, name string, shared bool, holder string) api.Lease {
	l, ok := m.store.Lease(key)
	if !ok {
		return api.Lease{Name: name, Shared: shared}
	}
	v := l.API(holder)
	v.Held = false
	if h, token, deadline, ok := m.holdOf(key); ok && h == holder && token == l.Token {
		if left := time.Until(deadline); left > 0 {
			v.Held = true
			if e := time.Now().Add(left); e.Before(v.Expiry) {
				v.Expiry = e
			}
		}
	}
	return v
}

// waitChange waits until lease key's token differs from token, until the
// caller's Held differs from held, until wait passes or ctx ends, then
// returns the lease as holder sees it.
func (m *leaseManager) waitChange(ctx context.Context, key, name string, shared bool, holder string, token uint64, held bool, wait time.Duration) api.Lease {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	belief := time.NewTimer(time.Hour)
	defer belief.Stop()
	for {
		changed := m.changes()
		v := m.view(key, name, shared, holder)
		if v.Token != token || v.Held != held {
			return v
		}
		var expiry <-chan time.Time
		if v.Held {
			// The belief ends by itself at its deadline.
			resetTimer(belief, time.Until(v.Expiry)+time.Millisecond)
			expiry = belief.C
		}
		select {
		case <-changed:
		case <-expiry:
		case <-timer.C:
			return v
		case <-ctx.Done():
			return v
		}
	}
}

// recover adopts the leases the Raft state says this node's groups hold
// (the agent restarted while they held them): it keeps renewing them with
// the same token while their group is ready, and releases them when it is
// not. Keys with a campaign in flight are left to it.
func (m *leaseManager) recover(leases []raftstore.Lease) {
	for _, l := range leases {
		if l.Node != m.node {
			continue
		}
		m.mu.Lock()
		busy := m.holds[l.Key] != nil || m.acquiring[l.Key] > 0
		m.mu.Unlock()
		if busy {
			continue
		}
		group := cmp.Or(l.Allocation, l.Group)
		spec, state := m.groups.holder(group)
		if state == holderGone || state == holderNotReady {
			msg := fmt.Sprintf("lease %s given up by %s (token %d): group %s is %s after the agent restarted", l.Key, l.Holder, l.Token, group, state)
			m.log.Info(msg)
			m.publish(group, api.EventNormal, "LeaseReleased", msg)
			h := &hold{key: l.Key, group: group, holder: l.Holder, token: l.Token}
			go m.releaseWhenStopped(h, time.Now().Add(time.Until(l.Expiry)))
			continue
		}
		ls := leaseSpec(spec, l.Name())
		ls.Shared = l.Shared()
		// Believe what the previous run believed: the expiry it wrote,
		// stamped with this node's clock.
		if _, fresh := m.keep(l, group, ls, time.Now().Add(time.Until(l.Expiry)), true); fresh {
			m.log.Info("lease adopted after an agent restart", "key", l.Key, "holder", l.Holder, "token", l.Token)
			m.publish(group, api.EventNormal, "LeaseAdopted",
				fmt.Sprintf("lease %s kept by %s with token %d after the agent restarted", l.Key, l.Holder, l.Token))
		}
	}
}

// revokeDead revokes the leases of nodes the state records dead or gone
// (the Raft leader's chore): their holders cannot renew, and waiting for
// the expiry would only delay the failover.
func (m *leaseManager) revokeDead(ctx context.Context, leases []raftstore.Lease) {
	dead := map[string]bool{}
	for _, n := range m.store.Nodes() {
		if n.Status == raftstore.NodeDead || n.Status == raftstore.NodeLeft {
			dead[n.Name] = true
		}
	}
	done := map[string]bool{}
	for _, l := range leases {
		if !dead[l.Node] || done[l.Node] {
			continue
		}
		done[l.Node] = true
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := m.propose(cctx, raftstore.CmdLeaseRevoke, raftstore.LeaseRevoke{Node: l.Node})
		cancel()
		if err != nil {
			m.log.Warn("revoke the leases of a dead node", "node", l.Node, "err", err)
			continue
		}
		m.log.Info("revoked the leases of a dead node", "node", l.Node)
	}
}

// publish records a lease event of group.
func (m *leaseManager) publish(group, typ, reason, msg string) {
	m.events.Publish(api.Event{Time: time.Now(), Type: typ, Group: group, Reason: reason, Message: msg})
}
