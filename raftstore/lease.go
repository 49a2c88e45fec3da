package raftstore

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-project/berth/api"
)

// Leases (DESIGN.md, Leases): a lease is a key, a holder, the holder's
// node, a fencing token and an expiry, in the replicated State.
//
// The token is the Raft index of the command that granted the lease to
// its holder: it only grows, and a renewal keeps it. A new holder is
// granted only when nobody holds the lease, or the old holder's expiry
// plus the campaigner's clock-drift margin has passed (the old holder can
// no longer believe it holds it). Every time comes from the command (its
// Now, else Command.Time), never from the FSM's clock.
//
// The FSM cleans up after the things leases belong to, in the same apply:
// CmdDeleteGroup revokes the leases held by the group's holders (and
// deletes the group's queues); CmdDeleteAllocation and the deletes of
// CmdApplyPlan revoke the leases held by that allocation. Revoking the
// leases of a dead node is the caller's: the cluster package proposes
// CmdLeaseRevoke{Node} (and CmdRequeueNode) when memberlist declares it
// dead.

// SharedLeaseGroup is the group part of the key of a shared lease: "*"
// is not a DNS label, so no group's own lease can have the same key.
const SharedLeaseGroup = "*"

// LeaseKey is the key of lease name: "<group>/<name>", or "*/<name>" for a
// lease declared shared (cluster-wide, whatever the group).
func LeaseKey(group, name string, shared bool) string {
	if shared {
		group = SharedLeaseGroup
	}
	return group + "/" + name
}

// ParseLeaseKey splits a lease key into its group ("" for a shared lease)
// and name.
func ParseLeaseKey(key string) (group, name string, shared bool, err error) {
	g, n, ok := strings.Cut(key, "/")
	switch {
	case !ok:
		return "", "", false, fmt.Errorf("lease key %q is not <group>/<name> or %s/<name>", key, SharedLeaseGroup)
	case !api.IsDNSLabel(n):
		return "", "", false, fmt.Errorf("lease key %q: name %q is not a DNS label", key, n)
	case g == SharedLeaseGroup:
		return "", n, true, nil
	case !api.IsDNSLabel(g):
		return "", "", false, fmt.Errorf("lease key %q: group %q is not a DNS label", key, g)
	}
	return g, n, false, nil
}

// Lease is a granted lease.
type Lease struct {
	Key string `json:"key"`
	// Group is the holder's group (for a group-scoped lease, the key's).
	Group string `json:"group"`
	// Holder names the holder: an allocation ID, or a container of a
	// local group; the agent that campaigns chooses it.
	Holder string `json:"holder"`
	// Node is where the holder runs: CmdLeaseRevoke{Node} revokes it.
	Node string `json:"node"`
	// Allocation is the holder's allocation, when it is one: deleting
	// the allocation revokes the lease.
	Allocation string `json:"allocation,omitempty"`
	// Token is the fencing token: the index of the grant.
	Token uint64 `json:"token"`
	// Granted is when Token was granted; Expiry when the lease ends
	// unless renewed; TTL the last grant's or renewal's length.
	Granted time.Time     `json:"granted"`
	Expiry  time.Time     `json:"expiry"`
	TTL     time.Duration `json:"ttl"`
	// Index is the index of the last grant or renewal.
	Index uint64 `json:"index,omitempty"`
}

// Name is the lease's name, without the group.
func (l Lease) Name() string {
	_, n, _ := strings.Cut(l.Key, "/")
	return n
}

// Shared reports whether the lease is cluster-wide.
func (l Lease) Shared() bool { return strings.HasPrefix(l.Key, SharedLeaseGroup+"/") }

// API returns the lease as the HTTP API shows it; Held is set when holder
// is its holder.
func (l Lease) API(holder string) api.Lease {
	return api.Lease{
		Name: l.Name(), Shared: l.Shared(), Group: l.Group, Holder: l.Holder, Node: l.Node,
		Token: l.Token, Granted: l.Granted, Expiry: l.Expiry, TTL: api.Duration(l.TTL),
		Held: holder != "" && holder == l.Holder,
	}
}

// MaxLeaseTTL bounds the TTL of a grant or renewal.
const MaxLeaseTTL = time.Hour

// LeaseAcquire is the payload of CmdLeaseAcquire: Holder asks for Key.
// It is granted when nobody holds the lease (Token = this command's
// index), when Holder already holds it (a renewal: same Token), or when
// the current lease's Expiry + Margin is before Now (a new Token).
// Otherwise the FSM refuses it with a *LeaseHeldError (an
// api.ErrConflict) and changes nothing.
type LeaseAcquire struct {
	Key        string `json:"key"`
	Group      string `json:"group"`
	Holder     string `json:"holder"`
	Node       string `json:"node"`
	Allocation string `json:"allocation,omitempty"`
	// Now is the proposer's clock; zero means Command.Time.
	Now    time.Time     `json:"now,omitzero"`
	TTL    time.Duration `json:"ttl"`
	Margin time.Duration `json:"margin,omitempty"`
}

// LeaseRenew is the payload of CmdLeaseRenew: it extends the lease to
// Now + TTL when Holder holds it with Token, whether or not it expired
// meanwhile (nobody else got it, or the token would differ). Otherwise the
// FSM refuses it with an ErrLeaseLost error.
type LeaseRenew struct {
	Key    string        `json:"key"`
	Holder string        `json:"holder"`
	Token  uint64        `json:"token"`
	Now    time.Time     `json:"now,omitzero"`
	TTL    time.Duration `json:"ttl"`
}

// LeaseRelease is the payload of CmdLeaseRelease: it deletes the lease
// when Holder holds it with Token, and changes nothing (no error)
// otherwise, so that a late release never drops a new holder's lease.
type LeaseRelease struct {
	Key    string `json:"key"`
	Holder string `json:"holder"`
	Token  uint64 `json:"token"`
}

// LeaseRevoke is the payload of CmdLeaseRevoke: it deletes the leases
// whose key is in Keys, and those that match every one of Node, Group,
// Allocation and Holder that is set (at least one of all these).
type LeaseRevoke struct {
	Keys       []string `json:"keys,omitempty"`
	Node       string   `json:"node,omitempty"`
	Group      string   `json:"group,omitempty"`
	Allocation string   `json:"allocation,omitempty"`
	Holder     string   `json:"holder,omitempty"`
}

// LeaseHeldError is why CmdLeaseAcquire was refused: another holder's
// lease can still be believed until Expiry + Margin. It is an
// api.ErrConflict. Forwarded from the leader it arrives as its message
// and class only; read the lease (Store.Lease) after the error's index
// for the details.
type LeaseHeldError struct {
	Key    string
	Holder string
	Node   string
	Token  uint64
	Expiry time.Time
	Margin time.Duration
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("lease %s is held by %s on node %s (token %d) until %s, plus a margin of %s",
		e.Key, e.Holder, e.Node, e.Token, e.Expiry.UTC().Format(time.RFC3339Nano), e.Margin)
}

func (e *LeaseHeldError) Unwrap() error { return api.ErrConflict }

// ErrLeaseLost is the class of a renewal refused because the caller does
// not hold the lease with that token any more (released, revoked, or
// granted to another holder). It is an api.ErrConflict.
var ErrLeaseLost = fmt.Errorf("lease lost: %w", api.ErrConflict)

func (p *LeaseAcquire) validate() error {
	group, _, shared, err := ParseLeaseKey(p.Key)
	switch {
	case err != nil:
		return err
	case !api.IsDNSLabel(p.Group):
		return fmt.Errorf("lease %s: holder group %q is not a DNS label", p.Key, p.Group)
	case !shared && group != p.Group:
		return fmt.Errorf("lease %s belongs to group %s, not to the holder's group %s (declare it shared to use it across groups)", p.Key, group, p.Group)
	case p.Holder == "":
		return fmt.Errorf("lease %s: holder is empty", p.Key)
	case p.Node == "":
		return fmt.Errorf("lease %s: node is empty", p.Key)
	case p.TTL <= 0 || p.TTL > MaxLeaseTTL:
		return fmt.Errorf("lease %s: ttl %s is outside (0, %s]", p.Key, p.TTL, MaxLeaseTTL)
	case p.Margin < 0:
		return fmt.Errorf("lease %s: negative margin %s", p.Key, p.Margin)
	}
	return nil
}

func (p *LeaseRenew) validate() error {
	_, _, _, err := ParseLeaseKey(p.Key)
	switch {
	case err != nil:
		return err
	case p.Holder == "":
		return fmt.Errorf("lease %s: holder is empty", p.Key)
	case p.Token == 0:
		return fmt.Errorf("lease %s: token is 0", p.Key)
	case p.TTL <= 0 || p.TTL > MaxLeaseTTL:
		return fmt.Errorf("lease %s: ttl %s is outside (0, %s]", p.Key, p.TTL, MaxLeaseTTL)
	}
	return nil
}

func (p *LeaseRelease) validate() error {
	_, _, _, err := ParseLeaseKey(p.Key)
	switch {
	case err != nil:
		return err
	case p.Holder == "":
		return fmt.Errorf("lease %s: holder is empty", p.Key)
	case p.Token == 0:
		return fmt.Errorf("lease %s: token is 0", p.Key)
	}
	return nil
}

func (p *LeaseRevoke) validate() error {
	if len(p.Keys) == 0 && p.Node == "" && p.Group == "" && p.Allocation == "" && p.Holder == "" {
		return errors.New("revoke names no keys, node, group, allocation or holder")
	}
	for i, k := range p.Keys {
		if _, _, _, err := ParseLeaseKey(k); err != nil {
			return fmt.Errorf("keys[%d]: %w", i, err)
		}
	}
	return nil
}

// commandTime is now, else the command's time; an error when both are
// zero (Store.Apply and the cluster Proposer always set Command.Time).
func commandTime(now time.Time, cmd Command) (time.Time, error) {
	if !now.IsZero() {
		return now, nil
	}
	if !cmd.Time.IsZero() {
		return cmd.Time, nil
	}
	return time.Time{}, fmt.Errorf("command %s has no time: set Now or Command.Time: %w", cmd.Type, api.ErrInvalid)
}

func (p *LeaseAcquire) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	leases := f.state.Leases
	cur, held := leases[p.Key]
	l := Lease{
		Key: p.Key, Group: p.Group, Holder: p.Holder, Node: p.Node, Allocation: p.Allocation,
		Token: index, Granted: now, Expiry: now.Add(p.TTL), TTL: p.TTL, Index: index,
	}
	switch {
	case !held:
	case cur.Holder == p.Holder:
		l.Token, l.Granted = cur.Token, cur.Granted // a renewal
	case cur.Expiry.Add(p.Margin).Before(now):
		// The old holder can no longer believe it holds the lease.
	default:
		return 0, &LeaseHeldError{Key: p.Key, Holder: cur.Holder, Node: cur.Node, Token: cur.Token, Expiry: cur.Expiry, Margin: p.Margin}
	}
	leases[p.Key] = l
	return 1, nil
}

func (p *LeaseRenew) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	cur, ok := f.state.Leases[p.Key]
	switch {
	case !ok:
		return 0, fmt.Errorf("lease %s: nobody holds it (released or revoked): %w", p.Key, ErrLeaseLost)
	case cur.Holder != p.Holder || cur.Token != p.Token:
		return 0, fmt.Errorf("lease %s: held by %s with token %d, not by %s with token %d: %w",
			p.Key, cur.Holder, cur.Token, p.Holder, p.Token, ErrLeaseLost)
	}
	cur.Expiry, cur.TTL, cur.Index = now.Add(p.TTL), p.TTL, index
	f.state.Leases[p.Key] = cur
	return 1, nil
}

func (p *LeaseRelease) apply(f *FSM, _ uint64, _ Command) (int, error) {
	cur, ok := f.state.Leases[p.Key]
	if !ok || cur.Holder != p.Holder || cur.Token != p.Token {
		return 0, nil
	}
	delete(f.state.Leases, p.Key)
	return 1, nil
}

func (p *LeaseRevoke) apply(f *FSM, _ uint64, _ Command) (int, error) {
	n := 0
	for _, k := range p.Keys {
		if _, ok := f.state.Leases[k]; ok {
			delete(f.state.Leases, k)
			n++
		}
	}
	if p.Node == "" && p.Group == "" && p.Allocation == "" && p.Holder == "" {
		return n, nil
	}
	return n + f.revokeLeases(func(l Lease) bool {
		return (p.Node == "" || l.Node == p.Node) && (p.Group == "" || l.Group == p.Group) &&
			(p.Allocation == "" || l.Allocation == p.Allocation) && (p.Holder == "" || l.Holder == p.Holder)
	}), nil
}

// revokeLeases deletes the leases match selects; f.mu is held.
func (f *FSM) revokeLeases(match func(Lease) bool) int {
	n := 0
	for k, l := range f.state.Leases {
		if match(l) {
			delete(f.state.Leases, k)
			n++
		}
	}
	return n
}

// Lease returns the lease of key (see LeaseKey).
func (f *FSM) Lease(key string) (Lease, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l, ok := f.state.Leases[key]
	return l, ok
}

// Leases returns every lease, ordered by key.
func (f *FSM) Leases() []Lease {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.state.Leases, nil)
}

// GroupLeases returns the leases held by holders of group, ordered by
// key (group-scoped and shared).
func (f *FSM) GroupLeases(group string) []Lease {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Lease
	for _, l := range f.state.Leases {
		if l.Group == group {
			out = append(out, l)
		}
	}
	slices.SortFunc(out, func(a, b Lease) int { return strings.Compare(a.Key, b.Key) })
	return out
}
