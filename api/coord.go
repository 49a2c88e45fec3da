package api

import "time"

// The coordination routes: leases (leader election with fencing tokens)
// and work queues. The lease routes and the queue worker routes are
// served on each group's downward socket (/run/berth/agent.sock inside the
// group), where the socket names the group; the queue routes are also
// served on the admin socket, for agentctl. Every non-2xx answer has an
// ErrorBody.
//
//	GET    /v1/leases                         []Lease (the caller's group's leases)
//	GET    /v1/leases/{name}[?wait=DUR&token=N]  Lease; with wait, long-polls until the
//	                                          holder or token differs from token N
//	POST   /v1/leases/{name}/campaign         CampaignRequest → Lease with Held once granted;
//	                                          409 (conflict) naming the holder when the
//	                                          timeout passes first
//	DELETE /v1/leases/{name}                  resign: release the lease if the caller holds it
//	GET    /                                  ElectorAnswer (the contrib leader-elector
//	                                          sidecar's answer, on the downward socket)
//
//	GET    /v1/queues                         []QueueInfo
//	GET    /v1/queues/{q}                     QueueInfo
//	POST   /v1/queues/{q}/items               PushRequest → PushResponse (all or nothing)
//	GET    /v1/queues/{q}/items               []QueueItem; query: state, after=ID, limit=N
//	GET    /v1/queues/{q}/items/{id}          QueueItem with its data and result
//	POST   /v1/queues/{q}/retry               RetryRequest → RetryResponse (dead letters
//	                                          back to the queue)
//	POST   /v1/queues/{q}/lease               LeaseRequest → LeaseResponse (pull workers)
//	POST   /v1/queues/{q}/ack                 AckRequest → AckResponse
//	POST   /v1/queues/{q}/nack                NackRequest → NackResponse
//	POST   /v1/queues/{q}/extend              ExtendRequest → ExtendResponse
const (
	PathLeases = "/v1/leases"
	PathQueues = "/v1/queues"
)

// Lease is who holds a lease.
type Lease struct {
	// Name is the lease's name as the group declares it.
	Name string `json:"name"`
	// Shared: the name is cluster-wide, not scoped to the group.
	Shared bool `json:"shared,omitempty"`
	// Group is the group of the holder.
	Group string `json:"group,omitempty"`
	// Holder names the holder (an allocation, or a container of a local
	// group); empty when nobody holds the lease.
	Holder string `json:"holder,omitempty"`
	// Node is the node the holder runs on.
	Node string `json:"node,omitempty"`
	// Token is the fencing token: the Raft index of the grant. It only
	// grows, so a resource that remembers the highest token it has seen
	// can refuse a stale holder.
	Token uint64 `json:"token,omitempty"`
	// Granted is when the holder got the lease (this token); Expiry when
	// it ends unless renewed.
	Granted time.Time `json:"granted,omitzero"`
	Expiry  time.Time `json:"expiry,omitzero"`
	TTL     Duration  `json:"ttl,omitempty"`
	// Held is set in answers to a caller that is the holder.
	Held bool `json:"held,omitempty"`
}

// CampaignRequest asks for a lease. Holder names the caller (default:
// its allocation, or its group on this node); Timeout bounds the wait for
// the grant (0: the agent's default).
type CampaignRequest struct {
	Holder  string   `json:"holder,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
}

// ElectorAnswer is the answer of the contrib leader-elector sidecar
// (GET / → {"name": "<holder>"}), for apps written against it.
type ElectorAnswer struct {
	Name string `json:"name"`
}

// QueueInfo is a queue, its definition and its progress.
type QueueInfo struct {
	Name   string      `json:"name"`
	Group  string      `json:"group"`
	Spec   QueueSpec   `json:"spec"`
	Status QueueStatus `json:"status"`
}

// QueueStatus counts a queue's items by state.
type QueueStatus struct {
	// Queued items wait for a worker; Delayed of them wait out a retry
	// backoff.
	Queued  int `json:"queued"`
	Delayed int `json:"delayed,omitempty"`
	// Leased items are being worked on (running).
	Leased int `json:"leased"`
	Done   int `json:"done"`
	// Dead items exhausted their attempts (dead letters).
	Dead  int `json:"dead"`
	Total int `json:"total"`
	// FailedAttempts counts every nack and every lease that expired.
	FailedAttempts int64 `json:"failed_attempts"`
	// Rate is items done per second over the recent completions; 0 when
	// too few.
	Rate       float64   `json:"rate"`
	LastDoneAt time.Time `json:"last_done_at,omitzero"`
}

// ItemState is where an item is in its queue.
//
//	        push
//	          │
//	          ▼
//	┌────► queued ──lease──► leased ──ack──► done
//	│         ▲                │
//	│         └─nack, expiry───┤ (attempts left; node lost)
//	│                          │
//	└─retry── dead ◄───────────┘ (no attempts left, or a fatal nack)
type ItemState string

const (
	ItemQueued ItemState = "queued"
	ItemLeased ItemState = "leased"
	ItemDone   ItemState = "done"
	ItemDead   ItemState = "dead"
)

func (s ItemState) String() string { return string(s) }

// Valid reports whether s is one of the item states.
func (s ItemState) Valid() bool {
	switch s {
	case ItemQueued, ItemLeased, ItemDone, ItemDead:
		return true
	}
	return false
}

// QueueItem is one item of a queue.
type QueueItem struct {
	ID    uint64    `json:"id"`
	Queue string    `json:"queue"`
	State ItemState `json:"state"`
	// Attempts is how many times the item was handed out (a lease lost
	// with its node does not count).
	Attempts int `json:"attempts"`
	// Size is the item's size in bytes; Data the item, in answers that
	// carry it.
	Size int    `json:"size"`
	Data []byte `json:"data,omitempty"`
	// Worker, Node and Token are the current or last lease.
	Worker      string    `json:"worker,omitempty"`
	Node        string    `json:"node,omitempty"`
	Token       uint64    `json:"token,omitempty"`
	LeasedAt    time.Time `json:"leased_at,omitzero"`
	LeaseExpiry time.Time `json:"lease_expiry,omitzero"`
	// NotBefore is when a retried item may be handed out again.
	NotBefore  time.Time `json:"not_before,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
	EnqueuedAt time.Time `json:"enqueued_at,omitzero"`
	// DoneAt, DoneAttempt, DoneNode and DoneWorker record the one
	// completion; Result is what it returned (bounded by max_item_size).
	DoneAt      time.Time `json:"done_at,omitzero"`
	DoneAttempt int       `json:"done_attempt,omitempty"`
	DoneNode    string    `json:"done_node,omitempty"`
	DoneWorker  string    `json:"done_worker,omitempty"`
	ResultSize  int       `json:"result_size,omitempty"`
	Result      []byte    `json:"result,omitempty"`
	DeadAt      time.Time `json:"dead_at,omitzero"`
}

// PushRequest adds items to a queue, all or none. Each item is at most
// the queue's max_item_size.
type PushRequest struct {
	Items [][]byte `json:"items"`
}

// PushResponse gives the IDs of the pushed items, in order.
type PushResponse struct {
	Queue string   `json:"queue"`
	IDs   []uint64 `json:"ids"`
}

// LeaseRequest asks for up to Max items (default 1). Visibility is how
// long they stay with the caller without an ack (default the queue's
// visibility_timeout); Wait long-polls for items when none is ready.
// Worker names the caller in the record (default the caller's group).
type LeaseRequest struct {
	Max        int      `json:"max,omitempty"`
	Visibility Duration `json:"visibility,omitempty"`
	Wait       Duration `json:"wait,omitempty"`
	Worker     string   `json:"worker,omitempty"`
}

// LeaseResponse is the items leased; empty when none was ready.
type LeaseResponse struct {
	Items []LeasedItem `json:"items"`
}

// LeasedItem is an item handed to a worker. Token identifies this lease
// in ack, nack and extend.
type LeasedItem struct {
	ID      uint64    `json:"id"`
	Token   uint64    `json:"token"`
	Attempt int       `json:"attempt"`
	Expiry  time.Time `json:"expiry"`
	Data    []byte    `json:"data"`
}

// ItemRef names one lease of an item.
type ItemRef struct {
	ID    uint64 `json:"id"`
	Token uint64 `json:"token"`
}

// Ack completes an item; Result is kept with it.
type Ack struct {
	ID     uint64 `json:"id"`
	Token  uint64 `json:"token"`
	Result []byte `json:"result,omitempty"`
}

// AckRequest completes items.
type AckRequest struct {
	Acks []Ack `json:"acks"`
}

// Ack outcomes.
const (
	// AckDone: this ack recorded the completion.
	AckDone = "done"
	// AckDuplicate: the item was already completed (by another execution,
	// or an earlier ack); nothing was recorded.
	AckDuplicate = "duplicate"
)

// AckResponse says, for each ack in order, whether it recorded the
// completion.
type AckResponse struct {
	Results []AckResult `json:"results"`
}

// AckResult is the outcome of one ack.
type AckResult struct {
	ID      uint64 `json:"id"`
	Outcome string `json:"outcome"`
}

// Nack gives an item back as failed. Error is kept as its last error;
// Fatal makes it a dead letter at once.
type Nack struct {
	ID    uint64 `json:"id"`
	Token uint64 `json:"token"`
	Error string `json:"error,omitempty"`
	Fatal bool   `json:"fatal,omitempty"`
}

// NackRequest fails items.
type NackRequest struct {
	Nacks []Nack `json:"nacks"`
}

// NackResponse says where each nacked item went.
type NackResponse struct {
	Results []NackResult `json:"results"`
}

// NackResult is the outcome of one nack: the item's state after it
// (queued with NotBefore, or dead). Stale is set when the token was not
// the item's current lease, and the nack changed nothing.
type NackResult struct {
	ID        uint64    `json:"id"`
	State     ItemState `json:"state"`
	NotBefore time.Time `json:"not_before,omitzero"`
	Stale     bool      `json:"stale,omitempty"`
}

// ExtendRequest keeps leased items with their worker for Visibility more
// (default the queue's visibility_timeout).
type ExtendRequest struct {
	Items      []ItemRef `json:"items"`
	Visibility Duration  `json:"visibility,omitempty"`
}

// ExtendResponse gives each item's new lease expiry; Stale items are no
// longer leased with that token and were not extended.
type ExtendResponse struct {
	Results []ExtendResult `json:"results"`
}

// ExtendResult is the outcome of one extension.
type ExtendResult struct {
	ID     uint64    `json:"id"`
	Expiry time.Time `json:"expiry,omitzero"`
	Stale  bool      `json:"stale,omitempty"`
}

// RetryRequest puts dead letters back into the queue with their attempts
// reset; no IDs means every dead letter of the queue.
type RetryRequest struct {
	IDs []uint64 `json:"ids,omitempty"`
}

// RetryResponse lists the items put back.
type RetryResponse struct {
	IDs []uint64 `json:"ids"`
}
