package raftstore

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/berth-project/berth/api"
)

// Work queues (DESIGN.md, Work queue). A queue is defined in the State
// (Queue: name, group, spec, ID sequence); its items live beside the
// State in per-queue indexes (queueData) so that a command costs
// O(batch · log n) and reads never copy every item. Snapshots hold the
// items too.
//
// The life of an item (api.ItemState):
//
//	        enqueue
//	          │
//	          ▼
//	┌────► queued ──lease──► leased ──ack──► done ◄──ack (an earlier lease)── queued, dead
//	│      ▲    ▲             │ │
//	│      │    └─nack, expiry┘ │  (attempts left: after the backoff; expiry at once)
//	│      └─node lost──────────┤  (the attempt is not counted)
//	│                           ▼
//	└──────retry───────────── dead  (no attempts left, or a fatal nack)
//
// Delivery is at least once: an item whose lease expires (no ack, nack or
// extension within the visibility timeout) counts as a failed attempt
// and is handed out again, or becomes a dead letter when it has no
// attempts left; an item whose node is lost (CmdRequeueNode) goes back at
// once and that attempt is not counted. Completion is recorded once: the
// first ack of an item that is not done records it (DoneIndex, DoneToken,
// Result, and the attempt, node and worker that completed it), even when
// it comes from an earlier lease of the item (a worker that finished
// after its lease expired; the item's current lease, if any, ends); every
// later ack is a no-op. A nack only counts when its token is the item's
// current lease. Expired leases are reclaimed, and backed-off items
// become ready, when a CmdLeaseItem runs: every decision uses the
// commands' times, never the FSM's clock.
//
// To find what a command did, read back after its index (Store.Apply,
// and the cluster Proposer, return once the local FSM applied it, even
// when the FSM refused it): EnqueuedIDs(queue, index) for a push,
// LeasedItems(queue, index) for a lease, and Item for an ack (DoneIndex
// == index: this ack recorded the completion; below: a duplicate).

// Queue is a queue's definition in the State.
type Queue struct {
	Name  string        `json:"name"`
	Group string        `json:"group"`
	Spec  api.QueueSpec `json:"spec"`
	// NextID is the ID of the next item pushed; IDs start at 1 and are
	// never reused.
	NextID uint64 `json:"next_id"`
	// FailedAttempts counts nacks and expired leases.
	FailedAttempts int64     `json:"failed_attempts,omitempty"`
	CreatedAt      time.Time `json:"created_at,omitzero"`
	// Index is the index of the last change of the definition.
	Index uint64 `json:"index,omitempty"`
}

// QueueItem is one item of a queue.
type QueueItem struct {
	Queue string        `json:"queue"`
	ID    uint64        `json:"id"`
	State api.ItemState `json:"state"`
	Data  []byte        `json:"data,omitempty"`
	// Size and ResultSize are the lengths of Data and Result, also in
	// copies read without them.
	Size       int `json:"size"`
	ResultSize int `json:"result_size,omitempty"`
	// Attempts counts the leases of the item but those lost with their
	// node (Lost counts these).
	Attempts     int       `json:"attempts,omitempty"`
	Lost         int       `json:"lost,omitempty"`
	EnqueuedAt   time.Time `json:"enqueued_at"`
	EnqueueIndex uint64    `json:"enqueue_index"`
	// Worker, Node, LeaseToken (the index of the lease command),
	// LeasedAt and LeaseExpiry are the current or last lease.
	Worker      string    `json:"worker,omitempty"`
	Node        string    `json:"node,omitempty"`
	LeaseToken  uint64    `json:"lease_token,omitempty"`
	LeasedAt    time.Time `json:"leased_at,omitzero"`
	LeaseExpiry time.Time `json:"lease_expiry,omitzero"`
	// NotBefore, on a queued item, is the end of its retry backoff; it
	// is cleared when the item becomes ready.
	NotBefore time.Time `json:"not_before,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// The completion: when, by which ack command (DoneIndex) of which
	// lease (DoneToken), attempt, node and worker, and its result.
	DoneAt      time.Time `json:"done_at,omitzero"`
	DoneIndex   uint64    `json:"done_index,omitempty"`
	DoneToken   uint64    `json:"done_token,omitempty"`
	DoneAttempt int       `json:"done_attempt,omitempty"`
	DoneNode    string    `json:"done_node,omitempty"`
	DoneWorker  string    `json:"done_worker,omitempty"`
	Result      []byte    `json:"result,omitempty"`
	DeadAt      time.Time `json:"dead_at,omitzero"`
	// Index is the index of the item's last change.
	Index uint64 `json:"index"`
}

// API returns the item as the HTTP API shows it, with its data and
// result when withData.
func (it QueueItem) API(withData bool) api.QueueItem {
	out := api.QueueItem{
		ID: it.ID, Queue: it.Queue, State: it.State, Attempts: it.Attempts, Size: it.Size,
		Worker: it.Worker, Node: it.Node, Token: it.LeaseToken, LeasedAt: it.LeasedAt, LeaseExpiry: it.LeaseExpiry,
		NotBefore: it.NotBefore, LastError: it.LastError, EnqueuedAt: it.EnqueuedAt,
		DoneAt: it.DoneAt, DoneAttempt: it.DoneAttempt, DoneNode: it.DoneNode, DoneWorker: it.DoneWorker,
		ResultSize: it.ResultSize, DeadAt: it.DeadAt,
	}
	if withData {
		out.Data, out.Result = slices.Clone(it.Data), slices.Clone(it.Result)
	}
	return out
}

// Leased returns the item as handed to a worker.
func (it QueueItem) Leased() api.LeasedItem {
	return api.LeasedItem{ID: it.ID, Token: it.LeaseToken, Attempt: it.Attempts, Expiry: it.LeaseExpiry, Data: slices.Clone(it.Data)}
}

// Limits of one queue command.
const (
	// MaxEnqueueBatch and MaxEnqueueBytes bound one CmdEnqueue (the
	// forwarded command stays well under the inter-agent body limit).
	MaxEnqueueBatch = 10000
	MaxEnqueueBytes = 8 << 20
	// MaxItemBatch bounds the items of one lease, ack, nack, extend or
	// retry command.
	MaxItemBatch = 10000
	// MaxItemError bounds a nack's error message; longer ones are cut.
	MaxItemError = 4096
)

// PutQueue is the payload of CmdPutQueue: it creates the queue, or
// changes its spec (its items stay). A queue belongs to the group that
// defined it: putting it for another group is a conflict.
type PutQueue struct {
	Name  string        `json:"name"`
	Group string        `json:"group"`
	Spec  api.QueueSpec `json:"spec"`
}

// DeleteQueue is the payload of CmdDeleteQueue: the queue and its items.
type DeleteQueue struct {
	Name string `json:"name"`
}

// Enqueue is the payload of CmdEnqueue: Items are pushed in order, all or
// none; each gets the queue's next ID.
type Enqueue struct {
	Queue string    `json:"queue"`
	Items [][]byte  `json:"items"`
	Now   time.Time `json:"now,omitzero"`
}

// LeaseItem is the payload of CmdLeaseItem: it leases up to Max (default
// 1) ready items, oldest first, to Worker on Node until Now + Visibility
// (default the queue's visibility_timeout), within the queue's
// parallelism. The items leased carry LeaseToken = this command's index.
type LeaseItem struct {
	Queue      string        `json:"queue"`
	Worker     string        `json:"worker,omitempty"`
	Node       string        `json:"node"`
	Now        time.Time     `json:"now,omitzero"`
	Max        int           `json:"max,omitempty"`
	Visibility time.Duration `json:"visibility,omitempty"`
}

// AckItem is the payload of CmdAckItem: it completes items.
type AckItem struct {
	Queue string    `json:"queue"`
	Acks  []ItemAck `json:"acks"`
	Now   time.Time `json:"now,omitzero"`
}

// ItemAck completes item ID, leased with Token. Attempt, Node and Worker
// say who completed it, for an ack of an earlier lease of the item (for
// the current lease the item's own are kept). Result is at most the
// queue's max_item_size.
type ItemAck struct {
	ID      uint64 `json:"id"`
	Token   uint64 `json:"token"`
	Attempt int    `json:"attempt,omitempty"`
	Node    string `json:"node,omitempty"`
	Worker  string `json:"worker,omitempty"`
	Result  []byte `json:"result,omitempty"`
}

// NackItem is the payload of CmdNackItem: it gives leased items back as
// failed.
type NackItem struct {
	Queue string     `json:"queue"`
	Nacks []ItemNack `json:"nacks"`
	Now   time.Time  `json:"now,omitzero"`
}

// ItemNack fails item ID's lease Token: the item becomes a dead letter
// when it has no attempts left or Fatal is set, else it is queued again
// after the backoff.
type ItemNack struct {
	ID    uint64 `json:"id"`
	Token uint64 `json:"token"`
	Error string `json:"error,omitempty"`
	Fatal bool   `json:"fatal,omitempty"`
}

// ExtendItem is the payload of CmdExtendItem: it moves the lease expiry
// of items still leased with their token to Now + Visibility (default
// the queue's visibility_timeout).
type ExtendItem struct {
	Queue      string        `json:"queue"`
	Items      []ItemToken   `json:"items"`
	Now        time.Time     `json:"now,omitzero"`
	Visibility time.Duration `json:"visibility,omitempty"`
}

// ItemToken names a lease of an item.
type ItemToken struct {
	ID    uint64 `json:"id"`
	Token uint64 `json:"token"`
}

// RequeueNode is the payload of CmdRequeueNode: every item leased on Node
// (a node declared dead), in every queue, is queued again at once and
// the attempt is not counted.
type RequeueNode struct {
	Node string    `json:"node"`
	Now  time.Time `json:"now,omitzero"`
}

// RetryItem is the payload of CmdRetryItem: dead letters IDs (every one
// of the queue when empty) are queued again with their attempts reset.
// Items that are not dead are left alone.
type RetryItem struct {
	Queue string    `json:"queue"`
	IDs   []uint64  `json:"ids,omitempty"`
	Now   time.Time `json:"now,omitzero"`
}

func (p *PutQueue) validate() error {
	switch {
	case !api.IsDNSLabel(p.Name):
		return fmt.Errorf("queue name %q is not a DNS label", p.Name)
	case !api.IsDNSLabel(p.Group):
		return fmt.Errorf("queue %q: group name %q is not a DNS label", p.Name, p.Group)
	case p.Spec.Name != "" && p.Spec.Name != p.Name:
		return fmt.Errorf("queue %q: spec is named %q", p.Name, p.Spec.Name)
	}
	if err := p.Spec.Validate(p.Group); err != nil {
		return fmt.Errorf("queue %q: %v", p.Name, err)
	}
	return nil
}

func (p *DeleteQueue) validate() error {
	if p.Name == "" {
		return errors.New("queue name is empty")
	}
	return nil
}

func (p *Enqueue) validate() error {
	switch {
	case p.Queue == "":
		return errors.New("queue name is empty")
	case len(p.Items) == 0:
		return fmt.Errorf("queue %q: no items to push", p.Queue)
	case len(p.Items) > MaxEnqueueBatch:
		return fmt.Errorf("queue %q: %d items in one push, more than the maximum of %d: push in batches", p.Queue, len(p.Items), MaxEnqueueBatch)
	}
	total := 0
	for _, it := range p.Items {
		total += len(it)
	}
	if total > MaxEnqueueBytes {
		return fmt.Errorf("queue %q: one push of %d bytes, more than the maximum of %s: push in batches", p.Queue, total, api.ByteSize(MaxEnqueueBytes))
	}
	return nil
}

func (p *LeaseItem) validate() error {
	switch {
	case p.Queue == "":
		return errors.New("queue name is empty")
	case p.Node == "":
		return fmt.Errorf("queue %q: lease: node is empty", p.Queue)
	case p.Max < 0 || p.Max > MaxItemBatch:
		return fmt.Errorf("queue %q: lease of %d items is outside 1..%d", p.Queue, p.Max, MaxItemBatch)
	}
	return validVisibility(p.Queue, p.Visibility)
}

func validVisibility(queue string, d time.Duration) error {
	if d != 0 && (d < api.MinVisibility.D() || d > api.MaxVisibility.D()) {
		return fmt.Errorf("queue %q: visibility %s is outside %s..%s", queue, d, api.MinVisibility, api.MaxVisibility.D())
	}
	return nil
}

func (p *AckItem) validate() error {
	if p.Queue == "" {
		return errors.New("queue name is empty")
	}
	if len(p.Acks) == 0 || len(p.Acks) > MaxItemBatch {
		return fmt.Errorf("queue %q: %d acks is outside 1..%d", p.Queue, len(p.Acks), MaxItemBatch)
	}
	for i, a := range p.Acks {
		if a.ID == 0 || a.Token == 0 {
			return fmt.Errorf("queue %q: acks[%d]: item %d, token %d: both must be set", p.Queue, i, a.ID, a.Token)
		}
	}
	return nil
}

func (p *NackItem) validate() error {
	if p.Queue == "" {
		return errors.New("queue name is empty")
	}
	if len(p.Nacks) == 0 || len(p.Nacks) > MaxItemBatch {
		return fmt.Errorf("queue %q: %d nacks is outside 1..%d", p.Queue, len(p.Nacks), MaxItemBatch)
	}
	for i, n := range p.Nacks {
		if n.ID == 0 || n.Token == 0 {
			return fmt.Errorf("queue %q: nacks[%d]: item %d, token %d: both must be set", p.Queue, i, n.ID, n.Token)
		}
	}
	return nil
}

func (p *ExtendItem) validate() error {
	if p.Queue == "" {
		return errors.New("queue name is empty")
	}
	if len(p.Items) == 0 || len(p.Items) > MaxItemBatch {
		return fmt.Errorf("queue %q: %d items to extend is outside 1..%d", p.Queue, len(p.Items), MaxItemBatch)
	}
	for i, it := range p.Items {
		if it.ID == 0 || it.Token == 0 {
			return fmt.Errorf("queue %q: items[%d]: item %d, token %d: both must be set", p.Queue, i, it.ID, it.Token)
		}
	}
	return validVisibility(p.Queue, p.Visibility)
}

func (p *RequeueNode) validate() error {
	if p.Node == "" {
		return errors.New("node name is empty")
	}
	return nil
}

func (p *RetryItem) validate() error {
	if p.Queue == "" {
		return errors.New("queue name is empty")
	}
	if len(p.IDs) > MaxItemBatch {
		return fmt.Errorf("queue %q: %d items to retry, more than the maximum of %d", p.Queue, len(p.IDs), MaxItemBatch)
	}
	return nil
}

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
	max := cmp.Or(p.Max, 1)
	if cap := q.Spec.EffectiveParallelism(); cap > 0 {
		max = min(max, cap-d.leased)
	}
	vis := cmp.Or(p.Visibility, q.Spec.EffectiveVisibility().D())
	var got []uint64
	for len(got) < max {
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
		e.DoneAt, e.DoneIndex, e.DoneToken, e.Result, e.Index = now, index, a.Token, a.Result, index
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

// QueueStats counts a queue's items by state.
type QueueStats struct {
	// Queued counts every queued item; Delayed those of them waiting out
	// a retry backoff.
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
