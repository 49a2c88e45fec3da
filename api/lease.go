package api

import (
	"fmt"
	"time"
)

// LeaseSpec is one [[lease]] of a group: a named lease the group's
// containers campaign for over the downward API (leader election). The
// grant carries a fencing token that only grows.
//
//	[[lease]]
//	name = "leader"
//	on_lose = "restart"   # or "notify" (the default)
//	ttl = "5s"
type LeaseSpec struct {
	// Name is a DNS label. Unless Shared, it is scoped to the group: two
	// groups may both have a lease "leader", and they are two leases.
	Name string `toml:"name" json:"name"`
	// OnLose says what the agent does to the holder when it loses the
	// lease (its renewal failed, or it was revoked): "notify" (the
	// default) tells it over the downward API; "restart" also restarts
	// the holder container.
	OnLose OnLose `toml:"on_lose" json:"on_lose,omitempty"`
	// Shared makes the name cluster-wide: every group that declares a
	// shared lease of that name campaigns for the same lease.
	Shared bool `toml:"shared" json:"shared,omitempty"`
	// TTL is how long a grant or renewal lasts; the holder's agent renews
	// well before it ends. Default DefaultLeaseTTL, at least MinLeaseTTL.
	TTL Duration `toml:"ttl" json:"ttl,omitempty"`
	// ElectorPort, when set, also answers the contrib leader-elector
	// sidecar's question on http://127.0.0.1:ElectorPort/ inside the
	// group's network namespace (the sidecar used 4040): GET / →
	// {"name": "<holder>"}, asking making the group a candidate, so an app
	// written against the sidecar runs unchanged.
	ElectorPort int `toml:"elector_port" json:"elector_port,omitempty"`
}

// OnLose is what happens to a lease holder that loses its lease.
type OnLose string

const (
	// OnLoseNotify tells the holder (GET /v1/leases/{name} answers that it
	// no longer holds it); the container keeps running.
	OnLoseNotify OnLose = "notify"
	// OnLoseRestart restarts the holder container, so that a process that
	// believed it led starts over as a follower.
	OnLoseRestart OnLose = "restart"
)

// Lease defaults and limits.
const (
	DefaultLeaseTTL = Duration(5 * time.Second)
	MinLeaseTTL     = Duration(time.Second)
	MaxLeaseTTL     = Duration(5 * time.Minute)
)

// EffectiveTTL is TTL with its default.
func (l *LeaseSpec) EffectiveTTL() Duration { return orDefault(l.TTL, DefaultLeaseTTL) }

// EffectiveOnLose is OnLose with its default, notify.
func (l *LeaseSpec) EffectiveOnLose() OnLose { return orDefault(l.OnLose, OnLoseNotify) }

// Lease returns the [[lease]] of the group named name.
func (g *GroupSpec) Lease(name string) (*LeaseSpec, bool) {
	for i := range g.Leases {
		if g.Leases[i].Name == name {
			return &g.Leases[i], true
		}
	}
	return nil, false
}

func (l *LeaseSpec) setDefaults() {
	l.OnLose = l.EffectiveOnLose()
	l.TTL = l.EffectiveTTL()
}

var onLoses = []string{string(OnLoseNotify), string(OnLoseRestart)}

// leases checks the [[lease]] tables: a unique DNS-label name, a known
// on_lose and a ttl within MinLeaseTTL..MaxLeaseTTL.
func (v *validator) leases(g *GroupSpec) {
	v.uniqueNames("lease", len(g.Leases), func(i int) string { return g.Leases[i].Name })
	for i := range g.Leases {
		l := &g.Leases[i]
		p := pathIndex("lease", i)
		switch l.OnLose {
		case "", OnLoseNotify, OnLoseRestart:
		default:
			msg := fmt.Sprintf("%q is not an on_lose policy: use \"notify\" (the default: the holder is told over the downward API) or \"restart\" (the holder container is restarted)", l.OnLose)
			if s := closest(string(l.OnLose), onLoses); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			v.add(pathKey(p, "on_lose"), "%s", msg)
		}
		if l.ElectorPort < 0 || l.ElectorPort > 65535 {
			v.add(pathKey(p, "elector_port"), "elector_port %d is not a TCP port (1-65535)", l.ElectorPort)
		}
		for j := range i {
			if o := g.Leases[j].ElectorPort; o != 0 && o == l.ElectorPort {
				v.add(pathKey(p, "elector_port"), "elector_port %d is taken by lease %q already: each lease needs a port of its own", o, g.Leases[j].Name)
			}
		}
		if l.ElectorPort != 0 && g.EffectiveNetwork() == NetworkHost {
			v.add(pathKey(p, "elector_port"), "elector_port needs a network namespace of the group's own: with network = \"host\" 127.0.0.1:%d would be the node's, shared with every other group", l.ElectorPort)
		}
		switch {
		case l.TTL < 0:
			v.add(pathKey(p, "ttl"), "ttl must not be negative: leave it out for the default %s", DefaultLeaseTTL)
		case l.TTL != 0 && l.TTL < MinLeaseTTL:
			v.add(pathKey(p, "ttl"), "ttl %s is shorter than the minimum of %s: a holder could not renew in time", l.TTL, MinLeaseTTL)
		case l.TTL > MaxLeaseTTL:
			v.add(pathKey(p, "ttl"), "ttl %s is longer than the maximum of %s: a dead holder would keep the lease that long", l.TTL, MaxLeaseTTL)
		}
	}
}
