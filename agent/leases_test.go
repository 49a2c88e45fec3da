package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// fakeGroups is leaseGroups over a table the test sets; restarts are
// recorded.
type fakeGroups struct {
	mu       sync.Mutex
	states   map[string]holderState
	specs    map[string]*api.GroupSpec
	restarts []string
}

var _ leaseGroups = (*fakeGroups)(nil)

func newFakeGroups() *fakeGroups {
	return &fakeGroups{states: map[string]holderState{}, specs: map[string]*api.GroupSpec{}}
}

func (f *fakeGroups) holder(g string) (*api.GroupSpec, holderState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.specs[g], f.states[g]
}

func (f *fakeGroups) stopped(g string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.states[g] == holderGone
}

func (f *fakeGroups) restart(_ context.Context, g, _ string, stopped func()) {
	f.mu.Lock()
	f.restarts = append(f.restarts, g)
	f.mu.Unlock()
	stopped()
}

func (f *fakeGroups) set(g string, s holderState, spec *api.GroupSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[g] = s
	if spec != nil {
		f.specs[g] = spec
	}
}

func (f *fakeGroups) restarted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.restarts...)
}

// leaseEnv is one Raft store (a one-voter member, in-memory transport)
// shared by lease managers that play several nodes, and one event hub.
type leaseEnv struct {
	t      *testing.T
	store  *raftstore.Store
	events *Events
}

func newLeaseEnv(t *testing.T) *leaseEnv {
	t.Helper()
	rc := raftstore.DefaultConfig()
	rc.NodeID, rc.DataDir, rc.Logger = "n1", t.TempDir(), slog.New(slog.DiscardHandler)
	rc.Voter, rc.Bootstrap = true, true
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	_, tr := raft.NewInmemTransport("n1")
	st, err := raftstore.Open(rc, tr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &leaseEnv{t: t, store: st, events: NewEvents(1000)}
	waitUntil(t, "the store leads", func() bool { return st.IsLeader() })
	return e
}

func (e *leaseEnv) propose(ctx context.Context, typ raftstore.CommandType, payload any) (uint64, error) {
	cmd, err := raftstore.NewCommand(typ, payload)
	if err != nil {
		return 0, err
	}
	return storeProposer{e.store}.Apply(ctx, cmd)
}

// manager starts a lease manager for node; cancel stops it the way an
// agent stops (holds are left in Raft, not released).
func (e *leaseEnv) manager(node string, groups *fakeGroups) (*leaseManager, func()) {
	m := newLeaseManager(node, slog.New(slog.DiscardHandler), e.store, e.propose, groups, e.events)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	stop := sync.OnceFunc(func() { cancel(); <-done })
	e.t.Cleanup(stop)
	<-m.started
	return m, stop
}

// poke publishes a group event, as the supervisor does on a change.
func (e *leaseEnv) poke(group string) {
	e.events.Publish(api.Event{Time: time.Now(), Group: group, Reason: "NotReady"})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// alloc is an allocation of cluster group "app" as a lease caller.
func alloc(id string) leaseCaller {
	return leaseCaller{local: id, group: "app", allocation: id, holder: id}
}

func spec(leases ...api.LeaseSpec) *api.GroupSpec {
	return &api.GroupSpec{Name: "app", Leases: leases}
}

// events returns the reasons of group's events.
func (e *leaseEnv) reasons(group string) []string {
	var out []string
	for _, ev := range e.events.History(group) {
		out = append(out, ev.Reason)
	}
	return out
}

func hasReason(rs []string, want string) bool {
	for _, r := range rs {
		if r == want {
			return true
		}
	}
	return false
}

// TestLeaseOneHolderAndResignHandsItOverAtOnce: of two candidates one is
// granted; the other's campaign times out with a conflict naming the
// holder; when the holder resigns the waiting candidate is granted at once
// (the lease lasts a minute: only the release can explain the grant), with
// a higher token.
func TestLeaseOneHolderAndResignHandsItOverAtOnce(t *testing.T) {
	e := newLeaseEnv(t)
	g1, g2 := newFakeGroups(), newFakeGroups()
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Minute)}), "leader")
	g1.set("app.0", holderReady, nil)
	g2.set("app.1", holderReady, nil)
	m1, _ := e.manager("n1", g1)
	m2, _ := e.manager("n2", g2)
	ctx := context.Background()

	l1, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l1.Holder != "app.0" || l1.Node != "n1" || l1.Token == 0 || l1.Key != "app/leader" {
		t.Fatalf("grant = %+v", l1)
	}
	if v := m1.view(l1.Key, "leader", false, "app.0"); !v.Held || v.Token != l1.Token {
		t.Fatalf("holder's view = %+v, want held with token %d", v, l1.Token)
	}
	if v := m2.view(l1.Key, "leader", false, "app.1"); v.Held || v.Holder != "app.0" {
		t.Fatalf("other's view = %+v, want held by app.0, not by app.1", v)
	}
	_, err = m2.campaign(ctx, alloc("app.1"), ls, 200*time.Millisecond)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "app.0") {
		t.Fatalf("second campaign: %v, want a conflict naming app.0", err)
	}
	// Campaigning again as the holder answers the same grant.
	if again, err := m1.campaign(ctx, alloc("app.0"), ls, time.Second); err != nil || again.Token != l1.Token {
		t.Fatalf("holder campaigns again: %+v, %v; want token %d", again, err, l1.Token)
	}

	got := make(chan raftstore.Lease, 1)
	errc := make(chan error, 1)
	go func() {
		l, err := m2.campaign(ctx, alloc("app.1"), ls, 20*time.Second)
		got <- l
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // the campaign waits
	held, err := m1.resign(ctx, alloc("app.0"), l1.Key)
	if err != nil || !held {
		t.Fatalf("resign: held %v, %v", held, err)
	}
	l2 := <-got
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if l2.Holder != "app.1" || l2.Token <= l1.Token {
		t.Fatalf("after resign: %+v, want app.1 with a token above %d", l2, l1.Token)
	}
	if v := m1.view(l1.Key, "leader", false, "app.0"); v.Held {
		t.Errorf("resigned holder still told it holds: %+v", v)
	}
	// Only the holder may resign.
	if held, err := m1.resign(ctx, alloc("app.0"), l1.Key); held || err != nil {
		t.Errorf("resign by a non-holder: held %v, %v", held, err)
	}
	if l, _ := e.store.Lease(l1.Key); l.Holder != "app.1" {
		t.Errorf("a non-holder's resign changed the lease: %+v", l)
	}
}

// TestLeaseFailsOverOnlyAfterExpiryAndMargin: a holder whose agent dies
// (no release) keeps the lease until its expiry plus the margin; then a
// waiting candidate is granted by itself, with a higher token.
func TestLeaseFailsOverOnlyAfterExpiryAndMargin(t *testing.T) {
	e := newLeaseEnv(t)
	g1, g2 := newFakeGroups(), newFakeGroups()
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Second)}), "leader")
	g1.set("app.0", holderReady, nil)
	g2.set("app.1", holderReady, nil)
	m1, stop1 := e.manager("n1", g1)
	m2, _ := e.manager("n2", g2)
	ctx := context.Background()
	l1, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // longer than the TTL: renewed
	if cur, _ := e.store.Lease(l1.Key); cur.Holder != "app.0" || cur.Token != l1.Token || !cur.Expiry.After(l1.Expiry) {
		t.Fatalf("after 1.5 TTL: %+v, want app.0 still, token %d, expiry past %s", cur, l1.Token, l1.Expiry)
	}
	stop1()
	last, _ := e.store.Lease(l1.Key)
	l2, err := m2.campaign(ctx, alloc("app.1"), ls, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Holder != "app.1" || l2.Token <= l1.Token {
		t.Fatalf("failover: %+v, want app.1 with a token above %d", l2, l1.Token)
	}
	if floor := last.Expiry.Add(leaseMargin(time.Second)); l2.Granted.Before(floor) {
		t.Fatalf("granted at %s, before the old holder's expiry + margin %s", l2.Granted, floor)
	}
}

// TestLeaseHolderThatTurnsUnreadyLosesIt: the holder's group turning
// un-ready releases the lease at once (the other candidate is granted
// long before the expiry), tells the app (not held, a LeaseLost event) and
// with on_lose = "restart" restarts the group; a stopped group releases
// without a restart.
func TestLeaseHolderThatTurnsUnreadyLosesIt(t *testing.T) {
	e := newLeaseEnv(t)
	g1, g2 := newFakeGroups(), newFakeGroups()
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Minute), OnLose: api.OnLoseRestart}), "leader")
	g1.set("app.0", holderReady, nil)
	g2.set("app.1", holderReady, nil)
	m1, _ := e.manager("n1", g1)
	m2, _ := e.manager("n2", g2)
	ctx := context.Background()
	l1, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g1.set("app.0", holderNotReady, nil)
	e.poke("app.0")
	l2, err := m2.campaign(ctx, alloc("app.1"), ls, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Holder != "app.1" || l2.Token <= l1.Token {
		t.Fatalf("after the holder turned un-ready: %+v", l2)
	}
	if v := m1.view(l1.Key, "leader", false, "app.0"); v.Held {
		t.Errorf("un-ready holder still told it holds: %+v", v)
	}
	waitUntil(t, "the old holder is restarted", func() bool { return len(g1.restarted()) == 1 })
	if r := g1.restarted(); r[0] != "app.0" {
		t.Errorf("restarted %v, want app.0", r)
	}
	if rs := e.reasons("app.0"); !hasReason(rs, "LeaseLost") {
		t.Errorf("events of app.0: %v, want LeaseLost", rs)
	}
	// An un-ready group is not granted the lease either.
	if _, err := m1.campaign(ctx, alloc("app.0"), leaseSpec(nil, "other"), 200*time.Millisecond); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "not ready") {
		t.Errorf("an un-ready group's campaign: %v, want a conflict saying it is not ready", err)
	}

	// The new holder stops: released, not restarted.
	g2.set("app.1", holderGone, nil)
	e.poke("app.1")
	waitUntil(t, "the stopped holder's lease released", func() bool {
		_, ok := e.store.Lease(l1.Key)
		return !ok
	})
	if r := g2.restarted(); len(r) != 0 {
		t.Errorf("a stopped holder was restarted: %v", r)
	}
}

// TestLeaseUnreadyHolderThatStillRunsKeepsOthersOut: with on_lose =
// "notify", a holder that turns un-ready is told at once, but nobody else
// is granted the lease while it may still believe it holds it: until it
// resigns (or stops, or its belief expires).
func TestLeaseUnreadyHolderThatStillRunsKeepsOthersOut(t *testing.T) {
	e := newLeaseEnv(t)
	g1, g2 := newFakeGroups(), newFakeGroups()
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Minute)}), "leader")
	g1.set("app.0", holderReady, nil)
	g1.set("app.9", holderReady, nil)
	g2.set("app.1", holderReady, nil)
	m1, _ := e.manager("n1", g1)
	m2, _ := e.manager("n2", g2)
	ctx := context.Background()
	l1, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g1.set("app.0", holderNotReady, nil)
	e.poke("app.0")
	waitUntil(t, "the holder is told", func() bool { return !m1.view(l1.Key, "leader", false, "app.0").Held })
	if _, err := m2.campaign(ctx, alloc("app.1"), ls, 300*time.Millisecond); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("campaign while the un-ready holder still runs: %v, want a conflict", err)
	}
	if held, err := m1.resign(ctx, alloc("app.0"), l1.Key); !held || err != nil {
		t.Fatalf("the told holder resigns: held %v, %v", held, err)
	}
	l2, err := m2.campaign(ctx, alloc("app.1"), ls, 5*time.Second)
	if err != nil || l2.Holder != "app.1" {
		t.Fatalf("after the resign: %+v, %v", l2, err)
	}
	if r := g1.restarted(); len(r) != 0 {
		t.Errorf("on_lose = notify restarted %v", r)
	}

	// Same without a resign: the holder's containers stop.
	ls9 := leaseSpec(spec(api.LeaseSpec{Name: "other", TTL: api.Duration(time.Minute)}), "other")
	l9, err := m1.campaign(ctx, alloc("app.9"), ls9, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g1.set("app.9", holderNotReady, nil)
	e.poke("app.9")
	time.Sleep(200 * time.Millisecond)
	if _, ok := e.store.Lease(l9.Key); !ok {
		t.Fatal("released while the un-ready holder still runs")
	}
	g1.set("app.9", holderGone, nil)
	e.poke("app.9")
	waitUntil(t, "released once the holder stopped", func() bool {
		_, ok := e.store.Lease(l9.Key)
		return !ok
	})
}

// TestLeaseRegainedAfterUnreadyIsNotReleasedLate: a holder that turned
// un-ready and ready again campaigns and gets its grant back (same token:
// nobody else held it meanwhile); the release scheduled for its old
// belief's end must not drop the new hold.
func TestLeaseRegainedAfterUnreadyIsNotReleasedLate(t *testing.T) {
	e := newLeaseEnv(t)
	g1 := newFakeGroups()
	g1.set("app.0", holderReady, nil)
	m1, _ := e.manager("n1", g1)
	ctx := context.Background()
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Second)}), "leader")
	l1, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	g1.set("app.0", holderNotReady, nil)
	e.poke("app.0")
	waitUntil(t, "the holder is told", func() bool { return !m1.view(l1.Key, "leader", false, "app.0").Held })
	g1.set("app.0", holderReady, nil)
	e.poke("app.0")
	l2, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil || l2.Token != l1.Token {
		t.Fatalf("campaign again: %+v, %v; want token %d back", l2, err, l1.Token)
	}
	time.Sleep(1500 * time.Millisecond) // past the first belief's end
	if cur, ok := e.store.Lease(l1.Key); !ok || cur.Token != l1.Token {
		t.Fatalf("the regained lease was dropped: %+v %v", cur, ok)
	}
	if v := m1.view(l1.Key, "leader", false, "app.0"); !v.Held {
		t.Fatalf("regained lease not held: %+v", v)
	}
}

// TestLeaseRevokedIsLostAtOnce: a lease revoked in Raft (its node declared
// dead, its allocation deleted) is lost by its holder at once, notify
// tells without restarting.
func TestLeaseRevokedIsLostAtOnce(t *testing.T) {
	e := newLeaseEnv(t)
	g1 := newFakeGroups()
	g1.set("app.0", holderReady, nil)
	m1, _ := e.manager("n1", g1)
	ls := leaseSpec(nil, "leader")
	l1, err := m1.campaign(context.Background(), alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.propose(context.Background(), raftstore.CmdLeaseRevoke, raftstore.LeaseRevoke{Keys: []string{l1.Key}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the holder sees the revocation", func() bool {
		return !m1.view(l1.Key, "leader", false, "app.0").Held && hasReason(e.reasons("app.0"), "LeaseLost")
	})
	if r := g1.restarted(); len(r) != 0 {
		t.Errorf("on_lose = notify restarted %v", r)
	}
}

// TestLeaseLeaderRevokesTheLeasesOfADeadNode: once the state records a
// node dead, the leader's chore revokes the leases held there.
func TestLeaseLeaderRevokesTheLeasesOfADeadNode(t *testing.T) {
	e := newLeaseEnv(t)
	g1, g2 := newFakeGroups(), newFakeGroups()
	g1.set("app.0", holderReady, nil)
	m1, stop1 := e.manager("n1", g1)
	e.manager("n2", g2)
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Minute)}), "leader")
	l1, err := m1.campaign(context.Background(), alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stop1()
	if _, err := e.propose(context.Background(), raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n1", Status: raftstore.NodeDead}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the dead node's lease revoked", func() bool {
		_, ok := e.store.Lease(l1.Key)
		return !ok
	})
}

// TestLeaseAdoptedAfterAgentRestart: a restarted agent keeps renewing the
// leases its ready groups hold, with the same token, and releases those of
// groups that are not ready.
func TestLeaseAdoptedAfterAgentRestart(t *testing.T) {
	e := newLeaseEnv(t)
	g1 := newFakeGroups()
	ttl := api.Duration(time.Second)
	sp := spec(api.LeaseSpec{Name: "leader", TTL: ttl}, api.LeaseSpec{Name: "other", TTL: ttl})
	g1.set("app.0", holderReady, sp)
	g1.set("app.1", holderReady, sp)
	m1, stop1 := e.manager("n1", g1)
	ctx := context.Background()
	la, err := m1.campaign(ctx, alloc("app.0"), leaseSpec(sp, "leader"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := m1.campaign(ctx, alloc("app.1"), leaseSpec(sp, "other"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stop1()
	g1.set("app.1", holderNotReady, nil)
	m1b, _ := e.manager("n1", g1)
	waitUntil(t, "app.1's lease released", func() bool {
		_, ok := e.store.Lease(lb.Key)
		return !ok
	})
	time.Sleep(2 * time.Second) // twice the TTL
	cur, ok := e.store.Lease(la.Key)
	if !ok || cur.Token != la.Token || cur.Holder != "app.0" || !cur.Expiry.After(la.Expiry.Add(time.Second)) {
		t.Fatalf("after the restart and 2 TTLs: %+v (ok %v), want app.0 renewed with token %d", cur, ok, la.Token)
	}
	if v := m1b.view(la.Key, "leader", false, "app.0"); !v.Held {
		t.Errorf("adopted lease not held: %+v", v)
	}
}

// TestLeaseLongPollAnswersOnChange: a long-poll with the current token
// waits; it answers when the holder changes, and a holder's long-poll
// answers when it stops holding.
func TestLeaseLongPollAnswersOnChange(t *testing.T) {
	e := newLeaseEnv(t)
	g1, g2 := newFakeGroups(), newFakeGroups()
	g1.set("app.0", holderReady, nil)
	g2.set("app.1", holderReady, nil)
	m1, _ := e.manager("n1", g1)
	m2, _ := e.manager("n2", g2)
	ctx := context.Background()
	ls := leaseSpec(spec(api.LeaseSpec{Name: "leader", TTL: api.Duration(time.Minute)}), "leader")
	key := alloc("app.0").leaseKey(ls)

	// Nobody holds it: a follower's poll with token 0 waits until the grant.
	polled := make(chan api.Lease, 1)
	go func() { polled <- m2.waitChange(ctx, key, "leader", false, "app.1", 0, false, 20*time.Second) }()
	time.Sleep(50 * time.Millisecond)
	l1, err := m1.campaign(ctx, alloc("app.0"), ls, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := <-polled; v.Token != l1.Token || v.Holder != "app.0" || v.Held {
		t.Fatalf("follower's poll: %+v, want app.0 with token %d", v, l1.Token)
	}
	// Unchanged: answers after wait with the same lease.
	if v := m2.waitChange(ctx, key, "leader", false, "app.1", l1.Token, false, 100*time.Millisecond); v.Token != l1.Token {
		t.Fatalf("poll without a change: %+v", v)
	}
	// The holder's poll answers when it turns un-ready.
	go func() { polled <- m1.waitChange(ctx, key, "leader", false, "app.0", l1.Token, true, 20*time.Second) }()
	time.Sleep(50 * time.Millisecond)
	g1.set("app.0", holderNotReady, nil)
	e.poke("app.0")
	if v := <-polled; v.Held {
		t.Fatalf("holder's poll: %+v, want not held", v)
	}
}

// TestLeaseRoutesOnTheDownwardSocket: over a group's socket, campaign
// answers the grant; GET shows it; another group's lease of the same name
// is another lease; a shared lease is one for every group that declares
// it; DELETE by a non-holder is refused; GET / answers like the
// leader-elector sidecar and makes the caller a candidate; bad input gets
// a 400 that says what is wrong.
func TestLeaseRoutesOnTheDownwardSocket(t *testing.T) {
	a := downwardAgent(t)
	groups := newFakeGroups()
	for _, g := range []string{"web.0", "web.1", "kv.s0.0", "loc"} {
		groups.set(g, holderReady, nil)
	}
	a.mu.Lock()
	shared := api.LeaseSpec{Name: "db", Shared: true, TTL: api.Duration(time.Minute)}
	a.groups["loc"].Spec.Leases = []api.LeaseSpec{shared}
	a.groups["web.0"].Spec.Leases = []api.LeaseSpec{{Name: "leader", TTL: api.Duration(time.Minute)}, shared}
	for _, g := range []string{"web.0", "loc"} {
		groups.set(g, holderReady, a.groups[g].Spec)
	}
	a.mu.Unlock()
	a.leases = newLeaseManager("n1", a.log, a.cl.store, a.propose, groups, a.events)
	a.leasesOnce.Do(func() {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.leases.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	d := downwardOf(t, a)
	web0, kv, loc := openSocket(t, d, "web.0"), openSocket(t, d, "kv.s0.0"), openSocket(t, d, "loc")

	decode := func(b []byte) api.Lease {
		t.Helper()
		var l api.Lease
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		return l
	}
	code, body := call(t, web0, "POST", "/v1/leases/leader/campaign", `{"timeout": "5s"}`)
	if code != 200 {
		t.Fatalf("campaign: %d %s", code, body)
	}
	l := decode(body)
	if !l.Held || l.Holder != "web.0" || l.Group != "web" || l.Token == 0 || l.Node != "n1" {
		t.Fatalf("campaign answer: %+v", l)
	}
	code, body = call(t, web0, "GET", "/v1/leases/leader", "")
	if g := decode(body); code != 200 || !g.Held || g.Token != l.Token {
		t.Fatalf("GET: %d %+v", code, g)
	}
	// kv's "leader" is kv's own lease; it campaigns for its shard too.
	for _, name := range []string{"leader", "shard-0"} {
		code, body = call(t, kv, "POST", "/v1/leases/"+name+"/campaign?timeout=5s", "")
		if g := decode(body); code != 200 || !g.Held || g.Holder != "kv.s0.0" || g.Group != "kv" {
			t.Fatalf("kv campaigns for %s: %d %s", name, code, body)
		}
	}
	if _, ok := a.cl.store.Lease("kv/shard-0"); !ok {
		t.Error("no lease kv/shard-0 in the state")
	}
	// A shared lease: loc (a local group) and web.0 compete for one.
	code, body = call(t, loc, "POST", "/v1/leases/db/campaign", `{"timeout": "5s"}`)
	if g := decode(body); code != 200 || g.Holder != "loc@n1" || !g.Shared {
		t.Fatalf("loc campaigns for the shared db: %d %s", code, body)
	}
	code, body = call(t, web0, "POST", "/v1/leases/db/campaign", `{"timeout": "200ms"}`)
	if code != 409 || !strings.Contains(string(body), "loc@n1") {
		t.Fatalf("web.0 campaigns for the shared db held by loc: %d %s, want 409 naming loc@n1", code, body)
	}
	code, body = call(t, web0, "DELETE", "/v1/leases/db", "")
	if code != 409 || !strings.Contains(string(body), "only the holder") {
		t.Fatalf("web.0 resigns loc's lease: %d %s, want 409", code, body)
	}
	code, body = call(t, loc, "DELETE", "/v1/leases/db", "")
	if g := decode(body); code != 200 || g.Holder != "" {
		t.Fatalf("loc resigns: %d %s", code, body)
	}
	// GET /: the leader-elector answer; asking makes kv a candidate of
	// its first lease, here the default "leader" it already holds.
	code, body = call(t, web0, "GET", "/", "")
	var ans api.ElectorAnswer
	if err := json.Unmarshal(body, &ans); code != 200 || err != nil || ans.Name != "web.0" {
		t.Fatalf("GET /: %d %s, want {\"name\": \"web.0\"}", code, body)
	}
	code, body = call(t, loc, "GET", "/?election=solo", "")
	waitUntil(t, "the elector endpoint elects loc", func() bool {
		l, ok := a.cl.store.Lease("loc/solo")
		return ok && l.Holder == "loc@n1"
	})
	code, body = call(t, loc, "GET", "/?election=solo", "")
	if err := json.Unmarshal(body, &ans); code != 200 || err != nil || ans.Name != "loc@n1" {
		t.Fatalf("GET / after the election: %d %s", code, body)
	}
	// Bad input.
	for _, tc := range []struct{ method, path, body, want string }{
		{"POST", "/v1/leases/Not_A_Label/campaign", "", "DNS label"},
		{"POST", "/v1/leases/x/campaign", `{"timeot": "1s"}`, "bad request body"},
		{"POST", "/v1/leases/x/campaign?timeout=soon", "", "not a duration"},
		{"GET", "/v1/leases/x?wait=1h", "", "maximum"},
		{"GET", "/v1/leases/x?wait=1s&token=abc", "", "not a number"},
		{"POST", "/v1/leases/x/campaign", `{"holder": "a/b"}`, "holder"},
	} {
		code, body := call(t, web0, tc.method, tc.path, tc.body)
		if code != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s %s: %d %s, want 400 saying %q", tc.method, tc.path, tc.body, code, body, tc.want)
		}
	}
}

func TestLeaseSpecDefaultsAndShardDeclaration(t *testing.T) {
	sp := &api.GroupSpec{Leases: []api.LeaseSpec{
		{Name: "leader", TTL: api.Duration(2 * time.Second), OnLose: api.OnLoseRestart},
		{Name: "shard", TTL: api.Duration(3 * time.Second)},
	}}
	for _, tc := range []struct {
		name   string
		ttl    time.Duration
		onLose api.OnLose
	}{
		{"leader", 2 * time.Second, api.OnLoseRestart},
		{"shard-7", 3 * time.Second, api.OnLoseNotify},
		{"shard-x", api.DefaultLeaseTTL.D(), api.OnLoseNotify},
		{"undeclared", api.DefaultLeaseTTL.D(), api.OnLoseNotify},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := leaseSpec(sp, tc.name)
			if ls.Name != tc.name || ls.TTL.D() != tc.ttl || ls.OnLose != tc.onLose {
				t.Errorf("leaseSpec = %+v, want ttl %s on_lose %s", ls, tc.ttl, tc.onLose)
			}
		})
	}
	for ttl, want := range map[time.Duration]time.Duration{time.Second: 200 * time.Millisecond, 5 * time.Second: time.Second, time.Minute: 2 * time.Second} {
		if got := leaseMargin(ttl); got != want {
			t.Errorf("leaseMargin(%s) = %s, want %s", ttl, got, want)
		}
	}
}
