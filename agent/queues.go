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
// may have just been created through another agent, or this agent has
// just started and not replayed the log yet: before it says the queue
// does not exist, the leader applies everything committed (a barrier) and
// a follower waits (a little) for the commit index it heard of.
func (a *Agent) lookupQueue(ctx context.Context, name string) (raftstore.Queue, error) {
	if q, ok := a.cl.store.Queue(name); ok {
		return q, nil
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for !a.cl.store.IsLeader() && a.cl.store.Stats().LeaderID == "" && wctx.Err() == nil {
		select {
		case <-wctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	if a.cl.store.IsLeader() {
		_ = a.cl.store.Barrier(wctx)
	} else if st := a.cl.store.Stats(); st.CommitIndex > st.FSMIndex {
		// The FSM does not see raft's no-op entries: bound the wait.
		ictx, icancel := context.WithTimeout(wctx, 500*time.Millisecond)
		_ = a.cl.store.WaitIndex(ictx, st.CommitIndex)
		icancel()
	}
	if q, ok := a.cl.store.Queue(name); ok {
		return q, nil
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

// sizeString renders a size in bytes, with its unit form from 1 KiB.
func sizeString(n int) string {
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%s (%d bytes)", api.ByteSize(n), n)
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
			return fmt.Errorf("push to %s: %s is %s, more than the queue's max_item_size of %s: nothing was pushed; store large inputs elsewhere and push references to them, or raise max_item_size in the [queue] of group %s (at most %s): %w",
				q.Name, what, sizeString(len(it)), sizeString(int(limit)), q.Group, api.MaxQueueItemSize, api.ErrInvalid)
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
