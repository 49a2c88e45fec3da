package raftstore

import (
	"errors"
	"fmt"
	"slices"
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
// the queue's visibility_timeout). A lease that expired but was not
// handed out again yet (no CmdLeaseItem since) is still extended.
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

// PutQueueFor returns the payload of the CmdPutQueue that defines g's
// [queue]; false when g has none. The queue is named after g unless its
// spec names it.
func PutQueueFor(g *api.GroupSpec) (PutQueue, bool) {
	if g.Queue == nil {
		return PutQueue{}, false
	}
	spec := *g.Queue
	spec.Name = spec.EffectiveName(g.Name)
	return PutQueue{Name: spec.Name, Group: g.Name, Spec: spec}, true
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
