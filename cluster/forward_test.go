package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// fakeStore is a ProposeStore whose answers the test chooses.
type fakeStore struct {
	// apply answers the call-th Apply (from 1).
	apply func(ctx context.Context, call int) (uint64, error)
	// wait answers WaitIndex; nil returns nil at once.
	wait    func(ctx context.Context, idx uint64) error
	applies atomic.Int32
	// barrier answers Barrier; nil returns nil at once.
	barrier  func(ctx context.Context) error
	barriers atomic.Int32

	mu   sync.Mutex
	cmds []raftstore.Command
}

var _ ProposeStore = (*fakeStore)(nil)

func (f *fakeStore) Apply(ctx context.Context, cmd raftstore.Command) (uint64, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, cmd)
	f.mu.Unlock()
	return f.apply(ctx, int(f.applies.Add(1)))
}

func (f *fakeStore) WaitIndex(ctx context.Context, idx uint64) error {
	if f.wait == nil {
		return nil
	}
	return f.wait(ctx, idx)
}

func (f *fakeStore) Leader() (string, string) { return "", "" }

func (f *fakeStore) Barrier(ctx context.Context) error {
	f.barriers.Add(1)
	if f.barrier == nil {
		return nil
	}
	return f.barrier(ctx)
}

// notLeader is what a follower's store answers.
func notLeader(leader string) error {
	var addr string
	if leader != "" {
		addr = "127.0.0.1:1" // raft address: never dialled by the Proposer
	}
	return fmt.Errorf("raftstore: apply: %w", &raftstore.NotLeaderError{LeaderID: leader, LeaderAddr: addr})
}

// apiDirectory maps node names to API addresses, for leaderAPI.
type apiDirectory struct {
	mu    sync.Mutex
	addrs map[string][]string // successive answers; the last one repeats
	calls map[string]int
}

func newAPIDirectory() *apiDirectory {
	return &apiDirectory{addrs: map[string][]string{}, calls: map[string]int{}}
}

func (d *apiDirectory) set(node string, addrs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs[node] = addrs
}

func (d *apiDirectory) lookup(node string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	a := d.addrs[node]
	if len(a) == 0 {
		return "", fmt.Errorf("node %q: %w", node, api.ErrNotFound)
	}
	i := min(d.calls[node], len(a)-1)
	d.calls[node]++
	return a[i], nil
}

// fakeLeader serves a Proposer's Handler over store as node name and
// returns its API address and the count of requests it got.
func fakeLeader(t *testing.T, p *testPKI, name string, store ProposeStore) (string, *atomic.Int32) {
	t.Helper()
	tl := p.tls(t, name)
	var hits atomic.Int32
	mux := http.NewServeMux()
	mux.Handle(PathRaftApply, countHits(&hits, NewProposer(store, tl, nil, tlsTestLogger()).Handler()))
	return serveHTTPS(t, tl.Server(), mux), &hits
}

// fwdMember is a Raft member with its Proposer served on an HTTPS API.
type fwdMember struct {
	*raftMember
	prop *Proposer
	api  string
	hits atomic.Int32 // requests to its PathRaftApply
}

func startForwarding(t *testing.T, p *testPKI, names ...string) []*fwdMember {
	t.Helper()
	dir := newAPIDirectory()
	var out []*fwdMember
	for _, m := range startTLSRaft(t, p, names...) {
		f := &fwdMember{raftMember: m}
		f.prop = NewProposer(m.store, m.tls, dir.lookup, tlsTestLogger())
		mux := http.NewServeMux()
		mux.Handle("POST "+PathRaftApply, countHits(&f.hits, f.prop.Handler()))
		f.api = serveHTTPS(t, m.tls.Server(), mux)
		dir.set(m.name, f.api)
		out = append(out, f)
	}
	return out
}

func TestProposerForwardsToTheLeaderAndReadsItsWrite(t *testing.T) {
	ctx := tlsTestContext(t)
	p := newTestPKI(t, "node-a", "node-b", "node-c")
	members := startForwarding(t, p, "node-a", "node-b", "node-c")
	var leader *fwdMember
	var followers []*fwdMember
	for _, m := range members {
		if m.store.IsLeader() {
			leader = m
		} else {
			followers = append(followers, m)
		}
	}
	if leader == nil || len(followers) != 2 {
		t.Fatalf("no single leader")
	}

	for i, f := range followers {
		name := "worker-" + f.name
		idx, err := f.prop.Apply(ctx, putNodeCommand(t, name))
		if err != nil {
			t.Fatalf("Apply on follower %s: %v", f.name, err)
		}
		// Read right away: the write is already applied here.
		if n, ok := f.store.Node(name); !ok || f.store.Index() < idx || n.Status != raftstore.NodeAlive {
			t.Fatalf("follower %s returned index %d before applying it (applied %d, node %+v)", f.name, idx, f.store.Index(), n)
		}
		if got := leader.hits.Load(); got != int32(i+1) {
			t.Fatalf("leader got %d forwarded writes, want %d", got, i+1)
		}
	}

	t.Run("FSM rejection keeps its class", func(t *testing.T) {
		f := followers[0]
		cmd, err := raftstore.NewCommand(raftstore.CmdPutAllocation, raftstore.Allocation{ID: "nope-0", Group: "nope", Node: f.name})
		if err != nil {
			t.Fatal(err)
		}
		idx, err := f.prop.Apply(ctx, cmd)
		if !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound from the leader's FSM", err)
		}
		if !strings.Contains(err.Error(), "leader "+leader.name) || !strings.Contains(err.Error(), `group "nope"`) {
			t.Errorf("err = %q, want it to name the leader and the group", err)
		}
		if idx == 0 || f.store.Index() < idx {
			t.Errorf("index %d (applied here: %d): a rejected command still has its committed index", idx, f.store.Index())
		}
	})

	t.Run("the leader applies locally", func(t *testing.T) {
		before := leader.hits.Load()
		if _, err := leader.prop.Apply(ctx, putNodeCommand(t, "worker-leader")); err != nil {
			t.Fatal(err)
		}
		if leader.hits.Load() != before {
			t.Fatal("the leader forwarded a write to itself")
		}
	})
}

// TestProposerReturnsOnlyOnceTheFollowerApplied: the forwarded write is
// committed, but Apply returns only when the local member applied it.
func TestProposerReturnsOnlyOnceTheFollowerApplied(t *testing.T) {
	ctx := tlsTestContext(t)
	p := newTestPKI(t, "leader", "follower")
	addr, _ := fakeLeader(t, p, "leader", &fakeStore{apply: func(context.Context, int) (uint64, error) { return 42, nil }})
	dir := newAPIDirectory()
	dir.set("leader", addr)

	waiting, release := make(chan uint64, 1), make(chan struct{})
	follower := &fakeStore{
		apply: func(context.Context, int) (uint64, error) { return 0, notLeader("leader") },
		wait: func(ctx context.Context, idx uint64) error {
			waiting <- idx
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	prop := NewProposer(follower, p.tls(t, "follower"), dir.lookup, tlsTestLogger())
	type result struct {
		idx uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		idx, err := prop.Apply(ctx, putNodeCommand(t, "x"))
		done <- result{idx, err}
	}()
	select {
	case idx := <-waiting:
		if idx != 42 {
			t.Fatalf("WaitIndex(%d), want the leader's index 42", idx)
		}
	case r := <-done:
		t.Fatalf("Apply returned (%d, %v) without waiting for the local member", r.idx, r.err)
	case <-ctx.Done():
		t.Fatal("Apply never waited for the local member")
	}
	select {
	case r := <-done:
		t.Fatalf("Apply returned (%d, %v) while the local member had not applied", r.idx, r.err)
	default:
	}
	close(release)
	if r := <-done; r.idx != 42 || r.err != nil {
		t.Fatalf("Apply = %d, %v; want 42", r.idx, r.err)
	}
}

// TestProposerFollowsTheLeader: leadership moves while a write is
// forwarded (the old leader answers not_leader), and the first API address
// cannot be dialled; neither is an error, the write lands on the new
// leader exactly once.
func TestProposerFollowsTheLeader(t *testing.T) {
	ctx := tlsTestContext(t)
	p := newTestPKI(t, "a", "b", "follower")
	oldLeader := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 0, notLeader("b") }}
	newLeader := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 9, nil }}
	addrA, hitsA := fakeLeader(t, p, "a", oldLeader)
	addrB, hitsB := fakeLeader(t, p, "b", newLeader)
	closed := mustListen(t)
	closedAddr := closed.Addr().String()
	closed.Close()
	dir := newAPIDirectory()
	dir.set("a", closedAddr, addrA) // the first dial fails: retried
	dir.set("b", addrB)

	follower := &fakeStore{apply: func(_ context.Context, call int) (uint64, error) {
		if call <= 2 {
			return 0, notLeader("a")
		}
		return 0, notLeader("b")
	}}
	prop := NewProposer(follower, p.tls(t, "follower"), dir.lookup, tlsTestLogger())
	idx, err := prop.Apply(ctx, putNodeCommand(t, "x"))
	if err != nil || idx != 9 {
		t.Fatalf("Apply = %d, %v; want 9 from the new leader", idx, err)
	}
	if hitsA.Load() != 1 || hitsB.Load() != 1 || newLeader.applies.Load() != 1 {
		t.Fatalf("old leader hit %d, new leader hit %d and applied %d times; want 1, 1, 1",
			hitsA.Load(), hitsB.Load(), newLeader.applies.Load())
	}
	// The proposer's clock stamps the command once, before any attempt.
	first, last := follower.cmds[0], newLeader.cmds[0]
	if first.Time.IsZero() || !last.Time.Equal(first.Time) {
		t.Errorf("command time %v on the follower, %v on the leader; want one non-zero time", first.Time, last.Time)
	}
}

func TestProposerWaitsOutAnElection(t *testing.T) {
	ctx := tlsTestContext(t)
	store := &fakeStore{apply: func(_ context.Context, call int) (uint64, error) {
		if call <= 3 {
			return 0, notLeader("")
		}
		return 5, nil
	}}
	prop := NewProposer(store, nil, nil, tlsTestLogger())
	if idx, err := prop.Apply(ctx, putNodeCommand(t, "x")); err != nil || idx != 5 {
		t.Fatalf("Apply = %d, %v; want 5 once a leader is elected", idx, err)
	}
	if n := store.applies.Load(); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
}

func TestProposerGivesUpWithoutALeader(t *testing.T) {
	store := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 0, notLeader("") }}
	prop := NewProposer(store, nil, nil, tlsTestLogger())
	const wait = 150 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	_, err := prop.Apply(ctx, putNodeCommand(t, "x"))
	if !errors.Is(err, api.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no Raft leader") {
		t.Fatalf("err = %v, want ErrUnavailable saying there is no Raft leader", err)
	}
	if time.Since(start) < wait || store.applies.Load() < 2 {
		t.Fatalf("gave up after %s and %d attempts, want retries until ctx ends", time.Since(start), store.applies.Load())
	}
}

func TestProposerWithoutTLSNeverForwards(t *testing.T) {
	store := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 0, notLeader("a") }}
	prop := NewProposer(store, nil, func(string) (string, error) {
		t.Fatal("looked up the leader's API without TLS")
		return "", nil
	}, tlsTestLogger())
	_, err := prop.Apply(tlsTestContext(t), putNodeCommand(t, "x"))
	var nle *raftstore.NotLeaderError
	if !errors.Is(err, api.ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderID != "a" {
		t.Fatalf("err = %v, want the store's NotLeaderError", err)
	}
}

func TestApplyHandlerAnswers(t *testing.T) {
	store := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 3, nil }}
	h := NewProposer(store, nil, nil, tlsTestLogger()).Handler()
	for _, tc := range []struct {
		name, method string
		code         int
		body         string
	}{
		{"plain connection", http.MethodPost, http.StatusForbidden, "only cluster nodes may propose writes"},
		{"wrong method", http.MethodGet, http.StatusMethodNotAllowed, "use POST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, PathRaftApply, strings.NewReader("{}")))
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("answer %d %q, want %d with %q", rec.Code, rec.Body, tc.code, tc.body)
			}
		})
	}
	if store.applies.Load() != 0 {
		t.Fatal("a refused request reached the store")
	}
}

// TestForwardedErrorsKeepTheirClass: every answer of the leader's Handler
// comes back with its class; not_leader is retried, the others are not.
func TestForwardedErrorsKeepTheirClass(t *testing.T) {
	p := newTestPKI(t, "leader", "follower")
	for _, class := range []error{api.ErrInvalid, api.ErrNotFound, api.ErrAlreadyExists, api.ErrConflict, api.ErrUnavailable} {
		t.Run(class.Error(), func(t *testing.T) {
			ctx := tlsTestContext(t)
			leader := &fakeStore{apply: func(context.Context, int) (uint64, error) {
				return 0, fmt.Errorf("raftstore: apply: something: %w", class)
			}}
			addr, hits := fakeLeader(t, p, "leader", leader)
			dir := newAPIDirectory()
			dir.set("leader", addr)
			follower := &fakeStore{apply: func(context.Context, int) (uint64, error) { return 0, notLeader("leader") }}
			_, err := NewProposer(follower, p.tls(t, "follower"), dir.lookup, tlsTestLogger()).Apply(ctx, putNodeCommand(t, "x"))
			if !errors.Is(err, class) || !strings.Contains(err.Error(), "something") {
				t.Fatalf("err = %v, want %v", err, class)
			}
			if hits.Load() != 1 {
				t.Fatalf("%d requests, want 1: only not_leader is retried", hits.Load())
			}
		})
	}
}

// TestHandlerPushesCommitsToFollowers: after a forwarded write the leader
// appends a barrier, so that followers learn of the commit without waiting
// for raft's CommitTimeout; writes that arrive while one is under way
// share the next one.
func TestHandlerPushesCommitsToFollowers(t *testing.T) {
	ctx := tlsTestContext(t)
	p := newTestPKI(t, "leader", "follower")
	release := make(chan struct{})
	leaderStore := &fakeStore{
		apply: func(_ context.Context, call int) (uint64, error) { return uint64(call), nil },
		barrier: func(ctx context.Context) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	leaderTLS := p.tls(t, "leader")
	leader := NewProposer(leaderStore, leaderTLS, nil, tlsTestLogger())
	mux := http.NewServeMux()
	mux.Handle(PathRaftApply, leader.Handler())
	dir := newAPIDirectory()
	dir.set("leader", serveHTTPS(t, leaderTLS.Server(), mux))
	follower := NewProposer(&fakeStore{apply: func(context.Context, int) (uint64, error) { return 0, notLeader("leader") }},
		p.tls(t, "follower"), dir.lookup, tlsTestLogger())

	if _, err := follower.Apply(ctx, putNodeCommand(t, "first")); err != nil {
		t.Fatal(err)
	}
	eventuallyTLS(t, "a barrier after the forwarded write", func() bool { return leaderStore.barriers.Load() == 1 })
	// The first barrier is still under way: these writes wait for another.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := follower.Apply(ctx, putNodeCommand(t, fmt.Sprint("more-", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	close(release)
	eventuallyTLS(t, "the pushes to end", func() bool {
		leader.mu.Lock()
		defer leader.mu.Unlock()
		return !leader.pushing
	})
	if n := leaderStore.barriers.Load(); n != 2 {
		t.Fatalf("%d barriers for 5 writes, 4 of them during the first barrier; want 2", n)
	}
}
