package raftstore

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

type testCluster struct {
	stores     []*Store
	transports []*raft.InmemTransport
	closed     map[int]bool
}

// newCluster starts n members on in-memory transports: the first
// bootstraps, the leader adds the others as voters.
func newCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{closed: map[int]bool{}}
	for range n {
		c.add(t, true)
	}
	c.awaitOneLeader(t)
	return c
}

// add starts one more member; the first bootstraps, the others are added
// by the leader as voters or non-voters.
func (c *testCluster) add(t *testing.T, voter bool) *Store {
	t.Helper()
	i := len(c.stores)
	_, tr := raft.NewInmemTransport("")
	for _, other := range c.transports {
		other.Connect(tr.LocalAddr(), tr)
		tr.Connect(other.LocalAddr(), other)
	}
	c.transports = append(c.transports, tr)

	var leader *Store
	if i > 0 {
		leader = c.awaitOneLeader(t) // before the new member, who knows none yet
	}
	cfg := testConfig(t, fmt.Sprintf("n%d", i))
	cfg.Bootstrap = i == 0
	cfg.Voter = voter
	st, err := Open(cfg, tr)
	if err != nil {
		t.Fatalf("Open n%d: %v", i, err)
	}
	c.stores = append(c.stores, st)
	t.Cleanup(func() { c.stop(t, i) })
	if i == 0 {
		waitLeader(t, st)
		return st
	}
	ctx := testContext(t)
	if voter {
		err = leader.AddVoter(ctx, st.ID(), st.Addr())
	} else {
		err = leader.AddNonvoter(ctx, st.ID(), st.Addr())
	}
	if err != nil {
		t.Fatalf("adding n%d: %v", i, err)
	}
	return st
}

func (c *testCluster) stop(t *testing.T, i int) {
	if c.closed[i] {
		return
	}
	c.closed[i] = true
	if err := c.stores[i].Close(); err != nil {
		t.Errorf("Close n%d: %v", i, err)
	}
	// The others now fail to reach it, as over a network.
	for j, tr := range c.transports {
		if j != i {
			tr.Disconnect(c.transports[i].LocalAddr())
		}
	}
}

func (c *testCluster) live() []*Store {
	var out []*Store
	for i, st := range c.stores {
		if !c.closed[i] {
			out = append(out, st)
		}
	}
	return out
}

// awaitOneLeader waits until exactly one live member leads and every live
// member names it, and returns it.
func (c *testCluster) awaitOneLeader(t *testing.T) *Store {
	t.Helper()
	var leader *Store
	eventually(t, "one leader known to all", func() bool {
		leader = nil
		for _, st := range c.live() {
			if st.IsLeader() {
				if leader != nil {
					return false
				}
				leader = st
			}
		}
		if leader == nil {
			return false
		}
		for _, st := range c.live() {
			if id, addr := st.Leader(); id != leader.ID() || addr != leader.Addr() {
				return false
			}
		}
		return true
	})
	return leader
}

func TestClusterReplicatesToEveryMember(t *testing.T) {
	ctx := testContext(t)
	c := newCluster(t, 3)
	leader := c.awaitOneLeader(t)

	servers, err := leader.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 {
		t.Fatalf("Servers() = %+v, want 3", servers)
	}
	for _, s := range servers {
		if s.Suffrage != Voter || s.Leader != (s.ID == leader.ID()) {
			t.Fatalf("server %+v", s)
		}
	}

	var last uint64
	for i := range 20 {
		name := fmt.Sprintf("g%d", i)
		if last, err = leader.Apply(ctx, putGroup(t, name, name+":1")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := leader.Apply(ctx, mustCommand(t, CmdPutNode, NodeInfo{Name: "n1", Status: NodeAlive})); err != nil {
		t.Fatal(err)
	}
	last, err = leader.Apply(ctx, mustCommand(t, CmdPutAllocation, Allocation{ID: "g0-0", Group: "g0", Node: "n1"}))
	if err != nil {
		t.Fatal(err)
	}
	want := leader.State()
	for _, st := range c.stores {
		if err := st.WaitIndex(ctx, last); err != nil {
			t.Fatalf("%s WaitIndex(%d): %v", st.ID(), last, err)
		}
		if got := st.State(); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s state differs from the leader's", st.ID())
		}
	}
}

func TestFollowerApplyNamesTheLeader(t *testing.T) {
	ctx := testContext(t)
	c := newCluster(t, 3)
	leader := c.awaitOneLeader(t)
	for _, st := range c.stores {
		if st == leader {
			continue
		}
		_, err := st.Apply(ctx, putGroup(t, "web", "web:1"))
		if !errors.Is(err, api.ErrNotLeader) {
			t.Fatalf("%s Apply = %v, want ErrNotLeader", st.ID(), err)
		}
		var nle *NotLeaderError
		if !errors.As(err, &nle) || nle.LeaderID != leader.ID() || nle.LeaderAddr != leader.Addr() {
			t.Fatalf("%s Apply error = %#v, want the leader %s at %s", st.ID(), nle, leader.ID(), leader.Addr())
		}
		if !strings.Contains(err.Error(), leader.Addr()) {
			t.Fatalf("error %q does not name the leader's address", err)
		}
		if err := st.VerifyLeader(ctx); !errors.Is(err, api.ErrNotLeader) {
			t.Fatalf("%s VerifyLeader = %v", st.ID(), err)
		}
		if err := st.AddVoter(ctx, "x", "x"); !errors.Is(err, api.ErrNotLeader) {
			t.Fatalf("%s AddVoter = %v", st.ID(), err)
		}
	}
}

// TestLeaderLossKeepsAcknowledgedWrites: the leader dies; the two others
// elect a new one that holds every write the old one acknowledged, and
// takes new writes.
func TestLeaderLossKeepsAcknowledgedWrites(t *testing.T) {
	ctx := testContext(t)
	c := newCluster(t, 3)
	old := c.awaitOneLeader(t)

	var acked []string
	for i := range 10 {
		name := fmt.Sprintf("g%d", i)
		if _, err := old.Apply(ctx, putGroup(t, name, name+":1")); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, name)
	}
	for i, st := range c.stores {
		if st == old {
			c.stop(t, i)
		}
	}

	leader := c.awaitOneLeader(t)
	if leader == old {
		t.Fatal("the closed member still leads")
	}
	if err := leader.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range acked {
		if _, ok := leader.Group(name); !ok {
			t.Fatalf("acknowledged write %s lost", name)
		}
	}
	idx, err := leader.Apply(ctx, putGroup(t, "after", "after:1"))
	if err != nil {
		t.Fatalf("Apply on the new leader: %v", err)
	}
	for _, st := range c.live() {
		if err := st.WaitIndex(ctx, idx); err != nil {
			t.Fatal(err)
		}
		if len(st.Groups()) != len(acked)+1 {
			t.Fatalf("%s has %d groups, want %d", st.ID(), len(st.Groups()), len(acked)+1)
		}
	}
}

func TestNonvoterReceivesTheLogAndCanBeRemoved(t *testing.T) {
	ctx := testContext(t)
	c := newCluster(t, 3)
	nv := c.add(t, false)
	leader := c.awaitOneLeader(t)

	servers, err := leader.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if got := suffrageOf(servers, nv.ID()); got != Nonvoter {
		t.Fatalf("%s suffrage = %q, want nonvoter", nv.ID(), got)
	}
	idx, err := leader.Apply(ctx, putGroup(t, "web", "web:1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nv.WaitIndex(ctx, idx); err != nil {
		t.Fatal(err)
	}
	if _, ok := nv.Group("web"); !ok {
		t.Fatal("the non-voter did not get the write")
	}

	if err := leader.RemoveServer(ctx, nv.ID()); err != nil {
		t.Fatal(err)
	}
	servers, _ = leader.Servers()
	if len(servers) != 3 || suffrageOf(servers, nv.ID()) != "" {
		t.Fatalf("Servers() after remove = %+v", servers)
	}
}

func suffrageOf(servers []Server, id string) Suffrage {
	for _, s := range servers {
		if s.ID == id {
			return s.Suffrage
		}
	}
	return ""
}
