package raftstore

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// fsmRun applies commands to an FSM at growing indexes, as raft would.
type fsmRun struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

func newRun(t *testing.T) *fsmRun { return &fsmRun{t: t, f: NewFSM()} }

// apply applies one command at the next index and returns the index and
// the FSM's answer.
func (r *fsmRun) apply(typ CommandType, p any) (uint64, any) {
	r.t.Helper()
	r.idx++
	return r.idx, applyAt(r.t, r.f, r.idx, at(mustCommand(r.t, typ, p), t0))
}

// ok applies a command that must succeed and returns its index and how
// many entries it changed.
func (r *fsmRun) ok(typ CommandType, p any) (uint64, int) {
	r.t.Helper()
	idx, res := r.apply(typ, p)
	got, isResult := res.(Result)
	if !isResult {
		r.t.Fatalf("%s at %d: %v", typ, idx, res)
	}
	return idx, got.Changed
}

// fail applies a command the FSM must refuse with class, and checks that
// it changed nothing.
func (r *fsmRun) fail(typ CommandType, p any, class error) error {
	r.t.Helper()
	before := r.f.State()
	idx, res := r.apply(typ, p)
	err, isErr := res.(error)
	if !isErr || !errors.Is(err, class) {
		r.t.Fatalf("%s at %d = %v, want an error that is %v", typ, idx, res, class)
	}
	assertSameEntries(r.t, before, r.f.State())
	return err
}

func acquire(key, holder, node string, now time.Time) LeaseAcquire {
	group, _, _, _ := ParseLeaseKey(key)
	if group == "" {
		group = "web"
	}
	return LeaseAcquire{Key: key, Group: group, Holder: holder, Node: node, Now: now, TTL: 5 * time.Second, Margin: time.Second}
}

func TestLeaseKeys(t *testing.T) {
	if k := LeaseKey("web", "leader", false); k != "web/leader" {
		t.Fatalf("group-scoped key = %q", k)
	}
	if k := LeaseKey("web", "leader", true); k != "*/leader" {
		t.Fatalf("shared key = %q", k)
	}
	tests := []struct {
		key          string
		group, name  string
		shared, fail bool
	}{
		{"web/leader", "web", "leader", false, false},
		{"*/shard-1", "", "shard-1", true, false},
		{"shared/leader", "shared", "leader", false, false}, // a group named "shared" is not a shared lease
		{"leader", "", "", false, true},
		{"web/Leader", "", "", false, true},
		{"Web/leader", "", "", false, true},
		{"web/", "", "", false, true},
		{"/leader", "", "", false, true},
	}
	for _, tt := range tests {
		g, n, s, err := ParseLeaseKey(tt.key)
		if (err != nil) != tt.fail || g != tt.group || n != tt.name || s != tt.shared {
			t.Errorf("ParseLeaseKey(%q) = %q, %q, %v, %v", tt.key, g, n, s, err)
		}
	}
	l := Lease{Key: "*/shard-1"}
	if l.Name() != "shard-1" || !l.Shared() {
		t.Fatalf("Lease{%s}: name %q shared %v", l.Key, l.Name(), l.Shared())
	}
}

// TestLeaseIsGrantedOnlyWhenTheOldHolderCannotBelieveIt walks one lease
// through its rules: granted when free, refused while held and until
// expiry plus margin, renewed (same token) by its holder, granted to
// another holder after expiry plus margin with a higher token.
func TestLeaseIsGrantedOnlyWhenTheOldHolderCannotBelieveIt(t *testing.T) {
	r := newRun(t)
	const key = "web/leader"

	idx, n := r.ok(CmdLeaseAcquire, acquire(key, "web-0", "n1", t0))
	l, ok := r.f.Lease(key)
	want := Lease{Key: key, Group: "web", Holder: "web-0", Node: "n1", Token: idx, Granted: t0, Expiry: t0.Add(5 * time.Second), TTL: 5 * time.Second, Index: idx}
	if n != 1 || !ok || l != want {
		t.Fatalf("after the first acquire: %+v (%v), changed %d; want %+v", l, ok, n, want)
	}
	first := idx

	// Held, before its expiry.
	err := r.fail(CmdLeaseAcquire, acquire(key, "web-1", "n2", t0.Add(3*time.Second)), api.ErrConflict)
	var held *LeaseHeldError
	if !errors.As(err, &held) || held.Holder != "web-0" || held.Node != "n1" || held.Token != first || !held.Expiry.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("refusal = %v (%#v), want a LeaseHeldError naming web-0 on n1 with token %d", err, held, first)
	}
	if !strings.Contains(err.Error(), "lease web/leader is held by web-0 on node n1 (token 1)") {
		t.Fatalf("refusal message %q", err)
	}
	// Expired, but within the margin: the holder may still believe it.
	r.fail(CmdLeaseAcquire, acquire(key, "web-1", "n2", t0.Add(5500*time.Millisecond)), api.ErrConflict)
	// Exactly at expiry + margin: still refused (the rule is strictly after).
	r.fail(CmdLeaseAcquire, acquire(key, "web-1", "n2", t0.Add(6*time.Second)), api.ErrConflict)

	// The holder acquires again: a renewal with the same token.
	idx, _ = r.ok(CmdLeaseAcquire, acquire(key, "web-0", "n1", t0.Add(4*time.Second)))
	l, _ = r.f.Lease(key)
	if l.Token != first || !l.Granted.Equal(t0) || !l.Expiry.Equal(t0.Add(9*time.Second)) || l.Index != idx {
		t.Fatalf("after the holder's acquire: %+v, want token %d granted at t0, expiring at t0+9s", l, first)
	}
	r.fail(CmdLeaseAcquire, acquire(key, "web-1", "n2", t0.Add(9*time.Second)), api.ErrConflict)

	// Past expiry + margin: the new holder gets a higher token.
	idx, _ = r.ok(CmdLeaseAcquire, acquire(key, "web-1", "n2", t0.Add(10*time.Second+time.Nanosecond)))
	l, _ = r.f.Lease(key)
	if l.Holder != "web-1" || l.Node != "n2" || l.Token != idx || l.Token <= first || !l.Granted.Equal(t0.Add(10*time.Second+time.Nanosecond)) {
		t.Fatalf("after the takeover: %+v, want web-1 with token %d > %d", l, idx, first)
	}
}

func TestLeaseRenewNeedsHolderAndToken(t *testing.T) {
	r := newRun(t)
	const key = "web/leader"
	tok, _ := r.ok(CmdLeaseAcquire, acquire(key, "web-0", "n1", t0))

	for _, tt := range []struct {
		name  string
		renew LeaseRenew
		msg   string
	}{
		{"wrong token", LeaseRenew{Key: key, Holder: "web-0", Token: tok + 1, Now: t0, TTL: time.Second}, "held by web-0 with token 1, not by web-0 with token 2"},
		{"wrong holder", LeaseRenew{Key: key, Holder: "web-1", Token: tok, Now: t0, TTL: time.Second}, "not by web-1"},
		{"no lease", LeaseRenew{Key: "web/other", Holder: "web-0", Token: tok, Now: t0, TTL: time.Second}, "nobody holds it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := r.fail(CmdLeaseRenew, tt.renew, ErrLeaseLost)
			if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), "lease lost") {
				t.Fatalf("renew = %v, want a lease-lost conflict containing %q", err, tt.msg)
			}
		})
	}

	// The holder renews after its expiry: nobody took it, so it still may.
	idx, _ := r.ok(CmdLeaseRenew, LeaseRenew{Key: key, Holder: "web-0", Token: tok, Now: t0.Add(time.Minute), TTL: 3 * time.Second})
	l, _ := r.f.Lease(key)
	if l.Token != tok || !l.Expiry.Equal(t0.Add(time.Minute+3*time.Second)) || l.TTL != 3*time.Second || l.Index != idx {
		t.Fatalf("after renew: %+v", l)
	}
}

func TestLeaseReleaseOnlyByItsHolder(t *testing.T) {
	r := newRun(t)
	const key = "web/leader"
	tok, _ := r.ok(CmdLeaseAcquire, acquire(key, "web-0", "n1", t0))

	if _, n := r.ok(CmdLeaseRelease, LeaseRelease{Key: key, Holder: "web-0", Token: tok + 5}); n != 0 {
		t.Fatal("a release with another token changed something")
	}
	if _, n := r.ok(CmdLeaseRelease, LeaseRelease{Key: key, Holder: "web-1", Token: tok}); n != 0 {
		t.Fatal("a release by another holder changed something")
	}
	if _, ok := r.f.Lease(key); !ok {
		t.Fatal("the lease is gone after mismatched releases")
	}
	if _, n := r.ok(CmdLeaseRelease, LeaseRelease{Key: key, Holder: "web-0", Token: tok}); n != 1 {
		t.Fatal("the holder's release changed nothing")
	}
	if _, ok := r.f.Lease(key); ok {
		t.Fatal("the lease is still there after its holder released it")
	}
	// Free again at once, with a new token, whatever the old expiry.
	idx, _ := r.ok(CmdLeaseAcquire, acquire(key, "web-1", "n2", t0))
	if l, _ := r.f.Lease(key); l.Token != idx || l.Token <= tok {
		t.Fatalf("after release, the new grant has token %d, want %d", l.Token, idx)
	}
}

func TestLeaseRevoke(t *testing.T) {
	setup := func(t *testing.T) *fsmRun {
		r := newRun(t)
		r.ok(CmdLeaseAcquire, acquire("web/leader", "web-0", "n1", t0))
		r.ok(CmdLeaseAcquire, acquire("web/shard-0", "web-1", "n2", t0))
		api0 := acquire("api/leader", "api-0", "n1", t0)
		api0.Allocation = "api-0"
		r.ok(CmdLeaseAcquire, api0)
		shared := acquire("*/migrations", "api-1", "n2", t0)
		shared.Group = "api"
		r.ok(CmdLeaseAcquire, shared)
		return r
	}
	keys := func(f *FSM) string {
		var ks []string
		for _, l := range f.Leases() {
			ks = append(ks, l.Key)
		}
		return strings.Join(ks, ",")
	}
	tests := []struct {
		name    string
		revoke  LeaseRevoke
		changed int
		left    string
	}{
		{"by node", LeaseRevoke{Node: "n1"}, 2, "*/migrations,web/shard-0"},
		{"by keys", LeaseRevoke{Keys: []string{"web/leader", "web/nope"}}, 1, "*/migrations,api/leader,web/shard-0"},
		{"by group: its own leases and the shared ones it holds", LeaseRevoke{Group: "api"}, 2, "web/leader,web/shard-0"},
		{"by node and holder: both must match", LeaseRevoke{Node: "n1", Holder: "web-1"}, 0, "*/migrations,api/leader,web/leader,web/shard-0"},
		{"by allocation", LeaseRevoke{Allocation: "api-0"}, 1, "*/migrations,web/leader,web/shard-0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := setup(t)
			if _, n := r.ok(CmdLeaseRevoke, tt.revoke); n != tt.changed {
				t.Fatalf("revoked %d, want %d", n, tt.changed)
			}
			if got := keys(r.f); got != tt.left {
				t.Fatalf("leases left = %s, want %s", got, tt.left)
			}
		})
	}
	r := setup(t)
	if got := r.f.GroupLeases("api"); len(got) != 2 || got[0].Key != "*/migrations" || got[1].Key != "api/leader" {
		t.Fatalf("GroupLeases(api) = %+v", got)
	}
}

// TestLeasesGoWithTheirGroupAndAllocation: deleting a cluster group
// revokes the leases its holders had, deleting an allocation (alone or in
// a plan) those it held, in the same apply.
func TestLeasesGoWithTheirGroupAndAllocation(t *testing.T) {
	f := seededFSM(t) // groups web and api, allocations web-0 and api-0; index 6
	r := &fsmRun{t: t, f: f, idx: 6}
	byAlloc := func(key, alloc string) LeaseAcquire {
		a := acquire(key, alloc, "n1", t0)
		a.Allocation = alloc
		return a
	}
	r.ok(CmdLeaseAcquire, byAlloc("web/leader", "web-0"))
	r.ok(CmdLeaseAcquire, byAlloc("api/leader", "api-0"))
	r.ok(CmdLeaseAcquire, acquire("web/other", "someone", "n1", t0))

	if _, n := r.ok(CmdDeleteAllocation, DeleteAllocation{ID: "web-0"}); n != 2 {
		t.Fatalf("delete_allocation changed %d, want 2 (the allocation and its lease)", n)
	}
	if _, ok := f.Lease("web/leader"); ok {
		t.Fatal("the lease of a deleted allocation is still there")
	}
	if _, ok := f.Lease("web/other"); !ok {
		t.Fatal("a lease not held by the allocation was revoked")
	}

	r.ok(CmdPutAllocation, Allocation{ID: "web-1", Group: "web", Node: "n1"})
	r.ok(CmdLeaseAcquire, byAlloc("web/leader", "web-1"))
	if _, n := r.ok(CmdApplyPlan, Plan{Delete: []string{"web-1"}}); n != 2 {
		t.Fatalf("a plan deleting web-1 changed %d, want 2", n)
	}
	if _, ok := f.Lease("web/leader"); ok {
		t.Fatal("the lease of an allocation a plan deleted is still there")
	}

	r.ok(CmdPutQueue, PutQueue{Name: "jobs", Group: "api", Spec: api.QueueSpec{Mode: api.QueuePull}})
	r.ok(CmdEnqueue, Enqueue{Queue: "jobs", Items: [][]byte{[]byte("a")}})
	if _, n := r.ok(CmdDeleteGroup, DeleteGroup{Name: "api"}); n != 5 {
		t.Fatalf("delete_group changed %d, want 5 (group, allocation, lease, queue, item)", n)
	}
	if _, ok := f.Lease("api/leader"); ok {
		t.Fatal("the lease of a deleted group is still there")
	}
	if _, ok := f.Queue("jobs"); ok {
		t.Fatal("the queue of a deleted group is still there")
	}
	if _, ok := f.Lease("web/other"); !ok {
		t.Fatal("another group's lease was revoked")
	}
}

func TestLeaseCommandsAreChecked(t *testing.T) {
	ok := acquire("web/leader", "web-0", "n1", t0)
	tests := []struct {
		name string
		edit func(a *LeaseAcquire)
		msg  string
	}{
		{"key without a group", func(a *LeaseAcquire) { a.Key = "leader" }, "is not <group>/<name>"},
		{"another group's lease", func(a *LeaseAcquire) { a.Group = "api" }, "belongs to group web, not to the holder's group api"},
		{"no holder", func(a *LeaseAcquire) { a.Holder = "" }, "holder is empty"},
		{"no node", func(a *LeaseAcquire) { a.Node = "" }, "node is empty"},
		{"no ttl", func(a *LeaseAcquire) { a.TTL = 0 }, "ttl 0s is outside"},
		{"negative margin", func(a *LeaseAcquire) { a.Margin = -time.Second }, "negative margin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := ok
			tt.edit(&a)
			_, err := NewCommand(CmdLeaseAcquire, a)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("NewCommand = %v, want invalid containing %q", err, tt.msg)
			}
		})
	}
	shared := acquire("*/migrations", "api-0", "n1", t0)
	shared.Group = "api"
	if _, err := NewCommand(CmdLeaseAcquire, shared); err != nil {
		t.Fatalf("a shared lease from any group is refused: %v", err)
	}
	if _, err := NewCommand(CmdLeaseRevoke, LeaseRevoke{}); !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("an empty revoke = %v, want invalid", err)
	}

	// Now defaults to the command's time; without either, the FSM refuses.
	r := newRun(t)
	a := ok
	a.Now = time.Time{}
	idx, _ := r.ok(CmdLeaseAcquire, a) // r stamps t0 on every command
	if l, _ := r.f.Lease("web/leader"); !l.Granted.Equal(t0) || l.Token != idx {
		t.Fatalf("lease = %+v, want granted at the command's time", l)
	}
	res := applyAt(t, r.f, idx+1, mustCommand(t, CmdLeaseAcquire, a))
	if err, isErr := res.(error); !isErr || !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "no time") {
		t.Fatalf("a command without a time = %v, want invalid", res)
	}
}

// TestLeaseTokensOnlyGrow drives random campaigns, renewals, releases and
// revocations of a few leases and checks every grant: its token is the
// grant's index, above every token granted before; a renewal keeps it.
func TestLeaseTokensOnlyGrow(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	r := newRun(t)
	keys := []string{"web/a", "web/b", "*/c"}
	holders := []string{"h0", "h1", "h2"}
	last := map[string]uint64{} // key → highest token seen
	now := t0
	grants := 0
	for range 2000 {
		now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		key := keys[rng.IntN(len(keys))]
		holder := holders[rng.IntN(len(holders))]
		before, had := r.f.Lease(key)
		switch rng.IntN(4) {
		case 0, 1:
			idx, res := r.apply(CmdLeaseAcquire, acquire(key, holder, "n-"+holder, now))
			l, _ := r.f.Lease(key)
			if _, refused := res.(error); refused {
				if !had || before.Holder == holder || before.Expiry.Add(time.Second).Before(now) || l != before {
					t.Fatalf("acquire of %s by %s at %s refused wrongly: before %+v, after %+v: %v", key, holder, now, before, l, res)
				}
				continue
			}
			if had && before.Holder != holder && !before.Expiry.Add(time.Second).Before(now) {
				t.Fatalf("%s granted to %s at %s while %+v could still believe it held it", key, holder, now, before)
			}
			if had && before.Holder == holder {
				if l.Token != before.Token {
					t.Fatalf("a renewal changed the token %d → %d", before.Token, l.Token)
				}
				continue
			}
			if l.Token != idx || l.Token <= last[key] {
				t.Fatalf("grant of %s at %d has token %d; the last was %d", key, idx, l.Token, last[key])
			}
			last[key] = l.Token
			grants++
		case 2:
			if had {
				r.ok(CmdLeaseRelease, LeaseRelease{Key: key, Holder: before.Holder, Token: before.Token})
			}
		case 3:
			r.ok(CmdLeaseRevoke, LeaseRevoke{Node: "n-" + holder})
		}
	}
	if grants < 100 {
		t.Fatalf("only %d grants: the history does not exercise takeovers", grants)
	}
	t.Logf("%d grants", grants)
}

func ExampleLeaseKey() {
	fmt.Println(LeaseKey("web", "leader", false), LeaseKey("web", "migrations", true))
	// Output: web/leader */migrations
}
