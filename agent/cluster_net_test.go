package agent

import (
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-project/berth/cluster"
	"github.com/berth-project/berth/raftstore"
)

// fakeGossip is a rejoiner whose members the test sets and whose rejoins
// it records.
type fakeGossip struct {
	mu      sync.Mutex
	members []cluster.Member
	rejoins [][]string
	answer  int
	done    chan struct{}
}

func (f *fakeGossip) Members() []cluster.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members)
}

func (f *fakeGossip) Rejoin(addrs []string) (int, error) {
	f.mu.Lock()
	f.rejoins = append(f.rejoins, addrs)
	n := f.answer
	f.mu.Unlock()
	f.done <- struct{}{}
	return n, nil
}

var _ rejoiner = (*fakeGossip)(nil)

// TestReconnectorRejoinsDeadMembersWithBackoff: a dead member is contacted
// again reconnectMin after it was first seen dead, then after doubling
// waits; a member that left, or is alive, never is; a member that comes
// back starts afresh.
func TestReconnectorRejoinsDeadMembersWithBackoff(t *testing.T) {
	g := &fakeGossip{done: make(chan struct{}, 10), members: []cluster.Member{
		{Name: "n1", Addr: "10.0.0.1:7946", State: raftstore.NodeAlive},
		{Name: "n2", Addr: "10.0.0.2:7946", State: raftstore.NodeDead},
		{Name: "n3", Addr: "10.0.0.3:7946", State: raftstore.NodeLeft},
	}}
	r := newReconnector(g, slog.New(slog.DiscardHandler))
	t0 := time.Unix(1000, 0)
	tick := func(at time.Duration) (rejoined []string) {
		t.Helper()
		r.tick(t0.Add(at))
		select {
		case <-g.done:
			g.mu.Lock()
			defer g.mu.Unlock()
			rejoined = g.rejoins[len(g.rejoins)-1]
		case <-time.After(50 * time.Millisecond):
		}
		// Wait for the rejoin goroutine to clear busy.
		for r.busy.Load() {
			time.Sleep(time.Millisecond)
		}
		return rejoined
	}
	for _, step := range []struct {
		at   time.Duration
		want []string
	}{
		{0, nil},                                  // first seen dead: try in reconnectMin
		{reconnectMin - time.Millisecond, nil},    // not yet
		{reconnectMin, []string{"10.0.0.2:7946"}}, // first try; next after 2×reconnectMin
		{reconnectMin + 4*time.Second - time.Millisecond, nil},
		{reconnectMin + 4*time.Second, []string{"10.0.0.2:7946"}}, // 2s + 4s
	} {
		if got := tick(step.at); !slices.Equal(got, step.want) {
			t.Fatalf("at %s: rejoined %v, want %v", step.at, got, step.want)
		}
	}
	// The backoff stops doubling at reconnectMax.
	r.wait["n2"] = reconnectMax
	r.next["n2"] = t0.Add(time.Minute)
	tick(time.Minute)
	if r.wait["n2"] != reconnectMax || !r.next["n2"].Equal(t0.Add(time.Minute+reconnectMax)) {
		t.Errorf("after the cap: wait %s, next %s; want %s, %s", r.wait["n2"], r.next["n2"], reconnectMax, t0.Add(time.Minute+reconnectMax))
	}
	// n2 comes back: forgotten; dead again later: reconnectMin again.
	g.mu.Lock()
	g.members[1].State = raftstore.NodeAlive
	g.mu.Unlock()
	tick(2 * time.Minute)
	if _, ok := r.next["n2"]; ok {
		t.Errorf("n2 alive again but still scheduled for a rejoin")
	}
	g.mu.Lock()
	g.members[1].State = raftstore.NodeDead
	g.mu.Unlock()
	if got := tick(3 * time.Minute); got != nil {
		t.Errorf("n2 dead again: rejoined at once (%v), want after reconnectMin", got)
	}
	if got := tick(3*time.Minute + reconnectMin); !slices.Equal(got, []string{"10.0.0.2:7946"}) {
		t.Errorf("n2 dead again: rejoined %v after reconnectMin, want n2", got)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, addrs := range g.rejoins {
		if slices.Contains(addrs, "10.0.0.3:7946") || slices.Contains(addrs, "10.0.0.1:7946") {
			t.Errorf("rejoined a member that left or is alive: %v", addrs)
		}
	}
}

func TestVoterTargetIsOddAndAtMostFive(t *testing.T) {
	for servers, want := range map[int]int{0: 1, 1: 1, 2: 1, 3: 3, 4: 3, 5: 5, 6: 5, 7: 5, 50: 5} {
		if got := voterTarget(servers); got != want {
			t.Errorf("voterTarget(%d) = %d, want %d", servers, got, want)
		}
	}
}
