package raftstore

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// TestLeasesAndQueuesThroughARaftCluster runs the lease and queue
// commands through three real Raft members: every member holds the same
// leases and items, a refused campaign leaves every member as it was and
// says who holds the lease, and after the leader dies the next grant has
// a higher token.
func TestLeasesAndQueuesThroughARaftCluster(t *testing.T) {
	ctx := testContext(t)
	c := newCluster(t, 3)
	leader := c.awaitOneLeader(t)
	apply := func(typ CommandType, p any) (uint64, error) {
		t.Helper()
		return leader.Apply(ctx, mustCommand(t, typ, p))
	}
	waitAll := func(idx uint64) {
		t.Helper()
		for _, st := range c.live() {
			if err := st.WaitIndex(ctx, idx); err != nil {
				t.Fatalf("%s WaitIndex(%d): %v", st.ID(), idx, err)
			}
		}
	}

	first, err := apply(CmdLeaseAcquire, acquire("web/leader", "web-0", "n1", t0))
	if err != nil {
		t.Fatal(err)
	}
	waitAll(first)
	for _, st := range c.live() {
		if l, ok := st.Lease("web/leader"); !ok || l.Holder != "web-0" || l.Token != first {
			t.Fatalf("%s: lease %+v, want web-0 with token %d", st.ID(), l, first)
		}
	}

	idx, err := apply(CmdLeaseAcquire, acquire("web/leader", "web-1", "n2", t0.Add(2*time.Second)))
	var held *LeaseHeldError
	if !errors.Is(err, api.ErrConflict) || !errors.As(err, &held) || held.Holder != "web-0" || held.Token != first || idx <= first {
		t.Fatalf("a campaign while held = index %d, %v; want a LeaseHeldError naming web-0 at an index above %d", idx, err, first)
	}
	waitAll(idx)
	for _, st := range c.live() {
		if l, _ := st.Lease("web/leader"); l.Holder != "web-0" || l.Token != first {
			t.Fatalf("%s: a refused campaign changed the lease: %+v", st.ID(), l)
		}
	}

	if _, err := apply(CmdPutQueue, PutQueue{Name: "jobs", Group: "batch", Spec: pullSpec()}); err != nil {
		t.Fatal(err)
	}
	var pushes []uint64
	for b := range 5 {
		var data [][]byte
		for i := range 100 {
			data = append(data, fmt.Appendf(nil, "item %d", b*100+i))
		}
		idx, err := apply(CmdEnqueue, Enqueue{Queue: "jobs", Items: data, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		pushes = append(pushes, idx)
	}
	tok, err := apply(CmdLeaseItem, LeaseItem{Queue: "jobs", Worker: "w1", Node: "n2", Now: t0, Max: 50})
	if err != nil {
		t.Fatal(err)
	}
	waitAll(tok)
	follower := c.live()[0]
	if follower == leader {
		follower = c.live()[1]
	}
	// A follower finds what the push and the lease did by their indexes.
	if ids := follower.EnqueuedIDs("jobs", pushes[2]); len(ids) != 100 || ids[0] != 201 || ids[99] != 300 {
		t.Fatalf("%s: EnqueuedIDs of the third push = %v", follower.ID(), ids)
	}
	got := follower.LeasedItems("jobs", tok)
	if len(got) != 50 || got[0].ID != 1 || string(got[49].Data) != "item 49" {
		t.Fatalf("%s: LeasedItems = %d items", follower.ID(), len(got))
	}
	acks := make([]ItemAck, 0, len(got))
	for _, it := range got {
		acks = append(acks, ItemAck{ID: it.ID, Token: it.LeaseToken, Result: []byte("ok")})
	}
	ackIdx, err := apply(CmdAckItem, AckItem{Queue: "jobs", Acks: acks, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	// The same acks again, as a retried request would: nothing changes.
	again, err := apply(CmdAckItem, AckItem{Queue: "jobs", Acks: acks, Now: t0.Add(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	waitAll(again)
	want := leader.Items("jobs", ItemFilter{WithData: true})
	for _, st := range c.live() {
		s, _ := st.QueueStats("jobs")
		if s.Done != 50 || s.Queued != 450 || s.Total != 500 {
			t.Fatalf("%s: stats %+v", st.ID(), s)
		}
		if it, _ := st.Item("jobs", 7); it.DoneIndex != ackIdx {
			t.Fatalf("%s: item 7 completed at %d, want %d (the first ack)", st.ID(), it.DoneIndex, ackIdx)
		}
		if got := st.Items("jobs", ItemFilter{WithData: true}); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: items differ from the leader's", st.ID())
		}
		if !reflect.DeepEqual(st.State(), leader.State()) {
			t.Fatalf("%s: state differs from the leader's", st.ID())
		}
	}

	// The leader dies; the next grant, on the new leader, has a higher token.
	for i, st := range c.stores {
		if st == leader {
			c.stop(t, i)
		}
	}
	leader = c.awaitOneLeader(t)
	next, err := apply(CmdLeaseAcquire, acquire("web/leader", "web-1", "n2", t0.Add(time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := leader.Lease("web/leader"); l.Holder != "web-1" || l.Token != next || l.Token <= first {
		t.Fatalf("after the leader died: lease %+v, want web-1 with token %d > %d", l, next, first)
	}
	if s, _ := leader.QueueStats("jobs"); s.Done != 50 || s.Leased != 0 {
		t.Fatalf("the new leader's queue: %+v", s)
	}
}
