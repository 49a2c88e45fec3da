package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-project/berth/api"
	"github.com/berth-project/berth/raftstore"
)

// Work queues (DESIGN.md, Work queue; api/coord.go lists the routes).
//
// A queue is defined by the [queue] table of a cluster group, so it has
// one definition in the cluster, and its items, which live in Raft, can be
// worked on from every node: a [queue] without [placement] is refused.
// The agent that applies the group writes the queue to Raft right after
// the group (applyCluster), and the leader keeps every queue in step with
// its group (reconcileQueues: a spec changed by a rollout's revert, a
// group that no longer defines it). Deleting the group deletes the queue
// and its items (the FSM does).
//
// Every write goes through the cluster proposer, stamped with this
// agent's wall clock (the FSM decides expiries and backoffs with it, never
// with its own). Concurrent pushes, acks, nacks and extensions of one
// queue are coalesced into one Raft command (groupCommit); a lease is one
// command, which hands out up to max items.
//
// The admin socket serves every queue route (agentctl, and the API for
// programs). A group's downward socket serves the same routes, where the
// socket names the caller: any group may read a queue and push to it (a
// source container), but only the group that defines a queue may lease,
// ack, nack and extend its items, as worker Allocation (or the local
// group's name) unless it names itself. The container-mode worker is in
// queue_worker.go.

// Bounds of the queue API.
const (
	// maxPushBody bounds a push request's body (items are base64 in JSON).
	maxPushBody = 12 << 20
	// maxWorkerBody bounds the other write requests.
	maxWorkerBody = 12 << 20
	// maxItemLeaseWait bounds a lease's long poll.
	maxItemLeaseWait = time.Minute
	// defaultItemsLimit is how many items one GET of items lists when no
	// limit is asked.
	defaultItemsLimit = 1000
	// leasePoke is how often a lease is proposed when no item is known to
	// be ready but leases may have expired or backoffs ended: the FSM
	// reclaims them only in a lease command.
	leasePoke = 250 * time.Millisecond
)

// queueCaller is who calls a queue route.
type queueCaller struct {
	// group is the caller's group; empty on the admin socket, which may
	// act on every queue.
	group string
	// worker names the caller in the record.
	worker string
}

// queueSet is the agent's queue machinery.
type queueSet struct {
	push   *groupCommit[[]byte]
	ack    *groupCommit[raftstore.ItemAck]
	nack   *groupCommit[raftstore.ItemNack]
	extend *groupCommit[raftstore.ItemToken]

	mu       sync.Mutex
	lastPoke map[string]time.Time // queue → last lease proposed without a known ready item
	requeued map[string]uint64    // dead node → the NodeInfo index its items were requeued at

	worker *queueWorker
}

// queueState returns the agent's queue machinery, made on first use.
func (a *Agent) queueState() *queueSet {
	a.queuesOnce.Do(func() {
		q := &queueSet{lastPoke: map[string]time.Time{}, requeued: map[string]uint64{}}
		q.push = newGroupCommit(raftstore.MaxEnqueueBatch, raftstore.MaxEnqueueBytes, func(b []byte) int { return len(b) },
			func(ctx context.Context, queue string, items [][]byte) (uint64, error) {
				return a.propose(ctx, raftstore.CmdEnqueue, raftstore.Enqueue{Queue: queue, Items: items, Now: time.Now()})
			})
		q.ack = newGroupCommit(raftstore.MaxItemBatch, raftstore.MaxEnqueueBytes, func(x raftstore.ItemAck) int { return len(x.Result) + 64 },
			func(ctx context.Context, queue string, acks []raftstore.ItemAck) (uint64, error) {
				return a.propose(ctx, raftstore.CmdAckItem, raftstore.AckItem{Queue: queue, Acks: acks, Now: time.Now()})
			})
		q.nack = newGroupCommit(raftstore.MaxItemBatch, raftstore.MaxEnqueueBytes, func(x raftstore.ItemNack) int { return len(x.Error) + 64 },
			func(ctx context.Context, queue string, nacks []raftstore.ItemNack) (uint64, error) {
				return a.propose(ctx, raftstore.CmdNackItem, raftstore.NackItem{Queue: queue, Nacks: nacks, Now: time.Now()})
			})
		// Extensions of one visibility share a command: the key is
		// "queue visibility".
		q.extend = newGroupCommit(raftstore.MaxItemBatch, raftstore.MaxEnqueueBytes, func(raftstore.ItemToken) int { return 16 },
			func(ctx context.Context, key string, items []raftstore.ItemToken) (uint64, error) {
				queue, vis, _ := strings.Cut(key, " ")
				d, _ := time.ParseDuration(vis)
				return a.propose(ctx, raftstore.CmdExtendItem, raftstore.ExtendItem{Queue: queue, Items: items, Now: time.Now(), Visibility: d})
			})
		q.worker = newQueueWorker(a)
		a.queues = q
	})
	return a.queues
}

// queueAdminRoutes registers the queue routes of the admin API.
func (a *Agent) queueAdminRoutes(route func(pattern string, h http.HandlerFunc)) {
	admin := func(r *http.Request) (queueCaller, error) { return queueCaller{worker: "api@" + a.cfg.NodeName}, nil }
	a.registerQueueRoutes(route, admin)
}

// queueRoutes registers the queue routes of c's downward socket.
func (a *Agent) queueRoutes(route routeFunc, c caller) {
	a.registerQueueRoutes(route, func(r *http.Request) (queueCaller, error) {
		id, err := a.identify(c)
		if err != nil {
			return queueCaller{}, err
		}
		worker := id.Allocation
		if worker == "" {
			worker = id.Group
		}
		return queueCaller{group: id.Group, worker: worker}, nil
	})
}

func (a *Agent) registerQueueRoutes(route func(string, http.HandlerFunc), who func(*http.Request) (queueCaller, error)) {
	p := api.PathQueues
	route("GET "+p, a.handleQueues)
	route("GET "+p+"/{q}", a.handleQueue)
	route("GET "+p+"/{q}/items", a.handleItems)
	route("GET "+p+"/{q}/items/{id}", a.handleItem)
	route("POST "+p+"/{q}/items", a.queueWrite(who, false, a.handlePush))
	route("POST "+p+"/{q}/retry", a.queueWrite(who, true, a.handleRetry))
	route("POST "+p+"/{q}/lease", a.queueWrite(who, true, a.handleItemLease))
	route("POST "+p+"/{q}/ack", a.queueWrite(who, true, a.handleAck))
	route("POST "+p+"/{q}/nack", a.queueWrite(who, true, a.handleNack))
	route("POST "+p+"/{q}/extend", a.queueWrite(who, true, a.handleExtend))
}

// queueHandler serves one write route of queue q for caller.
type queueHandler func(w http.ResponseWriter, r *http.Request, q raftstore.Queue, caller queueCaller)

// queueWrite resolves the caller and the queue. Routes that work on
// items (owner) are the defining group's only.
func (a *Agent) queueWrite(who func(*http.Request) (queueCaller, error), owner bool, h queueHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		caller, err := who(r)
		if err != nil {
			writeError(w, err)
			return
		}
		q, err := a.lookupQueue(r.Context(), r.PathValue("q"))
		if err != nil {
			writeError(w, err)
			return
		}
		if owner && caller.group != "" && caller.group != q.Group {
			writeError(w, fmt.Errorf("queue %q belongs to group %q: group %q may push items to it, but only %q's workers lease, ack, nack, extend and retry them: %w",
				q.Name, q.Group, caller.group, q.Group, api.ErrConflict))
			return
		}
		h(w, r, q, caller)
	}
}

// lookupQueue returns queue name. A queue this member does not know yet
// may have just been created through another agent: it waits for the
// leader's commit index before it says the queue does not exist.
func (a *Agent) lookupQueue(ctx context.Context, name string) (raftstore.Queue, error) {
	if q, ok := a.cl.store.Queue(name); ok {
		return q, nil
	}
	if st := a.cl.store.Stats(); st.CommitIndex > st.FSMIndex {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = a.cl.store.WaitIndex(wctx, st.CommitIndex)
		cancel()
		if q, ok := a.cl.store.Queue(name); ok {
			return q, nil
		}
	}
	return raftstore.Queue{}, queueNotFound(name)
}

func queueNotFound(name string) error {
	return fmt.Errorf("queue %q not found: no cluster group defines it (agentctl queue ls lists the queues; a group defines one with a [queue] table and [placement]): %w", name, api.ErrNotFound)
}

// queueInfo is q with its progress.
func (a *Agent) queueInfo(q raftstore.Queue) api.QueueInfo {
	st, _ := a.cl.store.QueueStats(q.Name)
	return api.QueueInfo{Name: q.Name, Group: q.Group, Spec: q.Spec, Status: st.API(time.Now())}
}

func (a *Agent) handleQueues(w http.ResponseWriter, r *http.Request) {
	out := []api.QueueInfo{}
	for _, q := range a.cl.store.Queues() {
		out = append(out, a.queueInfo(q))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleQueue(w http.ResponseWriter, r *http.Request) {
	q, err := a.lookupQueue(r.Context(), r.PathValue("q"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.queueInfo(q))
}

func (a *Agent) handleItems(w http.ResponseWriter, r *http.Request) {
	q, err := a.lookupQueue(r.Context(), r.PathValue("q"))
	if err != nil {
		writeError(w, err)
		return
	}
	v := r.URL.Query()
	f := raftstore.ItemFilter{State: api.ItemState(v.Get("state")), Limit: defaultItemsLimit}
	if f.State != "" && !f.State.Valid() {
		writeError(w, fmt.Errorf("state %q: want queued, leased, done or dead: %w", f.State, api.ErrInvalid))
		return
	}
	if s := v.Get("after"); s != "" {
		if f.After, err = strconv.ParseUint(s, 10, 64); err != nil {
			writeError(w, fmt.Errorf("after %q: want an item ID: %w", s, api.ErrInvalid))
			return
		}
	}
	if s := v.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 1 || f.Limit > raftstore.MaxItemBatch {
			writeError(w, fmt.Errorf("limit %q: want 1 to %d: %w", s, raftstore.MaxItemBatch, api.ErrInvalid))
			return
		}
	}
	out := []api.QueueItem{}
	for _, it := range a.cl.store.Items(q.Name, f) {
		out = append(out, it.API(false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleItem(w http.ResponseWriter, r *http.Request) {
	q, err := a.lookupQueue(r.Context(), r.PathValue("q"))
	if err != nil {
		writeError(w, err)
		return
	}
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, fmt.Errorf("item %q: want a number: %w", r.PathValue("id"), api.ErrInvalid))
		return
	}
	it, ok := a.cl.store.Item(q.Name, id)
	if !ok {
		writeError(w, itemNotFound(q.Name, id))
		return
	}
	writeJSON(w, http.StatusOK, it.API(true))
}

func itemNotFound(queue string, id uint64) error {
	return fmt.Errorf("queue %q has no item %d (agentctl queue items %s lists them): %w", queue, id, queue, api.ErrNotFound)
}

// decodeBody reads a JSON request body of at most limit bytes.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, what string, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%s: the request body is larger than %s: send fewer items at once: %w", what, api.ByteSize(limit), api.ErrInvalid)
		}
		return fmt.Errorf("%s: bad request body: %v: %w", what, err, api.ErrInvalid)
	}
	return nil
}

// queueWriteError turns the error of a queue write into the one to show:
// a queue deleted meanwhile is not found, by name.
func (a *Agent) queueWriteError(queue string, err error) error {
	if errors.Is(err, api.ErrNotFound) {
		if _, ok := a.cl.store.Queue(queue); !ok {
			return queueNotFound(queue)
		}
	}
	return err
}

func (a *Agent) handlePush(w http.ResponseWriter, r *http.Request, q raftstore.Queue, _ queueCaller) {
	var req api.PushRequest
	if err := decodeBody(w, r, maxPushBody, "push to "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	ids, err := a.pushItems(r.Context(), q, req.Items)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PushResponse{Queue: q.Name, IDs: ids})
}

// pushItems adds items to q, all or none, and returns their IDs.
func (a *Agent) pushItems(ctx context.Context, q raftstore.Queue, items [][]byte) ([]uint64, error) {
	if err := checkPush(q, items); err != nil {
		return nil, err
	}
	idx, off, err := a.queueState().push.submit(ctx, q.Name, items)
	if err != nil {
		return nil, a.queueWriteError(q.Name, err)
	}
	ids := a.cl.store.EnqueuedIDs(q.Name, idx)
	if off+len(items) > len(ids) {
		return nil, fmt.Errorf("push to %s: committed at index %d, but %d IDs are recorded there, want %d from %d: %w",
			q.Name, idx, len(ids), len(items), off, api.ErrUnavailable)
	}
	return ids[off : off+len(items)], nil
}

// checkPush refuses what the FSM would refuse, naming the item.
func checkPush(q raftstore.Queue, items [][]byte) error {
	switch {
	case len(items) == 0:
		return fmt.Errorf(`push to %s: no items (want {"items": ["<base64>", …]}): %w`, q.Name, api.ErrInvalid)
	case len(items) > raftstore.MaxEnqueueBatch:
		return fmt.Errorf("push to %s: %d items in one request, more than the maximum of %d: push in batches: %w",
			q.Name, len(items), raftstore.MaxEnqueueBatch, api.ErrInvalid)
	}
	limit, total := q.Spec.EffectiveMaxItemSize(), 0
	for i, it := range items {
		total += len(it)
		if api.ByteSize(len(it)) > limit {
			what := "the item"
			if len(items) > 1 {
				what = fmt.Sprintf("item %d of %d", i+1, len(items))
			}
			return fmt.Errorf("push to %s: %s is %s (%d bytes), more than the queue's max_item_size of %s: nothing was pushed; store large inputs elsewhere and push references to them, or raise max_item_size in the [queue] of group %s (at most %s): %w",
				q.Name, what, api.ByteSize(len(it)), len(it), limit, q.Group, api.MaxQueueItemSize, api.ErrInvalid)
		}
	}
	if total > raftstore.MaxEnqueueBytes {
		return fmt.Errorf("push to %s: %s in one request, more than the maximum of %s: push in batches: %w",
			q.Name, api.ByteSize(total), api.ByteSize(raftstore.MaxEnqueueBytes), api.ErrInvalid)
	}
	return nil
}

func (a *Agent) handleRetry(w http.ResponseWriter, r *http.Request, q raftstore.Queue, _ queueCaller) {
	var req api.RetryRequest
	if err := decodeBody(w, r, maxWorkerBody, "retry in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.IDs) > raftstore.MaxItemBatch {
		writeError(w, fmt.Errorf("retry in %s: %d items, more than the maximum of %d: %w", q.Name, len(req.IDs), raftstore.MaxItemBatch, api.ErrInvalid))
		return
	}
	for _, id := range req.IDs {
		if _, ok := a.cl.store.Item(q.Name, id); !ok {
			writeError(w, itemNotFound(q.Name, id))
			return
		}
	}
	idx, err := a.propose(r.Context(), raftstore.CmdRetryItem, raftstore.RetryItem{Queue: q.Name, IDs: req.IDs, Now: time.Now()})
	if err != nil {
		writeError(w, a.queueWriteError(q.Name, err))
		return
	}
	// The items the command changed are those last changed at its index.
	res := api.RetryResponse{IDs: []uint64{}}
	if len(req.IDs) == 0 {
		for _, it := range a.cl.store.Items(q.Name, raftstore.ItemFilter{State: api.ItemQueued}) {
			if it.Index == idx {
				res.IDs = append(res.IDs, it.ID)
			}
		}
	}
	for _, id := range req.IDs {
		if it, ok := a.cl.store.Item(q.Name, id); ok && it.Index == idx {
			res.IDs = append(res.IDs, id)
		}
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *Agent) handleItemLease(w http.ResponseWriter, r *http.Request, q raftstore.Queue, caller queueCaller) {
	var req api.LeaseRequest
	if err := decodeBody(w, r, 1<<16, "lease from "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	switch {
	case req.Max < 0 || req.Max > raftstore.MaxItemBatch:
		writeError(w, fmt.Errorf("lease from %s: max %d: want 1 to %d: %w", q.Name, req.Max, raftstore.MaxItemBatch, api.ErrInvalid))
		return
	case req.Visibility != 0 && (req.Visibility < api.MinVisibility || req.Visibility > api.MaxVisibility):
		writeError(w, fmt.Errorf("lease from %s: visibility %s: want %s to %s: %w", q.Name, req.Visibility, api.MinVisibility, api.MaxVisibility, api.ErrInvalid))
		return
	case req.Wait < 0 || req.Wait.D() > maxItemLeaseWait:
		writeError(w, fmt.Errorf("lease from %s: wait %s: want 0 to %s: %w", q.Name, req.Wait, maxItemLeaseWait, api.ErrInvalid))
		return
	}
	worker := req.Worker
	if worker == "" {
		worker = caller.worker
	}
	items, err := a.leaseItems(r.Context(), q.Name, worker, req.Max, req.Visibility.D(), req.Wait.D())
	if err != nil {
		writeError(w, err)
		return
	}
	res := api.LeaseResponse{Items: []api.LeasedItem{}}
	for _, it := range items {
		res.Items = append(res.Items, it.Leased())
	}
	writeJSON(w, http.StatusOK, res)
}

// leaseItems leases up to max items of queue to worker on this node,
// waiting up to wait for one to be ready.
func (a *Agent) leaseItems(ctx context.Context, queue, worker string, max int, vis, wait time.Duration) ([]raftstore.QueueItem, error) {
	deadline := time.Now().Add(wait)
	var watch <-chan uint64
	if wait > 0 {
		wctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		watch = a.cl.store.Watch(wctx)
	}
	for {
		if _, ok := a.cl.store.Queue(queue); !ok {
			return nil, queueNotFound(queue)
		}
		if a.leaseWorthTrying(queue) {
			idx, err := a.propose(ctx, raftstore.CmdLeaseItem, raftstore.LeaseItem{
				Queue: queue, Worker: worker, Node: a.cfg.NodeName, Now: time.Now(), Max: max, Visibility: vis})
			if err != nil {
				return nil, a.queueWriteError(queue, err)
			}
			if items := a.cl.store.LeasedItems(queue, idx); len(items) > 0 {
				return items, nil
			}
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		t := time.NewTimer(min(left, leasePoke))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Cause(ctx)
		case <-watch:
		case <-t.C:
		}
		t.Stop()
	}
}

// leaseWorthTrying says whether a lease command may hand out an item:
// one is ready and the parallelism leaves room, or, at most every
// leasePoke, leases may have expired or backoffs ended (which only a lease
// command finds out).
func (a *Agent) leaseWorthTrying(queue string) bool {
	st, ok := a.cl.store.QueueStats(queue)
	q, qok := a.cl.store.Queue(queue)
	if !ok || !qok {
		return true // the command says what is wrong
	}
	capped := q.Spec.EffectiveParallelism() > 0 && st.Leased >= q.Spec.EffectiveParallelism()
	if st.Queued-st.Delayed > 0 && !capped {
		return true
	}
	if st.Delayed == 0 && st.Leased == 0 {
		return false
	}
	qs := a.queueState()
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if time.Since(qs.lastPoke[queue]) < leasePoke {
		return false
	}
	qs.lastPoke[queue] = time.Now()
	return true
}

func (a *Agent) handleAck(w http.ResponseWriter, r *http.Request, q raftstore.Queue, caller queueCaller) {
	var req api.AckRequest
	if err := decodeBody(w, r, maxWorkerBody, "ack in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	acks := make([]raftstore.ItemAck, len(req.Acks))
	for i, ak := range req.Acks {
		acks[i] = raftstore.ItemAck{ID: ak.ID, Token: ak.Token, Result: ak.Result, Node: a.cfg.NodeName, Worker: caller.worker}
		if it, ok := a.cl.store.Item(q.Name, ak.ID); ok && it.LeaseToken == ak.Token {
			acks[i].Attempt = it.Attempts
		}
	}
	res, err := a.ackItems(r.Context(), q, acks)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// ackItems completes items and says, for each, whether this ack recorded
// the completion.
func (a *Agent) ackItems(ctx context.Context, q raftstore.Queue, acks []raftstore.ItemAck) (api.AckResponse, error) {
	if len(acks) == 0 || len(acks) > raftstore.MaxItemBatch {
		return api.AckResponse{}, fmt.Errorf("ack in %s: %d acks: want 1 to %d: %w", q.Name, len(acks), raftstore.MaxItemBatch, api.ErrInvalid)
	}
	limit := q.Spec.EffectiveMaxItemSize()
	for _, ak := range acks {
		if err := a.checkToken(q.Name, ak.ID, ak.Token); err != nil {
			return api.AckResponse{}, err
		}
		if api.ByteSize(len(ak.Result)) > limit {
			return api.AckResponse{}, fmt.Errorf("ack in %s: the result of item %d is %s, more than the queue's max_item_size of %s: keep large results elsewhere and return a reference: %w",
				q.Name, ak.ID, api.ByteSize(len(ak.Result)), limit, api.ErrInvalid)
		}
	}
	idx, _, err := a.queueState().ack.submit(ctx, q.Name, acks)
	if err != nil {
		return api.AckResponse{}, a.queueWriteError(q.Name, err)
	}
	res := api.AckResponse{Results: make([]api.AckResult, len(acks))}
	for i, ak := range acks {
		res.Results[i] = api.AckResult{ID: ak.ID, Outcome: api.AckDuplicate}
		if it, ok := a.cl.store.Item(q.Name, ak.ID); ok && it.DoneIndex == idx && it.DoneToken == ak.Token {
			res.Results[i].Outcome = api.AckDone
		}
	}
	// Within one request, only the first ack of an item records it.
	seen := map[uint64]bool{}
	for i := range res.Results {
		if seen[res.Results[i].ID] {
			res.Results[i].Outcome = api.AckDuplicate
		}
		seen[res.Results[i].ID] = true
	}
	return res, nil
}

// checkToken refuses an ack, nack or extension of an item that does not
// exist, or with a token that was never one of its leases.
func (a *Agent) checkToken(queue string, id, token uint64) error {
	if id == 0 || token == 0 {
		return fmt.Errorf("queue %s: item %d, token %d: both must be set (they come with the lease): %w", queue, id, token, api.ErrInvalid)
	}
	it, ok := a.cl.store.Item(queue, id)
	if !ok {
		return itemNotFound(queue, id)
	}
	if token > it.LeaseToken || token < it.EnqueueIndex {
		return fmt.Errorf("queue %s: item %d was never leased with token %d (its last lease is %d): %w", queue, id, token, it.LeaseToken, api.ErrConflict)
	}
	return nil
}

func (a *Agent) handleNack(w http.ResponseWriter, r *http.Request, q raftstore.Queue, _ queueCaller) {
	var req api.NackRequest
	if err := decodeBody(w, r, maxWorkerBody, "nack in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	nacks := make([]raftstore.ItemNack, len(req.Nacks))
	for i, n := range req.Nacks {
		nacks[i] = raftstore.ItemNack{ID: n.ID, Token: n.Token, Error: n.Error, Fatal: n.Fatal}
	}
	res, err := a.nackItems(r.Context(), q, nacks)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// nackItems fails leased items and says where each went.
func (a *Agent) nackItems(ctx context.Context, q raftstore.Queue, nacks []raftstore.ItemNack) (api.NackResponse, error) {
	if len(nacks) == 0 || len(nacks) > raftstore.MaxItemBatch {
		return api.NackResponse{}, fmt.Errorf("nack in %s: %d nacks: want 1 to %d: %w", q.Name, len(nacks), raftstore.MaxItemBatch, api.ErrInvalid)
	}
	for _, n := range nacks {
		if err := a.checkToken(q.Name, n.ID, n.Token); err != nil {
			return api.NackResponse{}, err
		}
	}
	idx, _, err := a.queueState().nack.submit(ctx, q.Name, nacks)
	if err != nil {
		return api.NackResponse{}, a.queueWriteError(q.Name, err)
	}
	res := api.NackResponse{Results: make([]api.NackResult, len(nacks))}
	for i, n := range nacks {
		it, _ := a.cl.store.Item(q.Name, n.ID)
		res.Results[i] = api.NackResult{ID: n.ID, State: it.State, NotBefore: it.NotBefore, Stale: it.Index != idx}
	}
	return res, nil
}

func (a *Agent) handleExtend(w http.ResponseWriter, r *http.Request, q raftstore.Queue, _ queueCaller) {
	var req api.ExtendRequest
	if err := decodeBody(w, r, maxWorkerBody, "extend in "+q.Name, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Visibility != 0 && (req.Visibility < api.MinVisibility || req.Visibility > api.MaxVisibility) {
		writeError(w, fmt.Errorf("extend in %s: visibility %s: want %s to %s: %w", q.Name, req.Visibility, api.MinVisibility, api.MaxVisibility, api.ErrInvalid))
		return
	}
	items := make([]raftstore.ItemToken, len(req.Items))
	for i, it := range req.Items {
		items[i] = raftstore.ItemToken{ID: it.ID, Token: it.Token}
	}
	res, err := a.extendItems(r.Context(), q, items, req.Visibility.D())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// extendItems keeps leased items with their worker for vis more (the
// queue's visibility timeout when 0).
func (a *Agent) extendItems(ctx context.Context, q raftstore.Queue, items []raftstore.ItemToken, vis time.Duration) (api.ExtendResponse, error) {
	if len(items) == 0 || len(items) > raftstore.MaxItemBatch {
		return api.ExtendResponse{}, fmt.Errorf("extend in %s: %d items: want 1 to %d: %w", q.Name, len(items), raftstore.MaxItemBatch, api.ErrInvalid)
	}
	for _, it := range items {
		if err := a.checkToken(q.Name, it.ID, it.Token); err != nil {
			return api.ExtendResponse{}, err
		}
	}
	idx, _, err := a.queueState().extend.submit(ctx, q.Name+" "+vis.String(), items)
	if err != nil {
		return api.ExtendResponse{}, a.queueWriteError(q.Name, err)
	}
	res := api.ExtendResponse{Results: make([]api.ExtendResult, len(items))}
	for i, t := range items {
		res.Results[i] = api.ExtendResult{ID: t.ID, Stale: true}
		if it, ok := a.cl.store.Item(q.Name, t.ID); ok && it.State == api.ItemLeased && it.LeaseToken == t.Token && it.Index == idx {
			res.Results[i] = api.ExtendResult{ID: t.ID, Expiry: it.LeaseExpiry}
		}
	}
	return res, nil
}
