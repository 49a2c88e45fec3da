package raftstore

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/berth-project/berth/api"
)

// How each queue command changes the queues (the rules are in queue.go).
// Each apply checks everything before it writes anything; f.mu is held.

// queueOf returns the queue name and its items; an api.ErrNotFound error
// when there is none.
func (f *FSM) queueOf(name string) (Queue, *queueData, error) {
	q, ok := f.state.Queues[name]
	if !ok {
		return Queue{}, nil, fmt.Errorf("queue %q does not exist: define it with a [queue] table in a group file: %w", name, api.ErrNotFound)
	}
	return q, f.queues[name], nil
}

func (p *PutQueue) apply(f *FSM, index uint64, cmd Command) (int, error) {
	old, exists := f.state.Queues[p.Name]
	if exists && old.Group != p.Group {
		return 0, fmt.Errorf("queue %q belongs to group %q, not %q: give the queue of group %q another name: %w",
			p.Name, old.Group, p.Group, p.Group, api.ErrConflict)
	}
	spec := p.Spec
	spec.Name = p.Name
	if exists && old.Spec == spec {
		return 0, nil
	}
	q := Queue{Name: p.Name, Group: p.Group, Spec: spec, NextID: 1, CreatedAt: cmd.Time, Index: index}
	if exists {
		q.NextID, q.FailedAttempts, q.CreatedAt = old.NextID, old.FailedAttempts, old.CreatedAt
	} else {
		f.queues[p.Name] = newQueueData(1)
	}
	f.state.Queues[p.Name] = q
	return 1, nil
}

func (p *DeleteQueue) apply(f *FSM, _ uint64, _ Command) (int, error) {
	return f.deleteQueue(p.Name), nil
}

// deleteQueue deletes a queue and its items and returns how many entries
// went; f.mu is held.
func (f *FSM) deleteQueue(name string) int {
	if _, ok := f.state.Queues[name]; !ok {
		return 0
	}
	n := 1 + len(f.queues[name].items)
	delete(f.state.Queues, name)
	delete(f.queues, name)
	return n
}

func (p *Enqueue) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	q, d, err := f.queueOf(p.Queue)
	if err != nil {
		return 0, err
	}
	limit := q.Spec.EffectiveMaxItemSize()
	for i, it := range p.Items {
		if api.ByteSize(len(it)) > limit {
			what := "the item"
			if len(p.Items) > 1 {
				what = fmt.Sprintf("item %d of %d", i+1, len(p.Items))
			}
			return 0, fmt.Errorf("queue %q: %s is %d bytes, more than the queue's max_item_size of %s (%d bytes): nothing was pushed; store large inputs elsewhere and push references to them: %w",
				p.Queue, what, len(it), limit, int64(limit), api.ErrInvalid)
		}
	}
	for _, data := range p.Items {
		if len(data) == 0 {
			data = nil // as a snapshot restores it
		}
		e := &itemEntry{QueueItem: QueueItem{
			Queue: p.Queue, ID: q.NextID, State: api.ItemQueued, Data: data,
			EnqueuedAt: now, EnqueueIndex: index, Index: index,
		}}
		q.NextID++
		d.add(e)
	}
	f.state.Queues[p.Queue] = q
	return len(p.Items), nil
}

func (p *LeaseItem) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	q, d, err := f.queueOf(p.Queue)
	if err != nil {
		return 0, err
	}
	n := f.reclaim(&q, d, now, index)
	want := cmp.Or(p.Max, 1)
	if limit := q.Spec.EffectiveParallelism(); limit > 0 {
		want = min(want, limit-d.leased) // the leases left all run past now
	}
	vis := cmp.Or(p.Visibility, q.Spec.EffectiveVisibility().D())
	var got []uint64
	for len(got) < want {
		e := d.popReady()
		if e == nil {
			break
		}
		e.Attempts++
		e.Worker, e.Node, e.LeaseToken = p.Worker, p.Node, index
		e.LeasedAt, e.LeaseExpiry, e.Index = now, now.Add(vis), index
		d.setState(e, api.ItemLeased)
		got = append(got, e.ID)
	}
	f.state.Queues[p.Queue] = q
	return n + len(got), nil
}

// reclaim makes the backed-off items whose NotBefore passed ready, and
// takes back the leases that expired by now: a failed attempt each, so
// the item is queued again, or dead when it has no attempts left. It
// returns how many items changed; q is updated, not stored.
func (f *FSM) reclaim(q *Queue, d *queueData, now time.Time, index uint64) int {
	n := 0
	for {
		e := d.popDelayed(now)
		if e == nil {
			break
		}
		e.NotBefore, e.Index = time.Time{}, index
		d.setState(e, api.ItemQueued)
		n++
	}
	maxAttempts := q.Spec.EffectiveMaxAttempts()
	for {
		e := d.popExpired(now)
		if e == nil {
			break
		}
		q.FailedAttempts++
		e.LastError = fmt.Sprintf("attempt %d: no ack from worker %q on node %s within the visibility timeout (leased at %s, expired at %s)",
			e.Attempts, e.Worker, e.Node, e.LeasedAt.UTC().Format(time.RFC3339), e.LeaseExpiry.UTC().Format(time.RFC3339))
		e.Index = index
		if e.Attempts >= maxAttempts {
			e.DeadAt = now
			d.setState(e, api.ItemDead)
		} else {
			d.setState(e, api.ItemQueued)
		}
		n++
	}
	return n
}

func (p *AckItem) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	q, d, err := f.queueOf(p.Queue)
	if err != nil {
		return 0, err
	}
	limit := q.Spec.EffectiveMaxItemSize()
	for i, a := range p.Acks {
		e, err := d.lookup(p.Queue, a.ID)
		if err != nil {
			return 0, fmt.Errorf("acks[%d]: %w", i, err)
		}
		if a.Token > e.LeaseToken || a.Token < e.EnqueueIndex {
			return 0, fmt.Errorf("queue %q: item %d was never leased with token %d (its last lease is %d): nothing was acked: %w",
				p.Queue, a.ID, a.Token, e.LeaseToken, api.ErrConflict)
		}
		if api.ByteSize(len(a.Result)) > limit {
			return 0, fmt.Errorf("queue %q: the result of item %d is %d bytes, more than the queue's max_item_size of %s: nothing was acked: %w",
				p.Queue, a.ID, len(a.Result), limit, api.ErrInvalid)
		}
	}
	n := 0
	for _, a := range p.Acks {
		e := d.item(a.ID)
		if e.State == api.ItemDone {
			continue // completion is recorded once
		}
		e.DoneAt, e.DoneIndex, e.DoneToken, e.Index = now, index, a.Token, index
		if len(a.Result) > 0 {
			e.Result = a.Result
		}
		if a.Token == e.LeaseToken {
			e.DoneAttempt, e.DoneNode, e.DoneWorker = e.Attempts, e.Node, e.Worker
		} else {
			e.DoneAttempt, e.DoneNode, e.DoneWorker = a.Attempt, a.Node, a.Worker
		}
		d.setState(e, api.ItemDone)
		d.noteDone(now)
		n++
	}
	return n, nil
}

func (p *NackItem) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	q, d, err := f.queueOf(p.Queue)
	if err != nil {
		return 0, err
	}
	for i, nk := range p.Nacks {
		if _, err := d.lookup(p.Queue, nk.ID); err != nil {
			return 0, fmt.Errorf("nacks[%d]: %w", i, err)
		}
	}
	maxAttempts := q.Spec.EffectiveMaxAttempts()
	n := 0
	for _, nk := range p.Nacks {
		e := d.item(nk.ID)
		if e.State != api.ItemLeased || e.LeaseToken != nk.Token {
			continue // a stale nack: the item moved on
		}
		q.FailedAttempts++
		msg := nk.Error
		if msg == "" {
			msg = "failed (no error message)"
		}
		if len(msg) > MaxItemError {
			msg = msg[:MaxItemError] + "…"
		}
		e.LastError = fmt.Sprintf("attempt %d on node %s: %s", e.Attempts, e.Node, msg)
		e.Index = index
		switch {
		case nk.Fatal || e.Attempts >= maxAttempts:
			e.DeadAt = now
			d.setState(e, api.ItemDead)
		default:
			e.NotBefore = now.Add(q.Spec.RetryDelay(e.Attempts))
			d.setState(e, api.ItemQueued)
		}
		n++
	}
	f.state.Queues[p.Queue] = q
	return n, nil
}

func (p *ExtendItem) apply(f *FSM, index uint64, cmd Command) (int, error) {
	now, err := commandTime(p.Now, cmd)
	if err != nil {
		return 0, err
	}
	q, d, err := f.queueOf(p.Queue)
	if err != nil {
		return 0, err
	}
	for i, it := range p.Items {
		if _, err := d.lookup(p.Queue, it.ID); err != nil {
			return 0, fmt.Errorf("items[%d]: %w", i, err)
		}
	}
	vis := cmp.Or(p.Visibility, q.Spec.EffectiveVisibility().D())
	n := 0
	for _, it := range p.Items {
		e := d.item(it.ID)
		if e.State != api.ItemLeased || e.LeaseToken != it.Token {
			continue
		}
		e.LeaseExpiry, e.Index = now.Add(vis), index
		d.extendLease(e)
		n++
	}
	return n, nil
}

func (p *RequeueNode) apply(f *FSM, index uint64, _ Command) (int, error) {
	n := 0
	for _, d := range f.queues {
		for _, e := range d.leasedOn(p.Node) {
			e.Attempts--
			e.Lost++
			e.LastError = fmt.Sprintf("attempt %d: node %s was lost while worker %q had the item; the attempt does not count", e.Attempts+1, e.Node, e.Worker)
			e.Index = index
			d.setState(e, api.ItemQueued)
			n++
		}
	}
	return n, nil
}

func (p *RetryItem) apply(f *FSM, index uint64, _ Command) (int, error) {
	_, d, err := f.queueOf(p.Queue)
	if err != nil {
		return 0, err
	}
	ids := p.IDs
	if len(ids) == 0 {
		ids = slices.Sorted(maps.Keys(d.dead))
	}
	for i, id := range ids {
		if _, err := d.lookup(p.Queue, id); err != nil {
			return 0, fmt.Errorf("ids[%d]: %w", i, err)
		}
	}
	n := 0
	for _, id := range ids {
		e := d.item(id)
		if e.State != api.ItemDead {
			continue
		}
		e.Attempts, e.NotBefore, e.DeadAt, e.Index = 0, time.Time{}, time.Time{}, index
		d.setState(e, api.ItemQueued)
		n++
	}
	return n, nil
}

// deleteGroupQueues deletes the queues group defined; f.mu is held.
func (f *FSM) deleteGroupQueues(group string) int {
	n := 0
	for name, q := range f.state.Queues {
		if q.Group == group {
			n += f.deleteQueue(name)
		}
	}
	return n
}
