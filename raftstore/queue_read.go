package raftstore

import (
	"sort"
	"time"

	"github.com/berth-project/berth/api"
)

// Reads of the queues. They take f.mu's read side and cost what their
// doc says, never a copy of every item.

// QueueStats counts a queue's items by state.
type QueueStats struct {
	// Queued counts every queued item; Delayed those of them waiting out
	// a retry backoff (until the next CmdLeaseItem after its end).
	Queued, Delayed, Leased, Done, Dead, Total int
	FailedAttempts                             int64
	// RecentDone completions happened from RecentSince to LastDoneAt
	// (the last up to 64): see Rate.
	RecentDone              int
	RecentSince, LastDoneAt time.Time
}

// Rate is the completions per second over the recent ones, up to now;
// 0 with fewer than two.
func (s QueueStats) Rate(now time.Time) float64 {
	if s.RecentDone < 2 {
		return 0
	}
	span := now.Sub(s.RecentSince).Seconds()
	if last := s.LastDoneAt.Sub(s.RecentSince).Seconds(); span < last {
		span = last
	}
	if span <= 0 {
		return 0
	}
	return float64(s.RecentDone-1) / span
}

// API returns the counts as the HTTP API shows them.
func (s QueueStats) API(now time.Time) api.QueueStatus {
	return api.QueueStatus{
		Queued: s.Queued, Delayed: s.Delayed, Leased: s.Leased, Done: s.Done, Dead: s.Dead, Total: s.Total,
		FailedAttempts: s.FailedAttempts, Rate: s.Rate(now), LastDoneAt: s.LastDoneAt,
	}
}

// ItemFilter selects the items Items returns: in State (any when empty),
// with an ID above After, at most Limit (all when 0), with their data and
// result when WithData.
type ItemFilter struct {
	State    api.ItemState
	After    uint64
	Limit    int
	WithData bool
}

// Queue returns one queue's definition.
func (f *FSM) Queue(name string) (Queue, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	q, ok := f.state.Queues[name]
	return q, ok
}

// Queues returns every queue, ordered by name.
func (f *FSM) Queues() []Queue {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.state.Queues, nil)
}

// QueueStats returns the counts of a queue's items. It costs O(1).
func (f *FSM) QueueStats(name string) (QueueStats, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	q, ok := f.state.Queues[name]
	if !ok {
		return QueueStats{}, false
	}
	d := f.queues[name]
	s := QueueStats{
		Queued: d.queued, Delayed: d.nDelayed, Leased: d.leased, Done: d.done, Dead: len(d.dead),
		Total: len(d.items), FailedAttempts: q.FailedAttempts,
		RecentDone: d.nRecent, LastDoneAt: d.lastDone,
	}
	if d.nRecent > 0 {
		s.RecentSince = d.recent[(d.nextRecent-d.nRecent+len(d.recent))%len(d.recent)]
	}
	return s, true
}

// Items returns items of a queue in ID order, as f selects; nil when the
// queue does not exist. It visits the items after f.After until Limit
// match: bound Limit on large queues.
func (f *FSM) Items(queue string, filter ItemFilter) []QueueItem {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.queues[queue]
	if !ok {
		return nil
	}
	start := 0
	if filter.After >= d.base {
		start = int(filter.After - d.base + 1)
	}
	var out []QueueItem
	for i := start; i < len(d.items); i++ {
		e := d.items[i]
		if filter.State != "" && e.State != filter.State {
			continue
		}
		out = append(out, e.copy(filter.WithData))
		if filter.Limit > 0 && len(out) == filter.Limit {
			break
		}
	}
	return out
}

// Item returns one item with its data and result.
func (f *FSM) Item(queue string, id uint64) (QueueItem, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.queues[queue]
	if !ok {
		return QueueItem{}, false
	}
	e := d.item(id)
	if e == nil {
		return QueueItem{}, false
	}
	return e.copy(true), true
}

// LeasedItems returns, with their data, the items the CmdLeaseItem at
// index token leased and that are still leased with it, in ID order.
// It costs O(items of that lease).
func (f *FSM) LeasedItems(queue string, token uint64) []QueueItem {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.queues[queue]
	if !ok {
		return nil
	}
	var out []QueueItem
	for _, id := range d.byToken[token] {
		if e := d.item(id); e != nil && e.State == api.ItemLeased && e.LeaseToken == token {
			out = append(out, e.copy(true))
		}
	}
	return out
}

// EnqueuedIDs returns the IDs the CmdEnqueue at index gave its items, in
// order. It costs O(log n + batch).
func (f *FSM) EnqueuedIDs(queue string, index uint64) []uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	d, ok := f.queues[queue]
	if !ok {
		return nil
	}
	// Items are in ID order, which is the order of their pushes.
	i := sort.Search(len(d.items), func(i int) bool { return d.items[i].EnqueueIndex >= index })
	var out []uint64
	for ; i < len(d.items) && d.items[i].EnqueueIndex == index; i++ {
		out = append(out, d.items[i].ID)
	}
	return out
}
