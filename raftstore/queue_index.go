package raftstore

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"time"

	"github.com/berth-project/berth/api"
)

// queueData holds one queue's items and the indexes that keep every
// command O(batch · log n): items by ID (a slice: IDs are dense), a heap
// of ready items by ID, one of backed-off items by NotBefore, one of
// leased items by expiry, the items of each lease command, the dead
// letters, and counts by state.
//
// Everything here is derived from the items' fields (rebuilt by
// Restore), so two members that applied the same log, or restored the
// same snapshot, make the same decisions. The heaps are lazy: a change
// of an item bumps its gen and pushes a new entry, and entries whose gen
// is old are skipped when they surface (and dropped when the heap holds
// more stale than live entries). Only the FSM touches it, under f.mu.
type queueData struct {
	items []*itemEntry // items[i] has ID base+i
	base  uint64

	ready   entryHeap // queued, NotBefore zero: by ID
	delayed entryHeap // queued, NotBefore set: by NotBefore, ID
	leasedH entryHeap // leased: by LeaseExpiry, ID

	queued, nReady, nDelayed, leased, done int
	dead                                   map[uint64]struct{}

	// byToken lists the items each lease command leased; tokenLeft
	// counts those still leased with it (the entry goes at 0).
	byToken   map[uint64][]uint64
	tokenLeft map[uint64]int

	// recent is a ring of the last completion times, for the rate.
	recent              [64]time.Time
	nRecent, nextRecent int
	lastDone            time.Time
}

// itemEntry is an item with its place in the indexes.
type itemEntry struct {
	QueueItem
	gen   uint64   // the gen of its one live heap entry
	where heapKind // which heap holds that entry
}

type heapKind uint8

const (
	inNone heapKind = iota
	inReady
	inDelayed
	inLeased
)

func newQueueData(base uint64) *queueData {
	return &queueData{
		base:      base,
		dead:      map[uint64]struct{}{},
		byToken:   map[uint64][]uint64{},
		tokenLeft: map[uint64]int{},
	}
}

// item returns item id, or nil.
func (d *queueData) item(id uint64) *itemEntry {
	if id < d.base || id-d.base >= uint64(len(d.items)) {
		return nil
	}
	return d.items[id-d.base]
}

// lookup returns item id, or an api.ErrNotFound error naming it.
func (d *queueData) lookup(queue string, id uint64) (*itemEntry, error) {
	if e := d.item(id); e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("queue %q has no item %d: %w", queue, id, api.ErrNotFound)
}

// add appends e, whose ID must be the next one, and indexes it.
func (d *queueData) add(e *itemEntry) {
	e.Size, e.ResultSize = len(e.Data), len(e.Result)
	d.items = append(d.items, e)
	d.enter(e)
}

// setState moves e to state s, re-indexing it (also when s is its
// state: a leased item with a new expiry, a queued item made ready).
func (d *queueData) setState(e *itemEntry, s api.ItemState) {
	d.leave(e)
	e.State = s
	e.ResultSize = len(e.Result)
	d.enter(e)
}

// leave takes e out of the counts and indexes of its state.
func (d *queueData) leave(e *itemEntry) {
	switch e.State {
	case api.ItemQueued:
		d.queued--
		switch e.where {
		case inReady:
			d.nReady--
		case inDelayed:
			d.nDelayed--
		}
	case api.ItemLeased:
		d.leased--
		tok := e.LeaseToken
		if d.tokenLeft[tok]--; d.tokenLeft[tok] <= 0 {
			delete(d.tokenLeft, tok)
			delete(d.byToken, tok)
		}
	case api.ItemDone:
		d.done--
	case api.ItemDead:
		delete(d.dead, e.ID)
	}
	e.gen++ // its heap entry, if any, is stale now
	e.where = inNone
}

// enter counts e in its state and indexes it.
func (d *queueData) enter(e *itemEntry) {
	switch e.State {
	case api.ItemQueued:
		d.queued++
		if e.NotBefore.IsZero() {
			d.nReady++
			d.push(&d.ready, e, inReady, time.Time{}, d.nReady)
		} else {
			d.nDelayed++
			d.push(&d.delayed, e, inDelayed, e.NotBefore, d.nDelayed)
		}
	case api.ItemLeased:
		d.leased++
		d.push(&d.leasedH, e, inLeased, e.LeaseExpiry, d.leased)
		d.byToken[e.LeaseToken] = append(d.byToken[e.LeaseToken], e.ID)
		d.tokenLeft[e.LeaseToken]++
	case api.ItemDone:
		d.done++
	case api.ItemDead:
		d.dead[e.ID] = struct{}{}
	}
}

// push adds e's entry to h, and drops h's stale entries when they
// outnumber the live ones.
func (d *queueData) push(h *entryHeap, e *itemEntry, kind heapKind, at time.Time, live int) {
	e.where = kind
	heap.Push(h, heapEntry{at: at, id: e.ID, gen: e.gen})
	if len(*h) <= 2*live+64 {
		return
	}
	kept := (*h)[:0]
	for _, x := range *h {
		if d.live(x, kind) != nil {
			kept = append(kept, x)
		}
	}
	*h = kept
	heap.Init(h)
}

// live returns the item of entry x when x is its live entry in heap
// kind.
func (d *queueData) live(x heapEntry, kind heapKind) *itemEntry {
	if e := d.item(x.id); e != nil && e.gen == x.gen && e.where == kind {
		return e
	}
	return nil
}

// extendLease re-indexes leased item e by its new LeaseExpiry.
func (d *queueData) extendLease(e *itemEntry) {
	e.gen++
	d.push(&d.leasedH, e, inLeased, e.LeaseExpiry, d.leased)
}

// popReady returns the ready item with the lowest ID, out of the heap,
// or nil.
func (d *queueData) popReady() *itemEntry {
	for d.ready.Len() > 0 {
		x := heap.Pop(&d.ready).(heapEntry)
		if e := d.live(x, inReady); e != nil {
			return e
		}
	}
	return nil
}

// popDue returns the item of h's earliest live entry when that is due by
// now (at ≤ now), out of the heap, or nil.
func (d *queueData) popDue(h *entryHeap, kind heapKind, now time.Time) *itemEntry {
	for h.Len() > 0 {
		x := (*h)[0]
		e := d.live(x, kind)
		if e != nil && x.at.After(now) {
			return nil
		}
		heap.Pop(h)
		if e != nil {
			return e
		}
	}
	return nil
}

// popDelayed returns a backed-off item whose NotBefore passed, or nil.
func (d *queueData) popDelayed(now time.Time) *itemEntry { return d.popDue(&d.delayed, inDelayed, now) }

// popExpired returns a leased item whose lease expired, or nil.
func (d *queueData) popExpired(now time.Time) *itemEntry { return d.popDue(&d.leasedH, inLeased, now) }

// leasedOn returns the items leased on node, in ID order.
func (d *queueData) leasedOn(node string) []*itemEntry {
	var out []*itemEntry
	for _, x := range d.leasedH {
		if e := d.live(x, inLeased); e != nil && e.Node == node {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *itemEntry) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// noteDone records a completion at t for the rate.
func (d *queueData) noteDone(t time.Time) {
	d.recent[d.nextRecent] = t
	d.nextRecent = (d.nextRecent + 1) % len(d.recent)
	d.nRecent = min(d.nRecent+1, len(d.recent))
	if t.After(d.lastDone) {
		d.lastDone = t
	}
}

// copy returns the item, with copies of its data and result when
// withData, without them otherwise (Size and ResultSize stay).
func (e *itemEntry) copy(withData bool) QueueItem {
	it := e.QueueItem
	if withData {
		it.Data, it.Result = slices.Clone(it.Data), slices.Clone(it.Result)
	} else {
		it.Data, it.Result = nil, nil
	}
	return it
}

// snapshot returns the items in ID order, sharing their data (never
// changed in place: an ack sets a new Result slice).
func (d *queueData) snapshot() []QueueItem {
	out := make([]QueueItem, len(d.items))
	for i, e := range d.items {
		out[i] = e.QueueItem
	}
	return out
}

// restoreQueueData indexes the items of queue name from a snapshot; their
// IDs must be dense and ascending, below next.
func restoreQueueData(name string, next uint64, items []QueueItem) (*queueData, error) {
	base := next
	if len(items) > 0 {
		base = items[0].ID
	}
	d := newQueueData(base)
	for i, it := range items {
		switch {
		case it.ID != base+uint64(i):
			return nil, fmt.Errorf("queue %q: item %d follows item %d: the IDs must be dense", name, it.ID, base+uint64(i)-1)
		case it.ID >= next:
			return nil, fmt.Errorf("queue %q: item %d is at or above the next ID %d", name, it.ID, next)
		case !it.State.Valid():
			return nil, fmt.Errorf("queue %q: item %d has an unknown state %q", name, it.ID, it.State)
		}
		it.Queue = name
		d.add(&itemEntry{QueueItem: it})
	}
	// The rate's ring: the latest completions, oldest first.
	var times []time.Time
	for _, e := range d.items {
		if e.State == api.ItemDone {
			times = append(times, e.DoneAt)
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	if len(times) > len(d.recent) {
		times = times[len(times)-len(d.recent):]
	}
	for _, t := range times {
		d.noteDone(t)
	}
	return d, nil
}

// heapEntry is one entry of an entryHeap: item id, due at at, live while
// gen is the item's.
type heapEntry struct {
	at  time.Time
	id  uint64
	gen uint64
}

// entryHeap is a min-heap of entries by at, then id (container/heap).
type entryHeap []heapEntry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return h[i].id < h[j].id
}
func (h entryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)   { *h = append(*h, x.(heapEntry)) }
func (h *entryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
