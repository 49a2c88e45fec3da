package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/berth-project/berth/api"
)

// snapshotRestore persists f's snapshot and restores it into a new FSM.
func snapshotRestore(t *testing.T, f *FSM) *FSM {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	return g
}

// sameFSM fails unless a and b hold the same state, leases, queues and
// items, and count them the same.
func sameFSM(t *testing.T, a, b *FSM) {
	t.Helper()
	if sa, sb := a.State(), b.State(); !reflect.DeepEqual(sa, sb) {
		t.Fatalf("states differ:\n%+v\n%+v", sa, sb)
	}
	for _, q := range a.Queues() {
		ia, ib := a.Items(q.Name, ItemFilter{WithData: true}), b.Items(q.Name, ItemFilter{WithData: true})
		if !reflect.DeepEqual(ia, ib) {
			t.Fatalf("items of %s differ:\n%+v\n%+v", q.Name, ia, ib)
		}
		sa, _ := a.QueueStats(q.Name)
		sb, _ := b.QueueStats(q.Name)
		sa.RecentDone, sa.RecentSince, sb.RecentDone, sb.RecentSince = 0, time.Time{}, 0, time.Time{} // the ring is rebuilt from DoneAt
		if sa != sb {
			t.Fatalf("stats of %s differ:\n%+v\n%+v", q.Name, sa, sb)
		}
	}
}

// TestQueueAndLeaseSnapshotRoundTrip: a snapshot holds leases, queues and
// items in every state; the restored FSM is the same, and makes the same
// decisions on the commands that follow.
func TestQueueAndLeaseSnapshotRoundTrip(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.ok(CmdLeaseAcquire, acquire("batch/leader", "batch-0", "n1", t0))
	r.push("a", "b", "c", "d", "e", "f", "") // an empty item too
	r.lease("w1", "n1", t0, 2)               // 1, 2 leased
	it3 := r.lease("w2", "n2", t0, 1)[0]     // 3 leased
	r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t0, Acks: []ItemAck{{ID: 1, Token: r.item(1).LeaseToken, Result: []byte("r")}}})
	r.ok(CmdNackItem, NackItem{Queue: "jobs", Now: t0, Nacks: []ItemNack{{ID: 3, Token: it3.LeaseToken, Error: "x"}}}) // 3 backing off
	it4 := r.lease("w2", "n2", t0, 1)[0]
	r.ok(CmdNackItem, NackItem{Queue: "jobs", Now: t0, Nacks: []ItemNack{{ID: it4.ID, Token: it4.LeaseToken, Fatal: true}}}) // dead

	g := snapshotRestore(t, r.f)
	sameFSM(t, r.f, g)
	if g.Index() != r.idx {
		t.Fatalf("restored index %d, want %d", g.Index(), r.idx)
	}

	// Both apply the same history from here: expiries, backoffs, leases.
	rg := &fsmRun{t: t, f: g, idx: r.idx}
	for _, step := range []func(r *fsmRun){
		func(r *fsmRun) { r.lease("w3", "n3", t0.Add(2*time.Second), 10) }, // 3 is ready again, 5 and 6
		func(r *fsmRun) { r.lease("w3", "n3", t0.Add(time.Minute), 10) },   // 2 expired
		func(r *fsmRun) { r.ok(CmdRequeueNode, RequeueNode{Node: "n3", Now: t1}) },
		func(r *fsmRun) { r.ok(CmdRetryItem, RetryItem{Queue: "jobs"}) },
		func(r *fsmRun) { r.lease("w4", "n1", t1, 10) },
	} {
		step(r)
		step(rg)
		sameFSM(t, r.f, g)
	}
}

func TestFSMRestoresFormat1Snapshots(t *testing.T) {
	f := NewFSM()
	old := `{"format":1,"state":{"index":7,"groups":{},"allocations":{},"nodes":{"n1":{"name":"n1","api_addr":"","raft_addr":"","capacity":{"cpu":"0","memory":0,"pids":0},"status":"alive"}}}}`
	if err := f.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if f.Index() != 7 || len(f.Nodes()) != 1 || len(f.Leases()) != 0 || len(f.Queues()) != 0 {
		t.Fatalf("restored %+v", f.State())
	}
	// And works on: a queue and a lease after it.
	r := &fsmRun{t: t, f: f, idx: 7}
	r.ok(CmdPutQueue, PutQueue{Name: "jobs", Group: "batch", Spec: pullSpec()})
	r.push("a")
	r.ok(CmdLeaseAcquire, acquire("web/leader", "web-0", "n1", t0))
}

func TestFSMRefusesSnapshotsWithBrokenItems(t *testing.T) {
	for _, tt := range []struct{ name, items, msg string }{
		{"gap", `[{"queue":"jobs","id":1,"state":"queued"},{"queue":"jobs","id":3,"state":"queued"}]`, "item 3 follows item 1"},
		{"beyond next", `[{"queue":"jobs","id":5,"state":"queued"}]`, "at or above the next ID 2"},
		{"unknown state", `[{"queue":"jobs","id":1,"state":"lost"}]`, `unknown state "lost"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM()
			doc := `{"format":2,"state":{"index":3,"queues":{"jobs":{"name":"jobs","group":"b","spec":{"mode":"pull"},"next_id":2}}},"items":{"jobs":` + tt.items + `}}`
			err := f.Restore(io.NopCloser(strings.NewReader(doc)))
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Restore = %v, want invalid containing %q", err, tt.msg)
			}
			if f.Index() != 0 {
				t.Fatal("a refused snapshot changed the state")
			}
		})
	}
}

// TestQueueRandomHistoriesAreDeterministic applies random histories of
// every queue command to one FSM straight and to another that snapshots
// and restores along the way, and checks invariants after each step: both
// always hold the same items, every completion is recorded once, counts
// match the items, and parallelism holds.
func TestQueueRandomHistoriesAreDeterministic(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			spec := pullSpec()
			spec.Parallelism = 4
			spec.MaxAttempts = 4
			a, b := queueRun(t, spec), queueRun(t, spec)
			now := t0
			doneAt := map[uint64]uint64{} // item → DoneIndex, once set never changes
			for step := range 400 {
				now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
				var typ CommandType
				var p any
				switch k := rng.IntN(10); {
				case k < 2:
					typ, p = CmdEnqueue, Enqueue{Queue: "jobs", Items: items(fmt.Sprint(step), "x"), Now: now}
				case k < 5:
					typ, p = CmdLeaseItem, LeaseItem{Queue: "jobs", Worker: fmt.Sprint("w", rng.IntN(3)), Node: fmt.Sprint("n", rng.IntN(3)), Now: now, Max: 1 + rng.IntN(3)}
				case k < 7:
					if leased := a.f.Items("jobs", ItemFilter{State: api.ItemLeased}); len(leased) > 0 {
						it := leased[rng.IntN(len(leased))]
						typ, p = CmdAckItem, AckItem{Queue: "jobs", Now: now, Acks: []ItemAck{{ID: it.ID, Token: it.LeaseToken - uint64(rng.IntN(2))*it.LeaseToken/2}}}
					}
				case k < 9:
					if leased := a.f.Items("jobs", ItemFilter{State: api.ItemLeased}); len(leased) > 0 {
						it := leased[rng.IntN(len(leased))]
						typ, p = CmdNackItem, NackItem{Queue: "jobs", Now: now, Nacks: []ItemNack{{ID: it.ID, Token: it.LeaseToken, Error: "e"}}}
					}
				default:
					if rng.IntN(2) == 0 {
						typ, p = CmdRequeueNode, RequeueNode{Node: fmt.Sprint("n", rng.IntN(3)), Now: now}
					} else {
						typ, p = CmdRetryItem, RetryItem{Queue: "jobs", Now: now}
					}
				}
				if p == nil {
					continue
				}
				_, ra := a.apply(typ, p)
				_, rb := b.apply(typ, p)
				if fmt.Sprint(ra) != fmt.Sprint(rb) {
					t.Fatalf("step %d %s: answers differ: %v / %v", step, typ, ra, rb)
				}
				if step%50 == 49 {
					b.f = snapshotRestore(t, b.f)
				}
				sameFSM(t, a.f, b.f)
				checkQueueInvariants(t, a.f, spec, doneAt)
			}
			s := a.stats()
			if s.Done == 0 || s.FailedAttempts == 0 {
				t.Fatalf("the history did not exercise completions and failures: %+v", s)
			}
			t.Logf("%+v", s)
		})
	}
}

func checkQueueInvariants(t *testing.T, f *FSM, spec api.QueueSpec, doneAt map[uint64]uint64) {
	t.Helper()
	all := f.Items("jobs", ItemFilter{})
	counts := map[api.ItemState]int{}
	for _, it := range all {
		counts[it.State]++
		if it.State == api.ItemDone {
			if prev, ok := doneAt[it.ID]; ok && prev != it.DoneIndex {
				t.Fatalf("item %d completed twice: at %d and %d", it.ID, prev, it.DoneIndex)
			}
			doneAt[it.ID] = it.DoneIndex
		} else if _, ok := doneAt[it.ID]; ok {
			t.Fatalf("item %d left the done state: %+v", it.ID, it)
		}
		if it.Attempts > spec.MaxAttempts || it.Attempts < 0 {
			t.Fatalf("item %d has %d attempts", it.ID, it.Attempts)
		}
	}
	s, _ := f.QueueStats("jobs")
	if s.Queued != counts[api.ItemQueued] || s.Leased != counts[api.ItemLeased] || s.Done != counts[api.ItemDone] ||
		s.Dead != counts[api.ItemDead] || s.Total != len(all) {
		t.Fatalf("stats %+v do not match the items %v", s, counts)
	}
	if s.Leased > spec.Parallelism {
		t.Fatalf("%d items leased, over the parallelism of %d", s.Leased, spec.Parallelism)
	}
}

// BenchmarkQueuePushLeaseAck measures the FSM's cost of one item's push,
// lease and ack, in batches of 100 and with the JSON of the commands, on a
// queue that keeps every completed item (so a cost that grew with the
// queue would show).
func BenchmarkQueuePushLeaseAck(b *testing.B) {
	f := NewFSM()
	var idx uint64
	apply := func(typ CommandType, p any) {
		cmd, err := NewCommand(typ, p)
		if err != nil {
			b.Fatal(err)
		}
		cmd.Time = t0
		data, err := json.Marshal(cmd)
		if err != nil {
			b.Fatal(err)
		}
		idx++
		if res, ok := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(error); ok {
			b.Fatal(res)
		}
	}
	apply(CmdPutQueue, PutQueue{Name: "jobs", Group: "batch", Spec: api.QueueSpec{Mode: api.QueuePull}})
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = bytes.Repeat([]byte("x"), 100)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i += len(batch) {
		apply(CmdEnqueue, Enqueue{Queue: "jobs", Items: batch})
		apply(CmdLeaseItem, LeaseItem{Queue: "jobs", Worker: "w", Node: "n1", Max: len(batch)})
		got := f.LeasedItems("jobs", idx)
		acks := make([]ItemAck, len(got))
		for j, it := range got {
			acks[j] = ItemAck{ID: it.ID, Token: it.LeaseToken}
		}
		apply(CmdAckItem, AckItem{Queue: "jobs", Acks: acks})
	}
	b.StopTimer()
	if s, _ := f.QueueStats("jobs"); s.Done != s.Total {
		b.Fatalf("stats %+v: not every item was completed", s)
	}
}

// TestQueueHeapsDropStaleEntries: extensions and retries leave stale heap
// entries behind; they are dropped once they outnumber the live ones, and
// the decisions stay right.
func TestQueueHeapsDropStaleEntries(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.push("a", "b")
	it := r.lease("w", "n1", t0, 1)[0]
	now := t0
	for range 500 {
		now = now.Add(time.Second)
		r.ok(CmdExtendItem, ExtendItem{Queue: "jobs", Now: now, Items: []ItemToken{{ID: it.ID, Token: it.LeaseToken}}})
	}
	d := r.f.queues["jobs"]
	if n := len(d.leasedH); n > 2*d.leased+64 {
		t.Fatalf("the leased heap holds %d entries for %d leased items", n, d.leased)
	}
	// Still leased until the last extension's expiry, not one before.
	if got := r.lease("w2", "n2", now.Add(30*time.Second-time.Nanosecond), 5); !reflect.DeepEqual(idsOf(got), []uint64{2}) {
		t.Fatalf("before the last expiry the lease got %v, want only item 2", idsOf(got))
	}
	if got := r.lease("w2", "n2", now.Add(30*time.Second), 5); !reflect.DeepEqual(idsOf(got), []uint64{1}) {
		t.Fatalf("at the last expiry the lease got %v, want item 1", idsOf(got))
	}
}

func TestQueueAndLeaseWireForms(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.push("abc")
	it := r.lease("w", "n1", t0, 1)[0]
	li := it.Leased()
	if li.ID != 1 || li.Token != it.LeaseToken || li.Attempt != 1 || !li.Expiry.Equal(t0.Add(30*time.Second)) || string(li.Data) != "abc" {
		t.Fatalf("Leased() = %+v", li)
	}
	full := it.API(true)
	if full.Size != 3 || string(full.Data) != "abc" || full.Token != it.LeaseToken || full.State != api.ItemLeased {
		t.Fatalf("API(true) = %+v", full)
	}
	l := Lease{Key: "*/migrations", Group: "api", Holder: "api-0", Node: "n1", Token: 9, TTL: 5 * time.Second}
	if a := l.API("api-0"); a.Name != "migrations" || !a.Shared || !a.Held || a.Token != 9 || a.TTL != api.Duration(5*time.Second) {
		t.Fatalf("API(holder) = %+v", a)
	}
	if a := l.API("api-1"); a.Held {
		t.Fatal("API(another holder) says held")
	}
}
