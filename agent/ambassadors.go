package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-project/berth/agent/ambassador"
	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/supervisor"
)

// The agent runs every [[ambassador]] of this node's groups itself: a
// listener opened inside the group's network namespace, so that the
// group's own 127.0.0.1:6379 is the ambassador, and a proxy (package
// ambassador) from it to the ready endpoints of a service; or, with
// mode = "nat", DNAT rules in that namespace (ambassador_nat.go), fed the
// same endpoints.
//
// Life cycle, driven by the supervisor (supervisor.SandboxObserver):
//
//	SandboxReady (every start, a reattach after an agent restart)
//	    → open what the spec has and is not open, close what it no
//	      longer has or has changed, reopen all in a new namespace
//	SandboxGone (before the sandbox is destroyed)
//	    → close every ambassador of the group
//	agent shutdown → close them all (the workload keeps running; the
//	    agent that starts next opens them again on reattach)
//
// A listener that cannot be opened (the address is taken, by the group's
// own process say) is a Warning event of the group, AmbassadorFailed, and
// is tried again with backoff (1 s doubling to 30 s); a new event is
// published only when the error changes. Opening one says so with a
// Normal event, AmbassadorListening.
//
// Endpoints are pushed, not polled: the feed runs on every event of the
// node's groups (Ready, NotReady, Started, Deleted… of a local backend)
// and on every change of the Raft state (an allocation on another node
// turning ready or not, moving, appearing), plus a resync every few
// seconds as a safety net. Each run reads the supervisor and the Raft
// state once (endpointView) and hands each proxy the endpoint set of each
// of its services; a proxy uses a new set for its next connection.

const (
	// ambassadorRetryMin and ambassadorRetryMax bound the backoff of a
	// listener that could not be opened.
	ambassadorRetryMin = time.Second
	ambassadorRetryMax = 30 * time.Second
	// endpointResync is the feed's safety-net period.
	endpointResync = 5 * time.Second
)

// ambassadorSet is the ambassadors of this node's groups. SandboxReady
// and SandboxGone come from group runners and return quickly (a listen
// in a namespace, a close); Run feeds the proxies their endpoints.
type ambassadorSet struct {
	a   *Agent
	log *slog.Logger
	// kick wakes Run: something endpoints depend on may have changed.
	kick chan struct{}
	// view reads the endpoints (Agent.endpointView; tests replace it).
	view func() *endpointView

	mu      sync.Mutex
	groups  map[string]*groupAmbassadors
	stopped bool // Run ended: nothing opens any more
}

// groupAmbassadors is what one group asks for and what runs of it.
type groupAmbassadors struct {
	group string
	netns string
	// specs are the group's [[ambassador]] tables, by listen address.
	specs   map[string]api.AmbassadorSpec
	running map[string]*runningAmbassador
	failed  map[string]*failedAmbassador
}

// runningAmbassador is one open listener and its proxy, or, with mode =
// "nat", the rules in the group's namespace (ambassador_nat.go).
type runningAmbassador struct {
	spec  api.AmbassadorSpec
	proxy *ambassador.Proxy // nil with nat
	nat   *natAmbassador    // nil with proxy
	// natErr is the last error writing nat rules, published once.
	natErr string
	// port is the service port each backend is reached at.
	port int
	done chan struct{}
	// warned is the last feed warning published (unreachable endpoints),
	// so that a warning is published once, not at every feed.
	warned string
}

// failedAmbassador is an ambassador whose listener could not be opened.
type failedAmbassador struct {
	spec    api.AmbassadorSpec
	err     string
	retryAt time.Time
	backoff time.Duration
}

var _ supervisor.SandboxObserver = (*ambassadorSet)(nil)

// ambassadors returns the agent's ambassador set, made at the first call.
func (a *Agent) ambassadors() *ambassadorSet {
	if a.amb == nil {
		a.amb = newAmbassadorSet(a)
	}
	return a.amb
}

func newAmbassadorSet(a *Agent) *ambassadorSet {
	return &ambassadorSet{
		a:      a,
		log:    a.log.With("component", "ambassador"),
		kick:   make(chan struct{}, 1),
		view:   a.endpointView,
		groups: map[string]*groupAmbassadors{},
	}
}

// SandboxReady opens the group's ambassadors in its namespace, as its
// spec says. Idempotent: an ambassador that runs with the same table in
// the same namespace is kept, connections and all.
func (s *ambassadorSet) SandboxReady(spec *api.GroupSpec, sb *supervisor.Sandbox) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[spec.Name]
	if s.stopped || (g == nil && len(spec.Ambassadors) == 0) {
		return
	}
	fresh := false
	if g == nil {
		g = &groupAmbassadors{group: spec.Name, running: map[string]*runningAmbassador{}, failed: map[string]*failedAmbassador{}}
		s.groups[spec.Name] = g
	}
	if g.netns != sb.NetNSPath {
		// A namespace made anew: what listens in the old one is useless.
		for listen := range g.running {
			s.closeLocked(g, listen, true)
		}
		g.netns = sb.NetNSPath
		fresh = true
	}
	g.specs = map[string]api.AmbassadorSpec{}
	for _, as := range spec.Ambassadors {
		g.specs[as.Listen] = as
	}
	if fresh {
		// nat rules of ambassadors the spec lost while no agent ran.
		if err := natSweep(g.netns, natChainNames(g.specs)); err != nil {
			s.log.Warn("ambassador: removing stale nat rules", "group", g.group, "err", err)
		}
	}
	for listen, r := range g.running {
		if want, ok := g.specs[listen]; !ok || !sameAmbassador(want, r.spec) {
			s.closeLocked(g, listen, false)
			if ok {
				s.event(g.group, api.EventNormal, "AmbassadorChanged", fmt.Sprintf("ambassador %s changed: reopening it", listen))
			}
		}
	}
	for listen := range g.failed {
		if want, ok := g.specs[listen]; !ok || !sameAmbassador(want, g.failed[listen].spec) {
			delete(g.failed, listen)
		}
	}
	for _, listen := range slices.Sorted(maps.Keys(g.specs)) {
		if g.running[listen] == nil {
			s.openLocked(g, g.specs[listen])
		}
	}
	if len(g.specs) == 0 {
		delete(s.groups, spec.Name)
	}
	s.wake()
}

// SandboxGone closes the group's ambassadors while their namespace is
// still there.
func (s *ambassadorSet) SandboxGone(group string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[group]
	if g == nil {
		return
	}
	for listen := range g.running {
		s.closeLocked(g, listen, true) // nat rules go with the namespace
	}
	delete(s.groups, group)
}

// openLocked opens one ambassador of g, or records why it could not.
// s.mu is held.
func (s *ambassadorSet) openLocked(g *groupAmbassadors, spec api.AmbassadorSpec) {
	r, err := s.start(g, spec)
	if err != nil {
		f := g.failed[spec.Listen]
		if f == nil {
			f = &failedAmbassador{spec: spec}
			g.failed[spec.Listen] = f
		}
		f.backoff = min(max(2*f.backoff, ambassadorRetryMin), ambassadorRetryMax)
		f.retryAt = time.Now().Add(f.backoff)
		if msg := err.Error(); msg != f.err {
			f.err = msg
			s.event(g.group, api.EventWarning, "AmbassadorFailed",
				fmt.Sprintf("%s; trying again in %s", msg, f.backoff))
		}
		return
	}
	delete(g.failed, spec.Listen)
	g.running[spec.Listen] = r
	s.wake() // its first endpoints
	balance := spec.Balance
	if balance == "" {
		balance = api.BalanceRoundRobin
	}
	msg := fmt.Sprintf("ambassador %s: listening in the group's network namespace, to service %s port %d (%s)", spec.Listen, spec.Service, r.port, balance)
	if r.nat != nil {
		msg = fmt.Sprintf("ambassador %s: kernel DNAT rules (mode = \"nat\") in the group's network namespace, to service %s port %d (%s)", spec.Listen, spec.Service, r.port, balance)
	}
	for _, sp := range spec.Split {
		msg += fmt.Sprintf(", %d%% to %s", sp.Percent, sp.Service)
	}
	s.event(g.group, api.EventNormal, "AmbassadorListening", msg)
}

// start opens the listener of spec in g's namespace and runs its proxy.
func (s *ambassadorSet) start(g *groupAmbassadors, spec api.AmbassadorSpec) (*runningAmbassador, error) {
	port, err := ambassador.ServicePort(spec)
	if err != nil {
		return nil, err
	}
	if spec.Mode == api.AmbassadorNAT {
		n, err := newNatAmbassador(g.netns, spec)
		if err != nil {
			return nil, err
		}
		r := &runningAmbassador{spec: spec, nat: n, port: port, done: make(chan struct{})}
		close(r.done) // nothing runs: the kernel does it
		return r, nil
	}
	ln, err := supervisor.ListenInNetns(g.netns, "tcp", spec.Listen)
	if err != nil {
		return nil, listenError(spec, err)
	}
	p, err := ambassador.New(ambassador.Config{
		Spec: spec, Listener: ln, Shards: 1, ShardFunc: cluster.ShardOf,
		Log: s.log.With("group", g.group),
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	r := &runningAmbassador{spec: spec, proxy: p, port: port, done: make(chan struct{})}
	go s.serve(g.group, r)
	return r, nil
}

// serve runs r's proxy until it is closed; a listener that fails on its
// own is reported and opened again after a backoff.
func (s *ambassadorSet) serve(group string, r *runningAmbassador) {
	defer close(r.done)
	err := r.proxy.Run(context.Background()) // ends at Close
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[group]
	if g == nil || g.running[r.spec.Listen] != r {
		return
	}
	delete(g.running, r.spec.Listen)
	g.failed[r.spec.Listen] = &failedAmbassador{spec: r.spec, err: err.Error(), backoff: ambassadorRetryMin, retryAt: time.Now().Add(ambassadorRetryMin)}
	s.event(group, api.EventWarning, "AmbassadorFailed", fmt.Sprintf("%v; opening it again in %s", err, ambassadorRetryMin))
}

// closeLocked stops one ambassador of g: its listener and every
// connection through it, or with nat its rules, unless keepRules (the
// namespace goes, or the agent stops). s.mu is held.
func (s *ambassadorSet) closeLocked(g *groupAmbassadors, listen string, keepRules bool) {
	r := g.running[listen]
	if r == nil {
		return
	}
	delete(g.running, listen)
	if r.nat != nil {
		if keepRules {
			r.nat.forget()
		} else if err := r.nat.close(); err != nil {
			s.event(g.group, api.EventWarning, "AmbassadorFailed", err.Error())
		}
		return
	}
	// Close returns once the listener and every connection are closed;
	// serve then returns without taking s.mu.
	r.proxy.Close()
}

// retryLocked opens again the listeners whose backoff is over. s.mu is
// held.
func (s *ambassadorSet) retryLocked(now time.Time) {
	for _, g := range s.groups {
		for _, listen := range slices.Sorted(maps.Keys(g.failed)) {
			if f := g.failed[listen]; !now.Before(f.retryAt) && g.running[listen] == nil {
				s.openLocked(g, f.spec)
			}
		}
	}
}

// Run feeds the proxies their endpoints on every change until ctx ends,
// then closes every ambassador. It also rechecks the allocations that
// wait for a published port (the same changes free ports).
func (s *ambassadorSet) Run(ctx context.Context) error {
	var raftWatch <-chan uint64
	if s.a.cl != nil && s.a.cl.store != nil {
		raftWatch = s.a.cl.store.Watch(ctx)
	}
	_, events, cancel := s.a.events.Subscribe("")
	defer func() { cancel() }()
	resync := time.NewTicker(endpointResync)
	defer resync.Stop()
	retry := time.NewTicker(ambassadorRetryMin / 2)
	defer retry.Stop()
	defer s.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case _, ok := <-raftWatch:
			if !ok {
				raftWatch = nil
			}
		case _, ok := <-events:
			if !ok {
				// Fell behind: subscribe again; this pass sees everything.
				_, events, cancel = s.a.events.Subscribe("")
			}
			// Drain what else is queued: one pass for a burst.
			for drained := false; !drained; {
				select {
				case _, ok := <-events:
					if !ok {
						_, events, cancel = s.a.events.Subscribe("")
						drained = true
					}
				default:
					drained = true
				}
			}
		case <-resync.C:
		case now := <-retry.C:
			s.mu.Lock()
			s.retryLocked(now)
			s.mu.Unlock()
			continue
		}
		s.feed()
		s.a.recheckPortHolds()
	}
}

// stop closes every ambassador; nothing opens after it.
func (s *ambassadorSet) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	for name, g := range s.groups {
		for listen := range g.running {
			s.closeLocked(g, listen, true) // nat rules keep working
		}
		delete(s.groups, name)
	}
}

func (s *ambassadorSet) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// feed hands every proxy the endpoints of its services, as they are now.
func (s *ambassadorSet) feed() {
	type item struct {
		group string
		r     *runningAmbassador
	}
	s.mu.Lock()
	var items []item
	for _, g := range s.groups {
		for _, r := range g.running {
			items = append(items, item{g.group, r})
		}
	}
	s.mu.Unlock()
	if len(items) == 0 {
		return
	}
	v := s.view()
	for _, it := range items {
		r := it.r
		if r.nat != nil {
			s.feedNat(it.group, r, v)
			continue
		}
		var unreachable []string
		for _, svc := range r.proxy.Services() {
			backends, missing := backendsOf(v.endpoints(svc), r.port)
			r.proxy.SetBackends(svc, backends)
			unreachable = append(unreachable, missing...)
		}
		if r.spec.Balance == api.BalanceShard {
			r.proxy.SetShards(v.shards(r.spec.Service))
		}
		s.warnUnreachable(it.group, r, unreachable)
	}
}

// feedNat writes a nat ambassador's rules for the endpoints in v and
// publishes, once per change, what it cannot reach and why it failed.
func (s *ambassadorSet) feedNat(group string, r *runningAmbassador, v *endpointView) {
	warning, err := r.nat.update(v, s.a.cfg.Network.Outbound)
	s.warn(group, r, warning)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.mu.Lock()
	changed := msg != r.natErr
	r.natErr = msg
	s.mu.Unlock()
	if changed && msg != "" {
		s.event(group, api.EventWarning, "AmbassadorFailed", msg+"; trying again at the next endpoint change (within "+endpointResync.String()+")")
	}
}

// warnUnreachable publishes, once per change, the endpoints an
// ambassador cannot reach because they do not publish its port.
func (s *ambassadorSet) warnUnreachable(group string, r *runningAmbassador, unreachable []string) {
	msg := ""
	if len(unreachable) > 0 {
		msg = fmt.Sprintf("ambassador %s: ready endpoints on other nodes that do not publish container port %d cannot be reached and get no connections: %s (publish the port in their group, e.g. ports = [\"%d:%d\"])",
			r.spec.Listen, r.port, strings.Join(unreachable, ", "), r.port, r.port)
	}
	s.warn(group, r, msg)
}

// warn publishes msg as AmbassadorUnreachable when it changed.
func (s *ambassadorSet) warn(group string, r *runningAmbassador, msg string) {
	s.mu.Lock()
	changed := msg != r.warned
	r.warned = msg
	s.mu.Unlock()
	if changed && msg != "" {
		s.event(group, api.EventWarning, "AmbassadorUnreachable", msg)
	}
}

// backendsOf turns endpoints into the backends of a proxy that connects
// to port: an endpoint with an address is reached there, one on another
// node at the published port that forwards to port. Endpoints that offer
// neither are returned by name, as "group on node".
func backendsOf(eps []api.Endpoint, port int) (out []ambassador.Backend, unreachable []string) {
	for _, ep := range eps {
		addr := ""
		if ep.Address != "" {
			addr = net.JoinHostPort(ep.Address, strconv.Itoa(port))
		} else {
			for _, p := range ep.Ports {
				if p.ContainerPort == port && p.Protocol == api.ProtocolTCP && p.HostIP != "" {
					addr = net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
					break
				}
			}
		}
		if addr == "" {
			unreachable = append(unreachable, ep.Group+" on "+ep.Node)
			continue
		}
		out = append(out, ambassador.Backend{ID: ep.Group, Addr: addr, Shard: ep.Shard, Ready: ep.Ready})
	}
	return out, unreachable
}

// event publishes an event of group.
func (s *ambassadorSet) event(group, typ, reason, msg string) {
	s.a.events.Publish(api.Event{Time: time.Now(), Type: typ, Group: group, Reason: reason, Message: msg})
	if typ == api.EventWarning {
		s.log.Warn(msg, "group", group, "reason", reason)
	} else {
		s.log.Info(msg, "group", group, "reason", reason)
	}
}

// sameAmbassador reports whether two [[ambassador]] tables are the same.
func sameAmbassador(a, b api.AmbassadorSpec) bool {
	return a.Listen == b.Listen && a.Service == b.Service && a.Port == b.Port && a.Balance == b.Balance && a.Mode == b.Mode &&
		a.ShardHeader == b.ShardHeader && slices.Equal(a.Split, b.Split)
}

// listenError says why a listener could not be opened, with a hint when
// the address is taken.
func listenError(spec api.AmbassadorSpec, err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		err = op.Err // the system's reason; the address is said here
	}
	hint := ""
	if errors.Is(err, syscall.EADDRINUSE) {
		hint = " (a container of the group, or another ambassador of it, listens there: give the ambassador another listen address)"
	}
	return fmt.Errorf("ambassador %s: cannot listen in the group's network namespace: %w%s", spec.Listen, err, hint)
}
