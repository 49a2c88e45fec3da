package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

const schedTestTimeout = 10 * time.Second

// schedStore is a Store over the real FSM, with leadership and proposal
// failures under the test's control, recording what the scheduler does.
type schedStore struct {
	mu   sync.Mutex
	sim  *simCluster
	fail func(raftstore.Command) error // non-nil error: the proposal fails

	leader       atomic.Bool
	leaderChecks atomic.Int64
	stateAt      []uint64    // State().Index of every State call
	applies      []time.Time // every Apply attempt on the leader
}

var _ Store = (*schedStore)(nil)

func newSchedStore() *schedStore { return &schedStore{sim: newSimCluster()} }

func (s *schedStore) State() raftstore.State {
	st := s.sim.fsm.State()
	s.mu.Lock()
	s.stateAt = append(s.stateAt, st.Index)
	s.mu.Unlock()
	return st
}

func (s *schedStore) Watch(ctx context.Context) <-chan uint64 { return s.sim.fsm.Watch(ctx) }

func (s *schedStore) IsLeader() bool {
	s.leaderChecks.Add(1)
	return s.leader.Load()
}

func (s *schedStore) Apply(_ context.Context, cmd raftstore.Command) (uint64, error) {
	if !s.leader.Load() {
		return 0, &raftstore.NotLeaderError{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applies = append(s.applies, time.Now())
	if s.fail != nil {
		if err := s.fail(cmd); err != nil {
			return 0, err
		}
	}
	if err := s.sim.applyCommand(cmd); err != nil {
		return s.sim.index, err
	}
	return s.sim.index, nil
}

// put applies a command as another writer would, stamped with the real
// clock (the scheduler runs on it).
func (s *schedStore) put(t *testing.T, typ raftstore.CommandType, payload any) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sim.now = time.Now().UTC()
	if err := s.sim.apply(typ, payload); err != nil {
		t.Fatalf("applying %s: %v", typ, err)
	}
}

func (s *schedStore) index() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sim.index
}

func (s *schedStore) statesSeen() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.stateAt...)
}

func (s *schedStore) applyTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.applies...)
}

func (s *schedStore) placed(id string) string {
	a, _ := s.sim.fsm.Allocation(id)
	return a.Node
}

// runScheduler runs a scheduler until the test ends and checks that Run
// returned nil.
func runScheduler(t *testing.T, store Store, opts Options) *Scheduler {
	t.Helper()
	s := NewScheduler(store, opts, testSchedLogger())
	startScheduler(t, s)
	return s
}

func startScheduler(t *testing.T, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(schedTestTimeout):
			t.Errorf("Run did not return after its context ended")
		}
	})
}

func testSchedLogger() *slog.Logger {
	if os.Getenv("BERTH_TEST_SCHED_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// waitFor polls cond until it holds, failing the test after the timeout.
func schedWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(schedTestTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestRunSchedulesOnlyWhileLeader(t *testing.T) {
	st := newSchedStore()
	runScheduler(t, st, Options{LeaderPoll: 2 * time.Millisecond, Coalesce: time.Millisecond})
	st.put(t, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n1", Status: raftstore.NodeAlive})
	st.put(t, raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: gspec("web", api.PlacementSpec{}, 100)})

	checks := st.leaderChecks.Load()
	schedWaitFor(t, "the follower to check for leadership a few times", func() bool { return st.leaderChecks.Load() > checks+10 })
	if n := len(st.statesSeen()); n != 0 {
		t.Fatalf("a follower read the state for %d passes", n)
	}
	if st.placed("web.0") != "" || len(st.applyTimes()) != 0 {
		t.Fatalf("a follower placed web.0")
	}

	st.leader.Store(true)
	schedWaitFor(t, "the new leader to place web.0", func() bool { return st.placed("web.0") == "n1" })

	st.leader.Store(false)
	checks = st.leaderChecks.Load()
	applies := len(st.applyTimes())
	st.put(t, raftstore.CmdPutGroup, raftstore.Group{Name: "api", Spec: gspec("api", api.PlacementSpec{}, 100)})
	schedWaitFor(t, "the former leader to check for leadership a few times", func() bool { return st.leaderChecks.Load() > checks+10 })
	if n := len(st.applyTimes()); n != applies || st.placed("api.0") != "" {
		t.Errorf("a former leader proposed %d commands and placed api.0 on %q", n-applies, st.placed("api.0"))
	}
}

func TestRunCoalescesABurstOfChanges(t *testing.T) {
	st := newSchedStore()
	st.leader.Store(true)
	runScheduler(t, st, Options{Coalesce: 100 * time.Millisecond})
	st.put(t, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n1", Status: raftstore.NodeAlive})
	st.put(t, raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: gspec("web", api.PlacementSpec{}, 100)})
	schedWaitFor(t, "web.0 placed", func() bool { return st.placed("web.0") != "" })
	// The pass after the scheduler's own plan, on the state that holds it.
	settled := st.index()
	schedWaitFor(t, "a pass on the settled state", func() bool {
		seen := st.statesSeen()
		return len(seen) > 0 && seen[len(seen)-1] == settled
	})
	passes := len(st.statesSeen())

	for i := range 30 {
		a, _ := st.sim.fsm.Allocation("web.0")
		st.put(t, raftstore.CmdSetAllocationStatus, raftstore.SetAllocationStatus{Updates: []raftstore.AllocationStatus{{
			ID: "web.0", Generation: a.Generation, Status: api.GroupStarting, Reason: fmt.Sprintf("pulling layer %d", i),
		}}})
	}
	last := st.index()
	schedWaitFor(t, "a pass after the burst", func() bool {
		seen := st.statesSeen()
		return seen[len(seen)-1] == last
	})
	for _, idx := range st.statesSeen()[passes:] {
		if idx != last {
			t.Errorf("a pass ran at index %d, inside the burst %d..%d: bursts must coalesce", idx, settled+1, last)
		}
	}
}

func TestRunBacksOffAfterFailedProposals(t *testing.T) {
	st := newSchedStore()
	st.leader.Store(true)
	failures := 3
	st.fail = func(raftstore.Command) error {
		if failures > 0 {
			failures--
			return fmt.Errorf("the group changed meanwhile: %w", api.ErrConflict)
		}
		return nil
	}
	const backoff = 20 * time.Millisecond
	var mu sync.Mutex
	var failed, succeeded int
	s := NewScheduler(st, Options{Coalesce: time.Millisecond, RetryBackoff: backoff}, testSchedLogger())
	s.OnDecision = func(d Decision, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && errors.Is(err, api.ErrConflict) {
			failed++
		} else if err == nil && len(d.Plan.Put) == 1 {
			succeeded++
		}
	}
	startScheduler(t, s)
	st.put(t, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n1", Status: raftstore.NodeAlive})
	st.put(t, raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: gspec("web", api.PlacementSpec{}, 100)})
	schedWaitFor(t, "web.0 placed despite the failures", func() bool { return st.placed("web.0") == "n1" })

	times := st.applyTimes()
	if len(times) < 4 {
		t.Fatalf("%d proposals, want 3 failed ones and a successful one", len(times))
	}
	schedWaitFor(t, "OnDecision to see the successful decision", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return succeeded == 1
	})
	mu.Lock()
	if failed != 3 {
		t.Errorf("OnDecision saw %d failed decisions, want 3", failed)
	}
	mu.Unlock()
	wait := backoff
	for i := 1; i < 4; i++ {
		if gap := times[i].Sub(times[i-1]); gap < wait*9/10 {
			t.Errorf("retry %d came %v after the failure, want at least the backoff %v", i, gap, wait)
		}
		wait *= 2
	}
}

func TestRunWakesAtTheEndOfTheDeadGrace(t *testing.T) {
	st := newSchedStore()
	st.leader.Store(true)
	const grace = 150 * time.Millisecond
	runScheduler(t, st, Options{Coalesce: time.Millisecond, DeadGrace: grace})
	st.put(t, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n1", Status: raftstore.NodeAlive})
	st.put(t, raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: gspec("web", api.PlacementSpec{}, 100)})
	schedWaitFor(t, "web.0 placed", func() bool { return st.placed("web.0") == "n1" })
	st.put(t, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n2", Status: raftstore.NodeAlive})

	died := time.Now()
	st.put(t, raftstore.CmdPutNode, raftstore.NodeInfo{Name: "n1", Status: raftstore.NodeDead})
	// Nothing else changes: only Decision.Next can wake the scheduler.
	schedWaitFor(t, "web.0 moved to n2", func() bool { return st.placed("web.0") == "n2" })
	if took := time.Since(died); took < grace {
		t.Errorf("web.0 moved %v after n1 died, before the grace of %v", took, grace)
	}
}

func TestRunReturnsWhenTheStoreCloses(t *testing.T) {
	stores := newRaftCluster(t, 1)
	s := NewScheduler(stores[0], Options{}, testSchedLogger())
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	if err := stores[0].Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, api.ErrUnavailable) {
			t.Errorf("Run after Close = %v, want an ErrUnavailable", err)
		}
	case <-time.After(schedTestTimeout):
		t.Fatal("Run did not return after the store closed")
	}
}

// TestRunOnRaftProposesOnTheLeaderOnly runs a scheduler on every member of
// a three-member raftstore cluster (raft's in-memory transport).
func TestRunOnRaftProposesOnTheLeaderOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), schedTestTimeout)
	defer cancel()
	stores := newRaftCluster(t, 3)
	scheds := make([]*Scheduler, len(stores))
	for i, st := range stores {
		scheds[i] = runScheduler(t, st, Options{Coalesce: time.Millisecond, LeaderPoll: 5 * time.Millisecond})
	}
	leader := schedLeaderOf(t, stores)
	for _, n := range []string{"n1", "n2", "n3"} {
		mustApply(ctx, t, stores[leader], raftstore.CmdPutNode, raftstore.NodeInfo{Name: n, Status: raftstore.NodeAlive})
	}
	mustApply(ctx, t, stores[leader], raftstore.CmdPutGroup, raftstore.Group{Name: "web", Spec: gspec("web", api.PlacementSpec{Replicas: 3}, 100)})
	for _, st := range stores {
		schedWaitFor(t, "every member to see three replicas placed", func() bool { return placedCount(st, "web") == 3 })
	}
	for i, s := range scheds {
		if i != leader && (s.Passes() != 0 || s.Proposed() != 0) {
			t.Errorf("follower %s made %d passes and %d proposals", stores[i].ID(), s.Passes(), s.Proposed())
		}
	}
	schedWaitFor(t, "the leader's proposals to be counted", func() bool { return scheds[leader].Proposed() > 0 })

	// A new leader takes over the scheduling.
	proposedBefore := scheds[leader].Proposed()
	if err := stores[leader].LeadershipTransfer(ctx); err != nil {
		t.Fatal(err)
	}
	schedWaitFor(t, "another leader", func() bool {
		for i, st := range stores {
			if i != leader && st.IsLeader() {
				return true
			}
		}
		return false
	})
	next := schedLeaderOf(t, stores)
	var home string
	if a, ok := stores[next].Allocation("web.0"); ok {
		home = a.Node
	}
	mustApply(ctx, t, stores[next], raftstore.CmdSetNodeDrain, raftstore.NodeDrain{Name: home, Drain: true})
	schedWaitFor(t, "the new leader to move web.0 off the drained node", func() bool {
		a, _ := stores[next].Allocation("web.0")
		return a.Node != home && scheds[next].Proposed() > 0 // counted once Apply returned
	})
	if p := scheds[leader].Proposed(); p != proposedBefore {
		t.Errorf("the former leader %s proposed %d more commands", stores[leader].ID(), p-proposedBefore)
	}
}

func placedCount(st *raftstore.Store, group string) int {
	n := 0
	for _, a := range st.Allocations() {
		if a.Group == group && a.Node != "" {
			n++
		}
	}
	return n
}

func mustApply(ctx context.Context, t *testing.T, st *raftstore.Store, typ raftstore.CommandType, payload any) {
	t.Helper()
	cmd, err := raftstore.NewCommand(typ, payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(ctx, cmd); err != nil {
		t.Fatalf("applying %s: %v", typ, err)
	}
}

func schedLeaderOf(t *testing.T, stores []*raftstore.Store) int {
	t.Helper()
	leader := -1
	schedWaitFor(t, "a leader", func() bool {
		for i, st := range stores {
			if st.IsLeader() {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// newRaftCluster starts n raftstore members on raft's in-memory transport:
// the first bootstraps and adds the others as voters. They are closed when
// the test ends.
func newRaftCluster(t *testing.T, n int) []*raftstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), schedTestTimeout)
	defer cancel()
	var (
		stores     []*raftstore.Store
		transports []*raft.InmemTransport
	)
	for i := range n {
		_, tr := raft.NewInmemTransport("")
		for _, other := range transports {
			other.Connect(tr.LocalAddr(), tr)
			tr.Connect(other.LocalAddr(), other)
		}
		transports = append(transports, tr)
		cfg := raftstore.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("m%d", i)
		cfg.DataDir = t.TempDir()
		cfg.Bootstrap = i == 0
		cfg.HeartbeatTimeout = 50 * time.Millisecond
		cfg.ElectionTimeout = 50 * time.Millisecond
		cfg.LeaderLeaseTimeout = 50 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.Logger = slog.New(slog.DiscardHandler)
		st, err := raftstore.Open(cfg, tr)
		if err != nil {
			t.Fatalf("opening member %d: %v", i, err)
		}
		t.Cleanup(func() { _ = st.Close() })
		stores = append(stores, st)
		if i == 0 {
			schedWaitFor(t, "the first member to lead", st.IsLeader)
			continue
		}
		if err := stores[0].AddVoter(ctx, st.ID(), st.Addr()); err != nil {
			t.Fatalf("adding member %d: %v", i, err)
		}
	}
	return stores
}
