package raftstore

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-project/berth/api"
)

// queueRun is an FSM with queue "jobs" of group "batch" defined by spec.
func queueRun(t *testing.T, spec api.QueueSpec) *fsmRun {
	t.Helper()
	r := newRun(t)
	r.ok(CmdPutQueue, PutQueue{Name: "jobs", Group: "batch", Spec: spec})
	return r
}

func pullSpec() api.QueueSpec {
	return api.QueueSpec{Mode: api.QueuePull, MaxAttempts: 3, Backoff: api.Duration(time.Second),
		MaxBackoff: api.Duration(10 * time.Second), VisibilityTimeout: api.Duration(30 * time.Second)}
}

func items(data ...string) [][]byte {
	out := make([][]byte, len(data))
	for i, d := range data {
		out[i] = []byte(d)
	}
	return out
}

// push enqueues data and returns the IDs the items got.
func (r *fsmRun) push(data ...string) []uint64 {
	r.t.Helper()
	idx, n := r.ok(CmdEnqueue, Enqueue{Queue: "jobs", Items: items(data...), Now: t0})
	ids := r.f.EnqueuedIDs("jobs", idx)
	if n != len(data) || len(ids) != len(data) {
		r.t.Fatalf("push of %d items: changed %d, IDs %v", len(data), n, ids)
	}
	return ids
}

// lease leases up to max items for worker on node at now and returns
// them (with the lease's token in LeaseToken).
func (r *fsmRun) lease(worker, node string, now time.Time, max int) []QueueItem {
	r.t.Helper()
	idx, _ := r.ok(CmdLeaseItem, LeaseItem{Queue: "jobs", Worker: worker, Node: node, Now: now, Max: max})
	got := r.f.LeasedItems("jobs", idx)
	for _, it := range got {
		if it.LeaseToken != idx || it.Worker != worker || it.Node != node || it.State != api.ItemLeased {
			r.t.Fatalf("leased item %+v, want token %d, worker %s on %s", it, idx, worker, node)
		}
	}
	return got
}

func idsOf(its []QueueItem) []uint64 {
	out := []uint64{}
	for _, it := range its {
		out = append(out, it.ID)
	}
	return out
}

func (r *fsmRun) item(id uint64) QueueItem {
	r.t.Helper()
	it, ok := r.f.Item("jobs", id)
	if !ok {
		r.t.Fatalf("no item %d", id)
	}
	return it
}

func (r *fsmRun) stats() QueueStats {
	r.t.Helper()
	s, ok := r.f.QueueStats("jobs")
	if !ok {
		r.t.Fatal("no stats for jobs")
	}
	return s
}

// TestQueueCompletesEachItemExactlyOnce: items are leased oldest first
// with their data, an ack records the completion, and a second ack of the
// same item records nothing.
func TestQueueCompletesEachItemExactlyOnce(t *testing.T) {
	r := queueRun(t, pullSpec())
	ids := r.push("a", "b", "c")
	if !reflect.DeepEqual(ids, []uint64{1, 2, 3}) {
		t.Fatalf("IDs = %v, want 1 2 3", ids)
	}
	got := r.lease("w1", "n1", t0, 2)
	if !reflect.DeepEqual(idsOf(got), []uint64{1, 2}) || string(got[0].Data) != "a" || got[0].Attempts != 1 ||
		!got[0].LeaseExpiry.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("leased %+v, want items 1 and 2, attempt 1, expiring after the visibility timeout", got)
	}
	tok := got[0].LeaseToken
	if s := r.stats(); s.Queued != 1 || s.Leased != 2 || s.Total != 3 {
		t.Fatalf("stats = %+v", s)
	}

	ackIdx, n := r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t1, Acks: []ItemAck{{ID: 1, Token: tok, Result: []byte("ok")}}})
	it := r.item(1)
	if n != 1 || it.State != api.ItemDone || it.DoneIndex != ackIdx || it.DoneToken != tok || !it.DoneAt.Equal(t1) ||
		it.DoneAttempt != 1 || it.DoneNode != "n1" || it.DoneWorker != "w1" || string(it.Result) != "ok" || it.ResultSize != 2 {
		t.Fatalf("after ack: %+v", it)
	}
	// The same ack again (a retried request), and an ack with a result
	// from a duplicate execution: neither records anything.
	if _, n := r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t1.Add(time.Second), Acks: []ItemAck{{ID: 1, Token: tok, Result: []byte("again")}}}); n != 0 {
		t.Fatalf("a second ack changed %d", n)
	}
	if again := r.item(1); again.DoneIndex != ackIdx || string(again.Result) != "ok" || !again.DoneAt.Equal(t1) {
		t.Fatalf("a second ack rewrote the completion: %+v", again)
	}
	if s := r.stats(); s.Queued != 1 || s.Leased != 1 || s.Done != 1 || s.LastDoneAt != t1 {
		t.Fatalf("stats = %+v", s)
	}
	// The next lease gets the remaining item; nothing is left after.
	if got := r.lease("w2", "n2", t0.Add(2*time.Second), 10); !reflect.DeepEqual(idsOf(got), []uint64{3}) {
		t.Fatalf("second lease got %v, want item 3", idsOf(got))
	}
	if got := r.lease("w2", "n2", t0.Add(2*time.Second), 10); len(got) != 0 {
		t.Fatalf("a lease of an empty queue got %v", idsOf(got))
	}
}

// TestQueueAckOfAnEarlierLeaseWins: a worker whose lease expired while it
// worked still completes the item; the worker that got it next acks a
// duplicate, and its nack is stale.
func TestQueueAckOfAnEarlierLeaseWins(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.push("a")
	first := r.lease("w1", "n1", t0, 1)[0]
	second := r.lease("w2", "n2", t0.Add(31*time.Second), 1)
	if len(second) != 1 || second[0].Attempts != 2 || second[0].LeaseToken <= first.LeaseToken {
		t.Fatalf("after the visibility timeout the item was not handed out again: %+v", second)
	}
	if !strings.Contains(second[0].LastError, "no ack from worker \"w1\" on node n1 within the visibility timeout") {
		t.Fatalf("last error = %q", second[0].LastError)
	}
	ackIdx, n := r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t1, Acks: []ItemAck{
		{ID: 1, Token: first.LeaseToken, Attempt: 1, Node: "n1", Worker: "w1", Result: []byte("from w1")},
	}})
	it := r.item(1)
	if n != 1 || it.State != api.ItemDone || it.DoneToken != first.LeaseToken || it.DoneNode != "n1" || it.DoneWorker != "w1" || it.DoneAttempt != 1 {
		t.Fatalf("ack of the earlier lease: %+v", it)
	}
	if _, n := r.ok(CmdNackItem, NackItem{Queue: "jobs", Now: t1, Nacks: []ItemNack{{ID: 1, Token: second[0].LeaseToken, Error: "late"}}}); n != 0 {
		t.Fatal("a nack of a completed item changed it")
	}
	if _, n := r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t1, Acks: []ItemAck{{ID: 1, Token: second[0].LeaseToken, Result: []byte("from w2")}}}); n != 0 {
		t.Fatal("the duplicate execution's ack recorded a second completion")
	}
	if it := r.item(1); it.DoneIndex != ackIdx || string(it.Result) != "from w1" {
		t.Fatalf("completion rewritten: %+v", it)
	}
	if s := r.stats(); s.Done != 1 || s.Leased != 0 || s.FailedAttempts != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

// TestQueueNackBacksOffThenDeadLetters: a failed item waits
// backoff·2^(attempt-1) before it is handed out again, becomes a dead
// letter with its last error after max_attempts, and retry brings it back
// with its attempts reset.
func TestQueueNackBacksOffThenDeadLetters(t *testing.T) {
	r := queueRun(t, pullSpec()) // backoff 1s, max 10s, 3 attempts
	r.push("a", "b")
	now := t0
	nack := func(it QueueItem, msg string) {
		t.Helper()
		if _, n := r.ok(CmdNackItem, NackItem{Queue: "jobs", Now: now, Nacks: []ItemNack{{ID: it.ID, Token: it.LeaseToken, Error: msg}}}); n != 1 {
			t.Fatalf("nack of %d changed nothing", it.ID)
		}
	}
	for attempt, delay := range []time.Duration{time.Second, 2 * time.Second} {
		it := r.lease("w", "n1", now, 1)
		if len(it) != 1 || it[0].ID != 1 || it[0].Attempts != attempt+1 {
			t.Fatalf("attempt %d: leased %+v, want item 1", attempt+1, it)
		}
		nack(it[0], fmt.Sprintf("boom %d", attempt+1))
		failed := r.item(1)
		if failed.State != api.ItemQueued || !failed.NotBefore.Equal(now.Add(delay)) {
			t.Fatalf("after nack %d: %+v, want queued until +%s", attempt+1, failed, delay)
		}
		if s := r.stats(); s.Delayed != 1 {
			t.Fatalf("stats = %+v, want 1 delayed", s)
		}
		// Before the backoff ends the other item is handed out, not this one.
		got := r.lease("w", "n1", now.Add(delay-time.Millisecond), 5)
		if attempt == 0 && !reflect.DeepEqual(idsOf(got), []uint64{2}) || attempt == 1 && len(got) != 0 {
			t.Fatalf("attempt %d: before the backoff ended the lease got %v", attempt+1, idsOf(got))
		}
		if attempt == 0 {
			r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: now, Acks: []ItemAck{{ID: 2, Token: got[0].LeaseToken}}})
		}
		now = now.Add(delay)
	}
	it := r.lease("w", "n1", now, 1)
	if len(it) != 1 || it[0].Attempts != 3 || it[0].NotBefore != (time.Time{}) {
		t.Fatalf("third attempt: %+v", it)
	}
	nack(it[0], "boom 3")
	dead := r.item(1)
	if dead.State != api.ItemDead || dead.LastError != "attempt 3 on node n1: boom 3" || !dead.DeadAt.Equal(now) {
		t.Fatalf("after max_attempts: %+v", dead)
	}
	if s := r.stats(); s.Dead != 1 || s.FailedAttempts != 3 || s.Queued != 0 {
		t.Fatalf("stats = %+v", s)
	}
	if got := r.lease("w", "n1", now.Add(time.Hour), 5); len(got) != 0 {
		t.Fatalf("a dead letter was handed out: %v", idsOf(got))
	}

	if _, n := r.ok(CmdRetryItem, RetryItem{Queue: "jobs"}); n != 1 {
		t.Fatalf("retry of every dead letter changed %d, want 1", n)
	}
	back := r.lease("w", "n1", now.Add(time.Hour), 5)
	if len(back) != 1 || back[0].ID != 1 || back[0].Attempts != 1 || back[0].LastError != "attempt 3 on node n1: boom 3" {
		t.Fatalf("after retry: %+v", back)
	}
	// A fatal nack is a dead letter at once.
	nack2 := NackItem{Queue: "jobs", Now: now, Nacks: []ItemNack{{ID: 1, Token: back[0].LeaseToken, Error: "bad input", Fatal: true}}}
	r.ok(CmdNackItem, nack2)
	if it := r.item(1); it.State != api.ItemDead || it.Attempts != 1 {
		t.Fatalf("after a fatal nack: %+v", it)
	}
	// Retry of an item that is not dead changes nothing.
	if _, n := r.ok(CmdRetryItem, RetryItem{Queue: "jobs", IDs: []uint64{2}}); n != 0 {
		t.Fatal("retry of a live item changed it")
	}
}

// TestQueueVisibilityExpiry: an item whose lease expires counts as a
// failed attempt and is handed out again, or is a dead letter when it
// has no attempts left; an extension keeps it with its worker.
func TestQueueVisibilityExpiry(t *testing.T) {
	spec := pullSpec()
	spec.MaxAttempts = 2
	r := queueRun(t, spec)
	r.push("a")
	first := r.lease("w1", "n1", t0, 1)[0]
	if got := r.lease("w2", "n2", t0.Add(29*time.Second), 1); len(got) != 0 {
		t.Fatalf("leased before the visibility timeout: %v", idsOf(got))
	}
	// The worker extends its lease: 30s from t0+20s.
	if _, n := r.ok(CmdExtendItem, ExtendItem{Queue: "jobs", Now: t0.Add(20 * time.Second), Items: []ItemToken{{ID: 1, Token: first.LeaseToken}}}); n != 1 {
		t.Fatal("extend changed nothing")
	}
	if got := r.lease("w2", "n2", t0.Add(45*time.Second), 1); len(got) != 0 {
		t.Fatalf("leased before the extended timeout: %v", idsOf(got))
	}
	again := r.lease("w2", "n2", t0.Add(50*time.Second), 1)
	if len(again) != 1 || again[0].Attempts != 2 {
		t.Fatalf("at the extended timeout: %+v, want the item again", again)
	}
	// The first worker's extension is stale now.
	if _, n := r.ok(CmdExtendItem, ExtendItem{Queue: "jobs", Now: t0.Add(51 * time.Second), Items: []ItemToken{{ID: 1, Token: first.LeaseToken}}}); n != 0 {
		t.Fatal("a stale extension changed the item")
	}
	// The second lease expires too: no attempts left, a dead letter.
	r.lease("w3", "n3", t0.Add(81*time.Second), 1)
	it := r.item(1)
	if it.State != api.ItemDead || !strings.Contains(it.LastError, "attempt 2: no ack from worker \"w2\" on node n2") {
		t.Fatalf("after the last lease expired: %+v", it)
	}
	if s := r.stats(); s.Dead != 1 || s.FailedAttempts != 2 {
		t.Fatalf("stats = %+v", s)
	}
}

// TestQueueParallelismIsCapped: no more items are leased at once than
// parallelism, across workers; an ack or an expiry frees a slot.
func TestQueueParallelismIsCapped(t *testing.T) {
	spec := pullSpec()
	spec.Parallelism = 2
	r := queueRun(t, spec)
	r.push("a", "b", "c", "d", "e")
	if got := r.lease("w1", "n1", t0, 10); len(got) != 2 {
		t.Fatalf("first lease got %d items, want the cap of 2", len(got))
	}
	if got := r.lease("w2", "n2", t0, 10); len(got) != 0 {
		t.Fatalf("a second worker got %d items over the cap", len(got))
	}
	r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t0, Acks: []ItemAck{{ID: 1, Token: r.item(1).LeaseToken}}})
	if got := r.lease("w2", "n2", t0, 10); !reflect.DeepEqual(idsOf(got), []uint64{3}) {
		t.Fatalf("after an ack: %v, want item 3", idsOf(got))
	}
	// Both leases expire: two slots, the oldest items first (2, then 3).
	if got := r.lease("w3", "n3", t0.Add(time.Minute), 10); !reflect.DeepEqual(idsOf(got), []uint64{2, 3}) {
		t.Fatalf("after expiry: %v, want 2 and 3", idsOf(got))
	}
	// A container-mode queue defaults to one at a time.
	c := queueRun(t, api.QueueSpec{Mode: api.QueueContainer})
	c.push("x", "y")
	if got := c.lease("w", "n1", t0, 10); len(got) != 1 {
		t.Fatalf("container mode leased %d at once, want 1", len(got))
	}
}

// TestQueueRequeueNode: the items leased on a lost node go back at once,
// in every queue, and the attempt does not count; others stay leased.
func TestQueueRequeueNode(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.ok(CmdPutQueue, PutQueue{Name: "other", Group: "batch", Spec: pullSpec()})
	r.push("a", "b", "c")
	r.ok(CmdEnqueue, Enqueue{Queue: "other", Items: items("x"), Now: t0})
	r.lease("w1", "n1", t0, 2)
	r.lease("w2", "n2", t0, 1)
	r.ok(CmdLeaseItem, LeaseItem{Queue: "other", Worker: "w1", Node: "n1", Now: t0})

	if _, n := r.ok(CmdRequeueNode, RequeueNode{Node: "n1", Now: t0.Add(time.Second)}); n != 3 {
		t.Fatalf("requeue changed %d, want 3", n)
	}
	for _, id := range []uint64{1, 2} {
		it := r.item(id)
		if it.State != api.ItemQueued || it.Attempts != 0 || it.Lost != 1 || !strings.Contains(it.LastError, "node n1 was lost") {
			t.Fatalf("item %d after its node was lost: %+v", id, it)
		}
	}
	if it := r.item(3); it.State != api.ItemLeased || it.Node != "n2" {
		t.Fatalf("item 3 on a live node: %+v", it)
	}
	if s, _ := r.f.QueueStats("other"); s.Queued != 1 || s.Leased != 0 {
		t.Fatalf("queue other: %+v", s)
	}
	// They are handed out at once, oldest first.
	if got := r.lease("w2", "n2", t0.Add(time.Second), 5); !reflect.DeepEqual(idsOf(got), []uint64{1, 2}) || got[0].Attempts != 1 {
		t.Fatalf("after requeue: %+v", got)
	}
}

// TestQueueRefusesBadCommands: an oversized item, a missing queue and
// unknown items are refused with errors that say what, where and why,
// and nothing of the batch is applied.
func TestQueueRefusesBadCommands(t *testing.T) {
	spec := pullSpec()
	spec.MaxItemSize = 4
	r := queueRun(t, spec)
	r.push("a")
	tok := r.lease("w", "n1", t0, 1)[0].LeaseToken

	tests := []struct {
		name  string
		typ   CommandType
		p     any
		class error
		msg   string
	}{
		{"oversized item", CmdEnqueue, Enqueue{Queue: "jobs", Items: items("ok", "toolong"), Now: t0}, api.ErrInvalid,
			`queue "jobs": item 2 of 2 is 7 bytes, more than the queue's max_item_size of 4 (4 bytes): nothing was pushed`},
		{"oversized single item", CmdEnqueue, Enqueue{Queue: "jobs", Items: items("toolong"), Now: t0}, api.ErrInvalid,
			`queue "jobs": the item is 7 bytes`},
		{"push to a missing queue", CmdEnqueue, Enqueue{Queue: "nope", Items: items("a"), Now: t0}, api.ErrNotFound,
			`queue "nope" does not exist: define it with a [queue] table in a group file`},
		{"lease from a missing queue", CmdLeaseItem, LeaseItem{Queue: "nope", Node: "n1", Now: t0}, api.ErrNotFound, `queue "nope" does not exist`},
		{"ack of an unknown item", CmdAckItem, AckItem{Queue: "jobs", Now: t0, Acks: []ItemAck{{ID: 1, Token: tok}, {ID: 9, Token: tok}}},
			api.ErrNotFound, `acks[1]: queue "jobs" has no item 9`},
		{"ack with a token never issued", CmdAckItem, AckItem{Queue: "jobs", Now: t0, Acks: []ItemAck{{ID: 1, Token: tok + 100}}},
			api.ErrConflict, `item 1 was never leased with token 103`},
		{"oversized result", CmdAckItem, AckItem{Queue: "jobs", Now: t0, Acks: []ItemAck{{ID: 1, Token: tok, Result: []byte("toolong")}}},
			api.ErrInvalid, `the result of item 1 is 7 bytes, more than the queue's max_item_size of 4`},
		{"nack of an unknown item", CmdNackItem, NackItem{Queue: "jobs", Now: t0, Nacks: []ItemNack{{ID: 1, Token: tok}, {ID: 5, Token: tok}}},
			api.ErrNotFound, `nacks[1]: queue "jobs" has no item 5`},
		{"retry of an unknown item", CmdRetryItem, RetryItem{Queue: "jobs", IDs: []uint64{7}}, api.ErrNotFound, `queue "jobs" has no item 7`},
		{"queue of another group", CmdPutQueue, PutQueue{Name: "jobs", Group: "web", Spec: pullSpec()}, api.ErrConflict,
			`queue "jobs" belongs to group "batch", not "web"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeItems := r.f.Items("jobs", ItemFilter{WithData: true})
			err := r.fail(tt.typ, tt.p, tt.class)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not contain %q", err, tt.msg)
			}
			if after := r.f.Items("jobs", ItemFilter{WithData: true}); !reflect.DeepEqual(after, beforeItems) {
				t.Fatalf("a refused command changed the items:\n%+v\n%+v", beforeItems, after)
			}
		})
	}

	for _, tt := range []struct {
		name string
		typ  CommandType
		p    any
		msg  string
	}{
		{"empty push", CmdEnqueue, Enqueue{Queue: "jobs"}, "no items to push"},
		{"push over the batch size", CmdEnqueue, Enqueue{Queue: "jobs", Items: make([][]byte, MaxEnqueueBatch+1)}, "push in batches"},
		{"push over the batch bytes", CmdEnqueue, Enqueue{Queue: "jobs", Items: [][]byte{make([]byte, MaxEnqueueBytes+1)}}, "one push of 8388609 bytes, more than the maximum of 8MiB"},
		{"ack without a token", CmdAckItem, AckItem{Queue: "jobs", Acks: []ItemAck{{ID: 1}}}, "both must be set"},
		{"lease without a node", CmdLeaseItem, LeaseItem{Queue: "jobs"}, "node is empty"},
		{"lease with a short visibility", CmdLeaseItem, LeaseItem{Queue: "jobs", Node: "n1", Visibility: time.Millisecond}, "visibility 1ms is outside"},
		{"queue spec that is invalid", CmdPutQueue, PutQueue{Name: "q2", Group: "batch", Spec: api.QueueSpec{Mode: "batch"}}, `"batch" is not a queue mode`},
		{"queue spec named differently", CmdPutQueue, PutQueue{Name: "q2", Group: "batch", Spec: api.QueueSpec{Name: "q3", Mode: api.QueuePull}}, `spec is named "q3"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCommand(tt.typ, tt.p)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("NewCommand = %v, want invalid containing %q", err, tt.msg)
			}
		})
	}
}

func TestQueueDefinitionChangesKeepItems(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.push("a", "b")
	if _, n := r.ok(CmdPutQueue, PutQueue{Name: "jobs", Group: "batch", Spec: pullSpec()}); n != 0 {
		t.Fatal("putting the same spec again changed the queue")
	}
	spec := pullSpec()
	spec.Parallelism = 1
	r.ok(CmdPutQueue, PutQueue{Name: "jobs", Group: "batch", Spec: spec})
	q, _ := r.f.Queue("jobs")
	if q.Spec.Parallelism != 1 || q.Spec.Name != "jobs" || q.NextID != 3 || !q.CreatedAt.Equal(t0) {
		t.Fatalf("queue after a spec change: %+v", q)
	}
	if got := r.lease("w", "n1", t0, 5); len(got) != 1 {
		t.Fatalf("the new parallelism is not applied: leased %d", len(got))
	}
	if _, n := r.ok(CmdDeleteQueue, DeleteQueue{Name: "jobs"}); n != 3 {
		t.Fatalf("delete_queue changed %d, want the queue and its 2 items", n)
	}
	if _, ok := r.f.Queue("jobs"); ok || r.f.Items("jobs", ItemFilter{}) != nil {
		t.Fatal("the queue or its items are still there")
	}
	// A queue of the same name starts over, IDs from 1.
	r.ok(CmdPutQueue, PutQueue{Name: "jobs", Group: "other", Spec: pullSpec()})
	if ids := r.push("z"); ids[0] != 1 {
		t.Fatalf("a new queue's first ID = %d", ids[0])
	}
}

func TestQueueReads(t *testing.T) {
	r := queueRun(t, pullSpec())
	r.push("a", "b", "c", "d")
	tok := r.lease("w", "n1", t0, 2)[0].LeaseToken
	r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: t0, Acks: []ItemAck{{ID: 2, Token: tok, Result: []byte("r2")}}})

	leased := r.f.Items("jobs", ItemFilter{State: api.ItemLeased})
	if !reflect.DeepEqual(idsOf(leased), []uint64{1}) || leased[0].Data != nil || leased[0].Size != 1 {
		t.Fatalf("leased items = %+v, want item 1 without its data but with its size", leased)
	}
	if page := r.f.Items("jobs", ItemFilter{After: 1, Limit: 2}); !reflect.DeepEqual(idsOf(page), []uint64{2, 3}) {
		t.Fatalf("page after 1 = %v", idsOf(page))
	}
	done := r.f.Items("jobs", ItemFilter{State: api.ItemDone, WithData: true})
	if len(done) != 1 || string(done[0].Data) != "b" || string(done[0].Result) != "r2" {
		t.Fatalf("done items = %+v", done)
	}
	// Reads are copies.
	done[0].Data[0], done[0].Result[0] = 'X', 'X'
	if it := r.item(2); string(it.Data) != "b" || string(it.Result) != "r2" {
		t.Fatalf("a caller's change reached the FSM: %+v", it)
	}
	if got := r.f.LeasedItems("jobs", tok); !reflect.DeepEqual(idsOf(got), []uint64{1}) {
		t.Fatalf("LeasedItems after one of two was acked = %v", idsOf(got))
	}
	if _, ok := r.f.Item("jobs", 99); ok {
		t.Fatal("Item(99) found")
	}
	if qs := r.f.Queues(); len(qs) != 1 || qs[0].Name != "jobs" || qs[0].Group != "batch" {
		t.Fatalf("Queues() = %+v", qs)
	}
	a := r.item(2).API(false)
	if a.Size != 1 || a.ResultSize != 2 || a.Data != nil || a.State != api.ItemDone || a.DoneNode != "n1" {
		t.Fatalf("API() = %+v", a)
	}
	s := r.stats()
	if st := s.API(t0); st.Queued != 2 || st.Leased != 1 || st.Done != 1 || st.Total != 4 {
		t.Fatalf("status = %+v", st)
	}
}

func TestQueueStatsRate(t *testing.T) {
	r := queueRun(t, pullSpec())
	var data []string
	for i := range 100 {
		data = append(data, fmt.Sprint(i))
	}
	r.push(data...)
	for i := range 100 {
		now := t0.Add(time.Duration(i) * 100 * time.Millisecond) // 10 per second
		it := r.lease("w", "n1", now, 1)[0]
		r.ok(CmdAckItem, AckItem{Queue: "jobs", Now: now, Acks: []ItemAck{{ID: it.ID, Token: it.LeaseToken}}})
	}
	s := r.stats()
	last := t0.Add(9900 * time.Millisecond)
	if s.RecentDone != 64 || !s.LastDoneAt.Equal(last) || !s.RecentSince.Equal(last.Add(-63*100*time.Millisecond)) {
		t.Fatalf("stats = %+v", s)
	}
	if rate := s.Rate(last); rate < 9.99 || rate > 10.01 {
		t.Fatalf("rate = %v, want 10/s", rate)
	}
	if rate := s.Rate(last.Add(63 * 100 * time.Millisecond)); rate < 4.99 || rate > 5.01 {
		t.Fatalf("rate after as long again without completions = %v, want 5/s", rate)
	}
	if (QueueStats{RecentDone: 1}).Rate(t0) != 0 {
		t.Fatal("a rate from one completion")
	}
}

func TestPutQueueFor(t *testing.T) {
	g := &api.GroupSpec{Name: "thumbs", Queue: &api.QueueSpec{Mode: api.QueueContainer}}
	p, ok := PutQueueFor(g)
	if !ok || p.Name != "thumbs" || p.Group != "thumbs" || p.Spec.Name != "thumbs" || p.Spec.Mode != api.QueueContainer {
		t.Fatalf("PutQueueFor = %+v, %v", p, ok)
	}
	g.Queue.Name = "images"
	if p, _ := PutQueueFor(g); p.Name != "images" || p.Group != "thumbs" {
		t.Fatalf("PutQueueFor with a named queue = %+v", p)
	}
	if _, err := NewCommand(CmdPutQueue, p); err != nil {
		t.Fatalf("its command is refused: %v", err)
	}
	if _, ok := PutQueueFor(&api.GroupSpec{Name: "web"}); ok {
		t.Fatal("a group without [queue] has a queue")
	}
}
